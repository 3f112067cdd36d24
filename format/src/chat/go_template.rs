//! Ollama's Go `text/template` chat templates (Modelfile `TEMPLATE`, the registry's template
//! layer, `/api/generate`'s `template`), rendered by translating them once into minijinja.
//!
//! [`parse`] reads the subset of `text/template` Ollama's templates use — actions, `if`/`else
//! if`/`else`, `range` (with `$i, $e :=`, `break`, `continue`), `with`, variables (`:=` and
//! `=`), pipelines, parentheses, literals, comments and Go's exact whitespace trimming — and
//! refuses the rest (`define`, `template`, `block`) by name. [`translate`] turns the tree into a
//! minijinja template; [`runtime`] supplies Go's printing and functions (`eq`, `len`, `slice`,
//! `index`, `printf`, Ollama's `json`, `currentDate`…).
//!
//! The data follows Ollama's `template.Execute` (`template/template.go`):
//! - `.System` (every system message, joined by a blank line), `.Messages` (consecutive
//!   messages of one role merged, except tool results) with `.Role`, `.Content`, `.Thinking`,
//!   `.ToolCalls` (`.Function.Name`, `.Function.Arguments`, printed as JSON), `.ToolName`,
//!   `.Tools` (`.Function.Name`, `.Description`, `.Parameters`…, printed as JSON), `.Think`,
//!   `.ThinkLevel`, `.IsThinkSet`, and `.Prompt`/`.Response` empty;
//! - a template that never mentions `.Messages` is a legacy one: it is executed once per
//!   exchange with `.System`, `.Prompt` and `.Response` (and `.Tools`, which Ollama leaves out
//!   there although it counts them as a capability), and for the last, unanswered exchange
//!   everything after its `{{ .Response }}` is cut, so the prompt ends where the answer begins.
//!   Ollama appends `{{ .Response }}` to templates that mention neither (`{{ .Prompt }}`).
//!
//! Like the Jinja path, earlier assistant turns lose their reasoning before rendering.

mod parse;
mod runtime;
mod translate;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Serde, Value};
use minijinja::{Environment, UndefinedBehavior, context};
use serde_json::Value as Json;

use self::parse::{ParseError, identifiers};
use self::runtime::{Field, GoStruct, JsonStringer};
use super::reasoning::strip_reasoning;
use super::template::{RenderInput, TemplateCapabilities, ToolCall, describe};
use super::{ChatError, ChatMessage, limits};

/// The translation of the whole template.
const FULL: &str = "full";
/// The translation cut after `{{ .Response }}`, for the last exchange of a legacy template.
const LAST: &str = "last";

/// A compiled Go template.
#[derive(Debug)]
pub(crate) struct GoTemplate {
    env: Environment<'static>,
    /// Executed per exchange with `.Prompt`/`.Response` (the template ignores `.Messages`).
    legacy: bool,
    capabilities: TemplateCapabilities,
}

impl GoTemplate {
    /// Parses and translates a Go template; syntax errors and unsupported constructs are
    /// [`ChatError::TemplateSyntax`] naming the line.
    pub(crate) fn new(source: &str) -> Result<Self, ChatError> {
        let syntax_error = |error: ParseError| ChatError::TemplateSyntax {
            detail: format!("Go template line {}: {}", error.line, error.message),
        };
        if source.len() > limits::MAX_TEMPLATE_BYTES {
            return Err(ChatError::TemplateSyntax {
                detail: format!(
                    "Go template: the template is {} bytes long; the limit is {}",
                    source.len(),
                    limits::bytes(limits::MAX_TEMPLATE_BYTES)
                ),
            });
        }
        let mut nodes = parse::parse(source).map_err(syntax_error)?;
        let names = identifiers(&nodes);
        let legacy = !names.contains("messages");
        if legacy && !names.contains("response") {
            nodes.push(parse::response_action());
        }
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("default delimiters are valid");
        env.set_syntax(syntax);
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        runtime::register(&mut env);
        limits::apply(&mut env);
        let mut add = |name: &'static str, nodes: &[parse::Node]| {
            let jinja = translate::translate(nodes).map_err(syntax_error)?;
            limits::check_tags(&jinja).map_err(|detail| ChatError::TemplateSyntax {
                detail: format!("Go template translation: {detail}"),
            })?;
            env.add_template_owned(name, jinja)
                .map_err(|error| ChatError::TemplateSyntax {
                    detail: format!("Go template translation: {}", describe(&error)),
                })
        };
        add(FULL, &nodes)?;
        if legacy {
            add(LAST, &parse::cut_after_response(&nodes))?;
        }
        let capabilities = TemplateCapabilities {
            tools: names.contains("tools"),
            thinking: ["think", "thinking", "isthinkset"]
                .iter()
                .any(|name| names.contains(*name)),
            insert: names.contains("suffix"),
        };
        Ok(Self {
            env,
            legacy,
            capabilities,
        })
    }

    /// Tools when the template mentions `.Tools`; thinking when it mentions `.Think`,
    /// `.Thinking` or `.IsThinkSet`.
    pub(crate) fn capabilities(&self) -> TemplateCapabilities {
        self.capabilities
    }

    /// Renders a conversation as Ollama does. A legacy template ends at the last exchange's
    /// `{{ .Response }}` when `add_generation_prompt` is set, and renders it whole otherwise;
    /// a `.Messages` template decides for itself (it sees no such switch, as in Ollama).
    pub(crate) fn render(&self, input: &RenderInput) -> Result<String, ChatError> {
        let messages = collate(input.messages);
        let think = Think::new(input);
        let tools = tools(input.tools.unwrap_or_default());
        if !self.legacy {
            let system: Vec<&str> = messages
                .iter()
                .filter(|m| m.role == "system")
                .map(|m| m.content.as_str())
                .collect();
            let root = think.extend(vec![
                ("System", Value::from(system.join("\n\n"))),
                ("Messages", messages.iter().map(message).collect()),
                ("Tools", tools),
                ("Prompt", Value::from("")),
                ("Response", Value::from("")),
            ]);
            return self.execute(FULL, root);
        }
        let mut out = String::new();
        let mut exchange = Exchange::default();
        for message in &messages {
            let content = message.content.clone();
            match message.role.as_str() {
                "system" => {
                    if !exchange.prompt.is_empty() || !exchange.response.is_empty() {
                        let text =
                            self.exchange(FULL, &std::mem::take(&mut exchange), &think, &tools)?;
                        append(&mut out, &text)?;
                    }
                    exchange.system = content;
                }
                "user" => {
                    if !exchange.response.is_empty() {
                        let text =
                            self.exchange(FULL, &std::mem::take(&mut exchange), &think, &tools)?;
                        append(&mut out, &text)?;
                    }
                    exchange.prompt = content;
                }
                "assistant" => exchange.response = content,
                // Legacy templates cannot show tool results; Ollama leaves them out too.
                _ => {}
            }
        }
        let last = if input.add_generation_prompt {
            LAST
        } else {
            FULL
        };
        append(&mut out, &self.exchange(last, &exchange, &think, &tools)?)?;
        Ok(out)
    }

    /// Renders a fill-in-the-middle prompt (see [`super::ChatTemplate::render_insert`]).
    pub(crate) fn render_insert(
        &self,
        prompt: &str,
        suffix: &str,
        input: &RenderInput,
    ) -> Result<String, ChatError> {
        let root = Think::new(input).extend(vec![
            ("Prompt", Value::from(prompt)),
            ("Suffix", Value::from(suffix)),
            ("Response", Value::from("")),
        ]);
        self.execute(FULL, root)
    }

    fn exchange(
        &self,
        name: &str,
        exchange: &Exchange,
        think: &Think,
        tools: &Value,
    ) -> Result<String, ChatError> {
        let root = think.extend(vec![
            ("System", Value::from(exchange.system.as_str())),
            ("Prompt", Value::from(exchange.prompt.as_str())),
            ("Response", Value::from(exchange.response.as_str())),
            ("Messages", Value::from(Vec::<Value>::new())),
            ("Tools", tools.clone()),
        ]);
        self.execute(name, root)
    }

    fn execute(&self, name: &str, root: Value) -> Result<String, ChatError> {
        let template = self
            .env
            .get_template(name)
            .expect("templates are added in new");
        limits::render(&template, context! { _root => root }).map_err(|error| {
            ChatError::TemplateRender {
                // The translation's line numbers mean nothing in the Go source: leave them out.
                detail: error
                    .detail()
                    .map_or_else(|| error.kind().to_string(), str::to_owned),
            }
        })
    }
}

/// Appends one legacy exchange to the prompt, within [`limits::MAX_PROMPT_BYTES`].
fn append(out: &mut String, text: &str) -> Result<(), ChatError> {
    if out.len() + text.len() > limits::MAX_PROMPT_BYTES {
        return Err(ChatError::TemplateRender {
            detail: limits::prompt_too_large(),
        });
    }
    out.push_str(text);
    Ok(())
}

/// One legacy exchange: the system prompt before it, the user's prompt, the answer.
#[derive(Debug, Default)]
struct Exchange {
    system: String,
    prompt: String,
    response: String,
}

/// `.Think`, `.ThinkLevel`, `.IsThinkSet` as Ollama sets them from the request's `think`.
struct Think {
    on: bool,
    level: &'static str,
    set: bool,
}

impl Think {
    fn new(input: &RenderInput) -> Self {
        let on = input.think == Some(true);
        let level = match (on, input.think_level) {
            (false, _) => "",
            (true, None) => "medium",
            (true, Some(level)) => level.as_str(),
        };
        Self {
            on,
            level,
            set: input.think.is_some(),
        }
    }

    /// The root data: `fields` plus the thinking switches.
    fn extend(&self, mut fields: Vec<(&'static str, Value)>) -> Value {
        fields.extend([
            ("Think", Value::from(self.on)),
            ("ThinkLevel", Value::from(self.level)),
            ("IsThinkSet", Value::from(self.set)),
        ]);
        Value::from_pairs(fields)
    }
}

/// Ollama's `collate`: consecutive messages of one role become one (contents joined by a blank
/// line; tool results stay apart). Earlier assistant turns (before the last user message) lose
/// their reasoning first, as in Ollama (a Jinja template decides that for itself).
fn collate(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let last_user = messages.iter().rposition(|m| m.role == "user");
    let mut collated: Vec<ChatMessage> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let mut message = message.clone();
        if message.role == "assistant" && last_user.is_some_and(|last| index < last) {
            message.content = strip_reasoning(&message.content);
            message.thinking = None;
        }
        match collated.last_mut() {
            Some(previous) if previous.role == message.role && message.role != "tool" => {
                previous.content.push_str("\n\n");
                previous.content.push_str(&message.content);
            }
            _ => collated.push(message),
        }
    }
    collated
}

/// A message as Ollama's `templateMessage`.
fn message(message: &ChatMessage) -> Value {
    let calls: Vec<Value> = message
        .tool_calls
        .iter()
        .enumerate()
        .map(|(index, call)| tool_call(index, call))
        .collect();
    GoStruct::value(
        "templateMessage",
        vec![
            Field::new("Role", "Role", message.role.as_str()),
            Field::new("Content", "Content", message.content.as_str()),
            Field::new(
                "Thinking",
                "Thinking",
                message.thinking.as_deref().unwrap_or_default(),
            ),
            Field::new("Images", "Images", Value::from(Vec::<Value>::new())),
            Field::new("ToolCalls", "ToolCalls", Value::from(calls)),
            Field::new(
                "ToolName",
                "ToolName",
                message.tool_name.as_deref().unwrap_or_default(),
            ),
            Field::new("ToolCallID", "ToolCallID", ""),
        ],
    )
}

fn tool_call(index: usize, call: &ToolCall) -> Value {
    let function = GoStruct::value(
        "templateToolCallFunction",
        vec![
            Field::new("Index", "Index", index),
            Field::new("Name", "Name", call.name.as_str()),
            Field::new(
                "Arguments",
                "Arguments",
                JsonStringer::value(Value::from(Serde(&call.arguments))),
            ),
        ],
    );
    GoStruct::value(
        "templateToolCall",
        vec![
            Field::new("ID", "ID", ""),
            Field::new("Function", "Function", function),
        ],
    )
}

/// The tool list as Ollama's `templateTools`, from OpenAI-shaped definitions
/// (`{"type":"function","function":{"name",…}}`); unknown keys are dropped as Go drops them.
fn tools(definitions: &[Json]) -> Value {
    let tools: Vec<Value> = definitions.iter().map(tool).collect();
    JsonStringer::value(Value::from(tools))
}

fn tool(definition: &Json) -> Value {
    let function = &definition["function"];
    let parameters = &function["parameters"];
    let properties = parameters.get("properties").map(property_map);
    let parameters = GoStruct::value(
        "templateToolFunctionParameters",
        vec![
            Field::new("Type", "type", text(&parameters["type"])),
            Field::optional("Defs", "$defs", any(&parameters["$defs"])),
            Field::optional("Items", "items", any(&parameters["items"])),
            Field::optional("Required", "required", any(&parameters["required"])),
            Field::new("Properties", "properties", properties),
        ],
    );
    let function = GoStruct::value(
        "templateToolFunction",
        vec![
            Field::new("Name", "name", text(&function["name"])),
            Field::new("Description", "description", text(&function["description"])),
            Field::new("Parameters", "parameters", parameters),
        ],
    );
    GoStruct::value(
        "templateTool",
        vec![
            Field::new("Type", "type", text(&definition["type"])),
            Field::optional("Items", "items", any(&definition["items"])),
            Field::new("Function", "function", function),
        ],
    )
}

/// `properties`: name → [`property`], printed as JSON.
fn property_map(properties: &Json) -> Value {
    let entries: Vec<(String, Value)> = properties
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, schema)| (name.clone(), property(schema)))
        .collect();
    JsonStringer::value(Value::from_pairs(entries))
}

/// One parameter schema as Ollama's `ToolProperty`.
fn property(schema: &Json) -> Value {
    let any_of: Option<Vec<Value>> = schema["anyOf"]
        .as_array()
        .map(|options| options.iter().map(property).collect());
    GoStruct::value(
        "ToolProperty",
        vec![
            Field::optional("AnyOf", "anyOf", any_of.map(Value::from)),
            Field::optional("Type", "type", property_type(&schema["type"])),
            Field::optional("Items", "items", any(&schema["items"])),
            Field::optional("Description", "description", text(&schema["description"])),
            Field::optional("Enum", "enum", any(&schema["enum"])),
            Field::optional(
                "Properties",
                "properties",
                schema.get("properties").map(property_map),
            ),
            Field::optional("Required", "required", any(&schema["required"])),
        ],
    )
}

/// Ollama's `PropertyType` (a list of type names): printed and encoded as the one name, as a
/// list when there are several, as nothing when there are none.
fn property_type(json: &Json) -> Value {
    match json {
        Json::String(name) => Value::from(name.as_str()),
        Json::Array(names) if names.len() == 1 => text(&names[0]),
        Json::Array(names) if !names.is_empty() => any(json),
        _ => Value::from(""),
    }
}

/// A string field: the JSON string, or empty.
fn text(json: &Json) -> Value {
    Value::from(json.as_str().unwrap_or_default())
}

/// An `any` field: the JSON value as it is (`null` when absent).
fn any(json: &Json) -> Value {
    Value::from(Serde(json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::think::ThinkLevel;
    use serde_json::json;

    fn render(source: &str, messages: &[ChatMessage]) -> String {
        render_with(source, messages, None, None)
    }

    fn render_with(
        source: &str,
        messages: &[ChatMessage],
        tools: Option<&[Json]>,
        think: Option<bool>,
    ) -> String {
        GoTemplate::new(source)
            .unwrap_or_else(|error| panic!("{source:?} compiles: {error}"))
            .render(&RenderInput {
                messages,
                tools,
                add_generation_prompt: true,
                think,
                think_level: None,
            })
            .unwrap_or_else(|error| panic!("{source:?} renders: {error}"))
    }

    /// Renders with the data of a one-user-message conversation.
    fn eval(source: &str) -> String {
        render(source, &[ChatMessage::new("user", "hi")])
    }

    fn syntax_error(source: &str) -> String {
        match GoTemplate::new(source) {
            Err(ChatError::TemplateSyntax { detail }) => detail,
            Err(other) => panic!("{source:?}: expected a syntax error, got {other}"),
            Ok(_) => panic!("{source:?}: expected a syntax error"),
        }
    }

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello!"),
            ChatMessage::new("user", "Bye"),
        ]
    }

    #[test]
    fn a_suffix_template_fills_in_the_middle() {
        // deepseek-coder-v2's shape: fill-in-the-middle with a suffix, a chat turn without.
        let source = "{{ if .Suffix }}<｜fim▁begin｜>{{ .Prompt }}<｜fim▁hole｜>{{ .Suffix }}<｜fim▁end｜>{{ else }}User: {{ .Prompt }}\n\nAssistant: {{ .Response }}{{ end }}";
        let template = GoTemplate::new(source).unwrap();
        assert!(template.capabilities().insert);
        let input = RenderInput {
            messages: &[],
            tools: None,
            add_generation_prompt: true,
            think: None,
            think_level: None,
        };
        assert_eq!(
            template
                .render_insert("def f(", "    return x", &input)
                .unwrap(),
            "<｜fim▁begin｜>def f(<｜fim▁hole｜>    return x<｜fim▁end｜>"
        );
        assert_eq!(eval(source), "User: hi\n\nAssistant: ");
        assert!(
            !GoTemplate::new("{{ .Prompt }}")
                .unwrap()
                .capabilities()
                .insert
        );
    }

    #[test]
    fn trim_markers_remove_all_adjacent_whitespace() {
        let source = "{{ if .Messages }}a \n\t {{- \" b \" -}} \n\n c{{ end }}\n";
        assert_eq!(eval(source), "a b c\n");
        // Only the marked side is trimmed; `{{-3}}` is the number -3, not a trim.
        assert_eq!(
            eval("{{ if .Messages }} x  {{- 1 }}  y {{ end }}"),
            " x1  y "
        );
        assert_eq!(eval("{{ if .Messages }}{{-3}} {{ end }}"), "-3 ");
        // Comments vanish with their trims.
        assert_eq!(
            eval("{{ if .Messages }}a  {{- /* note\n */ -}}  b {{/* x */}}c{{ end }}"),
            "ab c"
        );
    }

    #[test]
    fn if_else_if_else_and_go_truthiness() {
        let source = r#"{{- range .Messages }}
{{- if eq .Role "system" }}S
{{- else if eq .Role "user" "tool" }}U
{{- else if .Content }}A
{{- else }}?
{{- end }}
{{- end }}"#;
        let mut messages = conversation();
        messages.push(ChatMessage::new("tool", "r"));
        messages.push(ChatMessage::new("assistant", ""));
        assert_eq!(render(source, &messages), "SUAUU?");
        // Empty string, 0, nil and empty lists are false; structs are true.
        let truth = r#"{{ if .Messages }}{{ if "" }}1{{ end }}{{ if 0 }}2{{ end }}{{ if eq nil nil }}3{{ end }}{{ if .Tools }}4{{ end }}{{ if index .Messages 0 }}5{{ end }}{{ if "0" }}6{{ end }}{{ end }}"#;
        assert_eq!(eval(truth), "356");
        // `and`/`or` return an operand, as Go's do; `not` a bool.
        assert_eq!(
            eval(r#"{{ and 1 "x" }}|{{ and 0 "x" }}|{{ or "" "y" }}|{{ not .Messages }}"#),
            "x|0|y|false"
        );
    }

    #[test]
    fn range_rebinds_dot_and_dollar_reaches_the_root() {
        let source = r"{{- range $i, $m := .Messages }}[{{ $i }}:{{ .Role }}={{ $m.Content }}/{{ len $.Messages }}{{ $.System }}]{{ end }}";
        assert_eq!(
            render(source, &conversation()),
            "[0:system=Be brief./4Be brief.][1:user=Hi/4Be brief.][2:assistant=Hello!/4Be brief.][3:user=Bye/4Be brief.]"
        );
        // One variable is the element; `else` runs for an empty list; `with` rebinds the dot.
        let source = r"{{ range $m := .Messages }}{{ $m.Role }} {{ end }}{{ range .Tools }}x{{ else }}no tools{{ end }}{{ with .System }}<{{ . }}>{{ else }}none{{ end }}";
        assert_eq!(
            render(source, &conversation()),
            "system user assistant user no tools<Be brief.>"
        );
        assert_eq!(
            eval(r"{{ with .System }}<{{ . }}>{{ else }}none{{ end }}{{ .Messages | len }}"),
            "none1"
        );
    }

    #[test]
    fn last_message_idiom() {
        let source = r"{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{ .Role }}{{ if $last }} (last){{ else }}, {{ end }}
{{- end }}";
        assert_eq!(
            render(source, &conversation()),
            "system, user, assistant, user (last)"
        );
    }

    #[test]
    fn variables_assigned_in_a_range_change_the_outer_variable() {
        let source = r#"{{- $lastUser := -1 }}{{ $n := 0 -}}
{{ range $i, $m := .Messages }}{{ if eq $m.Role "user" }}{{ $lastUser = $i }}{{ end }}{{ $n = len $.Messages }}{{ end -}}
{{ $lastUser }}/{{ $n }}{{ range $i, $m := .Messages }}{{ if eq $i $lastUser }}{{ break }}{{ end }}{{ if eq $i 0 }}{{ continue }}{{ end }}{{ $i }}{{ end }}"#;
        assert_eq!(render(source, &conversation()), "3/412");
    }

    #[test]
    fn functions_print_like_go() {
        let call = ChatMessage {
            tool_calls: vec![ToolCall {
                name: "get_weather".into(),
                arguments: json!({"unit": "c", "city": "Tokyo <x>", "days": 2, "ratio": 0.5}),
            }],
            ..ChatMessage::new("assistant", "")
        };
        let messages = [ChatMessage::new("user", "hi"), call];
        let source = r#"{{- range .Messages }}{{ range .ToolCalls -}}
{{ .Function.Arguments }}|{{ json .Function.Arguments }}|{{ .Function.Name | json }}|{{ index .Function.Arguments "city" }}|{{ index .Function.Arguments "none" }}
{{- range $k, $v := .Function.Arguments }} {{ $k }}={{ $v }}{{ end }}
{{- end }}{{ end }}"#;
        assert_eq!(
            render(source, &messages),
            r#"{"city":"Tokyo \u003cx\u003e","days":2,"ratio":0.5,"unit":"c"}|{"city":"Tokyo \u003cx\u003e","days":2,"ratio":0.5,"unit":"c"}|"get_weather"|Tokyo <x>|<no value> city=Tokyo <x> days=2 ratio=0.5 unit=c"#
        );
        assert_eq!(
            eval(
                r#"{{ printf "%s=%d %q %v %5.2f|%-4s|%x %t %%" "n" 42 "a\"b" 1000000.0 3.14159 "ab" 255 true }}"#
            ),
            r#"n=42 "a\"b" 1e+06  3.14|ab  |ff true %"#
        );
        assert_eq!(
            eval(r#"{{ print 1 2 "a" 3 nil }}|{{ println "x" 1 }}"#),
            "1 2a3 <nil>|x 1\n"
        );
        assert_eq!(
            eval(
                r#"{{ len "é" }} {{ slice "abc" 1 }} {{ slice "abc" 0 2 }} {{ index "abc" 1 }} {{ eq 1 2 1 }} {{ ne "a" "b" }} {{ lt 1 2 }} {{ ge "a" "b" }}"#
            ),
            "2 bc ab 98 true true true false"
        );
        assert_eq!(
            eval("{{ `raw {{ .X }}` }} {{ 'a' }} {{ 0x10 }} {{ 1.5 }} {{ true }}"),
            "raw {{ .X }} 97 16 1.5 true"
        );
        assert_eq!(
            eval("{{ (index .Messages 0).Content }} {{ (len .Messages) }}"),
            "hi 1"
        );
        let date = eval("{{ currentDate }}");
        assert_eq!(date.len(), 10, "{date}");
        assert_eq!(&date[4..5], "-");
    }

    #[test]
    fn tools_render_with_ollama_field_names_and_json() {
        let tools = [json!({
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "required": ["city"],
                    "properties": {
                        "unit": {"type": "string", "enum": ["c", "f"]},
                        "city": {"type": "string", "description": "City name"},
                        "when": {"anyOf": [{"type": ["string"]}, {"type": ["integer", "null"]}]}
                    },
                    "additionalProperties": false
                }
            }
        })];
        let source = r"{{- range .Tools }}{{ .Function.Name }}: {{ .Function.Description }}
{{ . }}
{{ .Function }}
{{ range $name, $p := .Function.Parameters.Properties }}{{ $name }}:{{ $p.Type }}:{{ toTypeScriptType $p }} {{ end }}
{{ json $.Tools }}{{ end }}{{ range .Messages }}{{ end }}";
        let template = GoTemplate::new(source).unwrap();
        assert!(template.capabilities().tools && !template.capabilities().thinking);
        let rendered = render_with(
            source,
            &[ChatMessage::new("user", "hi")],
            Some(&tools),
            None,
        );
        let function = r#"{"name":"get_weather","description":"Weather for a city","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string","description":"City name"},"unit":{"type":"string","enum":["c","f"]},"when":{"anyOf":[{"type":"string"},{"type":["integer","null"]}]}}}}"#;
        assert_eq!(
            rendered,
            format!(
                "get_weather: Weather for a city\n{{\"type\":\"function\",\"function\":{function}}}\n{function}\ncity:string:string unit:string:string when::string | number | null \n[{{\"type\":\"function\",\"function\":{function}}}]"
            )
        );
    }

    #[test]
    fn legacy_templates_run_per_exchange_and_stop_at_the_response() {
        let source = "{{ if .System }}<s>{{ .System }}</s>{{ end }}[U]{{ .Prompt }}[A]{{ .Response }}[END]\n";
        let template = GoTemplate::new(source).unwrap();
        assert!(!template.capabilities().tools);
        assert_eq!(
            render(source, &conversation()),
            "<s>Be brief.</s>[U]Hi[A]Hello![END]\n[U]Bye[A]"
        );
        // `{{ .Prompt }}` alone gets Ollama's implicit `{{ .Response }}`.
        assert_eq!(render("{{ .Prompt }}", &conversation()), "HiHello!Bye");
        // Without a generation prompt the last exchange renders whole.
        let whole = template
            .render(&RenderInput {
                messages: &conversation()[..3],
                tools: None,
                add_generation_prompt: false,
                think: None,
                think_level: None,
            })
            .unwrap();
        assert_eq!(whole, "<s>Be brief.</s>[U]Hi[A]Hello![END]\n");
    }

    #[test]
    fn messages_are_collated_and_history_loses_reasoning() {
        let messages = [
            ChatMessage::new("system", "A"),
            ChatMessage::new("system", "B"),
            ChatMessage::new("user", "x"),
            ChatMessage::new("user", "y"),
            ChatMessage {
                thinking: Some("hmm".into()),
                ..ChatMessage::new("assistant", "<think>t</think>z")
            },
            ChatMessage::new("user", "w"),
            ChatMessage {
                thinking: Some("last".into()),
                ..ChatMessage::new("assistant", "v")
            },
        ];
        let source = "{{ .System }}|{{ range .Messages }}{{ .Role }}={{ .Content }}({{ .Thinking }}) {{ end }}";
        assert_eq!(
            render(source, &messages),
            "A\n\nB|system=A\n\nB() user=x\n\ny() assistant=z() user=w() assistant=v(last) "
        );
    }

    #[test]
    fn think_switches_follow_ollama() {
        let source =
            "{{ if .Messages }}{{ .Think }} {{ .IsThinkSet }} [{{ .ThinkLevel }}]{{ end }}";
        let messages = [ChatMessage::new("user", "hi")];
        assert_eq!(render_with(source, &messages, None, None), "false false []");
        assert_eq!(
            render_with(source, &messages, None, Some(true)),
            "true true [medium]"
        );
        assert_eq!(
            render_with(source, &messages, None, Some(false)),
            "false true []"
        );
        let high = GoTemplate::new(source)
            .unwrap()
            .render(&RenderInput {
                messages: &messages,
                tools: None,
                add_generation_prompt: true,
                think: Some(true),
                think_level: Some(ThinkLevel::High),
            })
            .unwrap();
        assert_eq!(high, "true true [high]");
        assert!(GoTemplate::new(source).unwrap().capabilities().thinking);
    }

    #[test]
    fn unsupported_and_invalid_templates_are_syntax_errors() {
        let define = syntax_error(r#"{{ define "x" }}hi{{ end }}{{ template "x" }}"#);
        assert!(
            define.contains("{{define}}") && define.contains("not supported"),
            "{define}"
        );
        assert!(syntax_error(r#"{{ template "x" . }}"#).contains("{{template}}"));
        assert!(syntax_error(r#"{{ block "x" . }}{{ end }}"#).contains("{{block}}"));
        assert!(syntax_error("{{ html .Prompt }}").contains("\"html\" is not supported"));
        assert!(syntax_error("{{ nope .Prompt }}").contains("\"nope\" not defined"));
        assert!(syntax_error("{{ .Prompt ").contains("unclosed action"));
        assert!(syntax_error("a\n{{ if .Prompt }}").contains("line 2"));
        assert!(syntax_error("{{ end }}").contains("unexpected {{end}}"));
        assert!(syntax_error("{{ $x }}").contains("undefined variable \"$x\""));
        assert!(
            syntax_error("{{ if .X }}{{ $y := 1 }}{{ end }}{{ $y }}")
                .contains("undefined variable")
        );
        assert!(syntax_error("{{ break }}").contains("outside {{range}}"));
        assert!(syntax_error("{{ .Prompt 1 }}").contains("can't give argument"));
        assert!(syntax_error("{{ not 1 2 }}").contains("wrong number of args for not"));
        assert!(syntax_error("{{ /* x */ }}").contains("unexpected"));
    }

    #[test]
    fn render_errors_name_the_problem() {
        let error = GoTemplate::new("{{ range .Messages }}{{ index $.Messages 5 }}{{ end }}")
            .unwrap()
            .render(&RenderInput {
                messages: &[ChatMessage::new("user", "hi")],
                tools: None,
                add_generation_prompt: true,
                think: None,
                think_level: None,
            })
            .unwrap_err();
        assert!(matches!(error, ChatError::TemplateRender { .. }), "{error}");
        assert!(
            error.to_string().contains("index out of range: 5"),
            "{error}"
        );
    }

    #[test]
    fn fields_follow_go_rules() {
        // A missing map key is nil (`missingkey=zero`); a missing struct field, a field of a
        // list or of nil is an error, as in Go (llama4's registry template trips on the second).
        let messages = [ChatMessage::new("user", "hi")];
        assert_eq!(
            render(
                "{{ .Nope }}|{{ range .Messages }}{{ .Role }}{{ end }}",
                &messages
            ),
            "<no value>|user"
        );
        for (source, message) in [
            (
                "{{ range .Messages }}{{ .Nope }}{{ end }}",
                "can't evaluate field Nope in type templateMessage",
            ),
            (
                "{{ with .Messages }}{{ .Messages }}{{ end }}",
                "can't evaluate field Messages in type slice",
            ),
            (
                "{{ range .Messages }}{{ .Role.X }}{{ end }}",
                "in type string",
            ),
            ("{{ .Nope.X }}{{ .Messages }}", "nil pointer evaluating .X"),
        ] {
            let error = GoTemplate::new(source)
                .unwrap()
                .render(&RenderInput {
                    messages: &messages,
                    tools: None,
                    add_generation_prompt: true,
                    think: None,
                    think_level: None,
                })
                .unwrap_err();
            assert!(error.to_string().contains(message), "{source}: {error}");
            assert!(!error.to_string().contains("line"), "{error}");
        }
    }

    #[test]
    fn printf_takes_widths_from_operands() {
        // granite4's registry template counts with `len (printf "a%*s" $n "")`.
        assert_eq!(
            eval(r#"{{ printf "a%*s|%-*d|" 3 "x" 4 7 }}{{ len (printf "a%*s" 2 "") }}"#),
            "a  x|7   |3"
        );
        let error = GoTemplate::new(r#"{{ printf "%d %d" 1 }}{{ .Messages }}"#)
            .unwrap()
            .render(&RenderInput {
                messages: &[],
                tools: None,
                add_generation_prompt: true,
                think: None,
                think_level: None,
            })
            .unwrap_err();
        assert!(
            error.to_string().contains("missing operand for %d"),
            "{error}"
        );
    }

    #[test]
    fn text_that_looks_like_jinja_stays_text() {
        assert_eq!(
            eval("{{ if .Messages }}{% raw %} {{ \"{{\" }} {# x #}{{ end }}\n"),
            "{% raw %} {{ {# x #}\n"
        );
    }

    /// Renders with the data of a one-user-message conversation, expecting an error.
    fn render_error(source: &str, prompt: &str) -> ChatError {
        let template =
            GoTemplate::new(source).unwrap_or_else(|error| panic!("{source:?} compiles: {error}"));
        match template.render(&RenderInput {
            messages: &[ChatMessage::new("user", prompt)],
            tools: None,
            add_generation_prompt: true,
            think: None,
            think_level: None,
        }) {
            Ok(text) => panic!(
                "{source:?}: expected an error, rendered {} bytes",
                text.len()
            ),
            Err(error) => error,
        }
    }

    #[test]
    fn absurd_widths_precisions_and_ranges_are_errors_that_name_the_limit() {
        for (source, message) in [
            (
                r#"{{ printf "%999999999999d" 1 }}"#,
                "printf: width 999999999999 is over the limit of 4096",
            ),
            (
                r#"{{ printf "%99999999999999999999999999s" "x" }}"#,
                "printf: width 99999999999999999999999999 is over the limit of 4096",
            ),
            (
                r#"{{ printf "%.999999999f" 1.5 }}"#,
                "printf: precision 999999999 is over the limit of 4096",
            ),
            (
                r#"{{ printf "%-4097v|" "x" }}"#,
                "printf: width 4097 is over the limit of 4096",
            ),
            (
                r#"{{ printf "%*d" 99999999999 1 }}"#,
                "printf: width 99999999999 is over the limit of 4096",
            ),
            (
                r#"{{ printf "%.*e" 70000 1.5 }}"#,
                "printf: precision 70000 is over the limit of 4096",
            ),
            (r#"{{ printf "%*d" -5 1 }}"#, "printf: bad width -5"),
            (
                "{{ range 1000000000000 }}x{{ end }}",
                "range over 1000000000000: the limit is 100000 iterations",
            ),
        ] {
            let error = render_error(&format!("{source}{{{{ .Messages }}}}"), "hi");
            assert!(
                matches!(error, ChatError::TemplateRender { .. })
                    && error.to_string().contains(message),
                "{source}: {error}"
            );
        }
        // At the limit is fine.
        assert_eq!(eval(r#"{{ len (printf "%4096d" 1) }}"#), "4096");
        assert_eq!(eval(r#"{{ len (printf "%.4096f" 0.5) }}"#), "4098");
        assert_eq!(eval("{{ range $i := 3 }}{{ $i }}{{ end }}"), "012");
    }

    #[test]
    fn deep_nesting_is_a_syntax_error_that_names_the_limit() {
        let blocks = format!("{}x{}", "{{ if 1 }}".repeat(101), "{{ end }}".repeat(101));
        assert!(
            syntax_error(&blocks).contains("blocks are nested deeper than 100 levels"),
            "{}",
            syntax_error(&blocks)
        );
        let chain = format!(
            "{{{{ if 0 }}}}{}{{{{ end }}}}",
            "{{ else if 0 }}".repeat(120)
        );
        assert!(syntax_error(&chain).contains("nested deeper than 100 levels"));
        let parens = format!("{{{{ {}1{} }}}}", "(".repeat(101), ")".repeat(101));
        assert!(
            syntax_error(&parens).contains("parentheses are nested deeper than 100 levels"),
            "{}",
            syntax_error(&parens)
        );
        // A long chain of arguments becomes a long Jinja expression: refused by its length,
        // not by a stack overflow in minijinja's compiler.
        let arguments = format!("{{{{ and{} }}}}{{{{ .Messages }}}}", " 1".repeat(5_000));
        assert!(syntax_error(&arguments).contains("4 KiB"));
        // Within the limits, a deep template still works.
        let deep = format!("{}x{}", "{{ if 1 }}".repeat(30), "{{ end }}".repeat(30));
        assert_eq!(eval(&format!("{deep}{{{{ .Messages | len }}}}")), "x1");
    }

    #[test]
    fn huge_output_is_an_error_that_names_the_limit() {
        let kilobyte = "k".repeat(1024);
        // A legacy template: every exchange is bounded, and so is their sum.
        let error = render_error("{{ range 70000 }}{{ $.Prompt }}{{ end }}", &kilobyte);
        assert!(
            error
                .to_string()
                .contains("the rendered prompt is larger than 64 MiB, the limit"),
            "{error}"
        );
        // A string built by doubling stops at the limit, not at the allocator.
        let doubling = r#"{{ $x := printf "%4096s" "" }}{{ range 30 }}{{ $x = print $x $x }}{{ end }}{{ len $x }}{{ .Messages }}"#;
        let error = render_error(doubling, "hi");
        assert!(
            error
                .to_string()
                .contains("print: the result is larger than 64 MiB, the limit"),
            "{error}"
        );
    }

    #[test]
    fn huge_templates_are_refused_before_parsing() {
        let source = format!(
            "{{{{ .Prompt }}}}{}",
            "x".repeat(limits::MAX_TEMPLATE_BYTES)
        );
        assert!(syntax_error(&source).contains("the limit is 1 MiB"));
        // Many actions lex in linear time (lines are counted as the lexer moves on).
        let many = "{{ .Prompt }}\n".repeat(60_000);
        assert!(GoTemplate::new(&many).is_ok());
    }
}
