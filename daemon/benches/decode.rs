//! Decode speed of the engine against raw `llama-cpp-2` on the same model, in the same run.
//!
//! Gemma 3 270M, 2 threads, greedy, 128 generated tokens per round, rounds alternating between
//! a hand-written llama-cpp-2 loop and `Engine::generate`. The engine must add nothing
//! measurable: the ratio engine/raw should be ≥ 0.98.
//!
//! `cargo bench -p whale-daemon --bench decode` (fixture from `$WHALE_FIXTURES`, default
//! `<workspace>/.cache/fixtures`).

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use whale_daemon::engine::{
    Engine, Event, GenerateJob, LoadParams, Prompt, Sampling, llama_backend,
};

const PROMPT: &str = "1, 2, 3, 4, 5,";
const TOKENS: usize = 128;
const ROUNDS: usize = 5;
const THREADS: u32 = 2;
const N_CTX: u32 = 512;

fn gemma_path() -> PathBuf {
    let root = std::env::var_os("WHALE_FIXTURES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/fixtures"),
        PathBuf::from,
    );
    let path = root.join("gemma-3-270m-q4_k_m.gguf");
    assert!(path.is_file(), "missing fixture {}", path.display());
    path
}

/// Generated tokens per second of a plain llama-cpp-2 loop: one sequence, one token per decode.
fn raw_round(model: &LlamaModel) -> f64 {
    let backend = llama_backend().expect("backend");
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
            .unwrap();
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
        batch.add(token, position, &[0], true).unwrap();
        position += 1;
        context.decode(&mut batch).expect("decode");
        row = 0;
    }
    generated as f64 / started.elapsed().as_secs_f64()
}

/// Generated tokens per second through the engine, from its own summary.
async fn engine_round(engine: &Engine) -> f64 {
    let mut events = engine
        .generate(GenerateJob {
            prompt: Prompt::Text {
                text: PROMPT.to_owned(),
                add_special: true,
            },
            sampling: Sampling::greedy(),
            num_predict: TOKENS as i32,
            stop: Vec::new(),
            grammar: None,
        })
        .expect("engine running");
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(_) => {}
            Event::Done(summary) => {
                return f64::from(summary.eval_count) / summary.eval_duration.as_secs_f64();
            }
            Event::Error(error) => panic!("{error}"),
        }
    }
    panic!("no summary");
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let path = gemma_path();
    let backend = llama_backend().expect("backend");
    let model = LlamaModel::load_from_file(backend, &path, &LlamaModelParams::default())
        .expect("raw model");
    let engine = Engine::load(LoadParams {
        model_path: path,
        name: "bench".to_owned(),
        num_ctx: N_CTX,
        num_parallel: 1,
        num_batch: 512,
        num_threads: Some(THREADS),
        placement: whale_daemon::offload::Placement::default(),
        use_mmap: true,
        embedding: false,
    })
    .await
    .expect("engine");

    // Warm up both paths (page in the weights, settle the CPU clocks).
    raw_round(&model);
    engine_round(&engine).await;

    println!("decode, gemma-3-270m Q4_K_M, {THREADS} threads, greedy, {TOKENS} tokens");
    println!(
        "{:>5}  {:>12}  {:>12}  {:>6}",
        "round", "raw tok/s", "engine tok/s", "ratio"
    );
    let mut raws = Vec::new();
    let mut engines = Vec::new();
    for round in 1..=ROUNDS {
        let raw = raw_round(&model);
        let through_engine = engine_round(&engine).await;
        println!(
            "{round:>5}  {raw:>12.1}  {through_engine:>12.1}  {:>6.3}",
            through_engine / raw
        );
        raws.push(raw);
        engines.push(through_engine);
    }
    let raw = median(&mut raws);
    let through_engine = median(&mut engines);
    println!(
        "{:>5}  {raw:>12.1}  {through_engine:>12.1}  {:>6.3}",
        "median",
        through_engine / raw
    );
    engine.shutdown().await;
}
