//! Host work per decode step, on a CPU where CI can watch it.
//!
//! The tiny deepseek2 fixture has the whole `DeepSeek` vocabulary (129,280 logits per row) and a
//! model so small that llama.cpp decodes a step in about a millisecond, so whatever whaled does
//! besides the decode — sampling over the vocabulary, copying logits, turning tokens into text,
//! passing them on — shows in its rate, as it does on a GPU where the model is fast too.
//!
//! Baseline: a raw llama-cpp-2 loop that decodes the same way but never samples (each step
//! feeds random tokens, as llama-bench's generation test does), one sequence and eight in one
//! batch.
//! Against it, whaled's `/api/generate` (raw mode) with 512 tokens per stream: greedy, and with
//! R1's recommended sampling (temperature 0.6, `top_p` 0.95, Ollama's `top_k` 40, a seed), one
//! stream (`WHALE_NUM_PARALLEL=1`) and eight at once (`WHALE_NUM_PARALLEL=8`). One stream's
//! rate is its `eval_count / eval_duration`; eight streams' is all their tokens over the wall
//! time from the first request to the last final object. Rounds alternate raw and whaled and
//! never overlap. Targets: whaled ≥ 0.95× raw in every column. Beside the rates, the context
//! switches of whaled's threads and its runner's per generated token: each one is a wake-up
//! or a preemption that the raw loop does not have.
//!
//! `cargo bench --workspace --bench host`

use std::time::{Duration, Instant};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use serde_json::{Value, json};
use whale_tests::bench::{Streamed, column_medians, context_switches, generate, load_average};
use whale_tests::fixtures;
use whale_tests::raw::{RawDecode, load_quietly};
use whale_tests::whaled::Whaled;

const TOKENS: usize = 512;
const ROUNDS: usize = 5;
const THREADS: u32 = 2;
const N_CTX: u32 = 1024;
const STREAMS: usize = 8;
const SETTLE: Duration = Duration::from_millis(300);
const PROMPTS: [&str; STREAMS] = [
    "Hello", "One", "The sea", "Why", "Listen", "Numbers", "A story", "Rust",
];

/// The two ways whaled samples here; no drafting, which the raw loop does not do either.
fn sampling(greedy: bool) -> Value {
    if greedy {
        json!({"temperature": 0, "num_predict": TOKENS, "num_ctx": N_CTX, "speculative": "off"})
    } else {
        json!({"temperature": 0.6, "top_p": 0.95, "seed": 42, "num_predict": TOKENS,
               "num_ctx": N_CTX, "speculative": "off"})
    }
}

fn raw(backend: &LlamaBackend, model: &LlamaModel, prompts: &[&str]) -> f64 {
    RawDecode {
        prompts,
        tokens: TOKENS,
        threads: THREADS,
        n_ctx: N_CTX,
    }
    .run_without_sampling(backend, model)
}

/// One stream's rate by whaled's own clock, and whaled's context switches per token.
fn one(client: &reqwest::blocking::Client, daemon: &Whaled, greedy: bool) -> (f64, f64) {
    let before = context_switches(daemon.pid());
    let run = generate(client, daemon, "tiny", PROMPTS[0], &sampling(greedy));
    let switches = context_switches(daemon.pid()) - before;
    (run.eval_rate(), switches as f64 / run.eval_count as f64)
}

/// Eight streams at once: all their tokens over the wall time, and whaled's context switches
/// per token.
fn eight(client: &reqwest::blocking::Client, daemon: &Whaled, greedy: bool) -> (f64, f64) {
    let options = sampling(greedy);
    let before = context_switches(daemon.pid());
    let started = Instant::now();
    let runs: Vec<Streamed> = std::thread::scope(|scope| {
        let handles: Vec<_> = PROMPTS
            .iter()
            .map(|prompt| {
                let options = &options;
                scope.spawn(move || generate(client, daemon, "tiny", prompt, options))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("stream"))
            .collect()
    });
    let switches = context_switches(daemon.pid()) - before;
    let tokens: u64 = runs.iter().map(|run| run.eval_count).sum();
    let end = runs.iter().map(|run| run.done).max().expect("runs");
    (
        tokens as f64 / (end - started).as_secs_f64(),
        switches as f64 / tokens as f64,
    )
}

fn daemon(parallel: usize) -> Whaled {
    let daemon = Whaled::builder()
        .env("WHALE_NUM_THREADS", THREADS.to_string())
        .env("WHALE_NUM_PARALLEL", parallel.to_string())
        .env("WHALE_KEEP_ALIVE", "-1")
        .env("WHALE_LOG", "warn")
        .start();
    daemon.create_from_gguf("tiny", &fixtures::deepseek2());
    daemon
}

fn main() {
    let (backend, model) = load_quietly(&fixtures::deepseek2());
    let client = Whaled::http();
    let single = daemon(1);
    let many = daemon(STREAMS);
    // Warm up: load the model in both daemons, page everything in.
    for greedy in [true, false] {
        one(&client, &single, greedy);
        eight(&client, &many, greedy);
    }
    raw(&backend, &model, &PROMPTS[..1]);
    raw(&backend, &model, &PROMPTS);

    println!(
        "host work per step: tiny deepseek2 fixture (129,280-token vocabulary), {THREADS} threads, \
         {TOKENS} tokens per stream, tok/s (load average {})",
        load_average()
    );
    println!(
        "| round | raw 1 | greedy 1 | ratio | R1 1 | ratio | raw 8 | greedy 8 | ratio | R1 8 | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows: Vec<[f64; 10]> = Vec::new();
    let mut switches: Vec<[f64; 4]> = Vec::new();
    for round in 1..=ROUNDS {
        std::thread::sleep(SETTLE);
        let raw1 = raw(&backend, &model, &PROMPTS[..1]);
        std::thread::sleep(SETTLE);
        let (greedy1, greedy1_switches) = one(&client, &single, true);
        std::thread::sleep(SETTLE);
        let (r1_1, r1_1_switches) = one(&client, &single, false);
        std::thread::sleep(SETTLE);
        let raw8 = raw(&backend, &model, &PROMPTS);
        std::thread::sleep(SETTLE);
        let (greedy8, greedy8_switches) = eight(&client, &many, true);
        std::thread::sleep(SETTLE);
        let (r1_8, r1_8_switches) = eight(&client, &many, false);
        switches.push([
            greedy1_switches,
            r1_1_switches,
            greedy8_switches,
            r1_8_switches,
        ]);
        let row = [
            raw1,
            greedy1,
            greedy1 / raw1,
            r1_1,
            r1_1 / raw1,
            raw8,
            greedy8,
            greedy8 / raw8,
            r1_8,
            r1_8 / raw8,
        ];
        print_row(&round.to_string(), &row);
        rows.push(row);
    }
    let medians = column_medians(&rows);
    print_row("median", &medians);
    println!(
        "median whaled/raw: greedy 1 stream {:.3}, R1 1 stream {:.3}, greedy 8 streams {:.3}, R1 8 \
         streams {:.3} (target >= 0.95 each); load average {}",
        medians[2],
        medians[4],
        medians[7],
        medians[9],
        load_average()
    );
    let switches = column_medians(&switches);
    println!(
        "median context switches per token, whaled and its runner: greedy 1 stream {:.2}, R1 1 \
         stream {:.2}, greedy 8 streams {:.2}, R1 8 streams {:.2}",
        switches[0], switches[1], switches[2], switches[3]
    );
}

fn print_row(label: &str, row: &[f64]) {
    println!(
        "| {label} | {:.0} | {:.0} | {:.3} | {:.0} | {:.3} | {:.0} | {:.0} | {:.3} | {:.0} | {:.3} |",
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9]
    );
}
