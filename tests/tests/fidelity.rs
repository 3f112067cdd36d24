//! Exact prompts: for each conversation of a table, the prompt whaled renders for DeepSeek V3's
//! official chat template equals the reference — the same template text rendered by Jinja2 as
//! Hugging Face transformers renders it, tokenized by the official tokenizer (`tokenizers`), in
//! `tests/fidelity/reference.py` — as text, as tokens (llama.cpp's tokenizer on the fixture's
//! vocabulary, as whaled tokenizes), and as the count `/v1` reports.
//!
//! Conversations are written in OpenAI's shape (what transformers takes); the same
//! conversation goes to `/api/chat` in Ollama's shape (arguments as objects, `thinking`).

use std::io::Write as _;
use std::process::{Command, Stdio};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use serde_json::{Value, json};
use whale_tests::fixtures;
use whale_tests::whaled::Whaled;

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn system(text: &str) -> Value {
    json!({"role": "system", "content": text})
}

fn assistant(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}

/// An assistant turn that only calls tools: `(name, arguments as Python's json.dumps writes
/// them)`.
fn calls(calls: &[(&str, &str)]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, arguments))| {
            json!({"id": format!("call_{i}"), "type": "function",
                   "function": {"name": name, "arguments": arguments}})
        })
        .collect();
    json!({"role": "assistant", "content": null, "tool_calls": calls})
}

fn tool(id: usize, text: &str) -> Value {
    json!({"role": "tool", "tool_call_id": format!("call_{id}"), "content": text})
}

/// The table: each entry a name and its messages (all end ready for the model to answer).
fn conversations() -> Vec<(&'static str, Vec<Value>)> {
    let weather = ("get_weather", r#"{"city": "Paris"}"#);
    vec![
        ("one user message", vec![user("Hello")]),
        ("system prompt", vec![system("You are terse."), user("Hi")]),
        (
            "two system prompts",
            vec![
                system("You are terse."),
                system("Answer in French."),
                user("Hi"),
            ],
        ),
        (
            "system prompt after the first turn",
            vec![
                user("Hi"),
                assistant("Hello!"),
                system("Be brief."),
                user("Why?"),
            ],
        ),
        ("empty system prompt", vec![system(""), user("Hi")]),
        (
            "two turns",
            vec![user("What is 2+2?"), assistant("4"), user("And 3+3?")],
        ),
        (
            "five turns",
            vec![
                user("a"),
                assistant("b"),
                user("c"),
                assistant("d"),
                user("e"),
                assistant("f"),
                user("g"),
                assistant("h"),
                user("i"),
            ],
        ),
        (
            "earlier reasoning dropped",
            vec![
                user("What is 2+2?"),
                assistant("<think>\nTwo and two.\n</think>\n\n4"),
                user("Sure?"),
            ],
        ),
        (
            "earlier reasoning as a field",
            vec![
                user("What is 2+2?"),
                json!({"role": "assistant", "content": "4", "reasoning_content": "Two and two."}),
                user("Sure?"),
            ],
        ),
        (
            "unicode and emoji",
            vec![user("北京今天天气怎么样？🌤️ Ça va?")],
        ),
        (
            "code and newlines",
            vec![user(
                "Fix this:\n```python\ndef f(x):\n    return x+1\n```\n\nThanks",
            )],
        ),
        (
            "whitespace around an answer",
            vec![user("Hi"), assistant("  Hello there.  \n"), user("Bye")],
        ),
        (
            "one tool call and its result",
            vec![
                user("Weather in Paris?"),
                calls(&[weather]),
                tool(0, r#"{"temp": 21}"#),
            ],
        ),
        (
            "a tool result, then the answer, then a question",
            vec![
                user("Weather in Paris?"),
                calls(&[weather]),
                tool(0, r#"{"temp": 21}"#),
                assistant("It is 21 °C in Paris."),
                user("And tomorrow?"),
            ],
        ),
        (
            "two tool calls in one turn",
            vec![
                user("Weather in Paris and Rome?"),
                calls(&[weather, ("get_weather", r#"{"city": "Rome"}"#)]),
                tool(0, r#"{"temp": 21}"#),
                tool(1, r#"{"temp": 25}"#),
            ],
        ),
        (
            "nested arguments",
            vec![
                user("Book it"),
                calls(&[(
                    "book",
                    r#"{"guests": [{"name": "Zoë", "age": 31}, {"name": "李", "age": null}], "nights": 2, "options": {"late": true}}"#,
                )]),
                tool(0, "booked"),
            ],
        ),
        (
            "tool calls chained",
            vec![
                user("Find and open the file"),
                calls(&[("search", r#"{"query": "report"}"#)]),
                tool(0, r#"["report.pdf"]"#),
                calls(&[("open", r#"{"path": "report.pdf"}"#)]),
                tool(0, "opened"),
            ],
        ),
        (
            "a system prompt and a tool call",
            vec![
                system("Use tools when needed."),
                user("Weather in Paris?"),
                calls(&[weather]),
                tool(0, "sunny"),
            ],
        ),
        (
            "a tool result, then the user again",
            vec![
                user("Weather in Paris?"),
                calls(&[weather]),
                tool(0, "sunny"),
                user("Thanks, and Rome?"),
            ],
        ),
        (
            "a tool call with no arguments",
            vec![
                user("What time is it?"),
                calls(&[("now", "{}")]),
                tool(0, "12:00"),
            ],
        ),
        (
            "multi-line tool output",
            vec![
                user("List files"),
                calls(&[("ls", r#"{"dir": "."}"#)]),
                tool(0, "a.txt\nb.txt\n"),
            ],
        ),
        (
            "long conversation with tools and reasoning",
            vec![
                system("You are a helpful assistant."),
                user("Plan a trip"),
                assistant("<think>\nAsk where.\n</think>\nWhere to?"),
                user("Paris"),
                calls(&[weather]),
                tool(0, r#"{"temp": 21}"#),
                assistant("It is warm in Paris."),
                user("Good, book it."),
            ],
        ),
    ]
}

/// The same messages in Ollama's shape: arguments as objects, reasoning as `thinking`.
fn ollama_messages(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .map(|message| {
            let mut out = json!({"role": message["role"], "content": message["content"].as_str().unwrap_or("")});
            if let Some(thinking) = message.get("reasoning_content") {
                out["thinking"] = thinking.clone();
            }
            if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
                out["tool_calls"] = calls
                    .iter()
                    .map(|call| {
                        let arguments: Value = serde_json::from_str(
                            call["function"]["arguments"].as_str().unwrap(),
                        )
                        .unwrap();
                        json!({"function": {"name": call["function"]["name"], "arguments": arguments}})
                    })
                    .collect();
            }
            out
        })
        .collect()
}

/// Renders every conversation with the reference (Jinja2 and `tokenizers`).
fn reference(conversations: &[(&str, Vec<Value>)]) -> Vec<(String, Vec<i32>)> {
    let root = env!("CARGO_MANIFEST_DIR");
    let python_path = fixtures::root().join("reference-py");
    assert!(
        python_path.join(".complete").exists(),
        "the reference's Python packages are missing: run scripts/fetch-fixtures.sh"
    );
    let request = json!({
        "tokenizer_dir": fixtures::deepseek_tokenizer_dir(),
        "conversations": conversations
            .iter()
            .map(|(_, messages)| json!({"messages": messages, "add_generation_prompt": true}))
            .collect::<Vec<_>>(),
    });
    let mut child = Command::new("python3")
        .arg("-s")
        .arg(format!("{root}/fidelity/reference.py"))
        .env("PYTHONPATH", &python_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "reference.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    rendered
        .into_iter()
        .map(|r| {
            let ids = r["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_i64().unwrap() as i32)
                .collect();
            (r["text"].as_str().unwrap().to_owned(), ids)
        })
        .collect()
}

#[test]
fn deepseek_v3_prompts_are_token_identical_to_the_official_template() {
    let conversations = conversations();
    assert!(conversations.len() >= 20);
    let expected = reference(&conversations);

    let gguf = fixtures::deepseek2();
    let backend = LlamaBackend::init().unwrap();
    let vocab_model = LlamaModel::load_from_file(
        &backend,
        &gguf,
        &LlamaModelParams::default().with_vocab_only(true),
    )
    .unwrap();

    let daemon = Whaled::start();
    daemon.create_from_gguf("ds", &gguf);
    let mut failures = Vec::new();
    for ((name, messages), (text, ids)) in conversations.iter().zip(&expected) {
        let (status, body) = daemon.post(
            "/api/chat",
            &json!({"model": "ds", "messages": ollama_messages(messages), "stream": false,
                    "_debug_render_only": true}),
        );
        assert_eq!(status, 200, "{name}: {body}");
        let rendered = body["_debug_info"]["rendered_template"]
            .as_str()
            .unwrap_or_default();
        if rendered != text {
            failures.push(format!(
                "{name}: /api/chat renders\n  {rendered:?}\nthe reference\n  {text:?}"
            ));
            continue;
        }
        let tokens: Vec<i32> = vocab_model
            .vocab()
            .tokenize(rendered.as_bytes(), false, true)
            .into_iter()
            .map(|token| token.0)
            .collect();
        if &tokens != ids {
            failures.push(format!(
                "{name}: llama.cpp tokenizes to {tokens:?}, the reference to {ids:?}"
            ));
            continue;
        }
        let (status, body) = daemon.post(
            "/v1/chat/completions",
            &json!({"model": "ds", "messages": messages, "max_tokens": 1, "temperature": 0}),
        );
        assert_eq!(status, 200, "{name}: {body}");
        if body["usage"]["prompt_tokens"] != json!(ids.len()) {
            failures.push(format!(
                "{name}: /v1 evaluates {} prompt tokens, the reference has {}",
                body["usage"]["prompt_tokens"],
                ids.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} conversations differ:\n{}",
        failures.len(),
        conversations.len(),
        failures.join("\n")
    );
}
