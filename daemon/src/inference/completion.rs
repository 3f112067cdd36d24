//! One generation, from a leased model and a plan to a stream of chunks: render the
//! conversation with the model's chat template, apply the `think` policy, run it in the
//! model's runner, split reasoning from the answer, and pick out tool calls.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures::Stream;

use crate::chat::{
    self, ChatMessage, ChatTemplate, ReasoningSplitter, RenderInput, SpecialTokens,
    TemplateSources, Think, ThinkingMode, ToolCall, ToolCallParser,
};
use crate::engine::{Event, GenerateJob, Grammar, GrammarSource, Logprobs, Prompt, Summary};
use crate::error::Error;
use crate::runner::Events;
use crate::scheduler::Lease;

/// What the model is asked: a conversation, or a prompt (templated or raw).
#[derive(Debug, Clone)]
pub enum Input {
    /// A conversation, rendered with the chat template. Roles are checked here.
    Chat {
        messages: Vec<ChatMessage>,
        tools: Vec<serde_json::Value>,
    },
    /// A prompt: templated as one user turn, or `raw`.
    Prompt {
        prompt: String,
        system: Option<String>,
        /// Text after the cursor, for fill-in-the-middle (templates with `.Suffix`).
        suffix: Option<String>,
        raw: bool,
        /// A template used instead of the model's (`/api/generate`'s `template`; see
        /// [`Plan::request_template`]).
        template: Option<String>,
        /// Tokens of an earlier exchange (`/api/generate`'s deprecated `context`), turned
        /// back into text before the prompt by the caller.
        context: Vec<i32>,
    },
}

/// Everything about a generation that is not the engine's sampling parameters.
pub struct Plan {
    pub input: Input,
    /// Name shown in errors (`"deepseek-r1:14b" does not support thinking`).
    pub model_name: String,
    /// The model's `TEMPLATE` (Modelfile or registry layer), weighed against the GGUF's own.
    pub template: Option<String>,
    /// whale's template for the model's catalogue entry, for a model whose own is missing or
    /// can do less.
    pub catalogue_template: Option<&'static str>,
    /// The request's `template` (`/api/generate`): used as given, as Ollama does.
    pub request_template: Option<String>,
    pub think: Think,
    /// The job for the engine, its prompt filled in by [`start`].
    pub job: GenerateJob,
    /// Grammar source, applied after reasoning when the model reasons.
    pub grammar: Option<GrammarSource>,
}

/// A piece of the answer as it is produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// Text of the answer and of the reasoning, and the log probabilities of the tokens
    /// generated since the last chunk (when asked for).
    Text {
        content: String,
        thinking: String,
        logprobs: Vec<Logprobs>,
    },
    ToolCalls(Vec<ToolCall>),
    Done(Box<Finished>),
}

/// The last chunk: why generation stopped and how long each part took.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub summary: Summary,
    pub total_duration: Duration,
    pub load_duration: Duration,
}

/// Renders the prompt, starts the engine and returns the stream of chunks. The lease travels
/// with the stream: dropping the stream (a client that went away) cancels the generation.
pub async fn start(
    lease: Lease,
    mut plan: Plan,
    started: Instant,
    load_duration: Duration,
) -> Result<impl Stream<Item = Result<Chunk, Error>> + Send + 'static, Error> {
    // `reasons`: the output opens with reasoning, so a grammar waits for `</think>`.
    let (prompt, splitter, tools, reasons) = if let Input::Prompt {
        prompt,
        raw: true,
        suffix,
        ..
    } = &plan.input
    {
        if suffix.as_ref().is_some_and(|suffix| !suffix.is_empty()) {
            return Err(Error::BadRequest(
                "raw mode does not support suffix".to_owned(),
            ));
        }
        let text = prompt.clone();
        (
            Prompt::Text {
                text,
                add_special: true,
            },
            None,
            None,
            false,
        )
    } else {
        let templated = templated(&lease, &plan).await?;
        let think = &templated.think;
        let splitter = (think.mode != ThinkingMode::Inline || think.starts_inside)
            .then(|| ReasoningSplitter::new(think.starts_inside, think.mode));
        let parser = templated.tools.then(|| ToolCallParser::new(true));
        let reasons = think.mode == ThinkingMode::Separate;
        (templated.prompt, splitter, parser, reasons)
    };
    if let Some(grammar) = plan.grammar.take() {
        plan.job.grammar = Some(Grammar {
            source: grammar,
            after_think: reasons,
        });
    }
    plan.job.prompt = prompt;
    let events = lease.runner().generate(plan.job)?;
    Ok(chunks(Running {
        lease,
        events,
        splitter,
        tools,
        pending: VecDeque::new(),
        started,
        load_duration,
        finished: false,
    }))
}

/// The prompt `plan` would evaluate, as text: what the template rendered (special tokens
/// spelled out), or a raw prompt as given.
pub async fn render(lease: &Lease, plan: &Plan) -> Result<String, Error> {
    if let Input::Prompt {
        prompt, raw: true, ..
    } = &plan.input
    {
        return Ok(prompt.clone());
    }
    match templated(lease, plan).await?.prompt {
        Prompt::Text { text, .. } => Ok(text),
        Prompt::Tokens(tokens) => Ok(lease.runner().detokenize(&tokens).await?),
    }
}

/// A conversation rendered with the chat template, ready for the engine.
struct Templated {
    prompt: Prompt,
    think: chat::think::ThinkPlan,
    /// Tools were offered, so the output is searched for tool calls.
    tools: bool,
}

/// Renders a chat (or a templated `/api/generate` prompt). A chat longer than the context loses
/// its oldest turns, as Ollama's does with `truncate` on: system messages and the last message
/// always stay, and the fewest turns after the system messages are dropped.
async fn templated(lease: &Lease, plan: &Plan) -> Result<Templated, Error> {
    let info = lease.runner().info();
    let special = SpecialTokens {
        bos: info.bos_token.clone(),
        eos: info.eos_token.clone(),
    };
    // A request's template is used as given. The model's `TEMPLATE` (Modelfile or registry
    // layer; Jinja or Go) wins over the GGUF's Jinja template, except that a Go template gives
    // way to a GGUF template with more capabilities (tools, thinking), as in Ollama HEAD:
    // registry Go templates often predate a model's tool or thinking support. The catalogue's
    // template stands in for a missing one, or one that can do less.
    let template = match &plan.request_template {
        Some(source) => ChatTemplate::new(source, special),
        None => ChatTemplate::select(
            TemplateSources {
                template: plan.template.as_deref(),
                gguf: info.chat_template.as_deref(),
                catalogue: plan.catalogue_template,
            },
            special,
        ),
    }
    .map_err(template_error)?;
    let capabilities = template.capabilities();
    let (messages, tools) = match &plan.input {
        Input::Chat { messages, tools } => (messages.clone(), tools.clone()),
        Input::Prompt { prompt, system, .. } => {
            let mut messages = Vec::new();
            if let Some(system) = system {
                messages.push(ChatMessage::new("system", system.clone()));
            }
            messages.push(ChatMessage::new("user", prompt.clone()));
            (messages, Vec::new())
        }
    };
    if !tools.is_empty() && !capabilities.tools {
        return Err(Error::BadRequest(format!(
            "{} does not support tools",
            plan.model_name
        )));
    }
    let insert = match &plan.input {
        Input::Prompt {
            prompt,
            suffix: Some(suffix),
            ..
        } if !suffix.is_empty() => Some((prompt.as_str(), suffix.as_str())),
        _ => None,
    };
    if insert.is_some() && !capabilities.insert {
        return Err(Error::BadRequest(format!(
            "\"{}\" does not support insert",
            plan.model_name
        )));
    }
    let switch = chat::think::template_switch(&plan.model_name, capabilities, plan.think)
        .map_err(template_error)?;
    let render = |messages: &[ChatMessage]| -> Result<Rendered, Error> {
        let input = RenderInput {
            messages,
            tools: (!tools.is_empty()).then_some(tools.as_slice()),
            add_generation_prompt: true,
            think: switch,
            think_level: match plan.think {
                Think::Level(level) => Some(level),
                _ => None,
            },
        };
        let rendered = match insert {
            Some((prompt, suffix)) => template.render_insert(prompt, suffix, &input),
            None => template.render(&input),
        }
        .map_err(template_error)?;
        let think = chat::think::plan(&plan.model_name, capabilities, plan.think, &rendered)
            .map_err(template_error)?;
        let add_special = !template.starts_with_bos(&rendered);
        Ok(Rendered {
            text: rendered + &think.prompt_suffix,
            add_special,
            think,
        })
    };
    let mut rendered = render(&messages)?;
    let chat = matches!(plan.input, Input::Chat { .. });
    let n_ctx = info.n_ctx as usize;
    let mut prompt = None;
    if chat && plan.job.truncate && rendered.may_exceed(n_ctx) {
        let count = |rendered: &Rendered| {
            let engine = lease.runner();
            let (text, add_special) = (rendered.text.clone(), rendered.add_special);
            async move { engine.tokenize(&text, add_special).await }
        };
        let tokens = count(&rendered).await?;
        if tokens.len() > n_ctx && messages.len() > 1 {
            // `kept(i)`: the system messages before `i`, then everything from `i` on. Cuts
            // fall before user messages, so that whole turns go and templates that insist on
            // alternating roles still render; the last message always stays. More dropped
            // turns never make the prompt longer, so the first cut that fits is found by
            // bisection; when none does, only the last message stays.
            let kept = |from: usize| -> Vec<ChatMessage> {
                let system = messages[..from].iter().filter(|m| m.role == "system");
                system.chain(&messages[from..]).cloned().collect()
            };
            let last = messages.len() - 1;
            let cuts: Vec<usize> = (1..last)
                .filter(|&i| messages[i].role == "user")
                .chain([last])
                .collect();
            let (mut low, mut high) = (0, cuts.len() - 1);
            while low < high {
                let mid = low + (high - low) / 2;
                let candidate = render(&kept(cuts[mid]))?;
                if candidate.may_exceed(n_ctx) && count(&candidate).await?.len() > n_ctx {
                    low = mid + 1;
                } else {
                    high = mid;
                }
            }
            let kept = kept(cuts[low]);
            tracing::debug!(
                dropped = messages.len() - kept.len(),
                "chat history truncated to fit the context"
            );
            rendered = render(&kept)?;
        } else {
            prompt = Some(Prompt::Tokens(tokens));
        }
    }
    Ok(Templated {
        prompt: prompt.unwrap_or(Prompt::Text {
            text: rendered.text,
            add_special: rendered.add_special,
        }),
        think: rendered.think,
        tools: !tools.is_empty(),
    })
}

/// One rendering of a conversation.
struct Rendered {
    text: String,
    add_special: bool,
    think: chat::think::ThinkPlan,
}

impl Rendered {
    /// Whether the text could hold more than `n_ctx` tokens. Every token but the few special
    /// ones the tokenizer adds (BOS, EOS, a leading space) stands for at least one byte, so a
    /// text with fewer bytes fits without being tokenized.
    fn may_exceed(&self, n_ctx: usize) -> bool {
        self.text.len() + 4 > n_ctx
    }
}

/// Every chat error is about the template (the request's, the Modelfile's or the GGUF's) or
/// what the request asks of it, never about whaled: a 400 that carries the template's own text.
#[allow(clippy::needless_pass_by_value)] // a `map_err` adapter
fn template_error(error: chat::ChatError) -> Error {
    Error::BadRequest(error.to_string())
}

struct Running {
    /// Held for the life of the stream so the model stays loaded and counted as busy.
    #[allow(dead_code)]
    lease: Lease,
    events: Events,
    splitter: Option<ReasoningSplitter>,
    tools: Option<ToolCallParser>,
    pending: VecDeque<Result<Chunk, Error>>,
    started: Instant,
    load_duration: Duration,
    finished: bool,
}

impl Running {
    /// Routes a piece of generated text through reasoning and tool-call parsing.
    fn text(&mut self, piece: &str, logprobs: Vec<Logprobs>, last: bool) {
        let (mut thinking, content) = match &mut self.splitter {
            Some(splitter) => {
                let mut delta = splitter.push(piece);
                if last {
                    let rest = splitter.finish();
                    delta.thinking.push_str(&rest.thinking);
                    delta.content.push_str(&rest.content);
                }
                (delta.thinking, delta.content)
            }
            None => (String::new(), piece.to_owned()),
        };
        let (content, calls) = match &mut self.tools {
            Some(parser) => {
                let mut output = parser.push(&content);
                if last {
                    let rest = parser.finish();
                    output.content.push_str(&rest.content);
                    output.calls.extend(rest.calls);
                }
                (output.content, output.calls)
            }
            None => (content, Vec::new()),
        };
        if !content.is_empty() || !thinking.is_empty() || !logprobs.is_empty() {
            self.pending.push_back(Ok(Chunk::Text {
                content,
                thinking: std::mem::take(&mut thinking),
                logprobs,
            }));
        }
        if !calls.is_empty() {
            self.pending.push_back(Ok(Chunk::ToolCalls(calls)));
        }
    }
}

fn chunks(running: Running) -> impl Stream<Item = Result<Chunk, Error>> + Send + 'static {
    futures::stream::unfold(running, |mut running| async move {
        loop {
            if let Some(chunk) = running.pending.pop_front() {
                return Some((chunk, running));
            }
            if running.finished {
                return None;
            }
            match running.events.recv().await {
                Some(Event::Text(piece, logprobs)) => running.text(&piece, logprobs, false),
                Some(Event::Done(summary)) => {
                    running.text("", Vec::new(), true);
                    running.finished = true;
                    running.pending.push_back(Ok(Chunk::Done(Box::new(Finished {
                        summary,
                        total_duration: running.started.elapsed(),
                        load_duration: running.load_duration,
                    }))));
                }
                Some(Event::Rejected(message)) => {
                    running.finished = true;
                    running.pending.push_back(Err(Error::BadRequest(message)));
                }
                Some(Event::Error(message)) => {
                    running.finished = true;
                    running.pending.push_back(Err(Error::Internal(message)));
                }
                None => {
                    running.finished = true;
                    running
                        .pending
                        .push_back(Err(Error::Internal("the engine stopped".to_owned())));
                }
            }
        }
    })
}
