//! Cold start: from no model loaded to the first generated token, in one run.
//!
//! Each round, one after another and never overlapping:
//! - **raw**: this process loads Gemma 3 270M with llama-cpp-2 (memory-mapped, as whaled's
//!   runner does), makes a context, evaluates the prompt and takes the first token by argmax —
//!   the least any server can do, and the baseline of the ratios;
//! - **API**: a streamed `/api/generate` to a whaled with nothing loaded, until the first chunk
//!   with text: a runner process is started, the model loaded in it, the prompt evaluated;
//! - **CLI**: `whale run` of the same prompt against that whaled with nothing loaded, until the
//!   first byte on its standard output (the CLI's start, `/api/show`, then the same path).
//!
//! After each whaled round the model is unloaded (`keep_alive: 0`) and the round waits until its
//! runner process has exited. The model file stays in the page cache throughout, so every
//! side reads it from memory. 2 threads, 512 tokens of context.
//!
//! `cargo bench --workspace --bench cold`

use std::io::{BufRead, BufReader, Read};
use std::num::NonZeroU32;
use std::process::Stdio;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use serde_json::json;
use whale_tests::bench::{load_average, median};
use whale_tests::fixtures;
use whale_tests::whaled::{Whaled, wait_gone};

const PROMPT: &str = "1, 2, 3, 4, 5,";
const ROUNDS: usize = 7;
const THREADS: u32 = 2;
const N_CTX: u32 = 512;
/// A template that puts the messages' text as they are, so the base model counts on.
const RAW_TEMPLATE: &str =
    "{{ bos_token }}{% for message in messages %}{{ message.content }}{% endfor %}";

/// Load, context, prompt, first token: seconds, in this process.
fn raw(backend: &LlamaBackend, path: &std::path::Path) -> f64 {
    let started = Instant::now();
    let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
        .expect("load Gemma");
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(N_CTX))
        .with_n_batch(N_CTX)
        .with_n_threads(THREADS as i32)
        .with_n_threads_batch(THREADS as i32);
    let mut context = model.new_context(backend, params).expect("context");
    let tokens = model.vocab().tokenize(PROMPT.as_bytes(), true, false);
    let mut batch = LlamaBatch::new(N_CTX as usize, 1);
    let last = tokens.len() - 1;
    for (position, &token) in tokens.iter().enumerate() {
        batch
            .add(token, position as i32, &[0], position == last)
            .expect("batch");
    }
    context.decode(&mut batch).expect("decode");
    let logits = context.get_logits_ith(last as i32);
    let first = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(index, _)| index);
    let elapsed = started.elapsed().as_secs_f64();
    assert!(first.is_some());
    elapsed
}

/// A streamed generate on an unloaded model until its first text: seconds.
fn api(daemon: &Whaled) -> f64 {
    let started = Instant::now();
    let response = Whaled::http()
        .post(format!("{}/api/generate", daemon.url()))
        .json(&json!({"model": "counter", "prompt": PROMPT, "raw": true,
                      "options": {"temperature": 0, "num_predict": 8, "num_ctx": N_CTX}}))
        .send()
        .expect("generate");
    let mut first = None;
    for line in BufReader::new(response).lines() {
        let line = line.expect("stream");
        let value: serde_json::Value = serde_json::from_str(&line).expect("NDJSON");
        if first.is_none()
            && value["response"]
                .as_str()
                .is_some_and(|text| !text.is_empty())
        {
            first = Some(started.elapsed().as_secs_f64());
        }
    }
    first.expect("some text")
}

/// `whale run` on an unloaded model until the first byte of its answer: seconds.
fn cli(daemon: &Whaled) -> f64 {
    let started = Instant::now();
    let mut child = daemon
        .whale(["run", "counter", PROMPT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("whale run");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut byte = [0u8; 1];
    let read = stdout.read(&mut byte).expect("read the answer");
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(read, 1, "whale run printed nothing");
    let _ = stdout.read_to_end(&mut Vec::new());
    assert!(child.wait().expect("wait").success());
    elapsed
}

/// Unloads the model and waits until its runner has exited.
fn unload(daemon: &Whaled) {
    let runners = daemon.runner_pids("counter");
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "counter", "keep_alive": 0}),
    );
    assert_eq!(status, 200, "{body}");
    if let Some(&pid) = runners.last() {
        assert!(
            wait_gone(pid, Duration::from_secs(30)),
            "runner {pid} stays"
        );
    }
}

fn main() {
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
    let gemma = fixtures::gemma();
    let daemon = Whaled::builder()
        .env("WHALE_NUM_THREADS", THREADS.to_string())
        .start();
    daemon.create_from_gguf("gemma", &gemma);
    let (status, body) = daemon.post(
        "/api/create",
        &json!({"model": "counter", "from": "gemma", "template": RAW_TEMPLATE,
                "parameters": {"num_predict": 8, "temperature": 0, "num_ctx": N_CTX},
                "stream": false}),
    );
    assert_eq!(status, 200, "create counter: {body}");
    let backend = LlamaBackend::init().expect("llama.cpp backend");

    // Warm up every path once (page cache, the binaries).
    raw(&backend, &gemma);
    api(&daemon);
    unload(&daemon);
    cli(&daemon);
    unload(&daemon);

    println!(
        "cold start to the first token, Gemma 3 270M Q4_K_M, {THREADS} threads (load average {})",
        load_average()
    );
    println!("| round | raw s | API s | API/raw | whale run s | run/raw |");
    println!("|---|---|---|---|---|---|");
    let (mut raws, mut apis, mut clis) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let r = raw(&backend, &gemma);
        let a = api(&daemon);
        unload(&daemon);
        let c = cli(&daemon);
        unload(&daemon);
        println!(
            "| {round} | {r:.3} | {a:.3} | {:.2} | {c:.3} | {:.2} |",
            a / r,
            c / r
        );
        raws.push(r);
        apis.push(a);
        clis.push(c);
    }
    let (r, a, c) = (median(&raws), median(&apis), median(&clis));
    println!(
        "| median | {r:.3} | {a:.3} | {:.2} | {c:.3} | {:.2} |",
        a / r,
        c / r
    );
    println!("load average after: {}", load_average());
}
