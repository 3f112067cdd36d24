//! Chat templates: turn a conversation into the prompt text a model was trained on.
//!
//! A model's template comes from its GGUF (`tokenizer.chat_template`, Hugging Face Jinja) or from a
//! Modelfile `TEMPLATE` (Ollama's Go `text/template` syntax). Jinja sources are rendered with
//! minijinja plus the Python-compatibility layer of minijinja-contrib, configured the way
//! `transformers` renders them (`trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`,
//! `strftime_now`, a Python-style `tojson`), because DeepSeek's templates call Python string
//! methods (`.split('</think>')`, `.startswith`) and `namespace()`. Go sources are detected
//! ([`TemplateSyntax::detect`]) and translated into minijinja by the `go_template` module, which
//! gives them Ollama's variables (`.Messages`, `.Tools`, `.Think`…).
//!
//! Which template a model renders with is [`ChatTemplate::select`]'s decision: its `TEMPLATE`,
//! unless that is a Go template and the GGUF's Jinja template has more capabilities; the
//! catalogue's template when the model has none, or when it can do more than the model's.
//!
//! Earlier assistant turns lose their `<think>…</think>` text before rendering (Ollama and the R1
//! templates do the same): history carries answers, not reasoning.

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, Value, ValueKind};
use minijinja::{Environment, Error as JinjaError, ErrorKind, State, UndefinedBehavior};
use serde_json::{Map, Value as Json, json};

use super::go_template::GoTemplate;
use super::limits;
use super::think::ThinkLevel;
use super::{ChatError, ChatMessage};

/// Name under which the one template lives in its environment.
const TEMPLATE_NAME: &str = "chat_template";

/// The template whale uses when a model brings none: DeepSeek's own turn shape, because every
/// model whale curates is a DeepSeek model or distill and they all know these tokens. Earlier
/// reasoning inline in an answer is cut at `</think>`, as R1's own template cuts it.
pub const FALLBACK_TEMPLATE: &str = concat!(
    "{{ bos_token }}",
    "{%- for message in messages if message.role == 'system' %}",
    "{% if not loop.first %}{{ '\\n\\n' }}{% endif %}{{ message.content }}",
    "{%- endfor %}",
    "{%- for message in messages %}",
    "{%- if message.role == 'user' %}{{ '<｜User｜>' + message.content }}",
    "{%- elif message.role == 'assistant' %}",
    "{%- set content = message.content or '' %}",
    "{%- if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}",
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}",
    "{%- elif message.role == 'tool' %}",
    "{{ '<｜tool▁output▁begin｜>' + message.content + '<｜tool▁output▁end｜>' }}",
    "{%- endif %}",
    "{%- endfor %}",
    "{%- if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}",
);

/// The special tokens a template may print (`bos_token`, `eos_token`), as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
}

/// What a template can express, detected from its source the way Ollama does: a model whose
/// template cannot show tools or reasoning must not be sent them (the API answers 400).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TemplateCapabilities {
    /// The template lists tool definitions (`tools` in Jinja, `.Tools` in Go).
    pub tools: bool,
    /// The template knows reasoning blocks (`<think>` and `</think>` in Jinja, `.Thinking`,
    /// `.Think` or `.IsThinkSet` in Go).
    pub thinking: bool,
    /// The template fills in the middle: it places the text after the cursor (`.Suffix` in
    /// Go; no Jinja chat template does).
    pub insert: bool,
}

impl TemplateCapabilities {
    /// Whether `self` has every capability of `other` and more (Ollama's `hasMoreCapabilities`
    /// for these two).
    fn exceeds(self, other: Self) -> bool {
        let covers = (self.tools || !other.tools)
            && (self.thinking || !other.thinking)
            && (self.insert || !other.insert);
        covers && self != other
    }
}

/// One tool call made by the assistant: a function name and its arguments (a JSON object).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Json,
}

/// Everything a template sees for one render.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    pub messages: &'a [ChatMessage],
    /// Tool definitions in OpenAI shape (`{"type":"function","function":{…}}`); `None` or empty
    /// means the template sees no `tools` at all (as `transformers` passes `None`).
    pub tools: Option<&'a [Json]>,
    /// End the prompt with the assistant's turn opener so the model answers.
    pub add_generation_prompt: bool,
    /// Exposed as both `thinking` and `enable_thinking` (the two names DeepSeek V3.1 and Qwen 3
    /// templates read); `None` leaves them undefined so the template's own default applies.
    /// Go templates see it as `.Think` and `.IsThinkSet`.
    pub think: Option<bool>,
    /// The effort asked for when `think` was a level: Go templates' `.ThinkLevel` (`"medium"`
    /// when `think` is just on, as in Ollama), Jinja templates' `reasoning_effort` (left
    /// undefined when `think` is not a level, so the template's own default applies).
    pub think_level: Option<ThinkLevel>,
}

/// The syntax a template source is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateSyntax {
    /// Hugging Face Jinja (`{% … %}`), as in GGUF `tokenizer.chat_template`.
    Jinja,
    /// Go `text/template` (`{{ .System }}`), as in Ollama Modelfile `TEMPLATE`.
    Go,
}

impl TemplateSyntax {
    /// Tells the two apart: Jinja statements and comments win; an action that is a Go comment,
    /// starts with a Go keyword or function (`{{- range`, `{{ json`), or has a word on the dot
    /// or a variable (`.Prompt`, `$.Messages`, `(len .Tools)`) marks a Go template.
    pub fn detect(source: &str) -> Self {
        const GO_WORDS: &[&str] = &[
            "range",
            "if",
            "with",
            "end",
            "else",
            "template",
            "define",
            "block",
            "break",
            "continue",
            "and",
            "or",
            "eq",
            "ne",
            "lt",
            "le",
            "gt",
            "ge",
            "len",
            "index",
            "slice",
            "print",
            "printf",
            "println",
            "json",
            "currentDate",
            "yesterdayDate",
            "toTypeScriptType",
        ];
        if source.contains("{%") || source.contains("{#") {
            return Self::Jinja;
        }
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            let body = &rest[start + 2..];
            let body = body.strip_prefix('-').unwrap_or(body);
            if body.starts_with("/*") {
                return Self::Go;
            }
            let end = body.find("}}").unwrap_or(body.len());
            let action = &body[..end];
            // The next action starts after this one ends: each byte is looked at once.
            rest = &body[end..];
            let mut words = action.split_whitespace();
            let first_is_go = words.next().is_some_and(|word| GO_WORDS.contains(&word));
            let go_operand = action.split_whitespace().any(|word| {
                let word = word.trim_start_matches('(');
                word.starts_with('$')
                    || (word.starts_with('.')
                        && !word[1..].starts_with(|c: char| c.is_ascii_digit()))
            });
            if first_is_go || go_operand {
                return Self::Go;
            }
        }
        Self::Jinja
    }
}

/// The templates a model may render with (see [`ChatTemplate::select`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct TemplateSources<'a> {
    /// Its `TEMPLATE`: from its Modelfile, its registry layer or the request.
    pub template: Option<&'a str>,
    /// The GGUF's `tokenizer.chat_template`.
    pub gguf: Option<&'a str>,
    /// whale's template for the prompt format of the model's catalogue entry.
    pub catalogue: Option<&'a str>,
}

/// A compiled chat template, ready to render many conversations.
#[derive(Debug)]
pub struct ChatTemplate {
    source: String,
    renderer: Renderer,
    special: SpecialTokens,
    capabilities: TemplateCapabilities,
}

/// How a template renders, by its source syntax.
#[derive(Debug)]
enum Renderer {
    Jinja {
        env: Environment<'static>,
        /// DeepSeek templates concatenate `tool['function']['arguments']` with strings, so they
        /// need the arguments as a JSON string; Qwen-style templates pipe them through `tojson`
        /// and need an object. Probed once at compile time, as llama.cpp does.
        string_arguments: bool,
    },
    Go(GoTemplate),
}

impl ChatTemplate {
    /// Compiles a template source, Jinja or Go (see [`TemplateSyntax::detect`]), within the
    /// bounds of [`limits`] and on a thread with room for them.
    pub fn new(source: &str, special: SpecialTokens) -> Result<Self, ChatError> {
        let mut outcome = None;
        limits::on_render_thread(|| {
            outcome = Some(Self::compile(source, special));
            Ok(())
        })
        .map_err(|detail| ChatError::TemplateSyntax { detail })?;
        outcome.expect("the compile thread ran")
    }

    fn compile(source: &str, special: SpecialTokens) -> Result<Self, ChatError> {
        if TemplateSyntax::detect(source) == TemplateSyntax::Go {
            let template = GoTemplate::new(source)?;
            return Ok(Self {
                source: source.to_owned(),
                capabilities: template.capabilities(),
                renderer: Renderer::Go(template),
                special,
            });
        }
        limits::check_source(source).map_err(|detail| ChatError::TemplateSyntax { detail })?;
        let mut env = Environment::new();
        configure(&mut env);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|error| ChatError::TemplateSyntax {
                detail: describe(&error),
            })?;
        let mut template = Self {
            source: source.to_owned(),
            renderer: Renderer::Jinja {
                env,
                string_arguments: false,
            },
            special,
            capabilities: detect_capabilities(source),
        };
        let probed = template.needs_string_arguments();
        if let Renderer::Jinja {
            string_arguments, ..
        } = &mut template.renderer
        {
            *string_arguments = probed;
        }
        Ok(template)
    }

    /// The template a model renders with, from the [`TemplateSources`] it has. Its own comes
    /// first: the `TEMPLATE`, else the GGUF's. A Jinja `TEMPLATE` is always used as given. A Go
    /// `TEMPLATE` gives way to the GGUF's Jinja template, and either gives way to the catalogue
    /// entry's, when that one has every capability (tools, thinking) of the chosen one and more,
    /// as Ollama HEAD prefers the GGUF's: registry Go templates and older conversions often
    /// predate a model's tool or thinking support. A model with none of them renders with its
    /// catalogue template, else whale's [`FALLBACK_TEMPLATE`].
    pub fn select(sources: TemplateSources, special: SpecialTokens) -> Result<Self, ChatError> {
        let TemplateSources {
            template,
            gguf,
            catalogue,
        } = sources;
        let mut candidates = [template, gguf, catalogue].into_iter().flatten();
        let Some(first) = candidates.next() else {
            return Ok(Self::fallback(special));
        };
        let chosen = Self::new(first, special.clone())?;
        if template.is_some() && chosen.syntax() == TemplateSyntax::Jinja {
            return Ok(chosen);
        }
        for source in candidates {
            if let Ok(better) = Self::new(source, special.clone())
                && better.syntax() == TemplateSyntax::Jinja
                && better.capabilities.exceeds(chosen.capabilities)
            {
                return Ok(better);
            }
        }
        Ok(chosen)
    }

    /// The template whale uses for a model without one ([`FALLBACK_TEMPLATE`]).
    pub fn fallback(special: SpecialTokens) -> Self {
        Self::new(FALLBACK_TEMPLATE, special).expect("the fallback template compiles")
    }

    /// Renders a conversation to prompt text. The text may begin with the BOS token's text (most
    /// templates print `bos_token`); check [`ChatTemplate::starts_with_bos`] and tokenise with
    /// `add_special = false` then, so BOS is never doubled.
    pub fn render(&self, input: &RenderInput) -> Result<String, ChatError> {
        on_render_thread(|| self.render_here(input))
    }

    fn render_here(&self, input: &RenderInput) -> Result<String, ChatError> {
        let (env, string_arguments) = match &self.renderer {
            Renderer::Jinja {
                env,
                string_arguments,
            } => (env, *string_arguments),
            Renderer::Go(template) => return template.render(input),
        };
        let context = self.context(input, string_arguments);
        let template = env
            .get_template(TEMPLATE_NAME)
            .expect("the template was added in new");
        limits::render(&template, Value::from(Serde(&context))).map_err(|error| {
            ChatError::TemplateRender {
                detail: describe(&error),
            }
        })
    }

    /// Renders a fill-in-the-middle prompt: the text before the cursor and after it, as
    /// Ollama executes a template for a request with a `suffix` (`.Prompt`, `.Suffix`, an empty
    /// `.Response`, and the think settings). Only templates with the `insert` capability can.
    pub fn render_insert(
        &self,
        prompt: &str,
        suffix: &str,
        input: &RenderInput,
    ) -> Result<String, ChatError> {
        match &self.renderer {
            Renderer::Go(template) if self.capabilities.insert => {
                on_render_thread(|| template.render_insert(prompt, suffix, input))
            }
            _ => Err(ChatError::TemplateRender {
                detail: "the template has no place for a suffix".to_owned(),
            }),
        }
    }

    /// The template's text, as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The syntax the template was written in.
    pub fn syntax(&self) -> TemplateSyntax {
        match self.renderer {
            Renderer::Jinja { .. } => TemplateSyntax::Jinja,
            Renderer::Go(_) => TemplateSyntax::Go,
        }
    }

    pub fn capabilities(&self) -> TemplateCapabilities {
        self.capabilities
    }

    /// Whether `prompt` already begins with this model's BOS text.
    pub fn starts_with_bos(&self, prompt: &str) -> bool {
        starts_with_bos(prompt, self.special.bos.as_deref())
    }

    /// Builds the `transformers`-shaped context: `messages`, `tools`, `add_generation_prompt`,
    /// `bos_token`, `eos_token`, and the thinking switches.
    fn context(&self, input: &RenderInput, string_arguments: bool) -> Json {
        let messages: Vec<Json> = input
            .messages
            .iter()
            .map(|message| message_json(message, string_arguments))
            .collect();
        let mut context = Map::new();
        context.insert("messages".into(), Json::Array(messages));
        if let Some(tools) = input.tools.filter(|tools| !tools.is_empty()) {
            context.insert("tools".into(), Json::Array(tools.to_vec()));
        }
        context.insert(
            "add_generation_prompt".into(),
            Json::Bool(input.add_generation_prompt),
        );
        for (name, token) in [
            ("bos_token", &self.special.bos),
            ("eos_token", &self.special.eos),
        ] {
            context.insert(name.into(), Json::String(token.clone().unwrap_or_default()));
        }
        if let Some(think) = input.think {
            context.insert("thinking".into(), Json::Bool(think));
            context.insert("enable_thinking".into(), Json::Bool(think));
        }
        if let Some(level) = input.think_level.filter(|_| input.think == Some(true)) {
            context.insert("reasoning_effort".into(), level.as_str().into());
        }
        Json::Object(context)
    }

    /// Renders a probe conversation with object arguments; if the template fails on it or does
    /// not show them, it wants a JSON string instead.
    fn needs_string_arguments(&self) -> bool {
        let probe = [
            ChatMessage::new("user", "probe"),
            ChatMessage {
                tool_calls: vec![ToolCall {
                    name: "probe_function".into(),
                    arguments: json!({"probe_argument": "probe_value"}),
                }],
                ..ChatMessage::new("assistant", "")
            },
        ];
        let input = RenderInput {
            messages: &probe,
            tools: None,
            add_generation_prompt: false,
            think: None,
            think_level: None,
        };
        match self.render_here(&input) {
            Ok(text) => !text.contains("probe_function") || !text.contains("probe_value"),
            Err(_) => true,
        }
    }
}

/// One message in OpenAI/`transformers` shape. An assistant turn that only calls tools has
/// `content: null` (DeepSeek's templates test `content is none` to print the calls). Earlier
/// turns' content is passed as it is: a Jinja template is the model's own and says itself
/// whether earlier reasoning is dropped (R1's splits on `</think>`, V3's keeps it), so
/// stripping it here would change what R1's split leaves and what V3's shows. Reasoning sent
/// as its own field goes to every assistant turn as `reasoning_content` (and `thinking`), as a
/// client hands it to transformers: V3.2's template shows it only after the last user turn,
/// V4's on every turn once tools are in play.
fn message_json(message: &ChatMessage, string_arguments: bool) -> Json {
    let assistant = message.role == "assistant";
    let content = message.content.clone();
    let mut out = Map::new();
    out.insert("role".into(), Json::String(message.role.clone()));
    if assistant && content.is_empty() && !message.tool_calls.is_empty() {
        out.insert("content".into(), Json::Null);
    } else {
        out.insert("content".into(), Json::String(content));
    }
    if let Some(thinking) = message.thinking.as_ref().filter(|_| assistant) {
        out.insert("reasoning_content".into(), Json::String(thinking.clone()));
        out.insert("thinking".into(), Json::String(thinking.clone()));
    }
    if !message.tool_calls.is_empty() {
        let calls = message
            .tool_calls
            .iter()
            .map(|call| {
                let arguments = if string_arguments {
                    Json::String(super::tools::arguments_text(&call.arguments))
                } else {
                    call.arguments.clone()
                };
                json!({"type": "function", "function": {"name": call.name, "arguments": arguments}})
            })
            .collect();
        out.insert("tool_calls".into(), Json::Array(calls));
    }
    if let Some(name) = &message.tool_name {
        out.insert("name".into(), Json::String(name.clone()));
        out.insert("tool_name".into(), Json::String(name.clone()));
    }
    Json::Object(out)
}

/// Runs a render on [`limits::on_render_thread`].
fn on_render_thread(
    work: impl FnOnce() -> Result<String, ChatError> + Send,
) -> Result<String, ChatError> {
    let mut outcome = None;
    limits::on_render_thread(|| {
        outcome = Some(work());
        Ok(())
    })
    .map_err(|detail| ChatError::TemplateRender { detail })?;
    outcome.expect("the render thread ran")
}

/// Whether `prompt` begins with the BOS text; `false` when the model has no BOS.
pub fn starts_with_bos(prompt: &str, bos: Option<&str>) -> bool {
    bos.is_some_and(|bos| !bos.is_empty() && prompt.starts_with(bos))
}

/// Capabilities from the source text, as Ollama detects them for GGUF templates.
fn detect_capabilities(source: &str) -> TemplateCapabilities {
    let tools = source.match_indices("tools").any(|(at, _)| {
        let before = source[..at].chars().next_back();
        let after = source[at + "tools".len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !word(before) && !word(after)
    });
    TemplateCapabilities {
        tools,
        thinking: source.contains("<think>") && source.contains("</think>"),
        insert: false,
    }
}

/// Sets the environment up the way `transformers` does for chat templates.
fn configure(env: &mut Environment<'static>) {
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .expect("default delimiters are valid");
    env.set_syntax(syntax);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_unknown_method_callback(python_method);
    minijinja_contrib::add_to_environment(env);
    limits::apply(env);
    // `pprint` indents a nested value to its depth on every line: quadratic in the depth, and
    // computed before minijinja can charge for it. No chat template uses it.
    env.remove_filter("pprint");
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", to_json);
    env.add_filter("from_json", from_json);
}

/// Python's string, list and dict methods (minijinja-contrib's `pycompat`), with `str.format`'s
/// widths and precisions held to [`limits::MAX_WIDTH`] and [`limits::MAX_PRECISION`]: pycompat
/// pads before minijinja can charge fuel for the result.
fn python_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, JinjaError> {
    if method == "format"
        && let Some(format) = value.as_str()
    {
        check_format_fields(format)?;
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Refuses a `str.format` string whose replacement fields (`{:>20}`, `{0:.3f}`) ask for a
/// width or precision above the limit. Every number in a field's spec counts, so that a digit
/// used as the fill character (`{:0>20}`) cannot hide the width after it.
fn check_format_fields(format: &str) -> Result<(), JinjaError> {
    let limit = limits::MAX_WIDTH.min(limits::MAX_PRECISION);
    let mut rest = format;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        if let Some(escaped) = rest.strip_prefix('{') {
            rest = escaped;
            continue;
        }
        let field = &rest[..rest.find('}').unwrap_or(rest.len())];
        let Some((_, spec)) = field.split_once(':') else {
            continue;
        };
        let largest = spec
            .split(|c: char| !c.is_ascii_digit())
            .filter(|digits| !digits.is_empty())
            .map(|digits| digits.parse::<usize>().unwrap_or(usize::MAX))
            .max();
        if let Some(number) = largest.filter(|number| *number > limit) {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!(
                    "str.format: the field {{{field}}} asks for a width or precision of \
                     {number}; the limit is {limit}"
                ),
            ));
        }
    }
    Ok(())
}

/// `raise_exception(message)`: templates call it to reject conversations they cannot show.
fn raise_exception(message: String) -> Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the current local time, formatted like Python's `strftime`.
fn strftime_now(state: &State, format: String) -> Result<String, JinjaError> {
    let kwargs = Kwargs::from_iter([("format", Value::from(format))]);
    minijinja_contrib::filters::datetimeformat(state, minijinja_contrib::globals::now(), kwargs)
}

/// `tojson` as `transformers` defines it: Python's `json.dumps` with `ensure_ascii=False`, so
/// `", "` and `": "` separators and no HTML escaping (minijinja's own `tojson` is compact and
/// HTML-safe, which would change the prompt the model was trained on).
#[allow(clippy::needless_pass_by_value)] // minijinja hands filters their kwargs by value
fn to_json(value: &Value, kwargs: Kwargs) -> Result<Value, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let _ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    if let Some(indent) = indent.filter(|indent| *indent > limits::MAX_WIDTH) {
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            format!(
                "tojson: indent {indent} is over the limit of {}",
                limits::MAX_WIDTH
            ),
        ));
    }
    let (item, key) = match &separators {
        Some(pair) if pair.len() == 2 => (pair[0].clone(), pair[1].clone()),
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    let style = PythonJson {
        indent,
        sort_keys: sort_keys.unwrap_or(false),
        item,
        key,
    };
    let mut out = String::new();
    style.write(value, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

/// `from_json`: parses JSON text into a value, as llama.cpp's template engine does (its V3.2
/// and V4 templates read a call's arguments with it when a client sent them as a string).
/// `serde_json` keeps the keys in their order and stops at 128 levels of nesting.
fn from_json(text: &str) -> Result<Value, JinjaError> {
    let parsed: Json = serde_json::from_str(text).map_err(|error| {
        JinjaError::new(
            ErrorKind::InvalidOperation,
            "from_json: the text is not JSON",
        )
        .with_source(error)
    })?;
    Ok(Value::from(Serde(parsed)))
}

/// Python `json.dumps` formatting choices.
struct PythonJson {
    indent: Option<usize>,
    sort_keys: bool,
    item: String,
    key: String,
}

impl PythonJson {
    /// Walks the minijinja value itself (not a `serde_json::Value`) so maps keep the order the
    /// template built them in, as Python dicts do.
    /// Stops at [`limits::MAX_JSON_DEPTH`] levels and [`limits::MAX_PROMPT_BYTES`] of output,
    /// checked before each value is written.
    fn write(&self, value: &Value, depth: usize, out: &mut String) -> Result<(), JinjaError> {
        if depth > limits::MAX_JSON_DEPTH {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!(
                    "tojson: the value is nested deeper than {} levels, the limit",
                    limits::MAX_JSON_DEPTH
                ),
            ));
        }
        if out.len() > limits::MAX_PROMPT_BYTES {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!(
                    "tojson: the JSON is larger than {}, the limit",
                    limits::bytes(limits::MAX_PROMPT_BYTES)
                ),
            ));
        }
        match value.kind() {
            ValueKind::Seq | ValueKind::Iterable => {
                out.push('[');
                let mut count = 0;
                for item in value.try_iter()? {
                    self.separate(count, depth + 1, out);
                    self.write(&item, depth + 1, out)?;
                    count += 1;
                }
                if count > 0 {
                    self.close(depth, out);
                }
                out.push(']');
            }
            ValueKind::Map => {
                let mut keys: Vec<Value> = value.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort();
                }
                out.push('{');
                for (index, key) in keys.iter().enumerate() {
                    self.separate(index, depth + 1, out);
                    let name = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
                    out.push_str(&Json::String(name).to_string());
                    out.push_str(&self.key);
                    self.write(&value.get_item(key)?, depth + 1, out)?;
                }
                if !keys.is_empty() {
                    self.close(depth, out);
                }
                out.push('}');
            }
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::String => {
                out.push_str(&Json::String(value.as_str().unwrap_or("").to_owned()).to_string());
            }
            _ => {
                let scalar = serde_json::to_value(value).map_err(|error| {
                    JinjaError::new(ErrorKind::BadSerialization, "tojson: value is not JSON")
                        .with_source(error)
                })?;
                out.push_str(&scalar.to_string());
            }
        }
        Ok(())
    }

    fn separate(&self, index: usize, depth: usize, out: &mut String) {
        if index > 0 {
            out.push_str(&self.item);
        }
        if let Some(indent) = self.indent {
            out.push('\n');
            out.push_str(&" ".repeat(indent * depth));
        }
    }

    fn close(&self, depth: usize, out: &mut String) {
        if let Some(indent) = self.indent {
            out.push('\n');
            out.push_str(&" ".repeat(indent * depth));
        }
    }
}

/// A one-line description of a minijinja error with its line number.
pub(super) fn describe(error: &JinjaError) -> String {
    let detail = error
        .detail()
        .map_or_else(|| error.kind().to_string(), str::to_owned);
    match error.line() {
        Some(line) => format!("{detail} (line {line})"),
        None => detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(source: &str) -> ChatTemplate {
        ChatTemplate::new(source, SpecialTokens::default())
            .unwrap_or_else(|error| panic!("{source:.80}: {error}"))
    }

    fn render(template: &ChatTemplate, content: &str) -> Result<String, ChatError> {
        template.render(&RenderInput {
            messages: &[ChatMessage::new("user", content)],
            tools: None,
            add_generation_prompt: true,
            think: None,
            think_level: None,
        })
    }

    #[test]
    fn hostile_jinja_renders_are_errors_that_name_the_limit() {
        let kilobyte = "k".repeat(1024);
        for (source, message) in [
            (
                "{{ '{:>99999999999}'.format(1) }}",
                "str.format: the field {:>99999999999} asks for a width or precision of \
                 99999999999; the limit is 4096",
            ),
            ("{{ '{:0>99999}'.format(1) }}", "the limit is 4096"),
            ("{{ '{:.99999f}'.format(1.5) }}", "the limit is 4096"),
            (
                "{{ messages|tojson(indent=99999999) }}",
                "tojson: indent 99999999 is over the limit of 4096",
            ),
            ("{{ messages|pprint }}", "filter pprint is unknown"),
            (
                "{% for i in range(100000) %}{% set x = 'y' * 10000 %}{% endfor %}",
                "the template does more work than the limit of 4000000 fuel",
            ),
            (
                "{% for i in range(70000) %}{{ messages[0].content }}{% endfor %}",
                "the rendered prompt is larger than 64 MiB, the limit",
            ),
            (
                "{% set ns = namespace(x=[]) %}{% for i in range(600) %}{% set ns.x = [ns.x] %}\
                 {% endfor %}{{ ns.x|tojson }}",
                "tojson: the value is nested deeper than 512 levels, the limit",
            ),
        ] {
            let error = render(&compile(source), &kilobyte).unwrap_err();
            assert!(
                matches!(error, ChatError::TemplateRender { .. })
                    && error.to_string().contains(message),
                "{source}: {error}"
            );
        }
        let template = compile("{{ '{:>8}|{:08.3f}'.format('a', 1.5) }}");
        assert_eq!(render(&template, "").unwrap(), "       a|0001.500");
    }

    #[test]
    fn from_json_reads_arguments_sent_as_text_in_their_order() {
        let template = compile(
            "{% set args = messages[0].content | from_json %}\
             {% for key, value in args.items() %}{{ key }}={{ value | tojson }};{% endfor %}",
        );
        assert_eq!(
            render(&template, r#"{"city": "Zoë", "days": [1, 2], "a": null}"#).unwrap(),
            r#"city="Zoë";days=[1, 2];a=null;"#
        );
        match render(&template, "{not json") {
            Err(ChatError::TemplateRender { detail }) => {
                assert!(
                    detail.contains("from_json: the text is not JSON"),
                    "{detail}"
                );
            }
            other => panic!("expected a render error, got {other:?}"),
        }
    }

    #[test]
    fn deeply_nested_values_render_without_exhausting_the_stack() {
        // minijinja prints and drops nested values recursively; the render thread has room.
        let source = "{% set ns = namespace(x=[]) %}{% for i in range(100) %}\
                      {% for j in range(500) %}{% set ns.x = [ns.x] %}{% endfor %}{% endfor %}\
                      {{ ns.x|length }}{{ ns.x }}";
        let rendered = render(&compile(source), "").unwrap();
        assert!(rendered.starts_with("1[[[[") && rendered.ends_with("]]]]"));
        assert_eq!(rendered.len(), 1 + 2 * 50_000 + 2);
    }

    #[test]
    fn hostile_jinja_sources_are_syntax_errors() {
        let chain = format!("{{{{ 1{} }}}}", " ~ 1".repeat(10_000));
        let filters = format!("{{{{ messages{} }}}}", "|list".repeat(10_000));
        let attributes = format!("{{{{ messages{} }}}}", ".x".repeat(10_000));
        for source in [&chain, &filters, &attributes] {
            match ChatTemplate::new(source, SpecialTokens::default()) {
                Err(ChatError::TemplateSyntax { detail }) => {
                    assert!(detail.contains("the limit is 4 KiB"), "{detail}");
                }
                other => panic!("{source:.40}: expected a syntax error, got {other:?}"),
            }
        }
        let nested = format!("{}{}", "{% if 1 %}".repeat(200), "{% endif %}".repeat(200));
        assert!(matches!(
            ChatTemplate::new(&nested, SpecialTokens::default()),
            Err(ChatError::TemplateSyntax { .. })
        ));
        // Go-looking detection stays linear on many unclosed actions.
        let unclosed = "{{ x ".repeat(200_000);
        assert_eq!(TemplateSyntax::detect(&unclosed), TemplateSyntax::Jinja);
    }
}
