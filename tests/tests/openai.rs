//! End-to-end: the OpenAI / DeepSeek-compatible `/v1/*` routes of a real `whaled`, checked
//! against the native `/api/chat` answer to the same request under greedy sampling.

use serde_json::{Value, json};
use whale_tests::fixtures;
use whale_tests::whaled::Whaled;

/// Gemma 3 270M is a base model: with the messages' text as the whole prompt it counts on.
const RAW_TEMPLATE: &str =
    "{{ bos_token }}{% for message in messages %}{{ message.content }}{% endfor %}";

/// DeepSeek R1's template in short: history keeps the text after `</think>`, and the
/// generation prompt opens a think block, so the output starts as reasoning.
const R1_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}<｜User｜>{{ message['content'] }}{% elif message['role'] == 'assistant' %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}<｜Assistant｜>{{ content }}<｜end▁of▁sentence｜>{% endif %}{% endfor %}{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}";

const COUNT: &str = "1, 2, 3, 4, 5,";

/// Creates `name` from the stored model `from` with another template.
fn create_with_template(daemon: &Whaled, name: &str, from: &str, template: &str) {
    let (status, body) = daemon.post(
        "/api/create",
        &json!({"model": name, "from": from, "template": template, "stream": false}),
    );
    assert_eq!(status, 200, "create {name}: {body}");
}

/// A daemon serving Gemma as `gemma` and, with the raw template, as `counter`.
fn counter() -> Whaled {
    let daemon = Whaled::start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    create_with_template(&daemon, "counter", "gemma", RAW_TEMPLATE);
    daemon
}

/// `POST path` reading a Server-Sent Events stream: the content type and each `data:` payload.
fn events(daemon: &Whaled, path: &str, body: &Value) -> (String, Vec<String>) {
    let response = Whaled::http()
        .post(format!("{}{path}", daemon.url()))
        .json(body)
        .send()
        .expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().expect("body");
    assert_eq!(status, 200, "{path} answered {status}: {text}");
    assert!(text.ends_with("\n\n"), "{text:?}");
    let data = text
        .split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                .to_owned()
        })
        .collect();
    (content_type, data)
}

/// The JSON chunks of a stream that ended with `data: [DONE]`.
fn parse_chunks(data: &[String]) -> Vec<Value> {
    let (done, chunks) = data.split_last().expect("events");
    assert_eq!(done, "[DONE]", "{data:?}");
    chunks
        .iter()
        .map(|chunk| serde_json::from_str(chunk).unwrap_or_else(|e| panic!("{chunk:?}: {e}")))
        .collect()
}

/// One field of every delta, joined.
fn joined(chunks: &[Value], field: &str) -> String {
    chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"][field].as_str())
        .collect()
}

fn assert_openai_error(status: u16, body: &Value, expected: u16, kind: &str, needle: &str) {
    assert_eq!(status, expected, "{body}");
    let error = &body["error"];
    assert_eq!(error["type"], kind, "{body}");
    assert_eq!(error["param"], Value::Null, "{body}");
    assert_eq!(error["code"], Value::Null, "{body}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains(needle)),
        "{body} lacks {needle:?}"
    );
}

#[test]
fn chat_completions_answer_as_api_chat_does_and_stream_the_same_text() {
    let daemon = counter();
    let (status, native) = daemon.post(
        "/api/chat",
        &json!({"model": "counter", "messages": [{"role": "user", "content": COUNT}], "stream": false,
                "options": {"temperature": 0, "seed": 7, "num_predict": 8}}),
    );
    assert_eq!(status, 200, "{native}");
    let expected = native["message"]["content"].as_str().unwrap();
    assert!(expected.starts_with(" 6, 7, 8"), "{native}");

    let request = json!({"model": "counter", "messages": [{"role": "user", "content": COUNT}],
                         "temperature": 0, "seed": 7, "max_tokens": 8});
    let (status, answer) = daemon.post("/v1/chat/completions", &request);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(answer["created"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(answer["model"], "counter");
    assert_eq!(answer["system_fingerprint"], "fp_whale");
    let choice = &answer["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], expected, "{answer}");
    assert!(
        choice["message"].get("reasoning_content").is_none(),
        "{answer}"
    );
    // max_tokens is num_predict: 8 tokens, cut short.
    assert_eq!(choice["finish_reason"], "length", "{answer}");
    // The prompt is counted whole; the part the slot's cache held is DeepSeek's cache hit.
    let usage = &answer["usage"];
    let prompt_tokens = native["prompt_eval_count"].as_u64().unwrap();
    assert_eq!(usage["prompt_tokens"], prompt_tokens, "{answer}");
    assert_eq!(usage["completion_tokens"], 8, "{answer}");
    assert_eq!(usage["total_tokens"], prompt_tokens + 8, "{answer}");
    assert_eq!(
        usage["prompt_cache_hit_tokens"].as_u64().unwrap()
            + usage["prompt_cache_miss_tokens"].as_u64().unwrap(),
        prompt_tokens,
        "{answer}"
    );

    // Text parts join; an assistant turn's reasoning (either name) is accepted and stripped.
    let (status, parts) = daemon.post(
        "/v1/chat/completions",
        &json!({"model": "counter", "temperature": 0, "seed": 7, "max_completion_tokens": 8,
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "1, 2,"}]},
                    {"role": "assistant", "content": " 3,", "reasoning_content": "count on"},
                    {"role": "assistant", "content": " 4,", "reasoning": "and on"},
                    {"role": "user", "content": [{"type": "text", "text": " 5"}, {"type": "text", "text": ","}]}]}),
    );
    assert_eq!(status, 200, "{parts}");
    assert_eq!(
        parts["choices"][0]["message"]["content"], expected,
        "{parts}"
    );

    // A stop sequence ends the answer before it, with finish_reason stop.
    let (status, stopped) = daemon.post(
        "/v1/chat/completions",
        &json!({"model": "counter", "messages": [{"role": "user", "content": COUNT}],
                "temperature": 0, "max_tokens": 8, "stop": ", 8"}),
    );
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["choices"][0]["message"]["content"], " 6, 7");
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");

    // Streaming: the same text in deltas, one finish_reason, the usage, then [DONE].
    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let (content_type, data) = events(&daemon, "/v1/chat/completions", &streaming);
    assert_eq!(content_type, "text/event-stream");
    let chunks = parse_chunks(&data);
    assert!(chunks.len() >= 3, "{data:?}");
    assert_eq!(joined(&chunks, "content"), expected, "{data:?}");
    let id = &chunks[0]["id"];
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(&chunk["id"], id, "{chunk}");
        assert_eq!(chunk["model"], "counter", "{chunk}");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"].get(0))
        .map(|choice| &choice["finish_reason"])
        .filter(|reason| !reason.is_null())
        .collect();
    assert_eq!(finishes, [&json!("length")], "{data:?}");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "{last}");
    for field in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(last["usage"][field], usage[field], "{last}");
    }

    // Without include_usage there is no usage chunk.
    streaming["stream_options"] = json!({"include_usage": false});
    let (_, data) = events(&daemon, "/v1/chat/completions", &streaming);
    let plain = parse_chunks(&data);
    assert!(plain.iter().all(|chunk| chunk.get("usage").is_none()));
    assert_eq!(joined(&plain, "content"), expected);
}

#[test]
fn models_list_what_api_tags_lists() {
    let daemon = counter();
    let (status, tags) = daemon.get("/api/tags");
    assert_eq!(status, 200, "{tags}");
    let mut names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();

    let (status, list) = daemon.get("/v1/models");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["object"], "list");
    let mut ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, names, "{list}");
    assert_eq!(ids, ["counter:latest", "gemma:latest"]);
    for model in list["data"].as_array().unwrap() {
        assert_eq!(model["object"], "model", "{model}");
        assert_eq!(model["owned_by"], "library", "{model}");
        assert!(
            model["created"].as_i64().unwrap() > 1_700_000_000,
            "{model}"
        );
    }

    let (status, one) = daemon.get("/v1/models/counter");
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["id"], "counter:latest");
    let (status, full) = daemon.get("/v1/models/registry.ollama.ai/library/gemma:latest");
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["id"], "gemma:latest");
    let (status, missing) = daemon.get("/v1/models/nope");
    assert_openai_error(status, &missing, 404, "not_found_error", "not found");
}

#[test]
fn errors_take_openais_shape_and_the_daemon_keeps_serving() {
    let daemon = counter();
    let url = format!("{}/v1/chat/completions", daemon.url());
    let response = Whaled::http()
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().unwrap();
    assert_openai_error(status, &body, 400, "invalid_request_error", "EOF");

    let user = json!([{"role": "user", "content": COUNT}]);
    for (request, expected, kind, needle) in [
        (
            json!({"model": "nope", "messages": user}),
            404,
            "not_found_error",
            "model 'nope' not found",
        ),
        (
            json!({"model": "counter", "messages": []}),
            400,
            "invalid_request_error",
            "too short",
        ),
        (
            json!({"model": "counter", "messages": "hi"}),
            400,
            "invalid_request_error",
            "",
        ),
        (
            json!({"model": "counter", "messages": user, "temperature": 500}),
            400,
            "invalid_request_error",
            "temperature",
        ),
        (
            json!({"model": "counter", "messages": user, "reasoning_effort": "extreme"}),
            400,
            "invalid_request_error",
            "reasoning_effort",
        ),
        (
            json!({"model": "counter", "messages": user, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
            400,
            "invalid_request_error",
            "schema",
        ),
        (
            json!({"model": "counter", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "data:;base64,AA=="}]}]}),
            400,
            "invalid_request_error",
            "text",
        ),
    ] {
        let (status, body) = daemon.post("/v1/chat/completions", &request);
        assert_openai_error(status, &body, expected, kind, needle);
    }
    // The native routes keep Ollama's shape.
    let (status, body) = daemon.post("/api/chat", &json!({"model": "nope", "messages": user}));
    assert_eq!(status, 404);
    assert_eq!(body["error"], "model 'nope' not found");

    let (status, answer) = daemon.post(
        "/v1/chat/completions",
        &json!({"model": "counter", "messages": user, "temperature": 0, "max_tokens": 3}),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with(" 6"),
        "{answer}"
    );
}

#[test]
fn reasoning_arrives_as_reasoning_content() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("deepseek-tiny", &fixtures::deepseek2());
    create_with_template(&daemon, "r1-tiny", "deepseek-tiny", R1_TEMPLATE);
    let user = json!([{"role": "user", "content": "Hi"}]);
    // Random weights: whatever the model writes inside the open think block is reasoning.
    let (status, native) = daemon.post(
        "/api/chat",
        &json!({"model": "r1-tiny", "messages": user, "stream": false,
                "options": {"temperature": 0, "seed": 1, "num_predict": 12}}),
    );
    assert_eq!(status, 200, "{native}");
    let thinking = native["message"]["thinking"].as_str().unwrap();
    assert!(!thinking.is_empty(), "{native}");
    let content = native["message"]["content"].as_str().unwrap();

    let request = json!({"model": "r1-tiny", "messages": user, "temperature": 0, "seed": 1,
                         "max_tokens": 12});
    let (status, answer) = daemon.post("/v1/chat/completions", &request);
    assert_eq!(status, 200, "{answer}");
    let message = &answer["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], thinking, "{answer}");
    assert_eq!(message["reasoning"], thinking, "{answer}");
    assert_eq!(message["content"], content, "{answer}");
    assert_eq!(answer["usage"]["completion_tokens"], native["eval_count"]);

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    let (_, data) = events(&daemon, "/v1/chat/completions", &streaming);
    let chunks = parse_chunks(&data);
    assert_eq!(joined(&chunks, "reasoning_content"), thinking, "{data:?}");
    assert_eq!(joined(&chunks, "reasoning"), thinking, "{data:?}");
    assert_eq!(joined(&chunks, "content"), content, "{data:?}");

    // reasoning_effort "none" is think off: no reasoning, as /api/chat with think false.
    let (status, native_off) = daemon.post(
        "/api/chat",
        &json!({"model": "r1-tiny", "messages": user, "stream": false, "think": false,
                "options": {"temperature": 0, "seed": 1, "num_predict": 12}}),
    );
    assert_eq!(status, 200, "{native_off}");
    let mut off = request.clone();
    off["reasoning_effort"] = json!("none");
    let (status, answer) = daemon.post("/v1/chat/completions", &off);
    assert_eq!(status, 200, "{answer}");
    let message = &answer["choices"][0]["message"];
    assert!(message.get("reasoning_content").is_none(), "{answer}");
    assert_eq!(message["content"], native_off["message"]["content"]);
}

#[test]
fn completions_answer_as_api_generate_does_and_stream_the_same_text() {
    let daemon = counter();
    let (status, native) = daemon.post(
        "/api/generate",
        &json!({"model": "counter", "prompt": COUNT, "stream": false,
                "options": {"temperature": 0, "num_predict": 8}}),
    );
    assert_eq!(status, 200, "{native}");
    let expected = native["response"].as_str().unwrap();
    assert!(expected.starts_with(" 6, 7, 8"), "{native}");

    let request = json!({"model": "counter", "prompt": COUNT, "temperature": 0, "max_tokens": 8});
    let (status, answer) = daemon.post("/v1/completions", &request);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "text_completion", "{answer}");
    assert!(answer["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(answer["model"], "counter");
    assert_eq!(answer["system_fingerprint"], "fp_whale");
    let choice = &answer["choices"][0];
    assert_eq!(choice["text"], expected, "{answer}");
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "length", "{answer}");
    assert_eq!(answer["usage"]["completion_tokens"], 8, "{answer}");
    assert_eq!(
        answer["usage"]["prompt_tokens"], native["prompt_eval_count"],
        "{answer}"
    );

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (content_type, data) = events(&daemon, "/v1/completions", &streamed);
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let chunks = parse_chunks(&data);
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, expected);
    let (usage, rest) = chunks.split_last().unwrap();
    assert_eq!(usage["choices"], json!([]), "{usage}");
    assert_eq!(usage["usage"]["completion_tokens"], 8, "{usage}");
    assert_eq!(
        rest.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );

    let (status, body) = daemon.post("/v1/completions", &json!({"model": "counter"}));
    assert_openai_error(status, &body, 400, "invalid_request_error", "prompt");
    let (status, body) = daemon.post(
        "/v1/completions",
        &json!({"model": "nope", "prompt": COUNT}),
    );
    assert_openai_error(status, &body, 404, "not_found_error", "nope");
}

#[test]
fn embeddings_are_api_embeds_vectors_as_floats_or_base64() {
    use base64::prelude::{BASE64_STANDARD, Engine as _};
    let daemon = Whaled::start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    let inputs = json!(["Why is the sky blue?", "Whales are large."]);
    let (status, native) = daemon.post("/api/embed", &json!({"model": "gemma", "input": inputs}));
    assert_eq!(status, 200, "{native}");
    let vector = |value: &Value| -> Vec<f64> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let close = |a: &[f64], b: &[f64]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
    };

    let (status, list) = daemon.post(
        "/v1/embeddings",
        &json!({"model": "gemma", "input": inputs}),
    );
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["object"], "list");
    assert_eq!(list["model"], "gemma");
    assert_eq!(
        list["usage"]["prompt_tokens"], native["prompt_eval_count"],
        "{list}"
    );
    assert_eq!(
        list["usage"]["total_tokens"], native["prompt_eval_count"],
        "{list}"
    );
    for index in 0..2 {
        let item = &list["data"][index];
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], index);
        assert!(close(
            &vector(&item["embedding"]),
            &vector(&native["embeddings"][index])
        ));
    }

    // base64: the same floats, little-endian f32.
    let (status, encoded) = daemon.post(
        "/v1/embeddings",
        &json!({"model": "gemma", "input": "Why is the sky blue?", "encoding_format": "base64"}),
    );
    assert_eq!(status, 200, "{encoded}");
    let bytes = BASE64_STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f64> = bytes
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect();
    assert!(close(&floats, &vector(&native["embeddings"][0])));

    // dimensions: the first values, normalised again (here and on /api/embed).
    let (status, short) = daemon.post(
        "/v1/embeddings",
        &json!({"model": "gemma", "input": inputs, "dimensions": 64}),
    );
    assert_eq!(status, 200, "{short}");
    let (status, native_short) = daemon.post(
        "/api/embed",
        &json!({"model": "gemma", "input": inputs, "dimensions": 64}),
    );
    assert_eq!(status, 200, "{native_short}");
    let cut = vector(&short["data"][0]["embedding"]);
    assert_eq!(cut.len(), 64);
    assert!(close(&cut, &vector(&native_short["embeddings"][0])));
    let norm = cut.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    let full = vector(&native["embeddings"][0]);
    let scale = full[..64].iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(close(
        &cut,
        &full[..64].iter().map(|x| x / scale).collect::<Vec<_>>()
    ));

    for (body, needle) in [
        (json!({"model": "gemma", "input": []}), "invalid input"),
        (
            json!({"model": "gemma", "input": "a", "encoding_format": "hex"}),
            "encoding format",
        ),
    ] {
        let (status, error) = daemon.post("/v1/embeddings", &body);
        assert_openai_error(status, &error, 400, "invalid_request_error", needle);
    }
}

#[test]
fn chat_completions_give_logprobs_in_openais_shape() {
    let daemon = counter();
    let request = json!({"model": "counter", "messages": [{"role": "user", "content": COUNT}],
                         "temperature": 0, "max_tokens": 6, "logprobs": true, "top_logprobs": 2});
    let (status, answer) = daemon.post("/v1/chat/completions", &request);
    assert_eq!(status, 200, "{answer}");
    let choice = &answer["choices"][0];
    let content = choice["logprobs"]["content"]
        .as_array()
        .expect("logprobs.content");
    assert_eq!(
        content.len() as u64,
        answer["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let joined: String = content
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(joined, choice["message"]["content"].as_str().unwrap());
    for token in content {
        assert!(token["logprob"].as_f64().unwrap() <= 0.0, "{token}");
        assert!(token["bytes"].is_array(), "{token}");
        let top = token["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2, "{token}");
        assert_eq!(top[0]["token"], token["token"], "{token}");
    }

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let (_, data) = events(&daemon, "/v1/chat/completions", &streamed);
    let chunks = parse_chunks(&data);
    let entries: Vec<Value> = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["logprobs"]["content"].as_array())
        .flatten()
        .cloned()
        .collect();
    assert_eq!(&entries, content);

    let (status, plain) = daemon.post(
        "/v1/chat/completions",
        &json!({"model": "counter", "messages": [{"role": "user", "content": COUNT}],
                "max_tokens": 2}),
    );
    assert_eq!(status, 200, "{plain}");
    assert!(plain["choices"][0].get("logprobs").is_none(), "{plain}");
}

#[test]
fn deepseek_api_names_stand_for_configured_local_models() {
    let daemon = Whaled::builder()
        .env("WHALE_DEEPSEEK_REASONER", "r1-tiny")
        .env("WHALE_DEEPSEEK_R1_ZERO", "r1-zero-tiny")
        .start();
    daemon.create_from_gguf("r1-tiny", &fixtures::deepseek2());
    let greedy = json!({"temperature": 0, "max_tokens": 4});

    let mut request = json!({"model": "deepseek-reasoner",
                             "messages": [{"role": "user", "content": "Hi"}]});
    request
        .as_object_mut()
        .unwrap()
        .extend(greedy.as_object().unwrap().clone());
    let (status, answer) = daemon.post("/v1/chat/completions", &request);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "deepseek-reasoner", "{answer}");
    let (status, native) = daemon.post(
        "/api/chat",
        &json!({"model": "deepseek-reasoner", "stream": false,
                "messages": [{"role": "user", "content": "Hi"}],
                "options": {"temperature": 0, "num_predict": 4}}),
    );
    assert_eq!(status, 200, "{native}");
    assert_eq!(native["model"], "deepseek-reasoner", "{native}");

    // Listed under the DeepSeek API's name only while what it stands for is here.
    let (_, list) = daemon.get("/v1/models");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"deepseek-reasoner"), "{list}");
    assert!(!ids.contains(&"deepseek-chat"), "{list}");
    assert!(!ids.contains(&"deepseek-r1-zero"), "{list}");
    let (status, one) = daemon.get("/v1/models/deepseek-reasoner");
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["id"], "deepseek-reasoner");

    // `deepseek-chat` stands for deepseek-v3, which is not here: the error says what to do.
    let mut request = json!({"model": "deepseek-chat",
                             "messages": [{"role": "user", "content": "Hi"}]});
    request
        .as_object_mut()
        .unwrap()
        .extend(greedy.as_object().unwrap().clone());
    let (status, missing) = daemon.post("/v1/chat/completions", &request);
    assert_openai_error(
        status,
        &missing,
        404,
        "not_found_error",
        "WHALE_DEEPSEEK_CHAT",
    );

    // A stored model of that very name wins.
    create_with_template(&daemon, "deepseek-chat", "r1-tiny", R1_TEMPLATE);
    let (status, answer) = daemon.post("/v1/chat/completions", &request);
    assert_eq!(status, 200, "{answer}");
    let (_, list) = daemon.get("/v1/models");
    let chats = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["id"].as_str().unwrap().starts_with("deepseek-chat"))
        .count();
    assert_eq!(chats, 1, "{list}");

    // `deepseek-r1-zero`, as DeepSeek's R1 examples name it, with a second turn that carries
    // the first answer back (its reasoning in `reasoning_content`, as the openai client keeps it).
    create_with_template(&daemon, "r1-zero-tiny", "r1-tiny", R1_TEMPLATE);
    let first = json!({"model": "deepseek-r1-zero", "temperature": 0, "max_tokens": 8,
                       "messages": [{"role": "user", "content": "9.11 and 9.8, which is greater?"}]});
    let (status, answer) = daemon.post("/v1/chat/completions", &first);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "deepseek-r1-zero", "{answer}");
    let reply = &answer["choices"][0]["message"];
    let second = json!({"model": "deepseek-r1-zero", "temperature": 0, "max_tokens": 8,
        "messages": [
            {"role": "user", "content": "9.11 and 9.8, which is greater?"},
            {"role": "assistant", "content": reply["content"],
             "reasoning_content": reply["reasoning_content"]},
            {"role": "user", "content": "How many Rs are there in the word 'strawberry'?"}]});
    let (status, answer) = daemon.post("/v1/chat/completions", &second);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "deepseek-r1-zero", "{answer}");
    let (_, list) = daemon.get("/v1/models");
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "deepseek-r1-zero"),
        "{list}"
    );
}

#[test]
fn debug_render_only_shows_the_prompt_without_running_the_model() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("tiny", &fixtures::deepseek2());
    create_with_template(&daemon, "r1", "tiny", R1_TEMPLATE);
    let (status, answer) = daemon.post(
        "/api/chat",
        &json!({"model": "r1", "_debug_render_only": true,
                "messages": [{"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "<think>\nhm\n</think>\n\nHello"},
                             {"role": "user", "content": "Again"}]}),
    );
    assert_eq!(status, 200, "{answer}");
    let rendered = answer["_debug_info"]["rendered_template"].as_str().unwrap();
    // Earlier reasoning is dropped as R1's own template drops it: split at `</think>`.
    assert_eq!(
        rendered,
        "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>\n\nHello<｜end▁of▁sentence｜>\
         <｜User｜>Again<｜Assistant｜><think>\n"
    );
    assert_eq!(answer["_debug_info"]["image_count"], 0);
    assert_eq!(answer["done"], false, "{answer}");
    assert_eq!(answer["message"]["content"], "", "{answer}");
    assert!(
        answer.get("eval_count").is_none(),
        "nothing was generated: {answer}"
    );

    let (status, answer) = daemon.post(
        "/api/generate",
        &json!({"model": "r1", "prompt": "Why?", "_debug_render_only": true}),
    );
    assert_eq!(status, 200, "{answer}");
    let rendered = answer["_debug_info"]["rendered_template"].as_str().unwrap();
    assert!(
        rendered.ends_with("<｜User｜>Why?<｜Assistant｜><think>\n"),
        "{rendered:?}"
    );
    assert_eq!(answer["response"], "", "{answer}");

    let (status, answer) = daemon.post(
        "/api/generate",
        &json!({"model": "r1", "prompt": "as is", "raw": true, "_debug_render_only": true}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["_debug_info"]["rendered_template"], "as is");
}

/// The scripts people already have — ollama-python's `ollama.chat` and the openai client as
/// DeepSeek's guide uses it, `deepseek-r1-zero` and a second turn — run against whaled with
/// only the address changed (`tests/clients/seed.py`, the real clients from `PyPI`).
#[test]
fn ollama_and_openai_client_scripts_work_with_only_the_address_changed() {
    let clients = fixtures::root().join("clients-py");
    assert!(
        clients.join(".complete").exists(),
        "the Python clients are missing: run scripts/fetch-fixtures.sh"
    );
    let daemon = Whaled::builder()
        .env("WHALE_DEEPSEEK_R1_ZERO", "deepseek-r1:14b")
        .start();
    daemon.create_from_gguf("tiny", &fixtures::deepseek2());
    create_with_template(&daemon, "deepseek-r1:14b", "tiny", R1_TEMPLATE);

    let output = std::process::Command::new("python3")
        .arg("-s")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/clients/seed.py"))
        .arg(daemon.url())
        .env("PYTHONPATH", &clients)
        .env("OLLAMA_HOST", daemon.url())
        .env_remove("OPENAI_BASE_URL")
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "seed.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();

    let native = &out["ollama"];
    assert_eq!(native["role"], "assistant", "{out}");
    assert_eq!(native["done"], true, "{out}");
    assert_eq!(native["eval_count"], 8, "{out}");
    // R1's template opens the think block: random weights write reasoning, never leaked.
    assert!(
        native["thinking"].as_str().is_some_and(|t| !t.is_empty()),
        "{out}"
    );
    let streamed = &out["ollama_stream"];
    assert!(streamed["parts"].as_u64().unwrap() > 1, "{out}");
    assert_eq!(streamed["thinking"], native["thinking"], "{out}");
    assert_eq!(streamed["content"], native["content"], "{out}");

    let openai = &out["openai"];
    assert_eq!(openai["model"], "deepseek-r1-zero", "{out}");
    assert_eq!(openai["second_model"], "deepseek-r1-zero", "{out}");
    for reasoning in [&openai["reasoning_content"], &openai["second_reasoning"]] {
        assert!(reasoning.as_str().is_some_and(|r| !r.is_empty()), "{out}");
    }
    assert!(openai["content"].is_string(), "{out}");
    assert!(
        openai["second_prompt_tokens"].as_u64() > openai["first_prompt_tokens"].as_u64(),
        "{out}"
    );
}

/// A template that shows tools and opens the assistant's turn without reasoning.
const TOOLS_TEMPLATE: &str = "{{ bos_token }}{% if tools %}You may call these tools: {{ tools | tojson }}\n{% endif %}{% for message in messages %}{% if message['role'] == 'user' %}<｜User｜>{{ message['content'] }}{% elif message['role'] == 'assistant' %}<｜Assistant｜>{{ message['content'] }}<｜end▁of▁sentence｜>{% endif %}{% endfor %}{% if add_generation_prompt %}<｜Assistant｜>{% endif %}";

#[test]
fn a_required_or_named_tool_choice_makes_the_answer_a_call() {
    let daemon = counter();
    create_with_template(&daemon, "tooled", "gemma", TOOLS_TEMPLATE);
    let tool = |name: &str| {
        json!({"type": "function", "function": {"name": name, "description": "a tool",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                              "required": ["city"], "additionalProperties": false}}})
    };
    let ask = |choice: Value| {
        daemon.post(
            "/v1/chat/completions",
            &json!({"model": "tooled", "temperature": 0, "max_tokens": 512,
                    "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                    "tools": [tool("get_weather"), tool("get_time")], "tool_choice": choice}),
        )
    };
    for (choice, names) in [
        (json!("required"), vec!["get_weather", "get_time"]),
        (
            json!({"type": "function", "function": {"name": "get_time"}}),
            vec!["get_time"],
        ),
    ] {
        let (status, body) = ask(choice.clone());
        assert_eq!(status, 200, "{body}");
        let choice0 = &body["choices"][0];
        assert_eq!(choice0["finish_reason"], "tool_calls", "{choice}: {body}");
        let calls = choice0["message"]["tool_calls"]
            .as_array()
            .unwrap_or_else(|| panic!("{choice}: no tool calls in {body}"));
        assert!(!calls.is_empty(), "{body}");
        for call in calls {
            let name = call["function"]["name"].as_str().unwrap();
            assert!(names.contains(&name), "{choice}: called {name}");
            let arguments: Value =
                serde_json::from_str(call["function"]["arguments"].as_str().unwrap())
                    .unwrap_or_else(|error| panic!("{call}: {error}"));
            // The arguments are what the tool's schema allows: a city, and nothing else.
            assert!(arguments["city"].is_string(), "{call}");
            assert_eq!(arguments.as_object().unwrap().len(), 1, "{call}");
        }
    }

    // A call required with nothing to call, or with response_format too: 400.
    let (status, body) = daemon.post(
        "/v1/chat/completions",
        &json!({"model": "tooled", "messages": [{"role": "user", "content": "Hi"}],
                "tool_choice": "required"}),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = daemon.post(
        "/v1/chat/completions",
        &json!({"model": "tooled", "messages": [{"role": "user", "content": "Hi"}],
                "tools": [tool("get_time")], "tool_choice": "required",
                "response_format": {"type": "json_object"}}),
    );
    assert_eq!(status, 400, "{body}");
}
