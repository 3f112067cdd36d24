//! The one path every generation and embedding takes, whichever API it came by.
//!
//! `/api/*` and `/v1/*` handlers translate their wire types into a [`GenerateRequest`] or an
//! [`EmbedRequest`] and map what comes back to their own wire shapes; everything in between
//! happens here: finding the model, resolving its options, preparing the conversation (the
//! model's `SYSTEM` and `MESSAGE` history, earlier turns' separate reasoning dropped), leasing it
//! from the scheduler, and [`completion`]'s template → engine → reasoning/tool-call split.

pub mod completion;

pub use completion::Input;

use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use whale_api as api;

use crate::chat::{ChatMessage, Think, ToolCall};
use crate::config::KeepAlive;
use crate::engine::{
    DoneReason, Embeddings, GenerateJob, GrammarSource, Logprobs, Prompt, SpeculationMode,
};
use crate::error::Error;
use crate::metrics::Endpoint;
use crate::model::LocalModel;
use crate::options::{self, RunOptions};
use crate::remote::{self, RemoteModel};
use crate::scheduler::{DraftModel, Lease, LoadRequest, RunnerOptions};
use crate::state::AppState;

pub use completion::{Chunk, Finished};

/// A generation, in the daemon's terms.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The model's name as the request spelled it.
    pub model: String,
    pub input: Input,
    /// Overrides of the model's parameters (`options`; the OpenAI sampling fields map here).
    pub options: Option<api::Options>,
    pub keep_alive: Option<KeepAlive>,
    pub think: Think,
    pub format: Option<api::Format>,
    /// Alternatives reported with each token's log probability; `None`: no log probabilities.
    pub logprobs: Option<usize>,
    /// Cut a prompt or chat that is too long for the context (default: yes).
    pub truncate: Option<bool>,
    /// Shift the context when it fills during generation (default: yes).
    pub shift: Option<bool>,
    /// The answer must call one of the chat's tools (OpenAI's `tool_choice` `required` or a
    /// named function, the tools narrowed to it): a grammar makes the answer, after any
    /// reasoning, a tool-call block in DeepSeek's format.
    pub require_tool_call: bool,
}

/// Starts a generation: the returned stream yields its chunks, the last being
/// [`Chunk::Done`] or an error. Dropping the stream cancels the generation. Once the model is
/// found, the request is counted in its metrics, whatever happens next.
pub async fn generate(
    state: &AppState,
    request: GenerateRequest,
    started: Instant,
) -> Result<impl Stream<Item = Result<Chunk, Error>> + Send + 'static, Error> {
    refuse_raw_extras(&request)?;
    let endpoint = match &request.input {
        Input::Prompt { .. } => Endpoint::Generate,
        Input::Chat { .. } => Endpoint::Chat,
    };
    if let Some(remote) = RemoteModel::find(&state.store, &state.config, &request.model).await {
        let recorder = state.metrics.request(remote.name(), endpoint, started);
        return match remote::generate(&remote, request, started).await {
            Ok(chunks) => Ok(recorder.follow(chunks).left_stream()),
            Err(error) => {
                recorder.failed();
                Err(error)
            }
        };
    }
    let model = LocalModel::find_or_alias(&state.store, &state.config, &request.model).await?;
    let recorder = state
        .metrics
        .request(model.reference.short(), endpoint, started);
    let running = async {
        let (lease, plan, load_duration) = prepare(state, model, request, started).await?;
        completion::start(lease, plan, started, load_duration).await
    };
    match running.await {
        Ok(chunks) => Ok(recorder.follow(chunks).right_stream()),
        Err(error) => {
            recorder.failed();
            Err(error)
        }
    }
}

/// The prompt a generation would evaluate, as text (Ollama's `_debug_render_only`). The model
/// is loaded as for a generation: the template needs its special tokens.
pub async fn render(
    state: &AppState,
    request: GenerateRequest,
    started: Instant,
) -> Result<String, Error> {
    refuse_raw_extras(&request)?;
    let model = LocalModel::find_or_alias(&state.store, &state.config, &request.model).await?;
    let (lease, plan, _) = prepare(state, model, request, started).await?;
    completion::render(&lease, &plan).await
}

/// Raw mode takes the prompt as it is: a template, system prompt or context cannot apply.
fn refuse_raw_extras(request: &GenerateRequest) -> Result<(), Error> {
    if let Input::Prompt {
        raw: true,
        system,
        template,
        context,
        ..
    } = &request.input
        && (system.is_some() || template.is_some() || !context.is_empty())
    {
        return Err(Error::BadRequest(
            "raw mode does not support template, system, or context".to_owned(),
        ));
    }
    Ok(())
}

/// Everything after finding the model and before the engine: options, the conversation, the
/// lease.
async fn prepare(
    state: &AppState,
    model: LocalModel,
    request: GenerateRequest,
    started: Instant,
) -> Result<(Lease, completion::Plan, Duration), Error> {
    let GenerateRequest {
        model: name,
        input,
        options: request_options,
        keep_alive,
        think,
        format,
        logprobs,
        truncate,
        shift,
        require_tool_call,
    } = request;
    let options = run_options(state, &model, request_options.as_ref())?;
    let input = match input {
        Input::Chat { messages, tools } => completion::Input::Chat {
            messages: conversation(&model, messages)?,
            tools,
        },
        prompt @ Input::Prompt { .. } => {
            // Rendered below, once the model is leased (the context needs its tokenizer).
            prompt_input(prompt, &model)
        }
    };
    let request_template = match &input {
        completion::Input::Prompt { template, .. } => template.clone(),
        completion::Input::Chat { .. } => None,
    };
    let grammar = if require_tool_call {
        if format.is_some() {
            return Err(Error::BadRequest(
                "a required tool call and response_format cannot both shape the answer".to_owned(),
            ));
        }
        let tools = match &input {
            completion::Input::Chat { tools, .. } => tool_schemas(tools),
            completion::Input::Prompt { .. } => Vec::new(),
        };
        if tools.is_empty() {
            return Err(Error::BadRequest(
                "tool_choice requires a call, but no tools were given".to_owned(),
            ));
        }
        // One named function is called once; `required` may call several.
        let most = if tools.len() == 1 { 1 } else { 4 };
        Some(GrammarSource::ToolCalls { tools, most })
    } else {
        format.as_ref().map(|format| match format {
            api::Format::Json => GrammarSource::Gbnf(crate::engine::JSON_GBNF.to_owned()),
            // Turned into a grammar by the runner: llama.cpp's converter must not run in whaled.
            api::Format::Schema(schema) => GrammarSource::JsonSchema(schema.clone()),
        })
    };
    let lease = lease(state, &model, &name, &options, keep_alive).await?;
    let load_duration = started.elapsed();
    let input = with_context(input, &lease).await?;
    let plan = completion::Plan {
        input,
        model_name: name,
        template: model.template.clone(),
        catalogue_template: model.catalogue_template(),
        request_template,
        think,
        job: GenerateJob {
            prompt: Prompt::Tokens(Vec::new()),
            sampling: options.sampling.clone(),
            num_predict: options.num_predict,
            stop: options.stop.clone(),
            grammar: None,
            shift: shift.unwrap_or(true),
            truncate: truncate.unwrap_or(true),
            logprobs,
            speculation: options.speculation,
        },
        grammar,
    };
    Ok((lease, plan, load_duration))
}

/// The tools of definitions in OpenAI's shape: names and argument schemas.
fn tool_schemas(tools: &[serde_json::Value]) -> Vec<crate::engine::ToolSchema> {
    tools
        .iter()
        .filter_map(|tool| {
            let function = &tool["function"];
            Some(crate::engine::ToolSchema {
                name: function["name"].as_str()?.to_owned(),
                parameters: function
                    .get("parameters")
                    .filter(|schema| schema.is_object())
                    .cloned(),
            })
        })
        .collect()
}

/// A prompt request as the completion module takes it, with the model's `SYSTEM` unless the
/// request has its own.
fn prompt_input(input: Input, model: &LocalModel) -> completion::Input {
    let Input::Prompt {
        prompt,
        system,
        suffix,
        raw,
        template,
        context,
    } = input
    else {
        unreachable!("called with a prompt");
    };
    completion::Input::Prompt {
        prompt,
        system: if raw {
            None
        } else {
            system.or_else(|| model.system.clone())
        },
        suffix,
        raw,
        template,
        context,
    }
}

/// Puts an earlier exchange's tokens back in front of the prompt, as text.
async fn with_context(input: completion::Input, lease: &Lease) -> Result<completion::Input, Error> {
    match input {
        completion::Input::Prompt {
            prompt,
            system,
            suffix,
            raw,
            template,
            context,
        } if !context.is_empty() => {
            let earlier = lease.runner().detokenize(&context).await?;
            Ok(completion::Input::Prompt {
                prompt: earlier + &prompt,
                system,
                suffix,
                raw,
                template,
                context: Vec::new(),
            })
        }
        other => Ok(other),
    }
}

/// The empty request forms of `/api/generate` and `/api/chat`: load the model (`"load"`), or
/// unload it with `keep_alive: 0` (`"unload"`).
pub async fn load_or_unload(
    state: &AppState,
    name: &str,
    request_options: Option<&api::Options>,
    keep_alive: Option<KeepAlive>,
) -> Result<&'static str, Error> {
    // Another server keeps a remote model loaded: there is nothing to do here.
    if RemoteModel::find(&state.store, &state.config, name)
        .await
        .is_some()
    {
        return Ok(if keep_alive == Some(KeepAlive::For(Duration::ZERO)) {
            "unload"
        } else {
            "load"
        });
    }
    let (model, options) = model_and_options(state, name, request_options).await?;
    if keep_alive == Some(KeepAlive::For(Duration::ZERO)) {
        state.scheduler.unload(&model.weights.to_string()).await;
        return Ok("unload");
    }
    drop(lease(state, &model, name, &options, keep_alive).await?);
    Ok("load")
}

/// An embedding request, in the daemon's terms.
#[derive(Debug, Clone)]
pub struct EmbedRequest {
    pub model: String,
    pub inputs: Vec<String>,
    pub options: Option<api::Options>,
    pub keep_alive: Option<KeepAlive>,
    /// Cut inputs longer than the context (else refuse them).
    pub truncate: bool,
}

/// The vectors of an [`EmbedRequest`] as the model computes them (not normalised), and how
/// long loading the model took.
pub async fn embed(
    state: &AppState,
    request: EmbedRequest,
) -> Result<(Embeddings, Duration), Error> {
    let started = Instant::now();
    let model = LocalModel::find_or_alias(&state.store, &state.config, &request.model).await?;
    let recorder = state
        .metrics
        .request(model.reference.short(), Endpoint::Embed, started);
    let embedded = embed_with(state, &model, request, started).await;
    match &embedded {
        Ok((embeddings, _)) => recorder.embedded(embeddings.prompt_tokens),
        Err(_) => recorder.failed(),
    }
    embedded
}

/// Everything of [`embed`] after finding the model.
async fn embed_with(
    state: &AppState,
    model: &LocalModel,
    request: EmbedRequest,
    started: Instant,
) -> Result<(Embeddings, Duration), Error> {
    let options = run_options(state, model, request.options.as_ref())?;
    let lease = lease(state, model, &request.model, &options, request.keep_alive).await?;
    let load_duration = started.elapsed();
    let embeddings = lease
        .runner()
        .embed(request.inputs, request.truncate)
        .await?;
    Ok((embeddings, load_duration))
}

/// A whole answer: a stream of chunks joined.
#[derive(Debug, Clone)]
pub struct Whole {
    pub content: String,
    pub thinking: String,
    pub tool_calls: Vec<ToolCall>,
    pub logprobs: Vec<Logprobs>,
    pub finished: Finished,
}

/// Joins a generation's chunks into one answer.
pub async fn collect(chunks: impl Stream<Item = Result<Chunk, Error>>) -> Result<Whole, Error> {
    let mut content = String::new();
    let mut thinking = String::new();
    let mut tool_calls = Vec::new();
    let mut logprobs = Vec::new();
    let mut chunks = std::pin::pin!(chunks);
    while let Some(chunk) = chunks.next().await {
        match chunk? {
            Chunk::Text {
                content: text,
                thinking: reasoning,
                logprobs: probabilities,
            } => {
                content.push_str(&text);
                thinking.push_str(&reasoning);
                logprobs.extend(probabilities);
            }
            Chunk::ToolCalls(calls) => tool_calls.extend(calls),
            Chunk::Done(finished) => {
                return Ok(Whole {
                    content,
                    thinking,
                    tool_calls,
                    logprobs,
                    finished: *finished,
                });
            }
        }
    }
    Err(Error::Internal(
        "the generation ended without a final chunk".to_owned(),
    ))
}

/// What `logprobs` and `top_logprobs` ask: the number of alternatives per token, or `None`
/// for no log probabilities.
pub fn logprobs_wanted(
    logprobs: Option<bool>,
    top_logprobs: Option<u32>,
) -> Result<Option<usize>, Error> {
    let top = top_logprobs.unwrap_or(0) as usize;
    if top > crate::engine::MAX_TOP_LOGPROBS {
        return Err(Error::BadRequest(format!(
            "top_logprobs must be between 0 and {}",
            crate::engine::MAX_TOP_LOGPROBS
        )));
    }
    Ok((logprobs == Some(true)).then_some(top))
}

/// Ollama's `done_reason` words, which OpenAI's `finish_reason` shares.
pub fn done_reason(reason: DoneReason) -> &'static str {
    match reason {
        DoneReason::Stop | DoneReason::Cancelled => "stop",
        DoneReason::Length => "length",
    }
}

/// `length` random lowercase letters and digits, for ids that only need to differ (tool
/// calls, completions).
pub fn random_id(length: usize) -> String {
    rand::random_iter::<u8>()
        .map(|b| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[usize::from(b) % 36]))
        .take(length)
        .collect()
}

/// Finds the model `name` and resolves its options under the request's `options`.
async fn model_and_options(
    state: &AppState,
    name: &str,
    request: Option<&api::Options>,
) -> Result<(LocalModel, RunOptions), Error> {
    let model = LocalModel::find_or_alias(&state.store, &state.config, name).await?;
    let options = run_options(state, &model, request)?;
    Ok((model, options))
}

/// `model`'s parameters overlaid by the request's `options`.
fn run_options(
    state: &AppState,
    model: &LocalModel,
    request: Option<&api::Options>,
) -> Result<RunOptions, Error> {
    options::resolve(&model.run_params(), request, state.config.context_length)
}

/// Loads (or finds loaded) the model for a request.
async fn lease(
    state: &AppState,
    model: &LocalModel,
    name: &str,
    options: &RunOptions,
    keep_alive: Option<KeepAlive>,
) -> Result<Lease, Error> {
    let draft = draft_model(state, options).await?;
    state
        .scheduler
        .acquire(&LoadRequest {
            key: model.weights.to_string(),
            name: name.to_owned(),
            manifest_digest: model.manifest_digest.to_string(),
            path: model.weights_path.clone(),
            options: RunnerOptions {
                num_ctx: options.num_ctx,
                num_batch: options.num_batch,
                num_gpu: options.num_gpu,
                num_thread: options.num_thread,
                use_mmap: options.use_mmap,
                draft,
            },
            keep_alive,
        })
        .await
}

/// The draft model the options name, found in the store. One that is missing fails the
/// request when it asked for `speculative` `draft`; under `auto` (e.g. a Modelfile naming a
/// draft model not pulled here) the model loads without it.
async fn draft_model(state: &AppState, options: &RunOptions) -> Result<Option<DraftModel>, Error> {
    let Some(name) = &options.draft_model else {
        return Ok(None);
    };
    match LocalModel::find(&state.store, name).await {
        Ok(found) => Ok(Some(DraftModel {
            name: found.name(),
            key: found.weights.to_string(),
            path: found.weights_path,
        })),
        Err(Error::ModelNotFound(_)) if options.speculation.mode != SpeculationMode::Draft => {
            tracing::warn!(draft_model = %name, "the draft model is not here; loading without it");
            Ok(None)
        }
        Err(Error::ModelNotFound(_)) => Err(Error::NotFound(format!(
            "draft model '{name}' not found; pull it first (whale pull {name})"
        ))),
        Err(error) => Err(error),
    }
}

/// The conversation the template renders: the model's `SYSTEM` first (unless the request
/// opens with its own) and its `MESSAGE` history, then the request's messages with the
/// `thinking` of turns before the last user message dropped, as Ollama and DeepSeek do.
fn conversation(model: &LocalModel, messages: Vec<ChatMessage>) -> Result<Vec<ChatMessage>, Error> {
    with_history(model.system.as_deref(), &model.messages, messages)
}

/// [`conversation`] for a model's `system` prompt and `history`, wherever the model runs.
pub(crate) fn with_history(
    system: Option<&str>,
    history: &[crate::model::HistoryMessage],
    messages: Vec<ChatMessage>,
) -> Result<Vec<ChatMessage>, Error> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 2);
    if let Some(system) = system
        && messages
            .first()
            .is_none_or(|first| !first.role.eq_ignore_ascii_case("system"))
    {
        out.push(ChatMessage::new("system", system.to_owned()));
    }
    for message in history {
        out.push(ChatMessage::new(
            message.role.to_ascii_lowercase(),
            message.content.clone(),
        ));
    }
    for (index, mut message) in messages.into_iter().enumerate() {
        let role = message.role.to_ascii_lowercase();
        if !matches!(role.as_str(), "system" | "user" | "assistant" | "tool") {
            return Err(Error::BadRequest(format!(
                "messages[{index}].role: unknown role {:?} (use system, user, assistant or tool)",
                message.role
            )));
        }
        message.role = role;
        // Earlier turns keep their reasoning: a Jinja template is the model's own and decides
        // what it shows (R1's splits inline reasoning off, V3.2's shows the field only after
        // the last user turn, V4's on every turn once tools are in play); the Go path drops it
        // from earlier turns, as Ollama does.
        out.push(message);
    }
    Ok(out)
}
