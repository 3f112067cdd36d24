//! The cost of splitting a model over workers: decode tokens per second of one whaled alone
//! against one whose models are split over two `whale worker`s on loopback (llama.cpp's RPC
//! backend behind whale's guarded link, open: no token, plain text), and against one split
//! over two workers that take a token and speak TLS only (the link as it crosses a network
//! nobody trusts), in alternating rounds of one run.
//!
//! Gemma 3 270M `Q4_K_M`, greedy, raw mode, 96 generated tokens, the model kept loaded; the
//! rate is `eval_count / eval_duration` of the final object. Every daemon and worker runs
//! with 2 threads on the same machine, so a split run pays for the network hops (two per
//! token and worker: activations out, results back) and for three processes taking turns on
//! the cores, and gains nothing: on one machine the split can only cost. What it measures is
//! that cost per token, the price of holding a model no single machine could, and what TLS
//! adds to it.
//!
//! `cargo bench --workspace --bench workers`

use std::time::Duration;

use serde_json::json;
use whale_tests::bench::{self, Streamed, load_average, median};
use whale_tests::fixtures;
use whale_tests::whaled::{Whaled, Worker, self_signed_certificate};

const TOKENS: usize = 96;
const ROUNDS: usize = 7;
const SETTLE: Duration = Duration::from_millis(300);
const PROMPT: &str = "1, 2, 3, 4, 5,";

const TOKEN: &str = "bench-token";

fn daemon(workers: &[&Worker], env: &[(&str, &str)]) -> Whaled {
    let mut builder = Whaled::builder()
        .env("WHALE_NUM_THREADS", "2")
        .env("WHALE_NUM_PARALLEL", "1")
        .env("WHALE_KEEP_ALIVE", "-1")
        .env("WHALE_LOG", "warn");
    for (key, value) in env {
        builder = builder.env(key, *value);
    }
    if !workers.is_empty() {
        let addresses: Vec<String> = workers.iter().map(|w| w.address.to_string()).collect();
        builder = builder.env("WHALE_WORKERS", addresses.join(","));
    }
    let daemon = builder.start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    daemon
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_certificate(dir.path(), "worker");
    let tls = ["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    let open = [
        Worker::start("127.0.0.1:0", None),
        Worker::start("127.0.0.1:0", None),
    ];
    let guarded = [
        Worker::start_with("127.0.0.1:0", Some(TOKEN), &tls),
        Worker::start_with("127.0.0.1:0", Some(TOKEN), &tls),
    ];
    let local = daemon(&[], &[]);
    let split = daemon(&[&open[0], &open[1]], &[]);
    let secured = daemon(
        &[&guarded[0], &guarded[1]],
        &[("WHALE_WORKER_TOKEN", TOKEN), ("WHALE_WORKER_CA", &cert)],
    );
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
    let tls_shared = run(&secured);
    let (_, ps) = split.get("/api/ps");
    println!(
        "decode, Gemma 3 270M Q4_K_M, 2 threads each, {TOKENS} tokens, local vs split over two \
         loopback workers, open and with a token and TLS"
    );
    println!("split: {}", ps["models"][0]["layers"]);
    println!(
        "same text: {} (load average {})",
        alone.text == shared.text && alone.text == tls_shared.text,
        load_average()
    );
    println!(
        "{:>6}  {:>11}  {:>11}  {:>6}  {:>9}  {:>6}  {:>8}",
        "round", "local tok/s", "split tok/s", "ratio", "TLS tok/s", "ratio", "TLS/open"
    );
    let mut columns: [Vec<f64>; 6] = Default::default();
    for round in 1..=ROUNDS {
        std::thread::sleep(SETTLE);
        let alone = run(&local).eval_rate();
        std::thread::sleep(SETTLE);
        let shared = run(&split).eval_rate();
        std::thread::sleep(SETTLE);
        let tls_shared = run(&secured).eval_rate();
        let row = [
            alone,
            shared,
            shared / alone,
            tls_shared,
            tls_shared / alone,
            tls_shared / shared,
        ];
        println!(
            "{round:>6}  {:>11.1}  {:>11.1}  {:>6.3}  {:>9.1}  {:>6.3}  {:>8.3}",
            row[0], row[1], row[2], row[3], row[4], row[5]
        );
        for (column, value) in columns.iter_mut().zip(row) {
            column.push(value);
        }
    }
    let m: Vec<f64> = columns.iter().map(|column| median(column)).collect();
    println!(
        "{:>6}  {:>11.1}  {:>11.1}  {:>6.3}  {:>9.1}  {:>6.3}  {:>8.3}",
        "median", m[0], m[1], m[2], m[3], m[4], m[5]
    );
}
