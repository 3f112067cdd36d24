//! `chat` against real templates: DeepSeek V3's own `chat_template` from its tokenizer config
//! (fixture fetched by `scripts/fetch-fixtures.sh`), the R1 variant of it, and Ollama's Go
//! templates (its built-in ones and the registry's), whose expected prompts are what Ollama's
//! `template.Execute` renders for the same conversations.

#![allow(clippy::doc_markdown)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value as Json, json};
use whale_daemon::chat::think::{self, Think};
use whale_daemon::chat::{
    ChatError, ChatMessage, ChatTemplate, ReasoningSplitter, RenderInput, SpecialTokens,
    TemplateSources, TemplateSyntax, ThinkingMode, ToolCall, ToolCallParser,
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
            think_level: None,
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
    // V3's official template keeps an earlier answer as it is, reasoning included (R1's cuts
    // it at `</think>`): the template, not whaled, decides.
    assert_eq!(
        prompt,
        "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>Hi<｜Assistant｜><think>\nThe user greets me.\n</think>\n\nHello! How can I help?<｜end▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜>"
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
            think_level: None,
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
        "<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Tokyo\"}\n```<｜tool▁call▁end｜>",
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
    let output = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Tokyo\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
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
            "{BOS}<｜User｜>Hi<｜Assistant｜>\n\nHello!{EOS}<｜User｜>2+2?<｜Assistant｜><think>\n"
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
            think_level: None,
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
            "{BOS}<｜User｜>Hi<｜Assistant｜>\n\nHello!{EOS}<｜User｜>2+2?<｜Assistant｜><think>\n\n</think>\n\n"
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
            think_level: None,
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
            think_level: None,
        })
        .unwrap_err();
    assert!(error.to_string().contains("too long"), "{error}");
}

#[test]
fn bad_templates_are_syntax_errors_and_fallback_works() {
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

// ---------------------------------------------------------------------------------------------
// Ollama Go templates

/// ollama/ollama `template/chatml.gotmpl` (Ollama's built-in ChatML template).
const CHATML: &str = r"{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
";

/// ollama/ollama `template/llama3-instruct.gotmpl`.
const LLAMA3_INSTRUCT: &str = r"{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

";

/// The Ollama registry's `deepseek-r1` template (thinking via `.IsThinkSet`/`.Think`).
const DEEPSEEK_R1: &str = r#"{{- if .System }}{{ .System }}{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1}}
{{- if eq .Role "user" }}<｜User｜>{{ .Content }}
{{- else if eq .Role "assistant" }}<｜Assistant｜>
  {{- if and $.IsThinkSet (and $last .Thinking) -}}
<think>
{{ .Thinking }}
</think>
{{- end }}{{ .Content }}{{- if not $last }}<｜end▁of▁sentence｜>{{- end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<｜Assistant｜>
{{- if and $.IsThinkSet (not $.Think) -}}
<think>

</think>

{{ end }}
{{- end -}}
{{- end }}"#;

/// The Ollama registry's `qwen2.5` template (tools, tool calls and results; legacy fallback).
const QWEN25: &str = r#"{{- if .Messages }}
{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"#;

/// The Ollama registry's `llama3.1` template (tools listed with the last user message).
const LLAMA31: &str = r#"{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}

{{ .System }}
{{- end }}
{{- if .Tools }}

Cutting Knowledge Date: December 2023

When you receive a tool call response, use the output to format an answer to the orginal user question.

You are a helpful assistant with tool calling capabilities.
{{- end }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>
{{- if and $.Tools $last }}

Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.

Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}. Do not use variables.

{{ range $.Tools }}
{{- . }}
{{ end }}
Question: {{ .Content }}<|eot_id|>
{{- else }}

{{ .Content }}<|eot_id|>
{{- end }}{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}
{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"#;

/// The Ollama registry's `deepseek-coder` template: a legacy `.Prompt` template.
const DEEPSEEK_CODER: &str = r"{{ .System }}
### Instruction:
{{ .Prompt }}
### Response:
";

/// Ollama's own template test conversation (`template/testdata/*/user-assistant-user`).
fn user_assistant_user() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("user", "Hello, how are you?"),
        ChatMessage::new("assistant", "I'm doing great. How can I help you today?"),
        ChatMessage::new("user", "I'd like to show off how chat templating works!"),
    ]
}

fn go_template(source: &str) -> ChatTemplate {
    let template = ChatTemplate::new(source, SpecialTokens::default())
        .unwrap_or_else(|error| panic!("Go template compiles: {error}"));
    assert_eq!(template.syntax(), TemplateSyntax::Go);
    template
}

fn render_go(
    template: &ChatTemplate,
    messages: &[ChatMessage],
    tools: Option<&[Json]>,
    think: Option<bool>,
) -> String {
    template
        .render(&RenderInput {
            messages,
            tools,
            add_generation_prompt: true,
            think,
            think_level: None,
        })
        .expect("render")
}

#[test]
fn ollama_chatml_and_llama3_templates_render_exactly() {
    let chatml = go_template(CHATML);
    assert_eq!(
        render_go(&chatml, &user_assistant_user(), None, None),
        "<|im_start|>user\nHello, how are you?<|im_end|>\n<|im_start|>assistant\nI'm doing great. How can I help you today?<|im_end|>\n<|im_start|>user\nI'd like to show off how chat templating works!<|im_end|>\n<|im_start|>assistant\n"
    );
    let llama3 = go_template(LLAMA3_INSTRUCT);
    assert_eq!(
        render_go(&llama3, &user_assistant_user(), None, None),
        "<|start_header_id|>user<|end_header_id|>\n\nHello, how are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI'm doing great. How can I help you today?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nI'd like to show off how chat templating works!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    for template in [&chatml, &llama3] {
        let capabilities = template.capabilities();
        assert!(!capabilities.tools && !capabilities.thinking);
    }
}

#[test]
fn ollama_deepseek_r1_template_follows_think() {
    let template = go_template(DEEPSEEK_R1);
    let capabilities = template.capabilities();
    assert!(capabilities.thinking && !capabilities.tools);
    // History reasoning is stripped before rendering, as on the Jinja path.
    let messages = [
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "<think>\nGreeting.\n</think>\n\nHello!"),
        ChatMessage::new("user", "2+2?"),
    ];
    let expected =
        "<｜User｜>Hi<｜Assistant｜>Hello!<｜end▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜>";
    assert_eq!(render_go(&template, &messages, None, None), expected);

    // think on (also what an unset `think` becomes for a thinking model): the model opens its
    // own block, and the splitter separates it.
    let switch = think::template_switch("deepseek-r1", capabilities, Think::Unset).unwrap();
    assert_eq!(switch, Some(true));
    let prompt = render_go(&template, &messages, None, switch);
    assert_eq!(prompt, expected);
    let plan = think::plan("deepseek-r1", capabilities, Think::Unset, &prompt).unwrap();
    assert_eq!(plan.mode, ThinkingMode::Separate);
    assert!(!plan.starts_inside);
    assert_eq!(plan.prompt_suffix, "");

    // think off: the template itself closes an empty block; whale adds nothing more.
    let switch = think::template_switch("deepseek-r1", capabilities, Think::Off).unwrap();
    let prompt = render_go(&template, &messages, None, switch);
    assert_eq!(prompt, format!("{expected}<think>\n\n</think>\n\n"));
    let plan = think::plan("deepseek-r1", capabilities, Think::Off, &prompt).unwrap();
    assert_eq!(plan.prompt_suffix, "");
    assert_eq!(plan.mode, ThinkingMode::Drop);

    // A final assistant turn keeps its reasoning when thinking is set.
    let prefill = [
        ChatMessage::new("user", "Hi"),
        ChatMessage {
            thinking: Some("Greeting.".into()),
            ..ChatMessage::new("assistant", "Hello")
        },
    ];
    assert_eq!(
        render_go(&template, &prefill, None, Some(true)),
        "<｜User｜>Hi<｜Assistant｜><think>\nGreeting.\n</think>Hello"
    );
}

fn weather_tools() -> Vec<Json> {
    vec![json!({
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city",
            "parameters": {
                "type": "object",
                "required": ["city"],
                "properties": {"city": {"type": "string", "description": "City name"}}
            }
        }
    })]
}

/// A user question, the assistant's call, the tool's answer.
fn tool_round_trip() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("user", "Weather in Tokyo?"),
        assistant_calls(vec![ToolCall {
            name: "get_weather".into(),
            arguments: json!({"city": "Tokyo"}),
        }]),
        tool_result("get_weather", "22°C, sunny"),
    ]
}

#[test]
fn ollama_tool_templates_render_definitions_calls_and_results() {
    let tools = weather_tools();
    let qwen = go_template(QWEN25);
    assert!(qwen.capabilities().tools && !qwen.capabilities().thinking);
    assert_eq!(
        render_go(&qwen, &tool_round_trip(), Some(&tools), None),
        concat!(
            "<|im_start|>system\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n",
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n",
            r#"{"type": "function", "function": {"name":"get_weather","description":"Get the weather for a city","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string","description":"City name"}}}}}"#,
            "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n",
            "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n",
            "<|im_start|>user\nWeather in Tokyo?<|im_end|>\n",
            "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Tokyo\"}}\n</tool_call><|im_end|>\n",
            "<|im_start|>user\n<tool_response>\n22°C, sunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
        )
    );
    let llama31 = go_template(LLAMA31);
    assert!(llama31.capabilities().tools);
    assert_eq!(
        render_go(&llama31, &tool_round_trip(), Some(&tools), None),
        concat!(
            "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\n",
            "When you receive a tool call response, use the output to format an answer to the orginal user question.\n\n",
            "You are a helpful assistant with tool calling capabilities.<|eot_id|>",
            "<|start_header_id|>user<|end_header_id|>\n\nWeather in Tokyo?<|eot_id|>",
            "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\":\"Tokyo\"}}<|eot_id|>",
            "<|start_header_id|>ipython<|end_header_id|>\n\n22°C, sunny<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        )
    );
}

#[test]
fn legacy_prompt_template_renders_each_exchange() {
    let template = go_template(DEEPSEEK_CODER);
    let mut messages = vec![ChatMessage::new("system", "You are a coder.")];
    messages.extend(user_assistant_user());
    assert_eq!(
        render_go(&template, &messages, None, None),
        "You are a coder.\n### Instruction:\nHello, how are you?\n### Response:\nI'm doing great. How can I help you today?\n### Instruction:\nI'd like to show off how chat templating works!\n### Response:\n"
    );
}

#[test]
fn select_prefers_the_gguf_template_only_when_it_can_do_more() {
    let (r1, special) = deepseek_r1();
    let (v3, _) = deepseek_v3();
    let select = |template: Option<&str>, gguf: Option<&str>| {
        let sources = TemplateSources {
            template,
            gguf,
            catalogue: None,
        };
        ChatTemplate::select(sources, special.clone()).expect("select")
    };
    // A Go template without thinking gives way to R1's Jinja template, which has it.
    let chosen = select(Some(CHATML), Some(&r1));
    assert_eq!(chosen.syntax(), TemplateSyntax::Jinja);
    assert!(chosen.capabilities().thinking);
    // Not when the Go template has it too, nor when the GGUF template has no more.
    assert_eq!(
        select(Some(DEEPSEEK_R1), Some(&r1)).syntax(),
        TemplateSyntax::Go
    );
    assert_eq!(select(Some(CHATML), Some(&v3)).syntax(), TemplateSyntax::Go);
    // Tools and thinking are not traded: qwen2.5's tools stay.
    assert_eq!(select(Some(QWEN25), Some(&r1)).syntax(), TemplateSyntax::Go);
    // A Jinja override always wins; without one, the GGUF's; without either, the fallback.
    let jinja = "{% for m in messages %}{{ m.content }}{% endfor %}";
    let messages = [ChatMessage::new("user", "Hi")];
    assert_eq!(render(&select(Some(jinja), Some(&r1)), &messages), "Hi");
    assert_eq!(
        render(&select(None, Some(&v3)), &messages),
        format!("{BOS}<｜User｜>Hi<｜Assistant｜>")
    );
    assert_eq!(
        render(&select(None, None), &messages),
        format!("{BOS}<｜User｜>Hi<｜Assistant｜>")
    );
    // A broken Go template is an error, not a silent switch to the GGUF's.
    let sources = TemplateSources {
        template: Some(r#"{{ define "x" }}{{ .Prompt }}{{ end }}"#),
        gguf: Some(&r1),
        catalogue: None,
    };
    let error = ChatTemplate::select(sources, special.clone()).unwrap_err();
    assert!(matches!(error, ChatError::TemplateSyntax { .. }), "{error}");
    assert!(error.to_string().contains("{{define}}"), "{error}");
}

#[test]
fn select_takes_the_catalogue_template_for_a_missing_one_or_one_that_can_do_less() {
    let (r1, special) = deepseek_r1();
    let (v3, _) = deepseek_v3();
    let select = |template: Option<&str>, gguf: Option<&str>, catalogue: Option<&str>| {
        let sources = TemplateSources {
            template,
            gguf,
            catalogue,
        };
        ChatTemplate::select(sources, special.clone()).expect("select")
    };
    let messages = [ChatMessage::new("user", "Hi")];
    // No template of its own: the catalogue's (R1's opens the reasoning), not the fallback.
    assert_eq!(
        render(&select(None, None, Some(&r1)), &messages),
        format!("{BOS}<｜User｜>Hi<｜Assistant｜><think>\n")
    );
    // The GGUF's V3 template cannot think; the catalogue's R1 template can.
    assert!(select(None, Some(&v3), Some(&r1)).capabilities().thinking);
    // A GGUF template that can do as much stays.
    assert_eq!(
        select(None, Some(&r1), Some(&v3)).source(),
        r1.as_str(),
        "the GGUF's own template"
    );
    // A Go template without thinking gives way to it too, the GGUF's first.
    assert_eq!(select(Some(CHATML), None, Some(&r1)).source(), r1.as_str());
    assert_eq!(
        select(Some(CHATML), Some(&r1), Some(&r1)).source(),
        r1.as_str()
    );
    // A Jinja TEMPLATE is the user's word.
    let jinja = "{% for m in messages %}{{ m.content }}{% endfor %}";
    assert_eq!(select(Some(jinja), None, Some(&r1)).source(), jinja);
}

#[test]
fn template_syntax_is_detected() {
    for go in [
        CHATML,
        LLAMA3_INSTRUCT,
        DEEPSEEK_R1,
        QWEN25,
        LLAMA31,
        DEEPSEEK_CODER,
    ] {
        assert_eq!(TemplateSyntax::detect(go), TemplateSyntax::Go, "{go}");
    }
    for go in [
        "{{ json .Tools }}",
        "{{/* note */}}hi",
        "{{ printf \"%s\" $.System }}",
    ] {
        assert_eq!(TemplateSyntax::detect(go), TemplateSyntax::Go, "{go}");
    }
    let (v3, _) = deepseek_v3();
    for jinja in [
        v3.as_str(),
        "{{ bos_token }}{{ messages[0].content }}",
        "plain text",
        "{{ 1.5 }}",
    ] {
        assert_eq!(
            TemplateSyntax::detect(jinja),
            TemplateSyntax::Jinja,
            "{jinja}"
        );
    }
}
