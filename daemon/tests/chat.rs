//! `chat` against real templates: DeepSeek V3's own `chat_template` from its tokenizer config
//! (fixture fetched by `scripts/fetch-fixtures.sh`), and the R1 variant of it.

#![allow(clippy::doc_markdown)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value as Json, json};
use whale_daemon::chat::think::{self, Think};
use whale_daemon::chat::{
    ChatError, ChatMessage, ChatTemplate, ReasoningSplitter, RenderInput, SpecialTokens, ToolCall,
    ToolCallParser,
};

const BOS: &str = "<｜begin▁of▁sentence｜>";
const EOS: &str = "<｜end▁of▁sentence｜>";

/// The fixtures folder: `WHALE_FIXTURES`, or `<workspace>/.cache/fixtures`; fetched when missing.
fn fixture(relative: &str) -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("WHALE_FIXTURES")
        .map_or_else(|| workspace.join(".cache/fixtures"), PathBuf::from);
    let path = dir.join(relative);
    if !path.exists() {
        let status = Command::new("bash")
            .arg("scripts/fetch-fixtures.sh")
            .current_dir(&workspace)
            .env("WHALE_FIXTURES", &dir)
            .status()
            .expect("run scripts/fetch-fixtures.sh");
        assert!(status.success(), "scripts/fetch-fixtures.sh failed");
    }
    assert!(
        path.exists(),
        "fixture {} is missing after fetching",
        path.display()
    );
    path
}

/// DeepSeek V3's `tokenizer_config.json`: (chat_template, bos, eos).
fn deepseek_v3() -> (String, SpecialTokens) {
    let path = fixture("deepseek-v3-tokenizer/tokenizer_config.json");
    let text = std::fs::read_to_string(&path).expect("read tokenizer_config.json");
    let config: Json = serde_json::from_str(&text).expect("tokenizer_config.json is JSON");
    let token = |key: &str| config[key]["content"].as_str().map(str::to_owned);
    let source = config["chat_template"]
        .as_str()
        .expect("chat_template")
        .to_owned();
    let special = SpecialTokens {
        bos: token("bos_token"),
        eos: token("eos_token"),
    };
    assert_eq!(special.bos.as_deref(), Some(BOS));
    assert_eq!(special.eos.as_deref(), Some(EOS));
    (source, special)
}

/// DeepSeek R1's template is V3's with two changes: assistant history keeps only the text after
/// `</think>` (via Python's `str.split`), and the generation prompt opens a think block.
fn deepseek_r1() -> (String, SpecialTokens) {
    let (v3, special) = deepseek_v3();
    let history = "{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}";
    let r1_history = "{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}";
    let prompt = "{{'<｜Assistant｜>'}}{% endif %}";
    let r1_prompt = "{{'<｜Assistant｜><think>\\n'}}{% endif %}";
    assert!(
        v3.contains(history) && v3.contains(prompt),
        "V3 template changed shape"
    );
    (
        v3.replace(history, r1_history).replace(prompt, r1_prompt),
        special,
    )
}

fn assistant_calls(calls: Vec<ToolCall>) -> ChatMessage {
    ChatMessage {
        tool_calls: calls,
        ..ChatMessage::new("assistant", "")
    }
}

fn tool_result(name: &str, content: &str) -> ChatMessage {
    ChatMessage {
        tool_name: Some(name.into()),
        ..ChatMessage::new("tool", content)
    }
}

fn render(template: &ChatTemplate, messages: &[ChatMessage]) -> String {
    template
        .render(&RenderInput {
            messages,
            tools: None,
            add_generation_prompt: true,
            think: None,
        })
        .expect("render")
}

#[test]
fn v3_template_renders_a_multi_turn_conversation_exactly() {
    let (source, special) = deepseek_v3();
    let template = ChatTemplate::new(&source, special).expect("V3 template compiles");
    let messages = [
        ChatMessage::new("system", "You are a helpful assistant."),
        ChatMessage::new("user", "Hi"),
        ChatMessage::new(
            "assistant",
            "<think>\nThe user greets me.\n</think>\n\nHello! How can I help?",
        ),
        ChatMessage::new("user", "What is 2+2?"),
    ];
    let prompt = render(&template, &messages);
    assert_eq!(
        prompt,
        "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>Hi<｜Assistant｜>Hello! How can I help?<｜end▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜>"
    );
    assert!(template.starts_with_bos(&prompt));
    // Two system messages are joined by a blank line; no generation prompt when not asked.
    let messages = [
        ChatMessage::new("system", "A."),
        ChatMessage::new("system", "B."),
        ChatMessage::new("user", "x"),
    ];
    let prompt = template
        .render(&RenderInput {
            messages: &messages,
            tools: None,
            add_generation_prompt: false,
            think: None,
        })
        .unwrap();
    assert_eq!(prompt, format!("{BOS}A.\n\nB.<｜User｜>x"));
}

#[test]
fn v3_template_renders_tool_calls_and_results() {
    let (source, special) = deepseek_v3();
    let template = ChatTemplate::new(&source, special).unwrap();
    // V3's template prints calls and results but never a tool list.
    let capabilities = template.capabilities();
    assert!(!capabilities.tools && !capabilities.thinking);
    let messages = [
        ChatMessage::new("user", "Weather and time in Tokyo?"),
        assistant_calls(vec![
            ToolCall {
                name: "get_weather".into(),
                arguments: json!({"city": "Tokyo"}),
            },
            ToolCall {
                name: "get_time".into(),
                arguments: json!({}),
            },
        ]),
        tool_result("get_weather", "22°C, sunny"),
        tool_result("get_time", "14:05"),
        ChatMessage::new("assistant", "It is 22°C and 14:05 in Tokyo."),
        ChatMessage::new("user", "Thanks"),
    ];
    let expected = concat!(
        "<｜begin▁of▁sentence｜><｜User｜>Weather and time in Tokyo?",
        "<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\":\"Tokyo\"}\n```<｜tool▁call▁end｜>",
        "\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>",
        "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>22°C, sunny<｜tool▁output▁end｜>",
        "\n<｜tool▁output▁begin｜>14:05<｜tool▁output▁end｜>",
        "<｜tool▁outputs▁end｜>It is 22°C and 14:05 in Tokyo.<｜end▁of▁sentence｜>",
        "<｜User｜>Thanks<｜Assistant｜>",
    );
    assert_eq!(render(&template, &messages), expected);

    // A conversation ending in tool results closes the outputs and adds no assistant tag.
    let prompt = render(&template, &messages[..3]);
    assert!(
        prompt.ends_with("22°C, sunny<｜tool▁output▁end｜><｜tool▁outputs▁end｜>"),
        "{prompt}"
    );
}

#[test]
fn model_output_round_trips_through_the_tool_parser() {
    // What the V3 template shows for a call is what the parser reads back.
    let output = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\":\"Tokyo\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    let mut parser = ToolCallParser::new(true);
    let mut out = parser.push(&output[..40]);
    let rest = parser.push(&output[40..]);
    out.calls.extend(rest.calls);
    out.calls.extend(parser.finish().calls);
    assert_eq!(
        out.calls,
        vec![ToolCall {
            name: "get_weather".into(),
            arguments: json!({"city": "Tokyo"})
        }]
    );
}

#[test]
fn r1_template_strips_history_reasoning_and_primes_thinking() {
    let (source, special) = deepseek_r1();
    let template = ChatTemplate::new(&source, special).unwrap();
    assert!(template.capabilities().thinking);
    let messages = [
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "<think>\nGreeting.\n</think>\n\nHello!"),
        ChatMessage::new("user", "2+2?"),
    ];
    let prompt = render(&template, &messages);
    assert_eq!(
        prompt,
        format!(
            "{BOS}<｜User｜>Hi<｜Assistant｜>Hello!{EOS}<｜User｜>2+2?<｜Assistant｜><think>\n"
        )
    );

    // A final assistant turn is not history to whale; the template's own `.split('</think>')`
    // (Python string method via pycompat) strips it.
    let last = [
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "<think>x</think>Hello!"),
    ];
    let rendered = template
        .render(&RenderInput {
            messages: &last,
            tools: None,
            add_generation_prompt: false,
            think: None,
        })
        .unwrap();
    assert_eq!(
        rendered,
        format!("{BOS}<｜User｜>Hi<｜Assistant｜>Hello!{EOS}")
    );

    // think on: the output starts inside the block.
    let caps = template.capabilities();
    let plan = think::plan("deepseek-r1:7b", caps, Think::Unset, &prompt).unwrap();
    assert!(plan.starts_inside);
    let mut splitter = ReasoningSplitter::new(plan.starts_inside, plan.mode);
    let mut delta = splitter.push("2 plus 2 is 4.\n</th");
    let tail = splitter.push("ink>\n\n**4**");
    delta.thinking.push_str(&tail.thinking);
    delta.content.push_str(&tail.content);
    assert_eq!(delta.thinking, "2 plus 2 is 4.");
    assert_eq!(delta.content, "**4**");

    // think off: the prompt gets an empty think block.
    let plan = think::plan("deepseek-r1:7b", caps, Think::Off, &prompt).unwrap();
    assert_eq!(
        format!("{prompt}{}", plan.prompt_suffix),
        format!(
            "{BOS}<｜User｜>Hi<｜Assistant｜>Hello!{EOS}<｜User｜>2+2?<｜Assistant｜><think>\n\n</think>\n\n"
        )
    );
}

#[test]
fn v3_refuses_think_true() {
    let (source, special) = deepseek_v3();
    let template = ChatTemplate::new(&source, special).unwrap();
    let error =
        think::template_switch("deepseek-v3", template.capabilities(), Think::On).unwrap_err();
    assert!(matches!(error, ChatError::ThinkingUnsupported { .. }));
    assert_eq!(
        error.to_string(),
        "\"deepseek-v3\" does not support thinking"
    );
}

#[test]
fn tool_list_and_python_helpers_render_like_transformers() {
    let source = concat!(
        "{%- if tools %}{{ '## Tools\\n' }}{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}{% endif %}",
        "{%- for m in messages %}{% if m.role == 'user' %}{{ m.content.strip().upper() }}",
        "{% elif m.role == 'assistant' and m.tool_calls %}{% for c in m.tool_calls %}",
        "<tool_call>{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}</tool_call>",
        "{% endfor %}{% endif %}{% endfor %}",
        "{%- if thinking is defined and not thinking %}</think>{% endif %}",
        "{%- if messages | length > 3 %}{{ raise_exception('too long') }}{% endif %}",
    );
    let template = ChatTemplate::new(source, SpecialTokens::default()).unwrap();
    assert!(template.capabilities().tools);
    let tools = [
        json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "Città <name>"}}}}}),
    ];
    let messages = [
        ChatMessage::new("user", "  weather?  "),
        assistant_calls(vec![ToolCall {
            name: "get_weather".into(),
            arguments: json!({"city": "Rome"}),
        }]),
    ];
    let prompt = template
        .render(&RenderInput {
            messages: &messages,
            tools: Some(&tools),
            add_generation_prompt: true,
            think: Some(false),
        })
        .unwrap();
    assert_eq!(
        prompt,
        concat!(
            "## Tools\n",
            // Keys keep the client's order, as transformers and Ollama render them.
            "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"Città <name>\"}}}}}\n",
            "WEATHER?",
            "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}</tool_call>",
            "</think>",
        )
    );
    let too_long = [
        ChatMessage::new("user", "a"),
        ChatMessage::new("user", "b"),
        ChatMessage::new("user", "c"),
        ChatMessage::new("user", "d"),
    ];
    let error = template
        .render(&RenderInput {
            messages: &too_long,
            tools: None,
            add_generation_prompt: true,
            think: None,
        })
        .unwrap_err();
    assert!(error.to_string().contains("too long"), "{error}");
}

#[test]
fn go_templates_are_refused_clearly_and_fallback_works() {
    let go = "{{- if .System }}{{ .System }}{{ end }}{{ range .Messages }}{{ .Content }}{{ end }}";
    let error = ChatTemplate::new(go, SpecialTokens::default()).unwrap_err();
    assert!(matches!(error, ChatError::GoTemplateUnsupported), "{error}");
    let bad = ChatTemplate::new("{% if %}", SpecialTokens::default()).unwrap_err();
    assert!(matches!(bad, ChatError::TemplateSyntax { .. }), "{bad}");

    let (_, special) = deepseek_v3();
    let fallback = ChatTemplate::fallback(special);
    let messages = [
        ChatMessage::new("system", "S"),
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "<think>x</think>Yo"),
        ChatMessage::new("user", "Bye"),
    ];
    assert_eq!(
        render(&fallback, &messages),
        format!("{BOS}S<｜User｜>Hi<｜Assistant｜>Yo{EOS}<｜User｜>Bye<｜Assistant｜>")
    );
}
