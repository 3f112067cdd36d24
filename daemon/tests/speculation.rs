//! Speculative decoding in the engine, by prompt lookup and by a draft model: drafted tokens
//! verified in one pass change nothing but speed. Greedy output is token for token the output
//! without drafting — on Gemma with a prompt the model copies from, alone and among concurrent
//! sequences, and with a draft model (Gemma drafting for itself, the qwen2 fixture for the
//! deepseek2 one) — and a seeded draw keeps its distribution.

use std::path::Path;

use tokio::sync::mpsc::Receiver;
use whale_daemon::engine::{
    DraftParams, Engine, Event, GenerateJob, LoadParams, Prompt, Sampling, Speculation,
    SpeculationMode, Summary,
};
use whale_tests::bench::CODE_EDIT_PROMPT;
use whale_tests::fixtures;

fn params(path: &Path, num_parallel: u32) -> LoadParams {
    LoadParams {
        model_path: path.to_path_buf(),
        name: "speculation-test".to_owned(),
        num_ctx: 1024,
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

fn job(prompt: &str, num_predict: i32, mode: SpeculationMode) -> GenerateJob {
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
        speculation: Speculation {
            mode,
            draft_max: Speculation::DRAFT_MAX,
        },
    }
}

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
async fn drafting_keeps_greedy_output_token_for_token() {
    let engine = Engine::load(params(&fixtures::gemma(), 1))
        .await
        .expect("gemma loads");
    let (plain, plain_summary) =
        run(&engine, job(CODE_EDIT_PROMPT, 96, SpeculationMode::Off)).await;
    assert_eq!(plain_summary.draft_count, 0);
    for mode in [SpeculationMode::Ngram, SpeculationMode::Auto] {
        let (drafted, summary) = run(&engine, job(CODE_EDIT_PROMPT, 96, mode)).await;
        assert_eq!(drafted, plain, "{mode:?}");
        assert_eq!(summary.context, plain_summary.context, "{mode:?}");
        assert_eq!(summary.eval_count, plain_summary.eval_count);
        assert!(
            summary.draft_accepted_count * 2 > summary.draft_count && summary.draft_count > 20,
            "{mode:?}: {} of {} drafts accepted",
            summary.draft_accepted_count,
            summary.draft_count
        );
    }
    engine.shutdown().await;
}

/// Four sequences decoded together, two drafting and two not: each writes what it writes
/// alone without drafting. llama.cpp's arithmetic varies with the tokens in a batch (its
/// kernels are not batch-invariant, and activations are quantized), which flips greedy near-ties
/// of this small model after a few dozen tokens whether or not anything is drafted; the horizon
/// is short enough to test the bookkeeping (rows, positions, KV rollback) without them.
#[tokio::test]
async fn drafting_and_plain_sequences_share_a_batch() {
    const TOKENS: i32 = 16;
    let prompts = [
        CODE_EDIT_PROMPT,
        "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2,",
        CODE_EDIT_PROMPT,
        "Monday, Tuesday, Wednesday,",
    ];
    let modes = [
        SpeculationMode::Ngram,
        SpeculationMode::Ngram,
        SpeculationMode::Off,
        SpeculationMode::Off,
    ];
    let solo_engine = Engine::load(params(&fixtures::gemma(), 1))
        .await
        .expect("gemma loads");
    let mut solo = Vec::new();
    for prompt in prompts {
        solo.push(
            run(&solo_engine, job(prompt, TOKENS, SpeculationMode::Off))
                .await
                .0,
        );
    }
    solo_engine.shutdown().await;
    let engine = Engine::load(params(&fixtures::gemma(), 4))
        .await
        .expect("gemma loads");
    let receivers: Vec<_> = prompts
        .iter()
        .zip(modes)
        .map(|(prompt, mode)| engine.generate(job(prompt, TOKENS, mode)).expect("running"))
        .collect();
    let results = futures::future::join_all(receivers.into_iter().map(collect)).await;
    for (index, ((text, summary), mode)) in results.iter().zip(modes).enumerate() {
        assert_eq!(text, &solo[index], "sequence {index} ({mode:?})");
        if mode == SpeculationMode::Off {
            assert_eq!(summary.draft_count, 0);
        }
    }
    assert!(
        results[0].1.draft_accepted_count > 0,
        "the code edit drafted nothing"
    );
    engine.shutdown().await;
}

/// A seeded draw with drafting keeps the distribution of a draw without: on a prompt the
/// model continues by copying, the first tokens' frequencies over many seeds agree within
/// sampling noise, while drafts are checked at most steps.
#[tokio::test]
async fn drafting_keeps_the_sampled_distribution() {
    const RUNS: u32 = 150;
    const TOKENS: usize = 6;
    let prompt = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2,";
    let engine = Engine::load(params(&fixtures::gemma(), 1))
        .await
        .expect("gemma loads");
    let tokens = engine
        .tokenize(prompt, true)
        .await
        .expect("tokenizes")
        .len();
    let mut counts = [
        vec![std::collections::HashMap::<i32, u32>::new(); TOKENS],
        vec![std::collections::HashMap::<i32, u32>::new(); TOKENS],
    ];
    let (mut drafted, mut accepted) = (0, 0);
    for seed in 0..RUNS {
        for (side, mode) in [SpeculationMode::Off, SpeculationMode::Ngram]
            .into_iter()
            .enumerate()
        {
            let mut sampled = job(prompt, TOKENS as i32, mode);
            sampled.sampling = Sampling {
                temperature: 1.5,
                top_k: 40,
                top_p: 1.0,
                seed: Some(seed),
                ..Sampling::default()
            };
            let (_, summary) = run(&engine, sampled).await;
            for (position, &token) in summary.context[tokens..].iter().enumerate() {
                *counts[side][position].entry(token).or_default() += 1;
            }
            drafted += summary.draft_count;
            accepted += summary.draft_accepted_count;
        }
    }
    engine.shutdown().await;
    assert!(drafted > RUNS, "too few drafts to test: {drafted}");
    assert!(
        accepted > 0 && accepted < drafted,
        "{accepted} of {drafted}"
    );
    // Total variation distance per position, against what two samples of this size from one
    // distribution give (about 0.1 here; a draft taken without its check moves it far more).
    #[allow(clippy::needless_range_loop)]
    for position in 0..TOKENS {
        let (off, on) = (&counts[0][position], &counts[1][position]);
        let distance: f64 = off
            .keys()
            .chain(on.keys())
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .map(|token| {
                let p = f64::from(off.get(token).copied().unwrap_or(0)) / f64::from(RUNS);
                let q = f64::from(on.get(token).copied().unwrap_or(0)) / f64::from(RUNS);
                (p - q).abs()
            })
            .sum::<f64>()
            / 2.0;
        assert!(
            distance < 0.2,
            "position {position}: distance {distance:.3}\n off {off:?}\n on {on:?}"
        );
    }
}

fn with_draft(mut params: LoadParams, draft: &Path) -> LoadParams {
    params.draft = Some(DraftParams {
        model_path: draft.to_path_buf(),
        name: "draft".to_owned(),
        gpu: false,
    });
    params
}

/// Gemma drafting for itself: the draft model guesses what the model picks, and the output is
/// the output without drafting, token for token.
#[tokio::test]
async fn a_draft_model_keeps_greedy_output_token_for_token() {
    let gemma = fixtures::gemma();
    let engine = Engine::load(with_draft(params(&gemma, 1), &gemma))
        .await
        .expect("gemma loads with itself as draft model");
    for prompt in [CODE_EDIT_PROMPT, "Monday, Tuesday, Wednesday,"] {
        let (plain, plain_summary) = run(&engine, job(prompt, 64, SpeculationMode::Off)).await;
        assert_eq!(plain_summary.draft_count, 0);
        for mode in [SpeculationMode::Draft, SpeculationMode::Auto] {
            let (drafted, summary) = run(&engine, job(prompt, 64, mode)).await;
            assert_eq!(drafted, plain, "{mode:?}");
            assert_eq!(summary.context, plain_summary.context, "{mode:?}");
            assert!(
                summary.draft_count > 20
                    && summary.draft_accepted_count * 10 >= summary.draft_count * 9,
                "{mode:?}: {} of {} drafts accepted",
                summary.draft_accepted_count,
                summary.draft_count
            );
        }
    }
    engine.shutdown().await;
}

/// Four sequences, two drafting with the draft model and two not, decoded together: each
/// writes what it writes alone (see `drafting_and_plain_sequences_share_a_batch` for the
/// horizon). The draft model's own context keeps each sequence apart.
#[tokio::test]
async fn a_draft_model_drafts_for_several_sequences_at_once() {
    const TOKENS: i32 = 16;
    let gemma = fixtures::gemma();
    let prompts = [
        CODE_EDIT_PROMPT,
        "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2,",
        "Monday, Tuesday, Wednesday,",
        CODE_EDIT_PROMPT,
    ];
    let modes = [
        SpeculationMode::Draft,
        SpeculationMode::Draft,
        SpeculationMode::Off,
        SpeculationMode::Ngram,
    ];
    let engine = Engine::load(with_draft(params(&gemma, 4), &gemma))
        .await
        .expect("gemma loads");
    let mut solo = Vec::new();
    for prompt in prompts {
        solo.push(
            run(&engine, job(prompt, TOKENS, SpeculationMode::Off))
                .await
                .0,
        );
    }
    let receivers: Vec<_> = prompts
        .iter()
        .zip(modes)
        .map(|(prompt, mode)| engine.generate(job(prompt, TOKENS, mode)).expect("running"))
        .collect();
    let results = futures::future::join_all(receivers.into_iter().map(collect)).await;
    for (index, ((text, summary), mode)) in results.iter().zip(modes).enumerate() {
        assert_eq!(text, &solo[index], "sequence {index} ({mode:?})");
        if mode == SpeculationMode::Draft {
            assert!(summary.draft_accepted_count > 0, "sequence {index}");
        }
    }
    engine.shutdown().await;
}

/// A draft model of another architecture sharing the tokenizer (the qwen2 fixture drafting for
/// the deepseek2 one, as an R1 distill would for a larger one): its random guesses are
/// rejected, and the output is still the model's own. One with another tokenizer is refused
/// at load, saying why.
#[tokio::test]
async fn a_draft_model_must_share_the_tokenizer() {
    let engine = Engine::load(with_draft(
        params(&fixtures::deepseek2(), 1),
        &fixtures::qwen2(),
    ))
    .await
    .expect("qwen2 drafts for deepseek2");
    let (plain, _) = run(&engine, job("Hello, world", 24, SpeculationMode::Off)).await;
    let (drafted, summary) = run(&engine, job("Hello, world", 24, SpeculationMode::Draft)).await;
    assert_eq!(drafted, plain);
    assert!(summary.draft_count > 0);
    engine.shutdown().await;

    let Err(error) = Engine::load(with_draft(
        params(&fixtures::gemma(), 1),
        &fixtures::qwen2(),
    ))
    .await
    else {
        panic!("a draft model with another tokenizer loaded");
    };
    let message = error.to_string();
    assert!(
        message.contains("draft model draft cannot draft for it"),
        "{message}"
    );
}

/// The deepseek2 fixture keeps V3's NextN block, so it drafts for itself (multi-token
/// prediction) under `speculative: mtp`. Its random weights guess badly; what is tested is that
/// the guesses change nothing: four sequences decoded together, two drafting with the block,
/// each write what they write alone without drafting, and the block follows each slot across
/// steps and jobs (the second round reuses the slots' cached prompts). A seeded draw with the
/// block repeats itself whether the slot's cache is fresh or reused.
#[tokio::test]
async fn the_nextn_block_drafts_and_changes_nothing() {
    const TOKENS: i32 = 24;
    let prompts = [
        "The quick brown fox",
        "1, 2, 3, 4, 5, 6, 7, 8,",
        "def add(a, b):\n    return",
        "DeepSeek V3 predicts several tokens",
    ];
    let modes = [
        SpeculationMode::Mtp,
        SpeculationMode::Off,
        SpeculationMode::Auto,
        SpeculationMode::Mtp,
    ];
    let engine = Engine::load(params(&fixtures::deepseek2(), 4))
        .await
        .expect("deepseek2 loads with its NextN block");
    let mut solo = Vec::new();
    for prompt in prompts {
        let (text, summary) = run(&engine, job(prompt, TOKENS, SpeculationMode::Off)).await;
        assert_eq!(summary.draft_count, 0);
        solo.push(text);
    }
    for round in 0..2 {
        let receivers: Vec<_> = prompts
            .iter()
            .zip(modes)
            .map(|(prompt, mode)| engine.generate(job(prompt, TOKENS, mode)).expect("running"))
            .collect();
        let results = futures::future::join_all(receivers.into_iter().map(collect)).await;
        for (index, ((text, summary), mode)) in results.iter().zip(modes).enumerate() {
            assert_eq!(
                text, &solo[index],
                "round {round}, sequence {index} ({mode:?})"
            );
            if mode == SpeculationMode::Mtp {
                assert!(summary.draft_count > 0, "sequence {index} drafted nothing");
            }
        }
    }
    let seeded = || {
        let mut job = job(prompts[2], TOKENS, SpeculationMode::Mtp);
        job.sampling = Sampling {
            temperature: 0.8,
            top_p: 0.95,
            seed: Some(11),
            ..Sampling::greedy()
        };
        job
    };
    let (first, summary) = run(&engine, seeded()).await;
    assert!(summary.draft_count > 0);
    let (again, _) = run(&engine, seeded()).await;
    assert_eq!(
        again, first,
        "the same seed drew other tokens from a reused cache"
    );
    engine.shutdown().await;
    let fresh = Engine::load(params(&fixtures::deepseek2(), 1))
        .await
        .expect("deepseek2 loads");
    let (from_scratch, _) = run(&fresh, seeded()).await;
    assert_eq!(
        from_scratch, first,
        "the same seed drew other tokens from a fresh cache"
    );
    fresh.shutdown().await;
}

/// V3.2 keeps the NextN block too (`deepseek32`: its trunk attends sparsely, the block densely):
/// it drafts, and the output is the output without. The horizon is short: twenty tokens in,
/// this prompt's top two tokens are 0.0003 apart in log probability, which the batch's width
/// alone moves (drafting by prompt lookup flips it as well).
#[tokio::test]
async fn the_nextn_block_of_v32_drafts_and_changes_nothing() {
    let engine = Engine::load(params(&fixtures::deepseek32(), 1))
        .await
        .expect("deepseek32 loads with its NextN block");
    let prompt = "Tell me about the sea.";
    let (plain, _) = run(&engine, job(prompt, 16, SpeculationMode::Off)).await;
    let (drafted, summary) = run(&engine, job(prompt, 16, SpeculationMode::Mtp)).await;
    assert_eq!(drafted, plain);
    assert!(summary.draft_count > 0, "drafted nothing");
    engine.shutdown().await;
}

/// V4's cache cannot drop rejected drafts freely (it rolls back to snapshots, which llama.cpp
/// marks experimental and which did not always give back the same state), so a V4 model
/// verifies no drafts: asked to draft by its NextN block or by lookup, it drafts nothing and
/// writes what it writes without, instead of failing its next decode.
#[tokio::test]
async fn v4_drafts_nothing_and_changes_nothing() {
    let engine = Engine::load(params(&fixtures::deepseek4(), 1))
        .await
        .expect("deepseek4 loads");
    for prompt in ["Once upon a time", "1, 2, 3, 4, 5, 6, 7, 8,"] {
        let (plain, _) = run(&engine, job(prompt, 40, SpeculationMode::Off)).await;
        for mode in [
            SpeculationMode::Mtp,
            SpeculationMode::Ngram,
            SpeculationMode::Auto,
        ] {
            let (text, summary) = run(&engine, job(prompt, 40, mode)).await;
            assert_eq!(text, plain, "{prompt:?} with {mode:?}");
            assert_eq!(summary.draft_count, 0, "{prompt:?} with {mode:?}");
        }
    }
    engine.shutdown().await;
}
