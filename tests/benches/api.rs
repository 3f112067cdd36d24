//! Decode speed through whaled's HTTP API, in one run:
//!
//! 1. One stream through `/api/generate` against a raw `llama-cpp-2` loop in this process, on
//!    the same model, prompt, thread count and token count (target: API/raw ≥ 0.98).
//! 2. Four concurrent streams against the same four requests one after another, through a
//!    daemon with four slots (target: aggregate ≥ 2.5× the single stream), and the same with
//!    the raw loop (one sequence against four decoded in one batch): what batching itself
//!    gives on this machine and model, the ceiling for whaled's ratio. Twice: on Gemma, whose
//!    decoding on a CPU is bound by arithmetic (batching saves only weight reads), and on the
//!    wide llama fixture, bound by memory as real models are on a GPU (or a large one on a CPU).
//!
//! Gemma 3 270M `Q4_K_M` (and the wide llama fixture, f32), 2 threads, greedy (no penalties on either side: whaled's default
//! `repeat_penalty` is 1.0, so its sampler chain is greedy alone, as the raw loop's), raw mode,
//! 128 generated tokens per request, 512 tokens of context per sequence, no speculative
//! decoding. Raw and API rounds
//! alternate and never overlap: each waits for the other to finish, so they never compete for
//! the cores. The model stays loaded in whaled between rounds (`keep_alive: -1`), and both paths
//! are warmed up before measuring.
//!
//! `cargo bench --workspace --bench api`

use std::time::{Duration, Instant};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use serde_json::json;
use whale_tests::bench::{self, Streamed, load_average, median};
use whale_tests::fixtures::{self, Fixture};
use whale_tests::raw::RawDecode;
use whale_tests::whaled::Whaled;

const PROMPT: &str = "1, 2, 3, 4, 5,";
/// The prompts of the concurrent streams, one each.
const PROMPTS: [&str; 4] = [
    "1, 2, 3, 4, 5,",
    "Monday, Tuesday,",
    "a, b, c, d,",
    "10, 20, 30, 40,",
];
const TOKENS: usize = 128;
const ROUNDS: usize = 9;
const PARALLEL_ROUNDS: usize = 5;
const THREADS: u32 = 2;
const N_CTX: u32 = 512;
/// Pause between rounds, so that the other side's idle worker threads have stopped spinning.
const SETTLE: Duration = Duration::from_millis(300);

/// Generated tokens per second of a plain llama-cpp-2 loop over `prompts`, one sequence each,
/// decoded together.
fn raw_round(backend: &LlamaBackend, model: &LlamaModel, prompts: &[&str]) -> f64 {
    RawDecode {
        prompts,
        tokens: TOKENS,
        threads: THREADS,
        n_ctx: N_CTX,
    }
    .run(backend, model)
}

/// A model the benchmark runs: its name in whaled and its GGUF.
struct Subject {
    name: &'static str,
    /// How the tables name it.
    label: &'static str,
    path: std::path::PathBuf,
}

/// Streams one raw, greedy generation and timestamps its chunks.
fn generate(
    client: &reqwest::blocking::Client,
    daemon: &Whaled,
    model: &str,
    prompt: &str,
    num_predict: usize,
) -> Streamed {
    // No drafting: the raw loop decodes one token per step too (`--bench speculative`
    // measures drafting).
    let options = json!({"temperature": 0, "seed": 1, "num_predict": num_predict,
                         "num_ctx": N_CTX, "speculative": "off"});
    bench::generate(client, daemon, model, prompt, &options)
}

fn start_daemon(num_parallel: u32, subject: &Subject) -> Whaled {
    let daemon = Whaled::builder()
        .env("WHALE_NUM_THREADS", THREADS.to_string())
        .env("WHALE_NUM_PARALLEL", num_parallel.to_string())
        .env("WHALE_KEEP_ALIVE", "-1")
        .env("WHALE_LOG", "warn")
        .start();
    daemon.create_from_gguf(subject.name, &subject.path);
    daemon
}

/// Part 1: one stream through the API against the raw loop, alternating.
fn api_against_raw(backend: &LlamaBackend, model: &LlamaModel, subject: &Subject) {
    let daemon = start_daemon(1, subject);
    let client = Whaled::http();
    // Loads the model in whaled and pages in both copies of the weights.
    let warm = generate(&client, &daemon, subject.name, PROMPT, TOKENS);
    assert_eq!(warm.eval_count, TOKENS as u64, "the API stopped early");
    raw_round(backend, model, &[PROMPT]);

    println!(
        "decode, {}, {THREADS} threads, greedy, {TOKENS} tokens, raw llama-cpp-2 vs whaled \
         /api/generate (load average {})",
        subject.label,
        load_average()
    );
    println!(
        "{:>6}  {:>9}  {:>9}  {:>6}  {:>9}  {:>6}",
        "round", "raw tok/s", "API eval", "ratio", "API wall", "ratio"
    );
    let (mut raws, mut evals, mut walls, mut eval_ratios, mut wall_ratios) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 1..=ROUNDS {
        std::thread::sleep(SETTLE);
        let raw = raw_round(backend, model, &[PROMPT]);
        std::thread::sleep(SETTLE);
        let api = generate(&client, &daemon, subject.name, PROMPT, TOKENS);
        assert_eq!(api.eval_count, TOKENS as u64, "the API stopped early");
        let (eval, wall) = (api.eval_rate(), api.wall_rate());
        println!(
            "{round:>6}  {raw:>9.1}  {eval:>9.1}  {:>6.3}  {wall:>9.1}  {:>6.3}",
            eval / raw,
            wall / raw
        );
        raws.push(raw);
        evals.push(eval);
        walls.push(wall);
        eval_ratios.push(eval / raw);
        wall_ratios.push(wall / raw);
    }
    println!(
        "{:>6}  {:>9.1}  {:>9.1}  {:>6.3}  {:>9.1}  {:>6.3}",
        "median",
        median(&raws),
        median(&evals),
        median(&eval_ratios),
        median(&walls),
        median(&wall_ratios)
    );
    println!(
        "median API/raw (eval_count/eval_duration): {:.3} (target >= 0.98); load average {}",
        median(&eval_ratios),
        load_average()
    );
}

/// Tokens per second of a batch of requests: the sum of their `eval_count` over the wall time
/// from the first request sent to the last final object.
fn batch_rate(runs: &[Streamed], started: Instant) -> f64 {
    let tokens: u64 = runs.iter().map(|run| run.eval_count).sum();
    assert_eq!(
        tokens,
        (TOKENS * runs.len()) as u64,
        "a stream stopped early"
    );
    let end = runs.iter().map(|run| run.done).max().expect("runs");
    tokens as f64 / (end - started).as_secs_f64()
}

/// Part 2: the four prompts concurrently against the same four one after another, through
/// whaled and, as the ceiling of what batching gives on this machine and model, through the raw
/// loop (one sequence against the four decoded together).
fn parallel_against_single(backend: &LlamaBackend, model: &LlamaModel, subject: &Subject) {
    let daemon = start_daemon(4, subject);
    let client = Whaled::http();
    for prompt in PROMPTS {
        generate(&client, &daemon, subject.name, prompt, TOKENS);
    }
    raw_round(backend, model, &PROMPTS);
    println!();
    println!(
        "aggregate decode, {}, {} sequences of {TOKENS} tokens: raw llama-cpp-2 (1 sequence vs \
         the 4 in one batch) and whaled with WHALE_NUM_PARALLEL=4 (4 requests one at a time vs \
         all at once), tok/s (load average {})",
        subject.label,
        PROMPTS.len(),
        load_average()
    );
    println!(
        "{:>6}  {:>7}  {:>7}  {:>6}  {:>7}  {:>7}  {:>6}  {:>9}",
        "round", "raw 1", "raw 4", "ratio", "API 1", "API 4", "ratio", "API4/raw4"
    );
    let mut rows: Vec<[f64; 7]> = Vec::new();
    for round in 1..=PARALLEL_ROUNDS {
        std::thread::sleep(SETTLE);
        let raw_single = raw_round(backend, model, &[PROMPT]);
        std::thread::sleep(SETTLE);
        let raw_batch = raw_round(backend, model, &PROMPTS);
        std::thread::sleep(SETTLE);
        let started = Instant::now();
        let sequential: Vec<Streamed> = PROMPTS
            .iter()
            .map(|prompt| generate(&client, &daemon, subject.name, prompt, TOKENS))
            .collect();
        let single = batch_rate(&sequential, started);
        std::thread::sleep(SETTLE);
        let started = Instant::now();
        let together: Vec<Streamed> = std::thread::scope(|scope| {
            let handles: Vec<_> = PROMPTS
                .iter()
                .map(|prompt| {
                    let (client, daemon) = (&client, &daemon);
                    scope.spawn(move || generate(client, daemon, subject.name, prompt, TOKENS))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("stream thread"))
                .collect()
        });
        let batch = batch_rate(&together, started);
        let row = [
            raw_single,
            raw_batch,
            raw_batch / raw_single,
            single,
            batch,
            batch / single,
            batch / raw_batch,
        ];
        print_parallel_row(&round.to_string(), &row);
        rows.push(row);
    }
    let medians: Vec<f64> = (0..7)
        .map(|column| median(&rows.iter().map(|row| row[column]).collect::<Vec<_>>()))
        .collect();
    print_parallel_row("median", &medians);
    println!(
        "{}: median 4 streams / 1 stream through whaled: {:.2}x (target >= 2.5x); raw \
         llama-cpp-2 batching gives {:.2}x here; whaled's 4 streams reach {:.3} of raw's 4; load \
         average {}",
        subject.label,
        medians[5],
        medians[2],
        medians[6],
        load_average()
    );
}

fn print_parallel_row(label: &str, row: &[f64]) {
    println!(
        "{label:>6}  {:>7.1}  {:>7.1}  {:>6.2}  {:>7.1}  {:>7.1}  {:>6.2}  {:>9.3}",
        row[0], row[1], row[2], row[3], row[4], row[5], row[6]
    );
}

fn main() {
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
    let backend = LlamaBackend::init().expect("llama.cpp backend");
    let load = |subject: &Subject| {
        LlamaModel::load_from_file(&backend, &subject.path, &LlamaModelParams::default())
            .expect("load the model in-process")
    };
    let gemma = Subject {
        name: "gemma",
        label: "gemma-3-270m Q4_K_M",
        path: fixtures::gemma(),
    };
    let model = load(&gemma);
    api_against_raw(&backend, &model, &gemma);
    parallel_against_single(&backend, &model, &gemma);
    drop(model);
    let wide = Subject {
        name: "wide",
        label: "wide llama fixture f32",
        path: Fixture::WideLlama.path(),
    };
    let model = load(&wide);
    println!();
    parallel_against_single(&backend, &model, &wide);
}
