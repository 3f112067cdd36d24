//! Exact prompts: for each conversation of a table and each DeepSeek template variant, the
//! prompt whaled renders equals the reference — the same template text rendered by Jinja2 as
//! Hugging Face transformers renders it, tokenized by the official tokenizer (`tokenizers`), in
//! `tests/fidelity/reference.py` — as text, as tokens (llama.cpp's tokenizer on the fixture's
//! vocabulary, as whaled tokenizes), and as the count `/v1` reports.
//!
//! The variants: V3's template from its `tokenizer_config.json` (the fixture GGUF's own), and
//! the R1 distills', V3.1's, V3.2's and V4's as llama.cpp keeps them in `models/templates`
//! (fetched from llama-cpp-python's source package on `PyPI`), each given to a model as its
//! `TEMPLATE`; V3.1 and later with thinking on and off.
//!
//! Conversations are written in OpenAI's shape (what transformers takes); the same
//! conversation goes to `/api/chat` in Ollama's shape (arguments as objects, `thinking`).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

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

/// A function the model may call, in OpenAI's (and Ollama's) shape.
fn function(name: &str, description: &str, parameter: &str) -> Value {
    json!({"type": "function", "function": {
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {parameter: {"type": "string", "description": format!("the {parameter}")}},
            "required": [parameter],
        },
    }})
}

/// An assistant turn that reasons, then calls tools.
fn reasoned_calls(reasoning: &str, made: &[(&str, &str)]) -> Value {
    let mut turn = calls(made);
    turn["reasoning_content"] = json!(reasoning);
    turn
}

/// The table: each entry a name, its messages (all end ready for the model to answer) and the
/// tools it offers.
fn conversations() -> Vec<(&'static str, Vec<Value>, Option<Value>)> {
    let weather = ("get_weather", r#"{"city": "Paris"}"#);
    let tools = json!([
        function("get_weather", "Current weather in a city", "city"),
        function("search", "Searches the web", "query"),
    ]);
    let mut table: Vec<_> = plain_conversations()
        .into_iter()
        .map(|(name, messages)| (name, messages, None))
        .collect();
    table.extend([
        (
            "tools offered, first question",
            vec![user("Weather in Paris?")],
            Some(tools.clone()),
        ),
        (
            "tools offered with a system prompt",
            vec![system("Be brief."), user("Weather in Paris?")],
            Some(tools.clone()),
        ),
        (
            "tools offered, a call and its result",
            vec![
                user("Weather in Paris?"),
                calls(&[weather]),
                tool(0, r#"{"temp": 21}"#),
            ],
            Some(tools.clone()),
        ),
        (
            "tools offered, reasoning before a call",
            vec![
                user("Weather in Paris?"),
                reasoned_calls("I should look it up.", &[weather]),
                tool(0, "sunny"),
            ],
            Some(tools.clone()),
        ),
        (
            "tools offered, earlier reasoning and calls",
            vec![
                user("Weather in Paris?"),
                reasoned_calls("Look it up.", &[weather]),
                tool(0, "sunny"),
                json!({"role": "assistant", "content": "Sunny.", "reasoning_content": "Report it."}),
                user("And Rome?"),
            ],
            Some(tools),
        ),
    ]);
    table
}

/// Conversations without tool definitions.
fn plain_conversations() -> Vec<(&'static str, Vec<Value>)> {
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

/// A chat template under test.
struct Variant {
    name: &'static str,
    /// A catalogue entry: the model is created under its name from a GGUF without a template,
    /// so it renders with whale's own template for the entry's prompt format
    /// (`modelfiles/templates/`), checked against the official one in `file`.
    catalogue: Option<&'static str>,
    /// A file of `deepseek-templates/`, given to the model as its `TEMPLATE`; `None` for the
    /// fixture GGUF's own (V3's official template).
    file: Option<&'static str>,
    /// How transformers users pass a call's arguments to this template: an object where it
    /// pipes them through `tojson`, else the JSON text that it concatenates.
    object_arguments: bool,
    /// The `thinking` (and `enable_thinking`) switch: `think` on `/api/chat`, `thinking.type`
    /// on `/v1`; `None` leaves it unset.
    thinking: Option<bool>,
    /// A reasoning effort (`think: "<level>"` on `/api/chat`, `reasoning_effort` on `/v1`, the
    /// template's `reasoning_effort`), with thinking on.
    effort: Option<&'static str>,
}

/// The messages as the reference takes them for `variant`.
fn reference_messages(messages: &[Value], variant: &Variant) -> Vec<Value> {
    let mut messages = messages.to_vec();
    if variant.object_arguments {
        for message in &mut messages {
            if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for call in calls {
                    let text = call["function"]["arguments"].as_str().unwrap().to_owned();
                    call["function"]["arguments"] = serde_json::from_str(&text).unwrap();
                }
            }
        }
    }
    messages
}

/// Renders every conversation with the reference (Jinja2 and `tokenizers`).
fn reference(
    conversations: &[(&str, Vec<Value>, Option<Value>)],
    variant: &Variant,
) -> Vec<(String, Vec<i32>)> {
    let root = env!("CARGO_MANIFEST_DIR");
    let python_path = fixtures::root().join("reference-py");
    assert!(
        python_path.join(".complete").exists(),
        "the reference's Python packages are missing: run scripts/fetch-fixtures.sh"
    );
    let mut variables = match variant.thinking {
        Some(thinking) => json!({"thinking": thinking, "enable_thinking": thinking}),
        None => json!({}),
    };
    if let Some(effort) = variant.effort {
        variables["reasoning_effort"] = json!(effort);
    }
    let request = json!({
        "tokenizer_dir": fixtures::deepseek_tokenizer_dir(),
        "template_file": variant.file.map(fixtures::deepseek_template),
        "variables": variables,
        "conversations": conversations
            .iter()
            .map(|(_, messages, tools)| json!({
                "messages": reference_messages(messages, variant),
                "tools": tools,
                "add_generation_prompt": true,
            }))
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
        "reference.py failed ({}): {}",
        variant.name,
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

/// The fixture's vocabulary, loaded by llama.cpp once per process (its backend starts once).
fn vocab(gguf: &Path) -> &'static LlamaModel {
    static VOCAB: OnceLock<(LlamaBackend, LlamaModel)> = OnceLock::new();
    &VOCAB
        .get_or_init(|| {
            let backend = LlamaBackend::init().unwrap();
            let model = LlamaModel::load_from_file(
                &backend,
                gguf,
                &LlamaModelParams::default().with_vocab_only(true),
            )
            .unwrap();
            (backend, model)
        })
        .1
}

/// The deepseek2 fixture without a chat template, as older conversions are.
fn template_less_gguf() -> &'static Path {
    static GGUF: OnceLock<(tempfile::TempDir, std::path::PathBuf)> = OnceLock::new();
    &GGUF
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("template-less.gguf");
            let mut builder = fixtures::Fixture::DeepSeek2.build().unwrap();
            builder.remove("tokenizer.chat_template");
            builder.write(&path).unwrap();
            (dir, path)
        })
        .1
}

/// Checks every conversation of the table against the reference for each variant, through
/// one whaled; panics listing every difference.
fn assert_token_identical(variants: &[Variant]) {
    let conversations = conversations();
    assert!(conversations.len() >= 20);

    let gguf = fixtures::deepseek2();
    let vocab_model = vocab(&gguf);

    let daemon = Whaled::start();
    daemon.create_from_gguf("ds", &gguf);
    let mut failures = Vec::new();
    for variant in variants {
        let model = match (variant.catalogue, variant.file) {
            (Some(name), _) => {
                daemon.create_from_gguf(name, template_less_gguf());
                let (status, body) = daemon.post("/api/show", &json!({"model": name}));
                assert_eq!(status, 200, "{name}: {body}");
                let template = body["template"].as_str().unwrap_or_default();
                assert!(
                    template.starts_with("{#- DeepSeek"),
                    "{name} shows another template than whale's: {template:.80}"
                );
                // What it offers (tools, thinking) is what the official template offers.
                let official = match variant.file {
                    None => "ds".to_owned(),
                    Some(file) => {
                        let template =
                            std::fs::read_to_string(fixtures::deepseek_template(file)).unwrap();
                        let request = json!({"model": "ds-official", "from": "ds",
                                             "template": template, "stream": false});
                        let (status, body) = daemon.post("/api/create", &request);
                        assert_eq!(status, 200, "{}: {body}", variant.name);
                        "ds-official".to_owned()
                    }
                };
                let (status, official) = daemon.post("/api/show", &json!({"model": official}));
                assert_eq!(status, 200, "{official}");
                assert_eq!(
                    body["capabilities"], official["capabilities"],
                    "{name}: capabilities differ from the official template's"
                );
                name.to_owned()
            }
            (None, None) => "ds".to_owned(),
            (None, Some(file)) => {
                let model = format!("ds-{}", variant.name.replace([' ', '(', ')'], "-"));
                let template = std::fs::read_to_string(fixtures::deepseek_template(file)).unwrap();
                let (status, body) = daemon.post(
                    "/api/create",
                    &json!({"model": model, "from": "ds", "template": template, "stream": false}),
                );
                assert_eq!(status, 200, "{}: {body}", variant.name);
                model
            }
        };
        let expected = reference(&conversations, variant);
        for ((name, messages, tools), (text, ids)) in conversations.iter().zip(&expected) {
            let name = format!("{} / {name}", variant.name);
            let mut request = json!({"model": model, "messages": ollama_messages(messages),
                                     "stream": false, "_debug_render_only": true});
            let mut openai = json!({"model": model, "messages": messages, "max_tokens": 1,
                                    "temperature": 0});
            if let Some(tools) = tools {
                request["tools"] = tools.clone();
                openai["tools"] = tools.clone();
            }
            if let Some(effort) = variant.effort {
                request["think"] = json!(effort);
                openai["reasoning_effort"] = json!(effort);
            } else if let Some(thinking) = variant.thinking {
                request["think"] = json!(thinking);
                openai["thinking"] = json!({"type": if thinking { "enabled" } else { "disabled" }});
            }
            let (mut status, mut body) = daemon.post("/api/chat", &request);
            if status == 400
                && body["error"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with("does not support tools")
            {
                // As Ollama: a template that never shows tool definitions refuses them. Such a
                // template renders the same without them, so the reference still holds.
                request.as_object_mut().unwrap().remove("tools");
                openai.as_object_mut().unwrap().remove("tools");
                (status, body) = daemon.post("/api/chat", &request);
            }
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
            let (status, body) = daemon.post("/v1/chat/completions", &openai);
            assert_eq!(status, 200, "{name}: {body}");
            if body["usage"]["prompt_tokens"] != json!(ids.len()) {
                failures.push(format!(
                    "{name}: /v1 evaluates {} prompt tokens, the reference has {}",
                    body["usage"]["prompt_tokens"],
                    ids.len()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} renderings differ:\n{}",
        failures.len(),
        conversations.len() * variants.len(),
        failures.join("\n")
    );
}

#[test]
fn deepseek_v3_prompts_are_token_identical_to_the_official_template() {
    assert_token_identical(&[Variant {
        name: "V3",
        catalogue: None,
        file: None,
        object_arguments: false,
        thinking: None,
        effort: None,
    }]);
}

#[test]
fn deepseek_r1_distill_prompts_are_token_identical_to_their_templates() {
    assert_token_identical(&[
        Variant {
            name: "R1 distill (Llama)",
            catalogue: None,
            file: Some("deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja"),
            object_arguments: false,
            thinking: None,
            effort: None,
        },
        Variant {
            name: "R1 distill (Qwen)",
            catalogue: None,
            file: Some("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"),
            object_arguments: true,
            thinking: Some(true),
            effort: None,
        },
    ]);
}

#[test]
fn deepseek_v3_1_prompts_are_token_identical_thinking_on_and_off() {
    assert_token_identical(&[false, true].map(|thinking| Variant {
        name: if thinking { "V3.1 thinking" } else { "V3.1" },
        catalogue: None,
        file: Some("deepseek-ai-DeepSeek-V3.1.jinja"),
        object_arguments: true,
        thinking: Some(thinking),
        effort: None,
    }));
}

#[test]
fn deepseek_v3_2_prompts_are_token_identical_thinking_on_and_off() {
    assert_token_identical(&[false, true].map(|thinking| Variant {
        name: if thinking { "V3.2 thinking" } else { "V3.2" },
        catalogue: None,
        file: Some("deepseek-ai-DeepSeek-V3.2.jinja"),
        object_arguments: true,
        thinking: Some(thinking),
        effort: None,
    }));
}

#[test]
fn deepseek_v4_prompts_are_token_identical_thinking_on_off_and_at_max_effort() {
    let v4 = |name, thinking, effort| Variant {
        name,
        catalogue: None,
        file: Some("deepseek-ai-DeepSeek-V4.jinja"),
        object_arguments: true,
        thinking: Some(thinking),
        effort,
    };
    assert_token_identical(&[
        v4("V4", false, None),
        v4("V4 thinking", true, None),
        v4("V4 thinking at max effort", true, Some("max")),
    ]);
}

/// whale's own templates for the catalogue's prompt formats (`modelfiles/templates/`), which a
/// model named as a catalogue entry renders with when its GGUF carries no template, against the
/// official ones: V3's, R1's (the one R1 and its distills ship), V3.1's.
#[test]
fn catalogue_templates_for_v3_r1_and_v3_1_are_token_identical_to_the_official_ones() {
    assert_token_identical(&[
        Variant {
            name: "whale's V3",
            catalogue: Some("deepseek-v3:671b"),
            file: None,
            object_arguments: false,
            thinking: None,
            effort: None,
        },
        Variant {
            name: "whale's R1",
            catalogue: Some("deepseek-r1:671b"),
            file: Some("deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja"),
            object_arguments: false,
            thinking: None,
            effort: None,
        },
        Variant {
            name: "whale's V3.1",
            catalogue: Some("deepseek-v3.1:671b"),
            file: Some("deepseek-ai-DeepSeek-V3.1.jinja"),
            object_arguments: true,
            thinking: Some(false),
            effort: None,
        },
        Variant {
            name: "whale's V3.1 thinking",
            catalogue: Some("deepseek-v3.1:671b"),
            file: Some("deepseek-ai-DeepSeek-V3.1.jinja"),
            object_arguments: true,
            thinking: Some(true),
            effort: None,
        },
    ]);
}

/// As above, for V3.2's and V4's DSML formats.
#[test]
fn catalogue_templates_for_v3_2_and_v4_are_token_identical_to_the_official_ones() {
    let variant = |name, catalogue, file, thinking, effort| Variant {
        name,
        catalogue: Some(catalogue),
        file: Some(file),
        object_arguments: true,
        thinking: Some(thinking),
        effort,
    };
    let (v3_2, v4) = (
        "deepseek-ai-DeepSeek-V3.2.jinja",
        "deepseek-ai-DeepSeek-V4.jinja",
    );
    assert_token_identical(&[
        variant("whale's V3.2", "deepseek-v3.2:671b", v3_2, false, None),
        variant(
            "whale's V3.2 thinking",
            "deepseek-v3.2:671b",
            v3_2,
            true,
            None,
        ),
        variant("whale's V4", "deepseek-v4-flash:284b", v4, false, None),
        variant(
            "whale's V4 thinking",
            "deepseek-v4-flash:284b",
            v4,
            true,
            None,
        ),
        variant(
            "whale's V4 thinking at max effort",
            "deepseek-v4-flash:284b",
            v4,
            true,
            Some("max"),
        ),
    ]);
}
