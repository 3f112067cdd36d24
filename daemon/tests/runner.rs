//! Runner processes driven directly, as the scheduler drives them: the engine behind a Unix
//! socket gives what the engine in-process gives, and a file that makes llama.cpp abort kills
//! only its runner (the validator is not asked here, on purpose).

use std::path::{Path, PathBuf};

use whale_daemon::engine::{
    Engine, EngineError, Event, GenerateJob, LoadParams, Prompt, Sampling, Speculation,
};
use whale_daemon::runner::{Events, Launcher};
use whale_tests::fixtures;
use whale_tests::gguf::broken;

fn launcher() -> Launcher {
    Launcher::new(PathBuf::from(env!("CARGO_BIN_EXE_whaled")), "info")
}

fn params(path: &Path) -> LoadParams {
    LoadParams {
        model_path: path.to_path_buf(),
        name: "runner-test".to_owned(),
        num_ctx: 256,
        num_parallel: 2,
        num_batch: 256,
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
        logprobs: Some(2),
        speculation: Speculation::default(),
    }
}

async fn collect(mut events: Events) -> (String, usize, Event) {
    let mut text = String::new();
    let mut logprobs = 0;
    loop {
        match events.recv().await.expect("a last event") {
            Event::Text(piece, probs) => {
                text.push_str(&piece);
                logprobs += probs.len();
            }
            last => return (text, logprobs, last),
        }
    }
}

#[tokio::test]
async fn a_runner_generates_what_the_engine_generates_in_process() {
    let path = fixtures::deepseek2();
    let runner = launcher()
        .spawn("tiny")
        .await
        .expect("spawns")
        .load(params(&path))
        .await
        .expect("loads");
    let engine = Engine::load(params(&path)).await.expect("loads in-process");
    assert_eq!(runner.info().n_vocab, engine.info().n_vocab);
    assert_eq!(runner.info().chat_template, engine.info().chat_template);

    let (text, logprobs, last) = collect(runner.generate(job("Hello", 24)).expect("queued")).await;
    let mut local = engine.generate(job("Hello", 24)).expect("queued");
    let mut expected = String::new();
    let expected_last = loop {
        match local.recv().await.expect("event") {
            Event::Text(piece, _) => expected.push_str(&piece),
            last => break last,
        }
    };
    assert_eq!(text, expected);
    let (Event::Done(summary), Event::Done(expected_summary)) = (&last, &expected_last) else {
        panic!("{last:?} / {expected_last:?}");
    };
    assert_eq!(summary.context, expected_summary.context);
    assert_eq!(logprobs, summary.eval_count as usize);

    let tokens = runner
        .tokenize("Hello world", true)
        .await
        .expect("tokenizes");
    assert_eq!(tokens, engine.tokenize("Hello world", true).await.unwrap());
    assert_eq!(
        runner.detokenize(&tokens).await.unwrap(),
        engine.detokenize(&tokens).await.unwrap()
    );
    let refused = runner.detokenize(&[-5]).await.unwrap_err();
    assert!(matches!(refused, EngineError::InvalidInput(_)), "{refused}");

    // A dropped stream cancels its job; the runner goes on serving.
    let cancelled = runner.generate(job("Hello", 100_000)).expect("queued");
    drop(cancelled);
    let (again, _, _) = collect(runner.generate(job("Hello", 24)).expect("queued")).await;
    assert_eq!(again, expected);

    runner.shutdown("done").await;
    assert!(matches!(
        runner.process().exit_reason(),
        Some(EngineError::Stopped(_))
    ));
    let late = runner.tokenize("x", false).await.unwrap_err();
    assert!(matches!(late, EngineError::Stopped(_)), "{late}");
    engine.shutdown().await;
}

/// Every file of `broken::LLAMA_ASSERTS` (each passes every check but one of the validator,
/// and trips one llama.cpp assertion), handed straight to a runner: the runner dies by the
/// signal llama.cpp raises, the error says so and quotes llama.cpp, and this process and a
/// new runner go on. Some files only abort when the first batch is decoded, or when the
/// embedding context is made; those are generated and embedded with.
#[tokio::test]
async fn a_file_llama_cpp_aborts_on_kills_only_its_runner() {
    let dir = tempfile::tempdir().unwrap();
    for case in broken::LLAMA_ASSERTS {
        let path = dir.path().join(format!("{}.gguf", case.name));
        (case.write)(&path).unwrap();
        let process = launcher().spawn(case.name).await.expect("spawns");
        let message = match process.load(params(&path)).await {
            Err(error) => error.to_string(),
            Ok(runner) => {
                let (_, _, last) = collect(runner.generate(job("Hello", 2)).expect("queued")).await;
                match last {
                    Event::Error(message) => message,
                    _ => runner
                        .embed(vec!["Hello".to_owned()], true)
                        .await
                        .expect_err("llama.cpp aborts at the latest when embedding")
                        .to_string(),
                }
            }
        };
        assert!(
            message.starts_with("model runner crashed: killed by signal"),
            "{}: {message}",
            case.name
        );
        // The exact assertion may differ from the one `tests/fixtures.rs` sees: the runner's
        // context is another shape. What matters is that llama.cpp killed it, and it says so.
        if case.message.is_empty() {
            assert!(message.contains("SIGFPE"), "{}: {message}", case.name);
        } else {
            assert!(message.contains("SIGABRT"), "{}: {message}", case.name);
            assert!(
                message.contains(".cpp:") || message.contains(".c:"),
                "{}: quotes where llama.cpp died: {message}",
                case.name
            );
        }
    }

    // This process is fine, and a good model still loads in a new runner.
    let runner = launcher()
        .spawn("tiny")
        .await
        .unwrap()
        .load(params(&fixtures::deepseek2()))
        .await
        .expect("loads");
    runner.shutdown("done").await;
}

#[tokio::test]
async fn a_load_error_is_reported_and_the_runner_exits() {
    let process = launcher().spawn("missing").await.expect("spawns");
    let error = process
        .load(params(Path::new("/nonexistent/model.gguf")))
        .await
        .err()
        .expect("cannot load");
    assert!(matches!(error, EngineError::Load { .. }), "{error}");
}
