//! Decode speed of the engine against raw `llama-cpp-2` on the same model, in the same run.
//!
//! Gemma 3 270M, 2 threads, greedy, 128 generated tokens per round, rounds alternating between
//! a hand-written llama-cpp-2 loop and `Engine::generate`. The engine must add nothing
//! measurable: the ratio engine/raw should be ≥ 0.98.
//!
//! `cargo bench --workspace --bench decode` (the fixture is fetched if absent).

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use whale_daemon::engine::{
    Engine, Event, GenerateJob, LoadParams, Prompt, Sampling, Speculation, llama_backend,
};
use whale_tests::bench::median;
use whale_tests::fixtures;
use whale_tests::raw::RawDecode;

const PROMPT: &str = "1, 2, 3, 4, 5,";
const TOKENS: usize = 128;
const ROUNDS: usize = 5;
const THREADS: u32 = 2;
const N_CTX: u32 = 512;

/// Generated tokens per second of a plain llama-cpp-2 loop: one sequence, one token per decode.
fn raw_round(model: &LlamaModel) -> f64 {
    RawDecode {
        prompts: &[PROMPT],
        tokens: TOKENS,
        threads: THREADS,
        n_ctx: N_CTX,
    }
    .run(llama_backend().expect("backend"), model)
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
            shift: true,
            truncate: true,
            logprobs: None,
            speculation: Speculation::off(),
        })
        .expect("engine running");
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(..) => {}
            Event::Done(summary) => {
                return f64::from(summary.eval_count) / summary.eval_duration.as_secs_f64();
            }
            Event::Error(error) | Event::Rejected(error) => panic!("{error}"),
        }
    }
    panic!("no summary");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let path = fixtures::gemma();
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
        sample_threads: None,
        placement: whale_daemon::offload::Placement::default(),
        use_mmap: true,
        draft: None,
        workers: Vec::new(),
        worker_layers: 0,
        kv_pool: None,
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
    let raw = median(&raws);
    let through_engine = median(&engines);
    println!(
        "{:>5}  {raw:>12.1}  {through_engine:>12.1}  {:>6.3}",
        "median",
        through_engine / raw
    );
    engine.shutdown().await;
}
