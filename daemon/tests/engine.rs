//! The engine against a real model: Gemma 3 270M (a base model), greedy decoding.
//!
//! The fixture lives in `$WHALE_FIXTURES` (default `<workspace>/.cache/fixtures`), where the
//! whale-tests fixtures module fetches it; these tests fail with a clear message without it.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use whale_daemon::engine::{
    DoneReason, Engine, EngineError, Event, GenerateJob, LoadParams, Prompt, Sampling, Speculation,
    Summary,
};

const COUNTING: &str = "1, 2, 3, 4, 5,";

fn gemma_path() -> PathBuf {
    let root = std::env::var_os("WHALE_FIXTURES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/fixtures"),
        PathBuf::from,
    );
    let path = root.join("gemma-3-270m-q4_k_m.gguf");
    assert!(
        path.is_file(),
        "missing fixture {}: fetch it with the whale-tests fixtures (fixtures::gemma) or set \
         WHALE_FIXTURES to the folder holding gemma-3-270m-q4_k_m.gguf",
        path.display()
    );
    path
}

fn params(num_parallel: u32) -> LoadParams {
    LoadParams {
        model_path: gemma_path(),
        name: "gemma3-test".to_owned(),
        num_ctx: 512,
        num_parallel,
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

fn job(prompt: &str, num_predict: i32) -> GenerateJob {
    GenerateJob {
        prompt: Prompt::Text {
            text: prompt.to_owned(),
            add_special: true,
        },
        sampling: Sampling::greedy(),
        num_predict,
        stop: Vec::new(),
        grammar: None,
        shift: true,
        truncate: true,
        logprobs: None,
        speculation: Speculation::default(),
    }
}

/// Reads a job to its end: the text and the summary.
async fn collect(mut events: Receiver<Event>) -> (String, Summary) {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(piece, _) => text.push_str(&piece),
            Event::Done(summary) => return (text, summary),
            Event::Error(error) | Event::Rejected(error) => panic!("job failed: {error}"),
        }
    }
    panic!("the event channel closed without Done");
}

async fn run(engine: &Engine, job: GenerateJob) -> (String, Summary) {
    collect(engine.generate(job).expect("engine is running")).await
}

#[tokio::test]
async fn greedy_counting_continues_the_sequence() {
    let engine = Engine::load(params(1)).await.expect("gemma loads");
    assert_eq!(engine.info().architecture, "gemma3");
    assert!(engine.info().n_vocab > 0);
    let (text, summary) = run(&engine, job(COUNTING, 8)).await;
    assert!(text.starts_with(" 6, 7, 8"), "got {text:?}");
    assert_eq!(summary.done_reason, DoneReason::Length);
    assert_eq!(summary.eval_count, 8);
    let tokens = engine.tokenize(COUNTING, true).await.unwrap();
    assert_eq!(summary.prompt_eval_count as usize, tokens.len());
    assert_eq!(summary.context.len(), tokens.len() + 8);
    assert_eq!(&summary.context[..tokens.len()], tokens.as_slice());
    let rendered = engine.detokenize(&summary.context[tokens.len()..]).await;
    assert_eq!(rendered.unwrap(), text);
    engine.shutdown().await;
}

#[tokio::test]
async fn num_predict_ends_with_length() {
    let engine = Engine::load(params(1)).await.expect("gemma loads");
    let (_, summary) = run(&engine, job("The capital of France is", 5)).await;
    assert_eq!(summary.done_reason, DoneReason::Length);
    assert_eq!(summary.eval_count, 5);
    engine.shutdown().await;
}

#[tokio::test]
async fn stop_string_across_tokens_is_never_emitted() {
    let engine = Engine::load(params(1)).await.expect("gemma loads");
    let mut stopping = job(COUNTING, 16);
    // " 7, 8" spans several tokens of the known continuation " 6, 7, 8, …".
    stopping.stop = vec!["7, 8".to_owned()];
    let mut events = engine.generate(stopping).unwrap();
    let mut pieces = Vec::new();
    let summary = loop {
        match events.recv().await.expect("events until Done") {
            Event::Text(piece, _) => pieces.push(piece),
            Event::Done(summary) => break summary,
            Event::Error(error) | Event::Rejected(error) => panic!("job failed: {error}"),
        }
    };
    let text = pieces.concat();
    assert_eq!(text, " 6, ");
    assert!(pieces.iter().all(|piece| !piece.contains('7')));
    assert_eq!(summary.done_reason, DoneReason::Stop);
    engine.shutdown().await;
}

/// llama.cpp's kernels are not batch-invariant: a sequence decoded in a batch of four can differ
/// from its solo run in the last bits, which flips a greedy near-tie after a dozen tokens on this
/// tiny model. A short horizon and prompts with a clear continuation check that batching mixes
/// no sequences up without depending on such ties (a story's heroine, "Lily" or "Mary", once
/// flipped four tokens in).
const PARALLEL_TOKENS: i32 = 8;

#[tokio::test]
async fn parallel_jobs_match_their_solo_runs() {
    let prompts = [
        COUNTING,
        "The capital of France is",
        "Monday, Tuesday, Wednesday,",
        "def fibonacci(n):",
    ];
    let engine = Engine::load(params(4)).await.expect("gemma loads");
    let mut solo = Vec::new();
    for prompt in prompts {
        solo.push(run(&engine, job(prompt, PARALLEL_TOKENS)).await.0);
    }
    let receivers: Vec<_> = prompts
        .iter()
        .map(|prompt| engine.generate(job(prompt, PARALLEL_TOKENS)).unwrap())
        .collect();
    let mut together = Vec::new();
    for receiver in receivers {
        together.push(collect(receiver).await);
    }
    for ((text, summary), alone) in together.iter().zip(&solo) {
        assert_eq!(text, alone);
        assert_eq!(summary.eval_count, PARALLEL_TOKENS as u32);
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn dropped_receiver_frees_the_slot() {
    let engine = Engine::load(params(1)).await.expect("gemma loads");
    let mut long = engine.generate(job(COUNTING, 400)).unwrap();
    // Wait until it is generating, then walk away.
    match long.recv().await {
        Some(Event::Text(..)) => {}
        other => panic!("unexpected {other:?}"),
    }
    drop(long);
    let mut next = engine.generate(job("The capital of France is", 3)).unwrap();
    // The only slot must be handed over long before 400 tokens could be generated.
    let first = tokio::time::timeout(Duration::from_secs(10), next.recv())
        .await
        .expect("the second job starts while the first would still be running")
        .expect("an event");
    assert!(matches!(first, Event::Text(..)), "got {first:?}");
    let (_, summary) = collect(next).await;
    assert_eq!(summary.eval_count, 3);
    engine.shutdown().await;
}

#[tokio::test]
async fn follow_up_prompt_evaluates_only_new_tokens() {
    let engine = Engine::load(params(2)).await.expect("gemma loads");
    let first = "The quick brown fox jumps over the lazy dog. The quick brown fox";
    let (_, a) = run(&engine, job(first, 4)).await;
    let a_tokens = engine.tokenize(first, true).await.unwrap();
    assert_eq!(a.prompt_eval_count as usize, a_tokens.len());

    // Diverges from A's own continuation right away, so only the prompt's prefix is reusable.
    let second = format!("{first} and the cat sat on the mat. The");
    let b_tokens = engine.tokenize(&second, true).await.unwrap();
    assert_eq!(&b_tokens[..a_tokens.len()], a_tokens.as_slice());
    let (_, b) = run(&engine, job(&second, 4)).await;
    let new_tokens = b_tokens.len() - a_tokens.len();
    assert!(
        (new_tokens..=new_tokens + 1).contains(&(b.prompt_eval_count as usize)),
        "evaluated {} tokens, {new_tokens} are new",
        b.prompt_eval_count
    );

    // The same prompt again re-evaluates only its last token.
    let (_, c) = run(&engine, job(&second, 4)).await;
    assert_eq!(c.prompt_eval_count, 1);
    engine.shutdown().await;
}

/// A prompt longer than the context: refused with `truncate` off; by default cut to the
/// context (its first 4 tokens and its end, as Ollama), after which a model that can shift goes
/// on and one that cannot ends at once.
#[tokio::test]
async fn prompt_longer_than_context_is_truncated_or_refused() {
    let long = "one two three ".repeat(200);
    let engine = Engine::load(LoadParams {
        model_path: whale_tests::fixtures::qwen2(),
        num_ctx: 64,
        ..params(1)
    })
    .await
    .expect("qwen2 loads");
    let mut refused = job(&long, 4);
    refused.truncate = false;
    let mut events = engine.generate(refused).unwrap();
    match events.recv().await {
        Some(Event::Rejected(message)) => {
            assert!(message.contains("context length"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let (_, summary) = run(&engine, job(&long, 4)).await;
    assert_eq!(summary.prompt_eval_count, 64);
    assert_eq!(summary.eval_count, 4);
    engine.shutdown().await;

    let engine = Engine::load(LoadParams {
        num_ctx: 64,
        ..params(1)
    })
    .await
    .expect("gemma loads");
    let (_, summary) = run(&engine, job(&long, 4)).await;
    assert_eq!(summary.prompt_eval_count, 64);
    assert_eq!(summary.done_reason, DoneReason::Length);
    assert_eq!(summary.eval_count, 1, "Gemma's sliding window cannot shift");
    engine.shutdown().await;
}

#[tokio::test]
async fn embeddings_are_pooled_vectors_that_normalise() {
    let engine = Engine::load(params(1)).await.expect("gemma loads");
    let (before, _) = run(&engine, job(COUNTING, 4)).await;
    let mut result = engine
        .embed(vec!["hello world".to_owned(), "goodbye".to_owned()], true)
        .await
        .expect("embeds");
    assert_eq!(result.vectors.len(), 2);
    let norm = |vector: &[f32]| vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    let raw = result.clone();
    result.normalize();
    for (vector, unnormalised) in result.vectors.iter().zip(&raw.vectors) {
        assert_eq!(vector.len(), engine.info().n_embd as usize);
        assert!(
            (norm(unnormalised) - 1.0).abs() > 1e-3,
            "the engine gives the model's vector as is"
        );
        assert!((norm(vector) - 1.0).abs() < 1e-3, "norm {}", norm(vector));
    }
    assert_ne!(result.vectors[0], result.vectors[1]);
    let too_long = "word ".repeat(2000);
    let error = engine.embed(vec![too_long], false).await.unwrap_err();
    assert!(
        matches!(error, EngineError::ContextTooLong { .. }),
        "{error}"
    );
    let (after, _) = run(&engine, job(COUNTING, 4)).await;
    assert_eq!(before, after, "the same engine generates and embeds");
    engine.shutdown().await;
}

#[tokio::test]
async fn missing_or_garbage_file_is_a_load_error() {
    let mut missing = params(1);
    missing.model_path = PathBuf::from("/nonexistent/model.gguf");
    let error = Engine::load(missing).await.err().expect("load fails");
    assert!(matches!(error, EngineError::Load { .. }), "{error}");

    let dir = std::env::temp_dir().join(format!("whale-engine-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in [
        ("garbage.gguf", b"this is not a model at all".as_slice()),
        ("truncated.gguf", b"GGUF\x03\x00\x00\x00\xff\xff".as_slice()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let mut garbage = params(1);
        garbage.model_path = path;
        let error = Engine::load(garbage).await.err().expect("load fails");
        assert!(matches!(error, EngineError::Load { .. }), "{error}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A generation longer than its context goes on past the full slot by dropping old tokens
/// (context shift), for the architectures llama.cpp can shift: `DeepSeek` V3/R1 (`deepseek2`,
/// MLA) and the distills' `qwen2` and `llama`.
#[tokio::test]
async fn a_full_context_shifts_and_generation_goes_on() {
    for (name, path) in [
        ("deepseek2", whale_tests::fixtures::deepseek2()),
        ("qwen2", whale_tests::fixtures::qwen2()),
        ("llama", whale_tests::fixtures::llama()),
    ] {
        let engine = Engine::load(LoadParams {
            model_path: path,
            num_ctx: 64,
            ..params(1)
        })
        .await
        .unwrap_or_else(|error| panic!("{name} loads: {error}"));
        let (_, summary) = run(&engine, job("Tell me a long story.", 200)).await;
        assert_eq!(summary.done_reason, DoneReason::Length, "{name}");
        assert_eq!(
            summary.eval_count, 200,
            "{name}: generated past the 64-token context"
        );
        // The slot is still usable afterwards.
        let (_, again) = run(&engine, job("Again.", 4)).await;
        assert_eq!(again.eval_count, 4, "{name}");
    }
}

/// `num_predict` −1 (unbounded) shifts too but ends after 10 × the context, as Ollama's; −2
/// fills the context once; `shift: false` ends at the full context.
#[tokio::test]
async fn unbounded_generation_ends_and_shift_can_be_refused() {
    let engine = Engine::load(LoadParams {
        model_path: whale_tests::fixtures::deepseek2(),
        num_ctx: 32,
        ..params(1)
    })
    .await
    .expect("deepseek2 loads");
    let (_, unbounded) = run(&engine, job("Tell me a long story.", -1)).await;
    assert_eq!(unbounded.done_reason, DoneReason::Length);
    assert_eq!(unbounded.eval_count, 320);

    let (_, fill) = run(&engine, job("Tell me a long story.", -2)).await;
    assert_eq!(fill.done_reason, DoneReason::Length);
    // The context holds the prompt and every generated token but the last.
    assert_eq!(fill.context.len(), 32 + 1, "{fill:?}");

    let mut unshifted = job("Tell me a long story.", 200);
    unshifted.shift = false;
    let (_, unshifted) = run(&engine, unshifted).await;
    assert_eq!(unshifted.done_reason, DoneReason::Length);
    assert!(unshifted.eval_count < 32, "{unshifted:?}");
    engine.shutdown().await;
}

/// Gemma 3's sliding-window cache cannot shift: a full slot ends the job instead.
#[tokio::test]
async fn a_full_context_ends_the_job_where_it_cannot_shift() {
    let engine = Engine::load(LoadParams {
        num_ctx: 64,
        ..params(1)
    })
    .await
    .expect("gemma loads");
    let (_, summary) = run(&engine, job(COUNTING, 200)).await;
    assert_eq!(summary.done_reason, DoneReason::Length);
    assert!(summary.eval_count < 64, "{}", summary.eval_count);
}
