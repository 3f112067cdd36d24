//! End-to-end: the real `whaled` on a free port with a temp store, models pulled from another
//! whaled's `/v2/` registry routes on loopback, chat and generate through the wire API.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use whale_tests::fixtures;
use whale_tests::gguf::broken;
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
    // The tokenizer's token list is sent only with `verbose` (as Ollama).
    assert_eq!(show["model_info"]["tokenizer.ggml.tokens"], json!([]));
    let (status, verbose) = daemon.post(
        "/api/show",
        &json!({"model": "deepseek-tiny", "verbose": true}),
    );
    assert_eq!(status, 200, "{verbose}");
    let tokens = verbose["model_info"]["tokenizer.ggml.tokens"]
        .as_array()
        .unwrap();
    assert!(tokens.len() > 100_000, "{}", tokens.len());
    assert!(tokens.iter().all(serde_json::Value::is_string));
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
    // No GPU here: nothing on one, and the log said so at start.
    assert_eq!(ps["models"][0]["size_vram"], 0, "{ps}");
    assert!(ps["models"][0].get("gpus").is_none(), "{ps}");
    assert!(
        daemon.log_shows(
            |line| line.contains("inference compute: no GPU, models run on the CPU")
                && line.contains("id=cpu")
        ),
        "{}",
        daemon.log()
    );

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

/// Speculative decoding through the API: `speculative` and `draft_max` in a request's options or
/// a model's parameters, the counts in the final object and in `/metrics`, clear refusals.
#[test]
fn speculative_option_drafts_reports_and_refuses_what_it_cannot_do() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    let prompt = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2,";
    let generate = |model: &str, options: Value| {
        daemon.post(
            "/api/generate",
            &json!({"model": model, "prompt": prompt, "raw": true, "stream": false,
                    "options": options}),
        )
    };
    let (status, drafted) = generate(
        "gemma",
        json!({"temperature": 0, "num_predict": 24, "speculative": "ngram", "draft_max": 4}),
    );
    assert_eq!(status, 200, "{drafted}");
    let (count, accepted) = (
        drafted["draft_count"].as_u64().expect("draft_count"),
        drafted["draft_accepted_count"]
            .as_u64()
            .expect("draft_accepted_count"),
    );
    assert!(count > 0 && accepted > 0 && accepted <= count, "{drafted}");
    let (status, plain) = generate(
        "gemma",
        json!({"temperature": 0, "num_predict": 24, "speculative": "off"}),
    );
    assert_eq!(status, 200, "{plain}");
    assert!(plain.get("draft_count").is_none(), "{plain}");
    assert_eq!(plain["response"], drafted["response"]);
    let metrics = Whaled::http()
        .get(format!("{}/metrics", daemon.url()))
        .send()
        .and_then(reqwest::blocking::Response::text)
        .expect("metrics");
    assert!(
        metrics.contains(&format!(
            "whale_draft_tokens_total{{model=\"gemma:latest\"}} {count}"
        )),
        "{metrics}"
    );
    // A model whose parameters turn drafting off; a request may turn it back on.
    let (status, body) = daemon.post(
        "/api/create",
        &json!({"model": "plain", "from": "gemma", "parameters": {"speculative": "off"},
                "stream": false}),
    );
    assert_eq!(status, 200, "{body}");
    let (_, body) = generate("plain", json!({"temperature": 0, "num_predict": 24}));
    assert!(body.get("draft_count").is_none(), "{body}");
    let (_, body) = generate(
        "plain",
        json!({"temperature": 0, "num_predict": 24, "speculative": "ngram"}),
    );
    assert!(
        body["draft_count"].as_u64().is_some_and(|n| n > 0),
        "{body}"
    );
    // Gemma has no NextN block: `mtp` drafts nothing and answers as without.
    let (status, body) = generate(
        "gemma",
        json!({"temperature": 0, "num_predict": 24, "speculative": "mtp"}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.get("draft_count").is_none(), "{body}");
    assert_eq!(body["response"], plain["response"]);
    for (options, expected) in [
        (json!({"speculative": "fast"}), "speculative must be one of"),
        (
            json!({"draft_max": 1000}),
            "draft_max must be between 0 and 64",
        ),
        (json!({"speculative": 1}), "invalid type"),
    ] {
        let (status, body) = generate("gemma", options.clone());
        assert_eq!(status, 400, "{options}: {body}");
        let error = body["error"].as_str().expect("an error message");
        assert!(error.contains(expected), "{options}: {error}");
    }
}

/// A draft model through the API: `draft_model` in a request's options or a model's
/// parameters loads it beside the model (its memory counted in `/api/ps`), drafts under
/// `speculative` `draft` and `auto`, and leaves the output as it was; what cannot work is
/// refused with a reason and the daemon keeps serving.
#[test]
fn draft_model_option_loads_it_beside_the_model() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    daemon.create_from_gguf("ds", &fixtures::deepseek2());
    let prompt = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2,";
    let generate = |model: &str, options: Value| {
        daemon.post(
            "/api/generate",
            &json!({"model": model, "prompt": prompt, "raw": true, "stream": false,
                    "options": options}),
        )
    };
    let loaded_size = || {
        let (_, ps) = daemon.get("/api/ps");
        ps["models"][0]["size"].as_u64().expect("a loaded model")
    };
    let (status, plain) = generate(
        "gemma",
        json!({"temperature": 0, "num_predict": 24, "speculative": "off"}),
    );
    assert_eq!(status, 200, "{plain}");
    let alone = loaded_size();
    let (status, drafted) = generate(
        "gemma",
        json!({"temperature": 0, "num_predict": 24, "speculative": "draft",
               "draft_model": "gemma"}),
    );
    assert_eq!(status, 200, "{drafted}");
    assert_eq!(drafted["response"], plain["response"]);
    assert!(
        drafted["draft_accepted_count"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{drafted}"
    );
    let with_draft = loaded_size();
    assert!(
        with_draft > alone * 3 / 2,
        "the draft model's memory is not counted: {alone} then {with_draft}"
    );
    // Named by a model's parameters, the draft model is loaded and drafts under the default
    // `auto`; one that is not here is left out (prompt lookup drafts instead).
    for (name, draft, size) in [
        ("paired", "gemma", with_draft),
        ("unpaired", "absent:1b", alone),
    ] {
        let (status, body) = daemon.post(
            "/api/create",
            &json!({"model": name, "from": "gemma", "parameters": {"draft_model": draft},
                    "stream": false}),
        );
        assert_eq!(status, 200, "{body}");
        let (status, body) = generate(name, json!({"temperature": 0, "num_predict": 24}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response"], plain["response"], "{name}");
        assert!(
            body["draft_accepted_count"].as_u64().is_some_and(|n| n > 0),
            "{name}: {body}"
        );
        assert_eq!(loaded_size(), size, "{name}");
    }
    for (options, status, expected) in [
        (json!({"speculative": "draft"}), 400, "needs draft_model"),
        (
            json!({"speculative": "draft", "draft_model": "absent:1b"}),
            404,
            "draft model 'absent:1b' not found",
        ),
        (
            json!({"speculative": "draft", "draft_model": "ds"}),
            500,
            "cannot draft for it",
        ),
    ] {
        let (got, body) = generate("gemma", options.clone());
        assert_eq!(got, status, "{options}: {body}");
        let error = body["error"].as_str().expect("an error message");
        assert!(error.contains(expected), "{options}: {error}");
    }
    let (status, body) = generate("gemma", json!({"temperature": 0, "num_predict": 24}));
    assert_eq!(status, 200, "{body}");
    // The deepseek2 fixture keeps V3's NextN block: it drafts under `mtp` with no draft model,
    // and the output is the output without (the engine's tests compare longer texts).
    let (status, plain) = generate(
        "ds",
        json!({"temperature": 0, "num_predict": 8, "speculative": "off"}),
    );
    assert_eq!(status, 200, "{plain}");
    let (status, body) = generate(
        "ds",
        json!({"temperature": 0, "num_predict": 8, "speculative": "mtp"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"], plain["response"]);
    assert!(
        body["draft_count"].as_u64().is_some_and(|n| n > 0),
        "{body}"
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
                      "options": {"temperature": 0, "num_predict": 100_000, "num_ctx": 4096}});
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
        .set_read_timeout(Some(Duration::from_mins(2)))
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

/// A chat longer than `num_ctx` loses its oldest turns whole, keeping the system message and
/// the last message (Ollama's `truncate`); with `truncate: false` it is refused.
#[test]
fn a_long_chat_drops_its_oldest_turns() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    let mut messages = vec![json!({"role": "system", "content": "Answer with numbers."})];
    for turn in 0..6 {
        let words = format!("turn {turn} ").repeat(12);
        messages.push(json!({"role": "user", "content": format!("Question {words}")}));
        messages.push(json!({"role": "assistant", "content": format!("Answer {words}")}));
    }
    messages.push(json!({"role": "user", "content": "1, 2, 3, 4, 5,"}));
    // The model is unloaded after each answer (and waited for), so that no answer reuses
    // another's cache and `prompt_eval_count` is the whole prompt.
    let chat = |messages: &[Value], truncate: bool| {
        let answer = daemon.post(
            "/api/chat",
            &json!({"model": "gemma", "messages": messages, "stream": false, "truncate": truncate,
                    "options": {"num_ctx": 256, "num_predict": 1, "temperature": 0}}),
        );
        let (status, body) =
            daemon.post("/api/generate", &json!({"model": "gemma", "keep_alive": 0}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["done_reason"], "unload", "{body}");
        answer
    };
    let (status, body) = chat(&messages, false);
    assert_eq!(status, 400, "the whole chat should not fit: {body}");
    let (status, truncated) = chat(&messages, true);
    assert_eq!(status, 200, "{truncated}");
    let count = truncated["prompt_eval_count"].as_u64().unwrap();
    assert!(count <= 256, "{truncated}");
    // The same count as the longest tail of whole turns that fits, after the system message.
    let fitting = (3..messages.len())
        .step_by(2)
        .find_map(|from| {
            let mut kept = vec![messages[0].clone()];
            kept.extend_from_slice(&messages[from..]);
            let (status, body) = chat(&kept, false);
            (status == 200).then(|| (from, body["prompt_eval_count"].as_u64().unwrap()))
        })
        .expect("some tail fits");
    assert!(fitting.0 > 3, "dropping one turn should not be enough here");
    assert_eq!(count, fitting.1, "dropped through message {}", fitting.0);
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

    // A prompt longer than num_ctx is cut to it (its first tokens and its end, as Ollama), or
    // refused with `truncate: false`.
    let long = "one two three ".repeat(100);
    let request = |truncate: Option<bool>| {
        let mut request = json!({"model": "gemma", "prompt": long, "raw": true, "stream": false,
                                 "options": {"num_ctx": 64, "num_predict": 2, "temperature": 0}});
        if let Some(truncate) = truncate {
            request["truncate"] = json!(truncate);
        }
        request
    };
    let (status, body) = daemon.post("/api/generate", &request(Some(false)));
    check(status, &body, 400, "exceeds the context length");
    let (status, body) = daemon.post("/api/generate", &request(None));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["prompt_eval_count"], 64, "{body}");

    // The same options use the loaded model; other options that shape it (num_ctx, num_gpu,
    // num_thread, num_batch, use_mmap) load it again, as Ollama does.
    let loads = || {
        // The log is read from whaled's stderr by another thread: let it catch up.
        std::thread::sleep(Duration::from_millis(300));
        daemon.log().matches("loaded model=gemma").count()
    };
    let before = loads();
    let (status, body) = daemon.post("/api/generate", &request(None));
    assert_eq!(status, 200, "{body}");
    assert_eq!(loads(), before, "same options: no reload");
    let mut other = request(None);
    other["options"]["num_gpu"] = json!(0);
    let (status, body) = daemon.post("/api/generate", &other);
    assert_eq!(status, 200, "{body}");
    assert_eq!(loads(), before + 1, "num_gpu changed: reloaded");

    // A body declared larger than the limit is refused from its headers alone, before the
    // client sends any of it (a client still writing would otherwise race the close).
    let mut raw = std::net::TcpStream::connect(daemon.address).unwrap();
    write!(
        raw,
        "POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        40 << 20
    )
    .unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut status_line = String::new();
    BufReader::new(raw).read_line(&mut status_line).unwrap();
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");

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

/// The stock CNCF distribution registry (`docker-registry`) on a free loopback port with its own
/// temporary storage, killed when dropped.
struct Distribution {
    child: Child,
    /// `127.0.0.1:<port>`, the host part of model names pushed to it.
    address: String,
    dir: tempfile::TempDir,
}

impl Distribution {
    fn start() -> Self {
        let on_path = std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join("docker-registry").is_file())
        });
        assert!(
            on_path,
            "docker-registry (the CNCF distribution registry) is not installed; \
             run `sudo apt-get install docker-registry` (scripts/setup-deps.sh does it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("start docker-registry");
        let registry = Distribution {
            child,
            address,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = Whaled::http()
                .get(format!("http://{}/v2/", registry.address))
                .send()
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return registry;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start on {}: {}",
                registry.address,
                std::fs::read_to_string(registry.dir.path().join("registry.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The manifest of `<host>/library/<model>:<tag>` as stored under a daemon's store root.
fn stored_manifest(root: &Path, host: &str, model: &str, tag: &str) -> Vec<u8> {
    let path = root
        .join("manifests")
        .join(host)
        .join("library")
        .join(model)
        .join(tag);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[test]
fn push_to_a_distribution_registry_and_pull_back() {
    let registry = Distribution::start();
    let (_source, daemon) = pulled_deepseek(&[]);
    let name = format!("{}/library/deepseek-tiny:latest", registry.address);
    let (status, body) = daemon.post(
        "/api/copy",
        &json!({"source": "deepseek-tiny", "destination": name}),
    );
    assert_eq!(status, 200, "{body}");

    let lines = daemon.stream("/api/push", &json!({"model": name, "insecure": true}));
    assert!(
        lines.iter().all(|line| line.get("error").is_none()),
        "{lines:?}"
    );
    let statuses: Vec<&str> = lines
        .iter()
        .filter_map(|line| line["status"].as_str())
        .collect();
    assert_eq!(statuses.first(), Some(&"retrieving manifest"), "{lines:?}");
    assert_eq!(
        statuses[statuses.len() - 2..],
        ["pushing manifest", "success"],
        "{lines:?}"
    );

    // The registry now serves the manifest exactly as the daemon stores it.
    let pushed = stored_manifest(&daemon.models, &registry.address, "deepseek-tiny", "latest");
    let served = Whaled::http()
        .get(format!(
            "http://{}/v2/library/deepseek-tiny/manifests/latest",
            registry.address
        ))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(
        served.headers()["docker-content-digest"].to_str().unwrap(),
        sha256_hex(&pushed)
    );
    assert_eq!(served.bytes().unwrap().as_ref(), pushed.as_slice());

    // A fresh daemon pulls it back: the same manifest bytes and every blob, each matching its
    // digest.
    let fresh = Whaled::start();
    let lines = fresh.stream("/api/pull", &json!({"model": name, "insecure": true}));
    assert!(
        lines.iter().all(|line| line.get("error").is_none()),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().unwrap()["status"],
        "success",
        "pull: {lines:?}"
    );
    let pulled = stored_manifest(&fresh.models, &registry.address, "deepseek-tiny", "latest");
    assert_eq!(pulled, pushed);
    let manifest: Value = serde_json::from_slice(&pulled).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert!(!layers.is_empty(), "{manifest}");
    for layer in layers.iter().chain([&manifest["config"]]) {
        let digest = layer["digest"].as_str().unwrap();
        let file_name = digest.replace(':', "-");
        let mine = fresh.models.join("blobs").join(&file_name);
        assert_eq!(whale_tests::whaled::sha256_file(&mine), digest);
        assert_eq!(
            std::fs::metadata(&mine).unwrap().len(),
            layer["size"].as_u64().unwrap()
        );
        assert!(daemon.models.join("blobs").join(&file_name).is_file());
    }
    let (_, tags) = fresh.get("/api/tags");
    assert_eq!(tags["models"][0]["name"], name, "{tags}");
    assert_eq!(
        tags["models"][0]["digest"].as_str().unwrap(),
        sha256_hex(&pulled).trim_start_matches("sha256:"),
        "{tags}"
    );
    let (status, body) = fresh.post(
        "/api/generate",
        &json!({"model": name, "prompt": "Hi", "options": greedy(), "stream": false}),
    );
    assert_eq!(status, 200, "{body}");
}

fn l2_norm(vector: &[f64]) -> f64 {
    vector.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (l2_norm(a) * l2_norm(b))
}

fn vectors(value: &Value) -> Vec<Vec<f64>> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list of vectors: {value}"))
        .iter()
        .map(|vector| {
            vector
                .as_array()
                .unwrap_or_else(|| panic!("not a vector: {vector}"))
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn embed_and_legacy_embeddings() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    let (status, show) = daemon.post("/api/show", &json!({"model": "gemma"}));
    assert_eq!(status, 200, "{show}");
    let length = show["model_info"]["gemma3.embedding_length"]
        .as_u64()
        .unwrap_or_else(|| panic!("no embedding length: {show}")) as usize;
    let options = json!({"num_ctx": 512});
    let embed = |input: Value| {
        let (status, body) = daemon.post(
            "/api/embed",
            &json!({"model": "gemma", "input": input, "options": options}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model"], "gemma");
        assert!(body["prompt_eval_count"].as_u64().unwrap() > 0, "{body}");
        assert!(body["total_duration"].as_u64().unwrap() > 0, "{body}");
        vectors(&body["embeddings"])
    };

    let sky = "Why is the sky blue?";
    let whales = "Whales are the largest animals that have ever lived.";
    let single = embed(json!(sky));
    assert_eq!(single.len(), 1);
    let vector = &single[0];
    assert_eq!(vector.len(), length);
    assert!(vector.iter().any(|&x| x != 0.0));
    assert!(
        (l2_norm(vector) - 1.0).abs() < 1e-4,
        "/api/embed vectors are L2-normalised, got norm {}",
        l2_norm(vector)
    );
    assert_eq!(embed(json!(sky)), single, "embeddings are deterministic");

    let both = embed(json!([sky, whales]));
    assert_eq!(both.len(), 2);
    assert_eq!(
        both[0], single[0],
        "an input's vector does not depend on its batch"
    );
    assert_eq!(both[1].len(), length);
    assert!((l2_norm(&both[1]) - 1.0).abs() < 1e-4);
    let similarity = cosine(&both[0], &both[1]);
    assert!(
        similarity < 0.999,
        "different inputs gave the same direction ({similarity})"
    );

    // The legacy endpoint: one vector for `prompt`, in the same direction, not normalised.
    let legacy = |prompt: &str| {
        let (status, body) = daemon.post(
            "/api/embeddings",
            &json!({"model": "gemma", "prompt": prompt, "options": options}),
        );
        assert_eq!(status, 200, "{body}");
        vectors(&json!([body["embedding"]])).remove(0)
    };
    let old = legacy(sky);
    assert_eq!(old.len(), length);
    assert!(old.iter().any(|&x| x != 0.0));
    assert_eq!(legacy(sky), old, "embeddings are deterministic");
    assert!(
        cosine(&old, vector) > 0.9999,
        "/api/embeddings and /api/embed disagree"
    );
    assert!(
        (l2_norm(&old) - 1.0).abs() > 1e-3,
        "/api/embeddings returns the model's vector unnormalised, as Ollama does"
    );
    assert!(cosine(&legacy(whales), &old) < 0.999);

    // Bad input: a JSON error and a 4xx status.
    for path in ["/api/embed", "/api/embeddings"] {
        for (model, expected) in [("", 400), ("no-such-model", 404)] {
            let (status, body) =
                daemon.post(path, &json!({"model": model, "input": sky, "prompt": sky}));
            assert_eq!(status, expected, "{path} {model:?}: {body}");
            assert!(
                body["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{path} {model:?}: {body}"
            );
        }
    }
    let (status, body) = daemon.post("/api/embed", &json!({"model": "gemma", "input": [1, 2]}));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].is_string(), "{body}");
}

/// `logprobs` gives every generated token with its log probability and, with `top_logprobs`,
/// the most likely tokens at its position; under greedy sampling the chosen token is the most
/// likely one.
#[test]
fn logprobs_come_with_each_token() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    let request = |extra: Value| {
        let mut request = json!({"model": "gemma", "prompt": "1, 2, 3, 4, 5,", "raw": true,
                                 "stream": false, "options": {"temperature": 0, "num_predict": 6}});
        for (key, value) in extra.as_object().unwrap() {
            request[key] = value.clone();
        }
        request
    };
    let (status, plain) = daemon.post("/api/generate", &request(json!({})));
    assert_eq!(status, 200, "{plain}");
    assert!(plain.get("logprobs").is_none(), "{plain}");

    let (status, body) = daemon.post(
        "/api/generate",
        &request(json!({"logprobs": true, "top_logprobs": 3})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"], plain["response"], "{body}");
    let logprobs = body["logprobs"].as_array().expect("logprobs");
    assert_eq!(logprobs.len() as u64, body["eval_count"].as_u64().unwrap());
    let joined: String = logprobs
        .iter()
        .map(|entry| entry["token"].as_str().unwrap())
        .collect();
    assert_eq!(joined, body["response"].as_str().unwrap());
    for entry in logprobs {
        let logprob = entry["logprob"].as_f64().unwrap();
        assert!(logprob <= 0.0, "{entry}");
        let bytes: Vec<u8> = serde_json::from_value(entry["bytes"].clone()).unwrap();
        assert_eq!(
            bytes,
            entry["token"].as_str().unwrap().as_bytes(),
            "{entry}"
        );
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{entry}");
        assert_eq!(
            top[0]["token"], entry["token"],
            "greedy picks the likeliest: {entry}"
        );
        assert!((top[0]["logprob"].as_f64().unwrap() - logprob).abs() < 1e-6);
        let values: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(values.windows(2).all(|w| w[0] >= w[1]), "{entry}");
        let mass: f64 = values.iter().map(|v| v.exp()).sum();
        assert!(mass <= 1.0 + 1e-4, "{entry}");
    }

    // Streamed, the chunks carry the same entries between them.
    let mut streamed = request(json!({"logprobs": true, "top_logprobs": 3}));
    streamed["stream"] = json!(true);
    let chunks = daemon.stream("/api/generate", &streamed);
    let entries: Vec<Value> = chunks
        .iter()
        .filter_map(|chunk| chunk["logprobs"].as_array())
        .flatten()
        .cloned()
        .collect();
    assert_eq!(&entries, logprobs);

    // Chat too; without `top_logprobs` no alternatives are listed.
    let (status, chat) = daemon.post(
        "/api/chat",
        &json!({"model": "gemma", "messages": [{"role": "user", "content": "Hi"}], "stream": false,
                "logprobs": true, "options": {"temperature": 0, "num_predict": 4}}),
    );
    assert_eq!(status, 200, "{chat}");
    let entries = chat["logprobs"].as_array().expect("chat logprobs");
    assert_eq!(entries.len() as u64, chat["eval_count"].as_u64().unwrap());
    assert!(
        entries
            .iter()
            .all(|entry| entry.get("top_logprobs").is_none())
    );

    let (status, error) = daemon.post(
        "/api/generate",
        &request(json!({"logprobs": true, "top_logprobs": 21})),
    );
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("top_logprobs must be between 0 and 20"),
        "{error}"
    );
}

/// `suffix` fills in the middle with a template that places `.Suffix`; a model whose template
/// has no place for it answers 400, as does raw mode.
#[test]
fn suffix_goes_where_the_template_puts_it() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    // The suffix first, then the prompt: what Gemma sees is a count to continue.
    let template = "{{ if .Suffix }}{{ .Suffix }}{{ .Prompt }}{{ else }}{{ .Prompt }}{{ end }}";
    let (status, body) = daemon.post(
        "/api/create",
        &json!({"model": "infill", "from": "gemma", "template": template, "stream": false}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, show) = daemon.post("/api/show", &json!({"model": "infill"}));
    assert_eq!(status, 200, "{show}");
    assert_eq!(
        show["capabilities"],
        json!(["completion", "insert"]),
        "{show}"
    );
    let options = json!({"temperature": 0, "num_predict": 6});
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "infill", "prompt": " 4, 5,", "suffix": "1, 2, 3,", "stream": false,
                "options": options}),
    );
    assert_eq!(status, 200, "{body}");
    let response = body["response"].as_str().unwrap();
    assert!(response.starts_with(" 6, 7"), "{body}");

    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "gemma", "prompt": "a", "suffix": "b", "options": options}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("does not support insert"),
        "{body}"
    );
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "infill", "prompt": "a", "suffix": "b", "raw": true, "options": options}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("suffix"), "{body}");
}

/// Uploads a file as a blob; returns its digest.
fn upload_blob(daemon: &Whaled, path: &Path) -> String {
    let digest = whale_tests::whaled::sha256_file(path);
    let response = Whaled::http()
        .post(format!("{}/api/blobs/{digest}", daemon.url()))
        .body(std::fs::File::open(path).unwrap())
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    digest
}

/// Files whose metadata would abort llama.cpp (and the daemon with it) are refused by
/// `/api/create` with a 400 that names the field. A pull stores a model without reading its
/// GGUF, so one that arrives that way is refused when it is loaded, by the same check, with an
/// error that names the field; the daemons keep serving throughout.
#[test]
fn files_that_would_abort_llama_cpp_are_refused_at_create_and_at_load() {
    let source = Whaled::start();
    let dir = tempfile::tempdir().unwrap();
    for case in broken::LLAMA_ASSERTS {
        let path = dir.path().join(format!("{}.gguf", case.name));
        (case.write)(&path).unwrap();
        let digest = upload_blob(&source, &path);
        std::fs::remove_file(&path).unwrap();
        let (status, body) = source.post(
            "/api/create",
            &json!({"model": case.name.replace('_', "-"), "files": {"model.gguf": digest},
                    "stream": false}),
        );
        let message = body["error"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{}: {body}", case.name);
        assert!(
            message.contains(case.field) && message.contains("llama.cpp"),
            "{}: {message:?} does not name {} and llama.cpp's limit",
            case.name,
            case.field
        );
    }
    let (status, tags) = source.get("/api/tags");
    assert_eq!(status, 200);
    assert_eq!(tags["models"], json!([]), "{tags}");

    // A good model on the source, whose weights layer is then swapped in its store for a file
    // of 513 layers, as a hostile registry would serve it.
    source.create_from_gguf("victim", &fixtures::qwen2());
    let hostile = dir.path().join("hostile.gguf");
    broken::too_many_layers(&hostile).unwrap();
    let digest = whale_tests::whaled::sha256_file(&hostile);
    let size = std::fs::metadata(&hostile).unwrap().len();
    std::fs::copy(
        &hostile,
        source.models.join("blobs").join(digest.replace(':', "-")),
    )
    .unwrap();
    let manifest_path = source
        .models
        .join("manifests/registry.ollama.ai/library/victim/latest");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let layers = manifest["layers"].as_array_mut().unwrap();
    let weights = layers
        .iter_mut()
        .find(|layer| layer["mediaType"] == "application/vnd.ollama.image.model")
        .expect("a weights layer");
    weights["digest"] = json!(digest);
    weights["size"] = json!(size);
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    let target = Whaled::builder()
        .env("WHALE_REGISTRY_MIRROR", source.url())
        .start();
    let lines = target.stream("/api/pull", &json!({"model": "victim", "insecure": true}));
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    let (status, body) = target.post(
        "/api/generate",
        &json!({"model": "victim", "prompt": "Hi", "stream": false}),
    );
    assert_eq!(status, 500, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("deepseek2.block_count is 513; llama.cpp supports 1 to 512 layers"),
        "{message:?}"
    );
    for daemon in [&source, &target] {
        let (status, _) = daemon.get("/api/version");
        assert_eq!(status, 200);
    }
    let (_, ps) = target.get("/api/ps");
    assert_eq!(ps["models"], json!([]), "{ps}");
}

/// Templates come from requests, Modelfiles and GGUFs, so whaled bounds what they may do: a
/// `printf` width that once made it allocate a terabyte and abort is a 400 naming the limit,
/// a template that does not compile is refused at create time, and whaled keeps serving.
#[test]
fn hostile_templates_get_a_400_naming_the_limit_and_the_daemon_keeps_serving() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    let check = |status: u16, body: &Value, needle: &str| {
        assert_eq!(status, 400, "{body}");
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {body}"));
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    };
    let generate = |model: &str, template: Option<&str>| {
        let mut request = json!({"model": model, "prompt": "hi", "stream": false,
                                 "options": {"num_predict": 2, "temperature": 0}});
        if let Some(template) = template {
            request["template"] = json!(template);
        }
        daemon.post("/api/generate", &request)
    };

    for (template, needle) in [
        (
            r#"{{ printf "%999999999999d" 1 }}{{ .Prompt }}"#,
            "printf: width 999999999999 is over the limit of 4096",
        ),
        (
            r#"{{ printf "%.999999999f" 1.5 }}{{ .Prompt }}"#,
            "printf: precision 999999999 is over the limit of 4096",
        ),
        (
            r#"{{ printf "%*d" 999999999999 1 }}{{ .Prompt }}"#,
            "printf: width 999999999999 is over the limit of 4096",
        ),
        (
            "{{ range 1000000000000 }}x{{ end }}{{ .Prompt }}",
            "the limit is 100000 iterations",
        ),
        ("{{ .Prompt ", "unclosed action"),
        (
            "{% for i in range(100000) %}{% set x = 'y' * 100000 %}{% endfor %}",
            "fuel",
        ),
        (
            "{{ '{:>99999999999}'.format(messages[0].content) }}",
            "the limit is 4096",
        ),
    ] {
        let (status, body) = generate("gemma", Some(template));
        check(status, &body, needle);
        let (status, _) = daemon.get("/api/version");
        assert_eq!(status, 200, "whaled stopped answering after {template}");
    }

    // A Modelfile template that does not compile is refused when the model is created, as
    // Ollama does; one that compiles but fails to render is a 400 at each request.
    let (status, body) = daemon.post(
        "/api/create",
        &json!({"model": "unclosed", "from": "gemma", "template": "{{ if .Prompt }}",
                "stream": false}),
    );
    check(status, &body, "template error");
    let (status, body) = daemon.post(
        "/api/create",
        &json!({"model": "padded", "from": "gemma", "stream": false,
                "template": r#"{{ printf "%99999d" 1 }}{{ .Prompt }}"#}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = generate("padded", None);
    check(
        status,
        &body,
        "printf: width 99999 is over the limit of 4096",
    );

    let (status, body) = daemon.get("/api/version");
    assert_eq!(status, 200, "{body}");
    let (status, body) = generate("gemma", None);
    assert_eq!(status, 200, "{body}");
    assert!(body["response"].is_string(), "{body}");
}

/// DeepSeek V3.2 (`deepseek32`, sparse attention) and V4 (`deepseek4`: sliding window,
/// compressed attention, hyper-connections) run through whaled like V3: planned, loaded in a
/// runner, greedy output the same twice (the second reusing the cached prompt), past the
/// indexers' top-k and V4's window so that the sparse paths run.
#[test]
fn deepseek32_and_deepseek4_answer_through_whaled() {
    let daemon = Whaled::start();
    for (name, path, family) in [
        ("v32", fixtures::deepseek32(), "deepseek32"),
        ("v4", fixtures::deepseek4(), "deepseek4"),
    ] {
        daemon.create_from_gguf(name, &path);
        let request = json!({"model": name, "stream": false,
            "messages": [{"role": "user", "content": "Tell me about the sea."}],
            "options": {"temperature": 0, "num_predict": 40}});
        let (status, first) = daemon.post("/api/chat", &request);
        assert_eq!(status, 200, "{name}: {first}");
        assert_eq!(first["eval_count"], 40, "{name}: {first}");
        let (_, second) = daemon.post("/api/chat", &request);
        assert_eq!(first["message"], second["message"], "{name}");
        let (status, ps) = daemon.get("/api/ps");
        assert_eq!(status, 200);
        let loaded = ps["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|model| model["name"] == name)
            .unwrap_or_else(|| panic!("{name} not loaded: {ps}"));
        assert_eq!(loaded["details"]["family"], family, "{ps}");
    }
}
