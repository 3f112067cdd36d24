//! End-to-end: the real `whaled` on a free port with a temp store, models pulled from another
//! whaled's `/v2/` registry routes on loopback, chat and generate through the wire API.

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use whale_tests::fixtures;
use whale_tests::whaled::Whaled;

/// A daemon serving the tiny deepseek2 fixture as `deepseek-tiny`, and one that pulled it.
fn pulled_deepseek(extra_env: &[(&str, &str)]) -> (Whaled, Whaled) {
    let source = Whaled::start();
    source.create_from_gguf("deepseek-tiny", &fixtures::deepseek2());
    let mut builder = Whaled::builder().env("WHALE_REGISTRY_MIRROR", source.url());
    for (key, value) in extra_env {
        builder = builder.env(key, *value);
    }
    let target = builder.start();
    let lines = target.stream(
        "/api/pull",
        &json!({"model": "deepseek-tiny", "insecure": true}),
    );
    assert_eq!(
        lines.last().unwrap()["status"],
        "success",
        "pull: {lines:?}"
    );
    assert!(
        lines.iter().all(|line| line.get("error").is_none()),
        "{lines:?}"
    );
    (source, target)
}

fn greedy() -> Value {
    json!({"temperature": 0, "seed": 1, "num_predict": 12, "num_ctx": 512})
}

#[test]
fn pull_chat_show_ps_unload_copy_delete() {
    let (_source, daemon) = pulled_deepseek(&[]);

    let (status, tags) = daemon.get("/api/tags");
    assert_eq!(status, 200);
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["deepseek-tiny:latest"], "{tags}");
    assert_eq!(tags["models"][0]["details"]["family"], "deepseek2");
    assert_eq!(tags["models"][0]["details"]["format"], "gguf");

    // Streaming chat: chunks, then a final object with timings.
    let request = json!({"model": "deepseek-tiny", "messages": [{"role": "user", "content": "Hi"}], "options": greedy(), "think": false});
    let chunks = daemon.stream("/api/chat", &request);
    let last = chunks.last().unwrap();
    assert_eq!(last["done"], true, "{chunks:?}");
    assert!(
        matches!(last["done_reason"].as_str(), Some("stop" | "length")),
        "{last}"
    );
    assert!(last["eval_count"].as_u64().unwrap() >= 1);
    assert!(last["prompt_eval_count"].as_u64().unwrap() >= 3);
    assert!(last["total_duration"].as_u64().unwrap() >= last["eval_duration"].as_u64().unwrap());
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["done"] == false && c["message"]["role"] == "assistant")
    );
    let streamed: String = chunks
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap_or_default())
        .collect();

    // The same request without streaming gives the same text in one object.
    let mut single = request.clone();
    single["stream"] = json!(false);
    let (status, answer) = daemon.post("/api/chat", &single);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["done"], true);
    assert_eq!(answer["message"]["content"].as_str().unwrap(), streamed);
    assert!(
        answer["message"].get("thinking").is_none(),
        "think:false gives no thinking: {answer}"
    );

    // think on: the DeepSeek V3 template has no reasoning markers, so it is refused as Ollama does.
    let mut thinking = single.clone();
    thinking["think"] = json!(true);
    let (status, body) = daemon.post("/api/chat", &thinking);
    assert!(status == 200 || status == 400, "{status} {body}");
    if status == 400 {
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("does not support thinking"),
            "{body}"
        );
    }

    let (status, show) = daemon.post("/api/show", &json!({"model": "deepseek-tiny"}));
    assert_eq!(status, 200, "{show}");
    assert_eq!(show["model_info"]["general.architecture"], "deepseek2");
    assert!(
        show["template"]
            .as_str()
            .unwrap()
            .contains("<｜Assistant｜>")
    );
    assert!(
        show["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("completion"))
    );

    let (_, ps) = daemon.get("/api/ps");
    assert_eq!(ps["models"][0]["name"], "deepseek-tiny", "{ps}");
    assert!(ps["models"][0]["size"].as_u64().unwrap() > 0);
    assert_eq!(ps["models"][0]["context_length"], 512);

    // keep_alive 0 with no messages unloads.
    let (status, body) = daemon.post(
        "/api/chat",
        &json!({"model": "deepseek-tiny", "messages": [], "keep_alive": 0}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done_reason"], "unload");
    let (_, ps) = daemon.get("/api/ps");
    assert_eq!(ps["models"].as_array().unwrap().len(), 0, "{ps}");

    let (status, body) = daemon.post(
        "/api/copy",
        &json!({"source": "deepseek-tiny", "destination": "mine/tiny:v1"}),
    );
    assert_eq!(status, 200, "{body}");
    let (_, tags) = daemon.get("/api/tags");
    assert_eq!(tags["models"].as_array().unwrap().len(), 2, "{tags}");

    let response = Whaled::http()
        .delete(format!("{}/api/delete", daemon.url()))
        .json(&json!({"model": "deepseek-tiny"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, tags) = daemon.get("/api/tags");
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mine/tiny:v1"]);
    // The copy still works: its blobs were kept.
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "mine/tiny:v1", "prompt": "Hi", "options": greedy(), "stream": false}),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn gemma_counts_on() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "gemma", "prompt": "1, 2, 3, 4, 5,", "raw": true, "stream": false,
                "options": {"temperature": 0, "num_predict": 8}}),
    );
    assert_eq!(status, 200, "{body}");
    let text = body["response"].as_str().unwrap();
    assert!(text.starts_with(" 6, 7, 8"), "got {text:?}");
    assert!(
        body.get("context").is_none(),
        "raw responses carry no context"
    );
}

fn collect_text(daemon: &Whaled, prompt: &str) -> String {
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "gemma", "prompt": prompt, "raw": true, "stream": false,
                "options": {"temperature": 0, "num_predict": 24}}),
    );
    assert_eq!(status, 200, "{body}");
    body["response"].as_str().unwrap().to_owned()
}

#[test]
fn concurrent_streams_match_solo_runs_and_disconnect_frees_slot() {
    let daemon = Whaled::builder().env("WHALE_NUM_PARALLEL", "4").start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    // llama.cpp's batched kernels are not bit-identical to single-sequence ones, so a prompt
    // whose greedy path has a near-tie can flip; these continuations are far from any tie.
    let prompts = [
        "1, 2, 3, 4, 5,",
        "Monday, Tuesday,",
        "a, b, c, d,",
        "10, 20, 30, 40,",
    ];
    let solo: Vec<String> = prompts.iter().map(|p| collect_text(&daemon, p)).collect();
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| scope.spawn(|| collect_text(&daemon, p)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(solo, together);
}

#[test]
fn disconnect_frees_the_slot_and_queue_overflow_is_503() {
    let daemon = Whaled::builder()
        .env("WHALE_NUM_PARALLEL", "1")
        .env("WHALE_MAX_QUEUE", "0")
        .start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    let long = json!({"model": "gemma", "prompt": "Once upon a time", "raw": true,
                      "options": {"temperature": 0, "num_predict": 100000, "num_ctx": 4096}});
    // Hold the only slot with a long stream, read one chunk.
    let mut stream = std::net::TcpStream::connect(daemon.address).unwrap();
    let body = long.to_string();
    write!(
        stream,
        "POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .expect("the stream should start");
        assert!(!line.contains("\"error\""), "{line}");
        if line.contains("\"response\"") {
            break;
        }
    }
    // The queue is full: another request is refused at once.
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "gemma", "prompt": "x", "raw": true, "options": {"num_ctx": 4096}}),
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("server busy"),
        "{body}"
    );

    // Hang up; the slot frees and the next request runs.
    drop(reader);
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);
    let started = Instant::now();
    let mut status = 0;
    while started.elapsed() < Duration::from_secs(10) {
        let (s, _) = daemon.post("/api/generate", &json!({"model": "gemma", "prompt": "1, 2,", "raw": true, "stream": false, "options": {"temperature": 0, "num_predict": 2, "num_ctx": 4096}}));
        status = s;
        if s == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status, 200, "the slot was not freed after the client left");
}

#[test]
fn second_turn_evaluates_only_new_tokens() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    let system = "You are a helpful assistant. ".repeat(40);
    let mut messages = vec![
        json!({"role": "system", "content": system}),
        json!({"role": "user", "content": "Count to three."}),
    ];
    let options = json!({"temperature": 0, "num_predict": 8, "num_ctx": 2048});
    let (status, first) = daemon.post(
        "/api/chat",
        &json!({"model": "gemma", "messages": messages, "options": options, "stream": false}),
    );
    assert_eq!(status, 200, "{first}");
    let first_count = first["prompt_eval_count"].as_u64().unwrap();
    assert!(first_count > 200, "{first}");
    messages.push(first["message"].clone());
    messages.push(json!({"role": "user", "content": "And then?"}));
    let (status, second) = daemon.post(
        "/api/chat",
        &json!({"model": "gemma", "messages": messages, "options": options, "stream": false}),
    );
    assert_eq!(status, 200, "{second}");
    let second_count = second["prompt_eval_count"].as_u64().unwrap();
    assert!(
        second_count < 40,
        "second turn re-evaluated {second_count} tokens (first: {first_count})"
    );
}

#[test]
fn bad_input_gets_clear_errors_and_the_daemon_keeps_serving() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    let http = Whaled::http();
    let url = |path: &str| format!("{}{path}", daemon.url());
    let check = |status: u16, body: &Value, expected: u16, needle: &str| {
        assert_eq!(status, expected, "{body}");
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {body}"));
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    };

    let response = http
        .post(url("/api/chat"))
        .body("{\"model\": ")
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().unwrap();
    check(status, &body, 400, "");

    let response = http.post(url("/api/generate")).body("").send().unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().unwrap();
    check(status, &body, 400, "missing request body");

    let (status, body) = daemon.post("/api/generate", &json!({"model": "gemma", "prompt": 12}));
    check(status, &body, 400, "");
    let (status, body) = daemon.post("/api/chat", &json!({"model": "gemma", "messages": "hi"}));
    check(status, &body, 400, "");
    let (status, body) = daemon.post("/api/generate", &json!({"model": "nope", "prompt": "hi"}));
    check(status, &body, 404, "not found");
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "bad name!", "prompt": "hi"}),
    );
    check(status, &body, 400, "");
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "gemma", "prompt": "hi", "options": {"num_ctx": 4_000_000_000u64}}),
    );
    check(status, &body, 400, "num_ctx");
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "gemma", "prompt": "hi", "options": {"num_predict": -7}}),
    );
    check(status, &body, 400, "num_predict");

    let huge = vec![b' '; 40 << 20];
    let response = http.post(url("/api/chat")).body(huge).send().unwrap();
    assert_eq!(response.status().as_u16(), 413);

    // Hostile GGUFs are refused by the validator; llama.cpp never sees them.
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.gguf");
    let bytes = std::fs::read(fixtures::qwen2()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let digest = whale_tests::whaled::sha256_file(&truncated);
    let upload = http
        .post(url(&format!("/api/blobs/{digest}")))
        .body(std::fs::read(&truncated).unwrap())
        .send()
        .unwrap();
    assert_eq!(upload.status().as_u16(), 201);
    let (status, body) = daemon.post(
        "/api/create",
        &json!({"model": "broken", "files": {"model.gguf": digest}, "stream": false}),
    );
    check(status, &body, 400, "GGUF");

    let mut hostile = Vec::new();
    hostile.extend_from_slice(b"GGUF");
    hostile.extend_from_slice(&3u32.to_le_bytes());
    hostile.extend_from_slice(&(1u64 << 40).to_le_bytes()); // tensor count
    hostile.extend_from_slice(&0u64.to_le_bytes());
    let digest = format!("sha256:{}", {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&hostile))
    });
    let upload = http
        .post(url(&format!("/api/blobs/{digest}")))
        .body(hostile)
        .send()
        .unwrap();
    assert_eq!(upload.status().as_u16(), 201);
    let (status, body) = daemon.post(
        "/api/create",
        &json!({"model": "hostile", "files": {"model.gguf": digest}, "stream": false}),
    );
    check(status, &body, 400, "GGUF");

    // A blob whose bytes do not match its digest is refused and not kept.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let upload = http
        .post(url(&format!("/api/blobs/{wrong}")))
        .body("hello")
        .send()
        .unwrap();
    assert_eq!(upload.status().as_u16(), 400);
    let head = http
        .head(url(&format!("/api/blobs/{wrong}")))
        .send()
        .unwrap();
    assert_eq!(head.status().as_u16(), 404);

    // Still serving, and the good model still answers.
    let (status, _) = daemon.get("/api/version");
    assert_eq!(status, 200);
    let (status, body) = daemon.post("/api/generate", &json!({"model": "gemma", "prompt": "1, 2, 3,", "raw": true, "stream": false, "options": {"temperature": 0, "num_predict": 2}}));
    assert_eq!(status, 200, "{body}");
}
