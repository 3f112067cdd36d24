//! The engine's sampling against llama.cpp's own samplers, on every fixture architecture and
//! Gemma: greedy decoding (with and without repetition penalties) gives token for token what
//! llama.cpp's greedy chain gives, and a seeded draw repeats itself.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use tokio::sync::mpsc::Receiver;
use whale_daemon::engine::{
    Engine, Event, GenerateJob, LoadParams, Prompt, Sampling, Speculation, Summary,
};
use whale_tests::fixtures;

const N_CTX: u32 = 512;
const TOKENS: usize = 48;
const PROMPT: &str = "1, 2, 3, 4, 5,";

fn params(path: &Path) -> LoadParams {
    LoadParams {
        model_path: path.to_path_buf(),
        name: "sampling-test".to_owned(),
        num_ctx: N_CTX,
        num_parallel: 1,
        num_batch: 512,
        num_threads: Some(2),
        sample_threads: None,
        placement: whale_daemon::offload::Placement::default(),
        use_mmap: true,
        draft: None,
        workers: Vec::new(),
        worker_layers: 0,
        kv_pool: None,
    }
}

fn job(sampling: Sampling) -> GenerateJob {
    GenerateJob {
        prompt: Prompt::Text {
            text: PROMPT.to_owned(),
            add_special: true,
        },
        sampling,
        num_predict: TOKENS as i32,
        stop: Vec::new(),
        grammar: None,
        shift: false,
        truncate: false,
        logprobs: None,
        speculation: Speculation::default(),
    }
}

async fn collect(mut events: Receiver<Event>) -> Summary {
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(..) => {}
            Event::Done(summary) => return summary,
            Event::Error(error) | Event::Rejected(error) => panic!("job failed: {error}"),
        }
    }
    panic!("no Done");
}

/// The tokens llama.cpp's own sampler chain `chain` generates for the prompt, with the
/// penalties' window seeded with the prompt as the engine seeds it; stops at an end token.
fn llama_cpp_tokens(path: &Path, chain: impl FnOnce(&LlamaModel) -> LlamaSampler) -> Vec<i32> {
    let backend = whale_daemon::engine::llama_backend().expect("backend");
    let model =
        LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()).expect("load");
    let context_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(N_CTX))
        .with_n_batch(512)
        .with_n_threads(2)
        .with_n_threads_batch(2);
    let mut context = model.new_context(backend, context_params).expect("context");
    let prompt = model.vocab().tokenize(PROMPT.as_bytes(), true, true);
    let mut sampler = chain(&model);
    sampler.accept_many(prompt.iter());
    let mut batch = LlamaBatch::new(512, 1);
    for (position, &token) in prompt.iter().enumerate() {
        batch
            .add(token, position as i32, &[0], position + 1 == prompt.len())
            .unwrap();
    }
    context.decode(&mut batch).unwrap();
    let mut row = batch.n_tokens() - 1;
    let mut generated = Vec::new();
    for position in prompt.len()..prompt.len() + TOKENS {
        let token = sampler.sample(&context, row);
        if model.vocab().is_eog(token) {
            break;
        }
        generated.push(token.0);
        batch.clear();
        batch.add(token, position as i32, &[0], true).unwrap();
        context.decode(&mut batch).unwrap();
        row = 0;
    }
    generated
}

fn models() -> Vec<(&'static str, PathBuf)> {
    vec![
        ("deepseek2", fixtures::deepseek2()),
        ("qwen2", fixtures::qwen2()),
        ("llama", fixtures::llama()),
        ("gemma3", fixtures::gemma()),
    ]
}

async fn engine_tokens(engine: &Engine, sampling: Sampling) -> Vec<i32> {
    let summary = collect(engine.generate(job(sampling)).unwrap()).await;
    let prompt = summary.context.len() - summary.eval_count as usize;
    summary.context[prompt..].to_vec()
}

#[tokio::test]
async fn greedy_tokens_are_llama_cpps_greedy_tokens() {
    let penalised = Sampling {
        repeat_penalty: 1.3,
        repeat_last_n: 64,
        frequency_penalty: 0.2,
        presence_penalty: 0.1,
        ..Sampling::greedy()
    };
    for (name, path) in models() {
        let engine = Engine::load(params(&path)).await.expect("loads");
        let n_vocab = engine.info().n_vocab as i32;
        let plain = engine_tokens(&engine, Sampling::greedy()).await;
        let want = llama_cpp_tokens(&path, |_| {
            LlamaSampler::chain([LlamaSampler::greedy()], true)
        });
        assert_eq!(plain, want, "{name}: greedy");
        assert!(!plain.is_empty(), "{name}: generated nothing");

        let with_penalties = engine_tokens(&engine, penalised.clone()).await;
        let want = llama_cpp_tokens(&path, |_| {
            LlamaSampler::chain(
                [
                    LlamaSampler::penalties(n_vocab, 64, 1.3, 0.2, 0.1),
                    LlamaSampler::greedy(),
                ],
                true,
            )
        });
        assert_eq!(with_penalties, want, "{name}: greedy with penalties");
        engine.shutdown().await;
    }
}

/// R1's recommended sampling, seeded.
fn r1(seed: u32) -> Sampling {
    Sampling {
        temperature: 0.6,
        top_p: 0.95,
        seed: Some(seed),
        ..Sampling::default()
    }
}

/// The whole chain on the fast path, hot: penalties, top-k, top-p, min-p, a seeded draw.
fn hot() -> Sampling {
    Sampling {
        temperature: 1.5,
        top_k: 100,
        top_p: 0.9,
        min_p: 0.01,
        repeat_penalty: 1.2,
        seed: Some(5),
        ..Sampling::default()
    }
}

#[tokio::test]
async fn a_seeded_draw_repeats_and_another_seed_differs() {
    let path = fixtures::deepseek2();
    let engine = Engine::load(params(&path)).await.expect("loads");
    let first = engine_tokens(&engine, r1(11)).await;
    let again = engine_tokens(&engine, r1(11)).await;
    let other = engine_tokens(&engine, r1(12)).await;
    assert_eq!(first, again, "the same seed draws the same tokens");
    assert_ne!(first, other, "another seed draws others");
    // Hotter still: the whole chain (penalties, top-k, top-p, min-p) on the fast path.
    assert_eq!(
        engine_tokens(&engine, hot()).await,
        engine_tokens(&engine, hot()).await
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn sampling_threads_pick_the_tokens_one_thread_picks() {
    // Four sequences in one batch, picked on the engine thread and then on three sampling
    // threads: greedy, R1's seeded draw, and the whole chain with penalties.
    let samplings = [Sampling::greedy(), r1(11), r1(12), hot()];
    let path = fixtures::deepseek2();
    let mut runs = Vec::new();
    for sample_threads in [None, Some(3)] {
        let engine = Engine::load(LoadParams {
            num_parallel: 4,
            sample_threads,
            ..params(&path)
        })
        .await
        .expect("loads");
        // All four sent before the engine thread takes any, so both runs batch them alike.
        let streams: Vec<_> = samplings
            .iter()
            .map(|sampling| engine.generate(job(sampling.clone())).unwrap())
            .collect();
        let mut tokens = Vec::new();
        for events in streams {
            let summary = collect(events).await;
            let prompt = summary.context.len() - summary.eval_count as usize;
            tokens.push(summary.context[prompt..].to_vec());
        }
        engine.shutdown().await;
        runs.push(tokens);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(
        runs[0].iter().all(|tokens| tokens.len() == TOKENS),
        "{runs:?}"
    );
}
