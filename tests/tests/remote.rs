//! Remote models: a Modelfile `FROM openai://host:port/v1/MODEL` makes a model that another
//! OpenAI-compatible server runs. Here that server is a second whaled on loopback, serving the
//! tiny deepseek2 fixture under DeepSeek R1's template (so its output opens as reasoning): the
//! front daemon answers `/api/chat`, `/api/generate` and `/v1/chat/completions`, streaming and
//! not, with the upstream's text and reasoning mapped to each API's fields.

use std::io::Write as _;

use serde_json::{Value, json};
use whale_tests::fixtures;
use whale_tests::whaled::Whaled;

/// DeepSeek R1's template in short: the generation prompt opens a think block.
const R1_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}<｜User｜>{{ message['content'] }}{% elif message['role'] == 'assistant' %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}<｜Assistant｜>{{ content }}<｜end▁of▁sentence｜>{% endif %}{% endfor %}{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}";

const TOKENS: u64 = 6;

/// The upstream: `r1` answers with reasoning. Models unload after each request, so every
/// request starts from the same state and greedy answers repeat exactly.
fn upstream() -> Whaled {
    let daemon = Whaled::builder().env("WHALE_KEEP_ALIVE", "0").start();
    daemon.create_from_gguf("tiny", &fixtures::deepseek2());
    let (status, body) = daemon.post(
        "/api/create",
        &json!({"model": "r1", "from": "tiny", "template": R1_TEMPLATE, "stream": false}),
    );
    assert_eq!(status, 200, "{body}");
    daemon
}

/// `whale create NAME -f Modelfile` on `daemon`, returning the command's output.
fn create(daemon: &Whaled, name: &str, modelfile: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("Modelfile");
    std::fs::File::create(&path)
        .and_then(|mut file| file.write_all(modelfile.as_bytes()))
        .expect("write Modelfile");
    daemon
        .whale(["create", name, "-f", path.to_str().unwrap()])
        .output()
        .expect("run whale create")
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Why is the sky blue?"}],
           "options": {"temperature": 0, "num_predict": TOKENS}})
}

/// The `data:` payloads of a Server-Sent Events answer, `[DONE]` left out.
fn events(daemon: &Whaled, path: &str, body: &Value) -> Vec<Value> {
    let response = Whaled::http()
        .post(format!("{}{path}", daemon.url()))
        .json(body)
        .send()
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    response
        .text()
        .expect("body")
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).expect("event JSON"))
        .collect()
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .or_else(|| body["error"]["message"].as_str())
        .unwrap_or_default()
}

#[test]
fn a_remote_model_answers_chat_and_generate_through_its_upstream() {
    let upstream = upstream();
    let daemon = Whaled::start();
    let output = create(
        &daemon,
        "remote-r1",
        &format!(
            "FROM openai://{}/v1/r1\nPARAMETER temperature 0\nPARAMETER num_predict {TOKENS}\n",
            upstream.url().trim_start_matches("http://")
        ),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Listed with where it runs; shown with the FROM that made it.
    let (_, tags) = daemon.get("/api/tags");
    let listed = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|model| model["name"] == "remote-r1:latest")
        .unwrap_or_else(|| panic!("not listed: {tags}"));
    assert_eq!(listed["remote_model"], "r1");
    assert_eq!(listed["remote_host"], format!("{}/v1", upstream.url()));
    let list = daemon.whale(["list"]).output().expect("whale list");
    assert!(String::from_utf8_lossy(&list.stdout).contains("remote-r1:latest"));
    let (status, shown) = daemon.post("/api/show", &json!({"model": "remote-r1"}));
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["remote_model"], "r1");
    assert!(
        shown["modelfile"].as_str().unwrap().contains(&format!(
            "FROM openai://{}/v1/r1",
            upstream.url().trim_start_matches("http://")
        )),
        "{shown}"
    );

    // /api/chat: the upstream's reasoning arrives as `thinking`, as the upstream's own
    // /api/chat gives it.
    let (status, direct) = upstream.post("/api/chat", &{
        let mut request = chat("r1");
        request["stream"] = false.into();
        request
    });
    assert_eq!(status, 200, "{direct}");
    let reasoning = direct["message"]["thinking"].as_str().unwrap().to_owned();
    assert!(
        !reasoning.is_empty(),
        "the upstream gave no reasoning: {direct}"
    );
    let (status, answer) = daemon.post("/api/chat", &{
        let mut request = chat("remote-r1");
        request["stream"] = false.into();
        request
    });
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["message"]["thinking"], reasoning);
    assert_eq!(answer["message"]["content"], direct["message"]["content"]);
    assert_eq!(answer["done"], true);
    assert_eq!(answer["eval_count"], direct["eval_count"]);
    assert_eq!(answer["prompt_eval_count"], direct["prompt_eval_count"]);

    // Streamed, and with the Modelfile's parameters standing in for the request's options.
    let chunks = daemon.stream(
        "/api/chat",
        &json!({"model": "remote-r1", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}),
    );
    let streamed: String = chunks
        .iter()
        .filter_map(|chunk| chunk["message"]["thinking"].as_str())
        .collect();
    assert_eq!(streamed, reasoning);
    let finale = chunks.last().unwrap();
    assert_eq!(finale["done"], true, "{finale}");
    assert_eq!(finale["eval_count"], TOKENS, "{finale}");

    // /v1/chat/completions: `reasoning_content`, whole and in deltas.
    let (status, completion) = daemon.post("/v1/chat/completions", &{
        let mut request = chat("remote-r1");
        request["max_tokens"] = TOKENS.into();
        request
    });
    assert_eq!(status, 200, "{completion}");
    assert_eq!(
        completion["choices"][0]["message"]["reasoning_content"],
        reasoning
    );
    assert_eq!(completion["model"], "remote-r1");
    assert_eq!(completion["usage"]["completion_tokens"], TOKENS);
    let deltas = events(
        &daemon,
        "/v1/chat/completions",
        &json!({"model": "remote-r1", "stream": true,
                "messages": [{"role": "user", "content": "Why is the sky blue?"}]}),
    );
    let streamed: String = deltas
        .iter()
        .filter_map(|event| event["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(streamed, reasoning);
    assert!(
        deltas
            .iter()
            .any(|event| event["choices"][0]["finish_reason"] == "length"),
        "{deltas:?}"
    );

    // /api/generate: a prompt becomes one user turn upstream.
    let (status, generated) = daemon.post(
        "/api/generate",
        &json!({"model": "remote-r1", "prompt": "Why is the sky blue?", "stream": false}),
    );
    assert_eq!(status, 200, "{generated}");
    assert_eq!(generated["thinking"], reasoning);

    // /v1/completions: a raw prompt, completed as the upstream completes it.
    let request = |model: &str| json!({"model": model, "prompt": "1, 2, 3,", "max_tokens": 4, "temperature": 0});
    let (status, direct) = upstream.post("/v1/completions", &request("r1"));
    assert_eq!(status, 200, "{direct}");
    let (status, completed) = daemon.post("/v1/completions", &request("remote-r1"));
    assert_eq!(status, 200, "{completed}");
    assert_eq!(
        completed["choices"][0]["text"],
        direct["choices"][0]["text"]
    );

    // Loading is the upstream's business: the load form answers, nothing runs here.
    let (status, loaded) = daemon.post("/api/generate", &json!({"model": "remote-r1"}));
    assert_eq!(status, 200, "{loaded}");
    assert_eq!(loaded["done_reason"], "load");
    let (_, ps) = daemon.get("/api/ps");
    assert_eq!(ps["models"], json!([]));
}

#[test]
fn remote_models_fail_with_the_reason_and_the_daemon_keeps_serving() {
    // A guarded upstream with no models: an answer of "model not found" shows the key got in.
    let guarded = Whaled::builder().env("WHALE_API_KEY", "sekrit").start();
    let address = guarded.url().trim_start_matches("http://").to_owned();
    let daemon = Whaled::builder()
        .env("WHALE_UPSTREAM_KEY_GOOD", "sekrit")
        .env("WHALE_UPSTREAM_KEY_WRONG", "guess")
        .start();
    let make = |name: &str, from: &str| {
        let (status, body) = daemon.post(
            "/api/create",
            &json!({"model": name, "from": from, "stream": false}),
        );
        (status, body)
    };
    for (name, key) in [
        ("good", "WHALE_UPSTREAM_KEY_GOOD"),
        ("wrong", "WHALE_UPSTREAM_KEY_WRONG"),
        ("unset", "WHALE_UPSTREAM_KEY_UNSET"),
    ] {
        let (status, body) = make(name, &format!("openai://{address}/v1/absent?key_env={key}"));
        assert_eq!(status, 200, "{body}");
    }
    // Nothing listens on port 9 of loopback (discard): the upstream cannot be reached.
    let (status, body) = make("down", "openai://127.0.0.1:9/v1/r1");
    assert_eq!(status, 200, "{body}");

    let ask = |model: &str| {
        daemon.post("/api/chat", &{
            let mut request = chat(model);
            request["stream"] = false.into();
            request
        })
    };
    let (status, body) = ask("good");
    assert_eq!(status, 502, "{body}");
    assert!(error_of(&body).contains("'absent' not found"), "{body}");
    let (status, body) = ask("wrong");
    assert_eq!(status, 502, "{body}");
    assert!(error_of(&body).contains("401"), "{body}");
    let (status, body) = ask("unset");
    assert_eq!(status, 502, "{body}");
    assert!(
        error_of(&body).contains("WHALE_UPSTREAM_KEY_UNSET"),
        "{body}"
    );
    let (status, body) = daemon.post("/v1/chat/completions", &chat("down"));
    assert_eq!(status, 502, "{body}");
    assert!(error_of(&body).contains("cannot reach"), "{body}");

    // FROM lines that cannot be used are refused at create, with the form to use.
    for (from, reason) in [
        (
            "openai://127.0.0.1:9/v1/r1?key_env=HOME",
            "WHALE_UPSTREAM_KEY",
        ),
        ("openai://127.0.0.1:9/chat", "/v1/"),
    ] {
        let (status, body) = make("bad", from);
        assert_eq!(status, 400, "{from}: {body}");
        assert!(error_of(&body).contains(reason), "{from}: {body}");
    }
    let (status, body) = daemon.post(
        "/api/create",
        &json!({"model": "bad", "from": "openai://127.0.0.1:9/v1/r1", "template": "{{ .Prompt }}",
                "stream": false}),
    );
    assert_eq!(status, 400, "{body}");
    // What needs weights here says the model runs elsewhere.
    let (status, body) = daemon.post("/api/embed", &json!({"model": "down", "input": "hi"}));
    assert_eq!(status, 400, "{body}");
    assert!(
        error_of(&body).contains("served by http://127.0.0.1:9/v1"),
        "{body}"
    );

    let (status, _) = daemon.get("/api/tags");
    assert_eq!(status, 200, "the daemon stopped serving");
}
