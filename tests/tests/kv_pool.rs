//! A KV cache pool shared by a model's parallel slots (`WHALE_KV_POOL`): sixteen slots of
//! 512-token contexts in a pool of 512 tokens, a sixteenth of sixteen full contexts. A request
//! starts only when the pool can hold all it may come to need (here six at a time), so none
//! runs out of cells mid-generation and none touches another's: each of sixteen concurrent
//! requests writes what its prompt writes alone. Gemma, whose continuations of these prompts
//! are far from any near-tie that batching's different arithmetic could flip.

use serde_json::{Value, json};
use whale_tests::fixtures;
use whale_tests::whaled::Whaled;

const PROMPTS: [&str; 4] = [
    "1, 2, 3, 4, 5,",
    "10, 20, 30, 40,",
    "100, 200, 300, 400,",
    "2, 4, 6, 8,",
];
const TOKENS: u64 = 64;

fn generate(daemon: &Whaled, prompt: &str) -> Value {
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "gemma", "prompt": prompt, "raw": true, "stream": false,
                "options": {"temperature": 0, "num_predict": TOKENS, "num_ctx": 512}}),
    );
    assert_eq!(status, 200, "{body}");
    body
}

fn daemon(pool: Option<&str>) -> Whaled {
    let mut builder = Whaled::builder().env("WHALE_NUM_PARALLEL", "16");
    if let Some(pool) = pool {
        builder = builder.env("WHALE_KV_POOL", pool);
    }
    let daemon = builder.start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    daemon
}

/// `size` of the one loaded model in `/api/ps`.
fn loaded_size(daemon: &Whaled) -> u64 {
    let (_, ps) = daemon.get("/api/ps");
    ps["models"][0]["size"]
        .as_u64()
        .unwrap_or_else(|| panic!("{ps}"))
}

#[test]
fn sixteen_chats_share_a_pool_smaller_than_sixteen_contexts() {
    let pooled = daemon(Some("512"));
    let solo: Vec<Value> = PROMPTS
        .iter()
        .map(|prompt| generate(&pooled, prompt)["response"].clone())
        .collect();

    let together: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let pooled = &pooled;
                scope.spawn(move || generate(pooled, PROMPTS[i % PROMPTS.len()]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, body) in together.iter().enumerate() {
        assert_eq!(body["eval_count"], TOKENS, "{body}");
        assert_eq!(
            body["response"],
            solo[i % PROMPTS.len()],
            "request {i} differs from the same prompt alone"
        );
    }
    assert!(!pooled.log().contains("decode failed"), "{}", pooled.log());

    // Memory is planned for the pool, not for sixteen contexts.
    let pooled_size = loaded_size(&pooled);
    let separate = daemon(None);
    generate(&separate, PROMPTS[0]);
    let separate_size = loaded_size(&separate);
    assert!(
        pooled_size < separate_size,
        "pooled {pooled_size} vs separate {separate_size}"
    );
}
