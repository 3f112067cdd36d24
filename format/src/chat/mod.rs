//! Chat: from a conversation to a prompt, and from generated text back to reasoning, answer and
//! tool calls. Pure Rust; the engine and the HTTP layer call it, it calls neither.
//!
//! Public API:
//! - [`template`]: [`ChatTemplate::new`]`(source, SpecialTokens) -> Result<ChatTemplate>`,
//!   [`ChatTemplate::render`]`(&RenderInput) -> Result<String>`,
//!   [`ChatTemplate::capabilities`] (`tools`, `thinking`), [`ChatTemplate::starts_with_bos`] /
//!   [`starts_with_bos`] (tokenise with `add_special = false` when true),
//!   [`ChatTemplate::select`]`(TemplateSources, SpecialTokens)` (a model's `TEMPLATE`, its GGUF
//!   template or its catalogue entry's),
//!   [`ChatTemplate::fallback`] for models without a template. Jinja (GGUF) and Go (Ollama
//!   `TEMPLATE`) sources both render; Go ones are translated into minijinja (`go_template`).
//!   Templates are untrusted: compiling and rendering stay within [`limits`], and a breach is a
//!   [`ChatError`] that names the limit.
//! - [`reasoning`]: [`ReasoningSplitter::new`]`(starts_inside, ThinkingMode)`, `push(&str) ->
//!   ReasoningDelta { thinking, content }`, `finish()`; [`split_complete`], [`strip_reasoning`].
//! - [`think`]: [`think::template_switch`] (before rendering: the `thinking` variable, or the
//!   "does not support thinking" error) and [`think::plan`] (after rendering: prompt suffix,
//!   `starts_inside`, [`ThinkingMode`]).
//! - [`tools`]: [`ToolCallParser::new`]`(json_fallback)`, `push(&str) -> ToolOutput { content,
//!   calls }`, `finish()`; [`tools::parse_complete`].
//!
//! A generation runs text through the reasoning splitter first and the tool-call parser second
//! (on the content part), so tool calls inside reasoning are not executed.

mod go_template;
pub mod limits;
pub mod reasoning;
pub mod template;
pub mod think;
pub mod tools;

pub use reasoning::{
    ReasoningDelta, ReasoningSplitter, ThinkingMode, split_complete, strip_reasoning,
};
pub use template::{
    ChatTemplate, RenderInput, SpecialTokens, TemplateCapabilities, TemplateSources,
    TemplateSyntax, ToolCall, starts_with_bos,
};
pub use think::{Think, ThinkLevel, ThinkPlan};
pub use tools::{ToolCallParser, ToolOutput};

/// One message of a conversation, already validated by the HTTP layer (which converts the
/// Ollama and OpenAI wire types into this).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`, lower-case.
    pub role: String,
    pub content: String,
    /// Reasoning sent back with an assistant turn (`thinking` / `reasoning_content`), shown to
    /// a Jinja template as `reasoning_content` and `thinking`; the template decides which turns
    /// keep it.
    pub thinking: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    /// On `tool` results: the function that produced it (template variables `name`, `tool_name`).
    pub tool_name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
}

/// What can go wrong in `chat`; every variant says what a person needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The template source does not compile.
    #[error("chat template does not compile: {detail}")]
    TemplateSyntax { detail: String },
    /// Rendering failed, including the template's own `raise_exception(...)` and a breach of
    /// one of the [`limits`].
    #[error("chat template failed to render: {detail}")]
    TemplateRender { detail: String },
    /// `think` was requested from a model whose template cannot show reasoning (HTTP 400).
    #[error("\"{model}\" does not support thinking")]
    ThinkingUnsupported { model: String },
}
