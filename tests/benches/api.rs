//! Decode speed through whaled's HTTP API, in one run:
//!
//! 1. One stream through `/api/generate` against a raw `llama-cpp-2` loop in this process, on
//!    the same model, prompt, thread count and token count (target: API/raw ≥ 0.98).
//! 2. Four concurrent streams against the same four requests one after another, through a
//!    daemon with four slots (target: aggregate ≥ 2.5× the single stream).
//!
//! Gemma 3 270M Q4_K_M, 2 threads, greedy (no penalties on either side: whaled's default
//! `repeat_penalty` is 1.0, so its sampler chain is greedy alone, as the raw loop's), raw mode,
//! 128 generated tokens per request, 512 tokens of context per sequence. Raw and API rounds
//! alternate and never overlap: each waits for the other to finish, so they never compete for
//! the cores. The model stays loaded in whaled between rounds (`keep_alive: -1`), and both paths
//! are warmed up before measuring.
//!
//! `cargo bench --workspace --bench api`

use std::io::{BufRead, BufReader};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use serde_json::{Value, json};
use whale_tests::fixtures;
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
const ROUNDS: usize = 5;
const PARALLEL_ROUNDS: usize = 3;
const THREADS: u32 = 2;
const N_CTX: u32 = 512;
/// Pause between rounds, so that the other side's idle worker threads have stopped spinning.
const SETTLE: Duration = Duration::from_millis(300);

/// Generated tokens per second of a plain llama-cpp-2 loop: one sequence, one token per decode,
/// timed from the first sample to the last (as whaled's `eval_duration`).
fn raw_round(backend: &LlamaBackend, model: &LlamaModel) -> f64 {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(N_CTX))
        .with_n_batch(512)
        .with_n_threads(THREADS as i32)
        .with_n_threads_batch(THREADS as i32);
    let mut context = model.new_context(backend, params).expect("context");
    let prompt = model.vocab().tokenize(PROMPT.as_bytes(), true, true);
    let mut batch = LlamaBatch::new(512, 1);
    for (i, &token) in prompt.iter().enumerate() {
        batch
            .add(token, i as i32, &[0], i + 1 == prompt.len())
            .expect("batch");
    }
    context.decode(&mut batch).expect("prefill");
    let mut sampler = LlamaSampler::chain([LlamaSampler::greedy()], true);
    let mut position = prompt.len() as i32;
    let mut row = batch.n_tokens() - 1;
    let started = Instant::now();
    let mut generated = 0;
    while generated < TOKENS {
        let token = sampler.sample(&context, row);
        if model.vocab().is_eog(token) {
            break;
        }
        generated += 1;
        if generated == TOKENS {
            break;
        }
        batch.clear();
        batch.add(token, position, &[0], true).expect("batch");
        position += 1;
        context.decode(&mut batch).expect("decode");
        row = 0;
    }
    assert_eq!(generated, TOKENS, "the raw loop stopped early");
    generated as f64 / started.elapsed().as_secs_f64()
}

/// What one streamed `/api/generate` gave.
struct Streamed {
    /// `eval_count` of the final object.
    eval_count: u64,
    /// `eval_duration` of the final object.
    eval_duration: Duration,
    /// When the first chunk with text arrived.
    first_text: Instant,
    /// When the final object arrived.
    done: Instant,
}

impl Streamed {
    /// Tokens per second by the daemon's own clock.
    fn eval_rate(&self) -> f64 {
        self.eval_count as f64 / self.eval_duration.as_secs_f64()
    }

    /// Tokens per second by this client's clock, first text chunk to the final object: the
    /// `eval_count - 1` tokens after the first.
    fn wall_rate(&self) -> f64 {
        (self.eval_count - 1) as f64 / (self.done - self.first_text).as_secs_f64()
    }
}

/// Streams one raw, greedy generation and timestamps its chunks.
fn generate(
    client: &reqwest::blocking::Client,
    daemon: &Whaled,
    prompt: &str,
    num_predict: usize,
) -> Streamed {
    let body = json!({
        "model": "gemma",
        "prompt": prompt,
        "raw": true,
        "keep_alive": -1,
        "options": {"temperature": 0, "seed": 1, "num_predict": num_predict, "num_ctx": N_CTX},
    });
    let response = client
        .post(format!("{}/api/generate", daemon.url()))
        .json(&body)
        .send()
        .expect("request");
    assert!(
        response.status().is_success(),
        "generate answered {}",
        response.status()
    );
    let mut reader = BufReader::new(response);
    let mut line = String::new();
    let mut first_text = None;
    loop {
        line.clear();
        let read = reader.read_line(&mut line).expect("read the stream");
        assert!(read > 0, "the stream ended without a final object");
        let now = Instant::now();
        let chunk: Value = serde_json::from_str(&line).expect("an NDJSON line");
        assert!(chunk.get("error").is_none(), "{chunk}");
        if first_text.is_none() && chunk["response"].as_str().is_some_and(|t| !t.is_empty()) {
            first_text = Some(now);
        }
        if chunk["done"] == true {
            return Streamed {
                eval_count: chunk["eval_count"].as_u64().expect("eval_count"),
                eval_duration: Duration::from_nanos(
                    chunk["eval_duration"].as_u64().expect("eval_duration"),
                ),
                first_text: first_text.expect("no text before the final object"),
                done: now,
            };
        }
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn start_daemon(num_parallel: u32) -> Whaled {
    let daemon = Whaled::builder()
        .env("WHALE_NUM_THREADS", THREADS.to_string())
        .env("WHALE_NUM_PARALLEL", num_parallel.to_string())
        .env("WHALE_KEEP_ALIVE", "-1")
        .env("WHALE_LOG", "warn")
        .start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    daemon
}

/// Part 1: one stream through the API against the raw loop, alternating.
fn api_against_raw(backend: &LlamaBackend, model: &LlamaModel) {
    let daemon = start_daemon(1);
    let client = Whaled::http();
    // Loads the model in whaled and pages in both copies of the weights.
    let warm = generate(&client, &daemon, PROMPT, TOKENS);
    assert_eq!(warm.eval_count, TOKENS as u64, "the API stopped early");
    raw_round(backend, model);

    println!(
        "decode, gemma-3-270m Q4_K_M, {THREADS} threads, greedy, {TOKENS} tokens, raw llama-cpp-2 \
         vs whaled /api/generate (load average {})",
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
        let raw = raw_round(backend, model);
        std::thread::sleep(SETTLE);
        let api = generate(&client, &daemon, PROMPT, TOKENS);
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

/// Sum of `eval_count` over the whole batch and the batch's wall time, request sent to last
/// final object.
fn batch_rate(runs: &[Streamed], started: Instant) -> (u64, f64) {
    let tokens: u64 = runs.iter().map(|run| run.eval_count).sum();
    let end = runs.iter().map(|run| run.done).max().expect("runs");
    (tokens, tokens as f64 / (end - started).as_secs_f64())
}

/// Part 2: the four prompts concurrently against the same four one after another.
fn parallel_against_single() {
    let daemon = start_daemon(4);
    let client = Whaled::http();
    for prompt in PROMPTS {
        generate(&client, &daemon, prompt, TOKENS);
    }
    println!();
    println!(
        "aggregate decode, {} requests of {TOKENS} tokens, whaled with WHALE_NUM_PARALLEL=4: one \
         at a time vs all at once (load average {})",
        PROMPTS.len(),
        load_average()
    );
    println!(
        "{:>6}  {:>6}  {:>13}  {:>6}  {:>13}  {:>6}",
        "round", "tokens", "1 stream tok/s", "tokens", "4 streams tok/s", "ratio"
    );
    let mut ratios = Vec::new();
    let (mut singles, mut batches) = (vec![], vec![]);
    for round in 1..=PARALLEL_ROUNDS {
        std::thread::sleep(SETTLE);
        let started = Instant::now();
        let sequential: Vec<Streamed> = PROMPTS
            .iter()
            .map(|prompt| generate(&client, &daemon, prompt, TOKENS))
            .collect();
        let (single_tokens, single) = batch_rate(&sequential, started);
        std::thread::sleep(SETTLE);
        let started = Instant::now();
        let together: Vec<Streamed> = std::thread::scope(|scope| {
            let handles: Vec<_> = PROMPTS
                .iter()
                .map(|prompt| {
                    let (client, daemon) = (&client, &daemon);
                    scope.spawn(move || generate(client, daemon, prompt, TOKENS))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("stream thread"))
                .collect()
        });
        let (batch_tokens, batch) = batch_rate(&together, started);
        println!(
            "{round:>6}  {single_tokens:>6}  {single:>13.1}  {batch_tokens:>6}  {batch:>13.1}  {:>6.2}",
            batch / single
        );
        singles.push(single);
        batches.push(batch);
        ratios.push(batch / single);
    }
    println!(
        "{:>6}  {:>6}  {:>13.1}  {:>6}  {:>13.1}  {:>6.2}",
        "median",
        "",
        median(&singles),
        "",
        median(&batches),
        median(&ratios)
    );
    println!(
        "median 4 streams / 1 stream: {:.2}x (target >= 2.5x); load average {}",
        median(&ratios),
        load_average()
    );
}

fn main() {
    let path = fixtures::gemma();
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
    let backend = LlamaBackend::init().expect("llama.cpp backend");
    let model = LlamaModel::load_from_file(&backend, &path, &LlamaModelParams::default())
        .expect("load the model in-process");
    api_against_raw(&backend, &model);
    drop(model);
    parallel_against_single();
}
