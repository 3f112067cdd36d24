//! The cost of splitting a model over workers: decode tokens per second of one whaled alone
//! against one whose models are split over two `whale worker`s on loopback (llama.cpp's RPC
//! backend behind whale's guarded link), in alternating rounds of one run.
//!
//! Gemma 3 270M `Q4_K_M`, greedy, raw mode, 96 generated tokens, the model kept loaded; the
//! rate is `eval_count / eval_duration` of the final object. Both daemons and both workers run
//! with 2 threads on the same machine, so the split run pays for the network hops (two per
//! token and worker: activations out, results back) and for three processes taking turns on
//! the cores, and gains nothing: on one machine the split can only cost. What it measures is
//! that cost per token, the price of holding a model no single machine could.
//!
//! `cargo bench --workspace --bench workers`

use std::time::Duration;

use serde_json::json;
use whale_tests::bench::{self, Streamed, load_average, median};
use whale_tests::fixtures;
use whale_tests::whaled::{Whaled, Worker};

const TOKENS: usize = 96;
const ROUNDS: usize = 7;
const SETTLE: Duration = Duration::from_millis(300);
const PROMPT: &str = "1, 2, 3, 4, 5,";

fn daemon(workers: &[&Worker]) -> Whaled {
    let mut builder = Whaled::builder()
        .env("WHALE_NUM_THREADS", "2")
        .env("WHALE_NUM_PARALLEL", "1")
        .env("WHALE_KEEP_ALIVE", "-1")
        .env("WHALE_LOG", "warn");
    if !workers.is_empty() {
        let addresses: Vec<String> = workers.iter().map(|w| w.address.to_string()).collect();
        builder = builder.env("WHALE_WORKERS", addresses.join(","));
    }
    let daemon = builder.start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    daemon
}

fn main() {
    let first = Worker::start("127.0.0.1:0", None);
    let second = Worker::start("127.0.0.1:0", None);
    let local = daemon(&[]);
    let split = daemon(&[&first, &second]);
    let client = Whaled::http();
    let options = json!({"temperature": 0, "num_predict": TOKENS, "num_ctx": 512});
    let run = |daemon: &Whaled| -> Streamed {
        let streamed = bench::generate(&client, daemon, "gemma", PROMPT, &options);
        assert_eq!(streamed.eval_count, TOKENS as u64, "stopped early");
        streamed
    };
    // Warm: loads the model in each and caches the prompt.
    let alone = run(&local);
    let shared = run(&split);
    let (_, ps) = split.get("/api/ps");
    println!(
        "decode, Gemma 3 270M Q4_K_M, 2 threads each, {TOKENS} tokens, local vs split over two loopback workers"
    );
    println!("split: {}", ps["models"][0]["layers"]);
    println!(
        "same text: {} (load average {})",
        alone.text == shared.text,
        load_average()
    );
    println!(
        "{:>6}  {:>11}  {:>11}  {:>6}",
        "round", "local tok/s", "split tok/s", "ratio"
    );
    let (mut locals, mut splits, mut ratios) = (vec![], vec![], vec![]);
    for round in 1..=ROUNDS {
        std::thread::sleep(SETTLE);
        let alone = run(&local).eval_rate();
        std::thread::sleep(SETTLE);
        let shared = run(&split).eval_rate();
        let ratio = shared / alone;
        println!("{round:>6}  {alone:>11.1}  {shared:>11.1}  {ratio:>6.3}");
        locals.push(alone);
        splits.push(shared);
        ratios.push(ratio);
    }
    println!(
        "{:>6}  {:>11.1}  {:>11.1}  {:>6.3}",
        "median",
        median(&locals),
        median(&splits),
        median(&ratios)
    );
}
