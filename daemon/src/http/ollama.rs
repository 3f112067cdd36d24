//! Ollama's native API, field for field (see `shared/reference/ollama.md` §1).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use whale_api as api;
use whale_registry::{Digest, ProgressEvent, PullOptions, Puller, PushOptions, Pusher};

use super::{Json, ndjson};
use crate::chat::{self, ChatMessage, Think, ThinkLevel};
use crate::completion::{self, Chunk, Input, Plan};
use crate::config::KeepAlive;
use crate::engine::GenerateJob;
use crate::error::Error;
use crate::gguf::GgufFile;
use crate::model::{self, LocalModel};
use crate::options::{self, RunOptions};
use crate::scheduler::{LoadRequest, RunnerOptions};
use crate::state::AppState;

type SharedState = State<Arc<AppState>>;

/// The Ollama version whaled's API corresponds to; clients gate features on it.
pub const COMPATIBLE_OLLAMA_VERSION: &str = "0.13.0";

pub async fn root() -> &'static str {
    "Ollama is running"
}

pub async fn version() -> impl IntoResponse {
    axum::Json(api::VersionResponse {
        version: COMPATIBLE_OLLAMA_VERSION.to_owned(),
        server: Some("whaled".to_owned()),
        whale_version: Some(crate::VERSION.to_owned()),
    })
}

fn now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

fn metrics(finished: &completion::Finished) -> api::Metrics {
    api::Metrics {
        total_duration: nanos(finished.total_duration),
        load_duration: nanos(finished.load_duration),
        prompt_eval_count: Some(u64::from(finished.summary.prompt_eval_count)),
        prompt_eval_duration: nanos(finished.summary.prompt_eval_duration),
        eval_count: Some(u64::from(finished.summary.eval_count)),
        eval_duration: nanos(finished.summary.eval_duration),
    }
}

/// A parsed tool call on the wire: `call_` + 8 random characters as its id, as Ollama gives.
pub(super) fn tool_call(index: usize, call: chat::ToolCall) -> api::ToolCall {
    let arguments = match call.arguments {
        serde_json::Value::Object(map) => map.into_iter().collect(),
        _ => std::collections::BTreeMap::new(),
    };
    api::ToolCall {
        id: Some(format!("call_{}", random_id(8))),
        function: api::ToolCallFunction {
            index: Some(index as u32),
            name: call.name,
            arguments,
        },
    }
}

/// `length` random lowercase letters and digits, for ids that only need to differ.
pub(super) fn random_id(length: usize) -> String {
    rand::random_iter::<u8>()
        .map(|b| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[usize::from(b) % 36]))
        .take(length)
        .collect()
}

/// Ollama's `done_reason` words.
pub(super) fn done_reason(reason: crate::engine::DoneReason) -> &'static str {
    match reason {
        crate::engine::DoneReason::Stop | crate::engine::DoneReason::Cancelled => "stop",
        crate::engine::DoneReason::Length => "length",
    }
}

fn nanos(duration: Duration) -> Option<u64> {
    let n = duration.as_nanos() as u64;
    (n > 0).then_some(n)
}

fn think(value: Option<&api::Think>) -> Think {
    match value {
        None => Think::Unset,
        Some(api::Think::Enabled(true)) => Think::On,
        Some(api::Think::Enabled(false)) => Think::Off,
        Some(api::Think::Level(level)) => Think::Level(match level {
            api::ThinkLevel::Low => ThinkLevel::Low,
            api::ThinkLevel::Medium => ThinkLevel::Medium,
            api::ThinkLevel::High => ThinkLevel::High,
            api::ThinkLevel::Max => ThinkLevel::Max,
        }),
    }
}

/// The grammar for `format`: any JSON, or a JSON schema.
fn grammar(format: Option<&api::Format>) -> Result<Option<String>, Error> {
    match format {
        None => Ok(None),
        Some(api::Format::Json) => Ok(Some(crate::engine::JSON_GBNF.to_owned())),
        Some(api::Format::Schema(schema)) => crate::engine::grammar_from_json_schema(schema)
            .map(Some)
            .map_err(|error| Error::BadRequest(format!("invalid format schema: {error}"))),
    }
}

/// Finds the model `name` and resolves its options under the request's `options`.
async fn model_and_options(
    state: &AppState,
    name: &str,
    request: Option<&api::Options>,
) -> Result<(LocalModel, RunOptions), Error> {
    let model = LocalModel::find(&state.store, name).await?;
    let options = options::resolve(&model.params, request, state.config.context_length)?;
    Ok((model, options))
}

/// Loads (or finds loaded) the model for a generation; returns the lease and options.
async fn lease_for(
    state: &AppState,
    model: &LocalModel,
    name: &str,
    options: &RunOptions,
    keep_alive: Option<KeepAlive>,
    embedding: bool,
) -> Result<crate::scheduler::Lease, Error> {
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
                embedding,
            },
            keep_alive,
        })
        .await
}

/// The engine job of a request; `truncate` and `shift` default to true, as in Ollama.
fn job(
    options: &RunOptions,
    truncate: Option<bool>,
    shift: Option<bool>,
    logprobs: Option<usize>,
) -> GenerateJob {
    GenerateJob {
        prompt: crate::engine::Prompt::Tokens(Vec::new()),
        sampling: options.sampling.clone(),
        num_predict: options.num_predict,
        stop: options.stop.clone(),
        grammar: None,
        shift: shift.unwrap_or(true),
        truncate: truncate.unwrap_or(true),
        logprobs,
    }
}

/// What `logprobs` and `top_logprobs` ask of the engine: the number of alternatives per token,
/// or `None` for no log probabilities.
pub(super) fn logprobs_wanted(
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

/// The engine's log probabilities in Ollama's shape; `None` when there are none.
pub(super) fn wire_logprobs(logprobs: Vec<crate::engine::Logprobs>) -> Option<Vec<api::Logprob>> {
    let token = |entry: crate::engine::TokenLogprob| api::TokenLogprob {
        token: entry.token,
        logprob: f64::from(entry.logprob),
        bytes: Some(entry.bytes),
    };
    (!logprobs.is_empty()).then(|| {
        logprobs
            .into_iter()
            .map(|entry| api::Logprob {
                token: token(entry.chosen),
                top_logprobs: entry.top.into_iter().map(token).collect(),
            })
            .collect()
    })
}

/// Handles the empty-prompt forms: load the model, or unload it with `keep_alive: 0`.
async fn load_or_unload(
    state: &AppState,
    model: &LocalModel,
    name: &str,
    options: &RunOptions,
    keep_alive: Option<KeepAlive>,
) -> Result<&'static str, Error> {
    if keep_alive == Some(KeepAlive::For(Duration::ZERO)) {
        state.scheduler.unload(&model.weights.to_string()).await;
        return Ok("unload");
    }
    drop(lease_for(state, model, name, options, keep_alive, false).await?);
    Ok("load")
}

pub async fn generate(
    State(state): SharedState,
    Json(request): Json<api::GenerateRequest>,
) -> Result<Response, Error> {
    let started = Instant::now();
    let name = request.model.clone();
    let suffix = request.suffix.as_deref().unwrap_or_default();
    if request.prompt.is_empty() && suffix.is_empty() {
        check_generate(&request)?;
        let (model, options) = model_and_options(&state, &name, request.options.as_ref()).await?;
        let reason = load_or_unload(&state, &model, &name, &options, request.keep_alive).await?;
        return Ok(axum::Json(api::GenerateResponse {
            model: name,
            created_at: now(),
            done: true,
            done_reason: Some(reason.to_owned()),
            ..api::GenerateResponse::default()
        })
        .into_response());
    }
    let raw = request.raw == Some(true);
    let stream = request.stream != Some(false);
    let chunks = generate_chunks(&state, request, started).await?;
    let model_name = name.clone();
    let responses =
        chunks.map(move |chunk| chunk.map(|chunk| generate_response(&model_name, chunk, raw)));
    if !stream {
        let mut all = api::GenerateResponse::default();
        let mut thinking = String::new();
        let mut logprobs = Vec::new();
        let mut responses = Box::pin(responses);
        while let Some(response) = responses.next().await {
            let mut response = response?;
            all.response.push_str(&response.response);
            thinking.push_str(response.thinking.as_deref().unwrap_or_default());
            logprobs.extend(response.logprobs.take().unwrap_or_default());
            if response.done {
                let text = std::mem::take(&mut all.response);
                all = response;
                all.response = text;
            }
        }
        all.thinking = (!thinking.is_empty()).then_some(thinking);
        all.logprobs = (!logprobs.is_empty()).then_some(logprobs);
        return Ok(axum::Json(all).into_response());
    }
    Ok(ndjson::response(responses))
}

/// Refuses what `/api/generate` cannot do: raw mode with a template, system or context, and
/// images (no vision models here). A `suffix` is refused later if the template has no place
/// for it.
fn check_generate(request: &api::GenerateRequest) -> Result<(), Error> {
    let name = &request.model;
    if request.raw == Some(true)
        && (request.template.is_some() || request.system.is_some() || request.context.is_some())
    {
        return Err(Error::BadRequest(
            "raw mode does not support template, system, or context".to_owned(),
        ));
    }
    if request
        .images
        .as_ref()
        .is_some_and(|images| !images.is_empty())
    {
        return Err(Error::BadRequest(format!(
            "\"{name}\" does not support images"
        )));
    }
    Ok(())
}

/// Starts the generation of a prompt (or, filling in the middle, a suffix). `/v1/completions`
/// translates its requests into this one, so both share one pipeline.
pub(super) async fn generate_chunks(
    state: &AppState,
    request: api::GenerateRequest,
    started: Instant,
) -> Result<impl Stream<Item = Result<Chunk, Error>> + Send + 'static, Error> {
    check_generate(&request)?;
    let logprobs = logprobs_wanted(request.logprobs, request.top_logprobs)?;
    let name = request.model.clone();
    let (model, options) = model_and_options(state, &name, request.options.as_ref()).await?;
    let think = think(request.think.as_ref());
    let grammar = grammar(request.format.as_ref())?;
    let lease = lease_for(state, &model, &name, &options, request.keep_alive, false).await?;
    let load_duration = started.elapsed();
    let mut prompt = request.prompt;
    if let Some(context) = request
        .context
        .as_ref()
        .filter(|context| !context.is_empty())
    {
        let tokens: Vec<i32> = context
            .iter()
            .filter_map(|&t| i32::try_from(t).ok())
            .collect();
        let earlier = lease.engine().detokenize(&tokens).await?;
        prompt = earlier + &prompt;
    }
    let plan = Plan {
        input: Input::Prompt {
            prompt,
            system: request.system.or_else(|| model.system.clone()),
            suffix: request.suffix,
            raw: request.raw == Some(true),
        },
        model_name: name,
        template: model.template.clone(),
        request_template: request.template,
        think,
        job: job(&options, request.truncate, request.shift, logprobs),
        grammar,
    };
    completion::start(lease, plan, started, load_duration).await
}

fn generate_response(name: &str, chunk: Chunk, raw: bool) -> api::GenerateResponse {
    let mut response = api::GenerateResponse {
        model: name.to_owned(),
        created_at: now(),
        ..api::GenerateResponse::default()
    };
    match chunk {
        Chunk::Text {
            content,
            thinking,
            logprobs,
        } => {
            response.response = content;
            response.thinking = (!thinking.is_empty()).then_some(thinking);
            response.logprobs = wire_logprobs(logprobs);
        }
        Chunk::ToolCalls(_) => {}
        Chunk::Done(finished) => {
            response.done = true;
            response.done_reason = Some(done_reason(finished.summary.done_reason).to_owned());
            response.context = (!raw).then(|| {
                finished
                    .summary
                    .context
                    .iter()
                    .map(|&t| i64::from(t))
                    .collect()
            });
            response.metrics = metrics(&finished);
        }
    }
    response
}

/// Converts the wire messages into the chat module's, inserting the model's SYSTEM and
/// MESSAGE history as Ollama does, and stripping earlier turns' reasoning.
fn conversation(model: &LocalModel, messages: &[api::Message]) -> Result<Vec<ChatMessage>, Error> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 2);
    if let Some(system) = &model.system
        && messages
            .first()
            .is_none_or(|first| !first.role.eq_ignore_ascii_case("system"))
    {
        out.push(ChatMessage::new("system", system.clone()));
    }
    for message in &model.messages {
        out.push(ChatMessage::new(
            message.role.to_ascii_lowercase(),
            message.content.clone(),
        ));
    }
    let last_user = messages
        .iter()
        .rposition(|message| message.role.eq_ignore_ascii_case("user"));
    for (index, message) in messages.iter().enumerate() {
        let role = message.role.to_ascii_lowercase();
        if !matches!(role.as_str(), "system" | "user" | "assistant" | "tool") {
            return Err(Error::BadRequest(format!(
                "messages[{index}].role: unknown role {:?} (use system, user, assistant or tool)",
                message.role
            )));
        }
        if message
            .images
            .as_ref()
            .is_some_and(|images| !images.is_empty())
        {
            return Err(Error::BadRequest(format!(
                "\"{}\" does not support images",
                model.name()
            )));
        }
        let before_last_user = last_user.is_some_and(|last| index < last);
        let content = if role == "assistant" && before_last_user {
            chat::strip_reasoning(&message.content)
        } else {
            message.content.clone()
        };
        out.push(ChatMessage {
            role,
            content,
            thinking: if before_last_user {
                None
            } else {
                message.thinking.clone()
            },
            tool_calls: message
                .tool_calls
                .iter()
                .flatten()
                .map(|call| chat::ToolCall {
                    name: call.function.name.clone(),
                    arguments: serde_json::Value::Object(
                        call.function.arguments.clone().into_iter().collect(),
                    ),
                })
                .collect(),
            tool_name: message.tool_name.clone(),
        });
    }
    Ok(out)
}

pub async fn chat(
    State(state): SharedState,
    Json(request): Json<api::ChatRequest>,
) -> Result<Response, Error> {
    let started = Instant::now();
    if request.messages.is_empty() {
        let name = request.model;
        let (model, options) = model_and_options(&state, &name, request.options.as_ref()).await?;
        let reason = load_or_unload(&state, &model, &name, &options, request.keep_alive).await?;
        return Ok(axum::Json(api::ChatResponse {
            model: name,
            created_at: now(),
            message: api::Message::new("assistant", ""),
            done: true,
            done_reason: Some(reason.to_owned()),
            ..api::ChatResponse::default()
        })
        .into_response());
    }
    let stream = request.stream != Some(false);
    let name = request.model.clone();
    let chunks = chat_chunks(&state, request, started).await?;
    let responses = chunks.map(move |chunk| chunk.map(|chunk| chat_response(&name, chunk)));
    if !stream {
        return Ok(axum::Json(collect_chat(responses).await?).into_response());
    }
    Ok(ndjson::response(responses))
}

/// Starts the generation of a chat with at least one message. The OpenAI handler translates
/// its requests into this one, so both APIs share one pipeline.
pub(super) async fn chat_chunks(
    state: &AppState,
    request: api::ChatRequest,
    started: Instant,
) -> Result<impl Stream<Item = Result<Chunk, Error>> + Send + 'static, Error> {
    let logprobs = logprobs_wanted(request.logprobs, request.top_logprobs)?;
    let name = request.model.clone();
    let (model, options) = model_and_options(state, &name, request.options.as_ref()).await?;
    let messages = conversation(&model, &request.messages)?;
    let tools: Vec<serde_json::Value> = request
        .tools
        .iter()
        .flatten()
        .map(|tool| serde_json::to_value(tool).unwrap_or_default())
        .collect();
    let think = think(request.think.as_ref());
    let grammar = grammar(request.format.as_ref())?;
    let lease = lease_for(state, &model, &name, &options, request.keep_alive, false).await?;
    let load_duration = started.elapsed();
    let plan = Plan {
        input: Input::Chat { messages, tools },
        model_name: name,
        template: model.template.clone(),
        request_template: None,
        think,
        job: job(&options, request.truncate, request.shift, logprobs),
        grammar,
    };
    completion::start(lease, plan, started, load_duration).await
}

/// The whole answer of a chat: the streamed responses joined, the last one's metrics kept.
pub(super) async fn collect_chat(
    responses: impl Stream<Item = Result<api::ChatResponse, Error>>,
) -> Result<api::ChatResponse, Error> {
    let mut content = String::new();
    let mut thinking = String::new();
    let mut calls = Vec::new();
    let mut logprobs = Vec::new();
    let mut last = api::ChatResponse::default();
    let mut responses = std::pin::pin!(responses);
    while let Some(response) = responses.next().await {
        let mut response = response?;
        content.push_str(&response.message.content);
        thinking.push_str(response.message.thinking.as_deref().unwrap_or_default());
        calls.extend(response.message.tool_calls.take().unwrap_or_default());
        logprobs.extend(response.logprobs.take().unwrap_or_default());
        last = response;
    }
    last.message.content = content;
    last.message.thinking = (!thinking.is_empty()).then_some(thinking);
    last.message.tool_calls = (!calls.is_empty()).then_some(calls);
    last.logprobs = (!logprobs.is_empty()).then_some(logprobs);
    Ok(last)
}

pub(super) fn chat_response(name: &str, chunk: Chunk) -> api::ChatResponse {
    let mut response = api::ChatResponse {
        model: name.to_owned(),
        created_at: now(),
        message: api::Message::new("assistant", ""),
        ..api::ChatResponse::default()
    };
    match chunk {
        Chunk::Text {
            content,
            thinking,
            logprobs,
        } => {
            response.message.content = content;
            response.message.thinking = (!thinking.is_empty()).then_some(thinking);
            response.logprobs = wire_logprobs(logprobs);
        }
        Chunk::ToolCalls(calls) => {
            response.message.tool_calls = Some(
                calls
                    .into_iter()
                    .enumerate()
                    .map(|(index, call)| tool_call(index, call))
                    .collect(),
            );
        }
        Chunk::Done(finished) => {
            response.done = true;
            response.done_reason = Some(done_reason(finished.summary.done_reason).to_owned());
            response.metrics = metrics(&finished);
        }
    }
    response
}

/// `details` of a model, read from its GGUF header.
fn details(gguf: Option<&GgufFile>) -> api::ModelDetails {
    let family = gguf
        .and_then(GgufFile::architecture)
        .unwrap_or_default()
        .to_owned();
    api::ModelDetails {
        parent_model: String::new(),
        format: "gguf".to_owned(),
        families: (!family.is_empty()).then(|| vec![family.clone()]),
        family,
        parameter_size: gguf.map(GgufFile::parameter_size_label).unwrap_or_default(),
        quantization_level: gguf
            .and_then(GgufFile::file_type_name)
            .unwrap_or_default()
            .to_owned(),
    }
}

/// `details` of a model from its config blob (`model_family`, `model_type`, `file_type`), as
/// `/api/create` writes it and Ollama's registry serves it; none when the config lacks them.
async fn config_details(
    store: &whale_registry::Store,
    manifest: &whale_registry::Manifest,
) -> Option<api::ModelDetails> {
    let bytes = tokio::fs::read(store.blob_path(&manifest.config.digest))
        .await
        .ok()?;
    let config: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let text = |key: &str| config[key].as_str().unwrap_or_default().to_owned();
    let family = text("model_family");
    if family.is_empty() {
        return None;
    }
    let families = config["model_families"].as_array().map_or_else(
        || vec![family.clone()],
        |list| {
            list.iter()
                .filter_map(serde_json::Value::as_str)
                .map(str::to_owned)
                .collect()
        },
    );
    Some(api::ModelDetails {
        parent_model: String::new(),
        format: config["model_format"].as_str().unwrap_or("gguf").to_owned(),
        family,
        families: Some(families),
        parameter_size: text("model_type"),
        quantization_level: text("file_type"),
    })
}

/// The GGUF header at `path`; `full` keeps the long arrays (tokenizer tokens and merges).
async fn read_gguf(path: std::path::PathBuf, full: bool) -> Option<GgufFile> {
    tokio::task::spawn_blocking(move || {
        if full {
            GgufFile::open_full(&path).ok()
        } else {
            GgufFile::open(&path).ok()
        }
    })
    .await
    .ok()
    .flatten()
}

pub async fn tags(State(state): SharedState) -> Result<axum::Json<api::ListResponse>, Error> {
    let stored = state.store.list().await?;
    let mut models = Vec::with_capacity(stored.len());
    for entry in stored {
        let name = entry.reference.short();
        // The config blob says it in a few hundred bytes; the GGUF header (a whole tokenizer,
        // tens of MB parsed) only for a model whose config does not.
        let details = match config_details(&state.store, &entry.manifest).await {
            Some(details) => details,
            None => match entry
                .manifest
                .layer(whale_registry::manifest::media_type::MODEL)
            {
                Some(layer) => details(
                    read_gguf(state.store.blob_path(&layer.digest), false)
                        .await
                        .as_ref(),
                ),
                None => api::ModelDetails::default(),
            },
        };
        models.push(api::ListModel {
            name: name.clone(),
            model: name,
            modified_at: rfc3339(entry.modified),
            size: entry.size,
            digest: entry.manifest_digest.hex().to_owned(),
            details,
            capabilities: None,
        });
    }
    Ok(axum::Json(api::ListResponse { models }))
}

pub async fn show(
    State(state): SharedState,
    Json(request): Json<api::ShowRequest>,
) -> Result<axum::Json<api::ShowResponse>, Error> {
    let model = LocalModel::find(&state.store, &request.model).await?;
    let verbose = request.verbose == Some(true);
    let gguf = read_gguf(model.weights_path.clone(), verbose).await;
    let gguf_template = gguf.as_ref().and_then(|g| g.chat_template());
    let template = model
        .template
        .clone()
        .or_else(|| gguf_template.map(str::to_owned))
        .unwrap_or_default();
    let mut capabilities = vec!["completion".to_owned()];
    // The capabilities of the template generation will use (see `ChatTemplate::select`).
    if let Ok(parsed) = chat::ChatTemplate::select(
        model.template.as_deref(),
        gguf_template,
        chat::SpecialTokens::default(),
    ) {
        let found = parsed.capabilities();
        if found.tools {
            capabilities.push("tools".to_owned());
        }
        if found.insert {
            capabilities.push("insert".to_owned());
        }
        if found.thinking {
            capabilities.push("thinking".to_owned());
        }
    }
    let parameters = model
        .params
        .iter()
        .flat_map(|(key, value)| match value {
            serde_json::Value::Array(items) => {
                items.iter().map(|item| parameter_line(key, item)).collect()
            }
            other => vec![parameter_line(key, other)],
        })
        .collect::<Vec<_>>()
        .join("\n");
    let modelfile = modelfile_text(&model, &template);
    Ok(axum::Json(api::ShowResponse {
        license: model.license.join("\n"),
        modelfile,
        parameters,
        template,
        system: model.system.clone().unwrap_or_default(),
        details: details(gguf.as_ref()),
        messages: None,
        model_info: gguf
            .as_ref()
            .map(|g| g.model_info_json(verbose).into_iter().collect())
            .unwrap_or_default(),
        capabilities,
        modified_at: rfc3339(model.modified),
    }))
}

/// `key value` as Ollama prints parameters: key padded to 30 columns, strings quoted.
fn parameter_line(key: &str, value: &serde_json::Value) -> String {
    format!("{key:<30} {value}")
}

fn modelfile_text(model: &LocalModel, template: &str) -> String {
    let mut text = format!(
        "# Modelfile generated by \"whale show\"\n# To build a new Modelfile based on this, replace FROM with:\n# FROM {}\n\nFROM {}\n",
        model.name(),
        model.weights_path.display()
    );
    if !template.is_empty() {
        let _ = writeln!(text, "TEMPLATE \"\"\"{template}\"\"\"");
    }
    if let Some(system) = &model.system {
        let _ = writeln!(text, "SYSTEM \"\"\"{system}\"\"\"");
    }
    for (key, value) in &model.params {
        let values = match value {
            serde_json::Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for value in values {
            let _ = writeln!(text, "PARAMETER {key} {value}");
        }
    }
    for license in &model.license {
        let _ = writeln!(text, "LICENSE \"\"\"{license}\"\"\"");
    }
    text
}

pub async fn ps(State(state): SharedState) -> axum::Json<api::ProcessResponse> {
    let models = state
        .scheduler
        .loaded()
        .iter()
        .map(|runner| {
            let info = runner.engine.info();
            let family = info.architecture.clone();
            api::ProcessModel {
                name: runner.name.clone(),
                model: runner.name.clone(),
                size: runner.estimate.total,
                digest: runner
                    .manifest_digest
                    .strip_prefix("sha256:")
                    .unwrap_or(&runner.manifest_digest)
                    .to_owned(),
                details: api::ModelDetails {
                    format: "gguf".to_owned(),
                    families: Some(vec![family.clone()]),
                    family,
                    ..api::ModelDetails::default()
                },
                expires_at: rfc3339(runner.expires_at().unwrap_or_else(far_future)),
                size_vram: runner.estimate.vram,
                context_length: u64::from(runner.num_ctx),
            }
        })
        .collect();
    axum::Json(api::ProcessResponse { models })
}

/// What `ps` shows for a model kept forever (Go's max time, as Ollama prints it).
fn far_future() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

pub async fn copy(
    State(state): SharedState,
    Json(request): Json<api::CopyRequest>,
) -> Result<StatusCode, Error> {
    let source = model::parse_name(&request.source)?;
    let destination = model::parse_name(&request.destination)?;
    let Some(source) = state.store.resolve(&source) else {
        return Err(Error::NotFound(format!(
            "model \"{}\" not found",
            request.source
        )));
    };
    state.store.copy(&source, &destination).await?;
    Ok(StatusCode::OK)
}

pub async fn delete(
    State(state): SharedState,
    Json(request): Json<api::DeleteRequest>,
) -> Result<StatusCode, Error> {
    let name = request.model.as_str();
    let reference = model::parse_name(name)?;
    let Some(reference) = state.store.resolve(&reference) else {
        return Err(Error::ModelNotFound(name.to_owned()));
    };
    if let Ok(model) = LocalModel::find(&state.store, name).await {
        state.scheduler.unload(&model.weights.to_string()).await;
    }
    state.store.delete(&reference).await?;
    Ok(StatusCode::OK)
}

fn progress(event: ProgressEvent) -> api::ProgressResponse {
    api::ProgressResponse {
        status: event.status,
        digest: event.digest.map(|digest| digest.to_string()),
        total: event.total,
        completed: event.completed,
    }
}

/// Runs a transfer in the background, streaming its progress (or answering once at the end
/// with `stream: false`). The transfer goes on if the client leaves, as Ollama's does.
async fn transfer<F>(stream: bool, work: F) -> Result<Response, Error>
where
    F: FnOnce(
        tokio::sync::mpsc::UnboundedSender<ProgressEvent>,
    ) -> tokio::task::JoinHandle<Result<(), Error>>,
{
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let handle = work(sender);
    if !stream {
        let mut last = None;
        while let Some(event) = receiver.recv().await {
            last = Some(event);
        }
        handle
            .await
            .map_err(|error| Error::Internal(error.to_string()))??;
        let last = last.unwrap_or_else(|| ProgressEvent::status("success"));
        return Ok(axum::Json(progress(last)).into_response());
    }
    let events = futures::stream::unfold(
        (receiver, Some(handle)),
        |(mut receiver, handle)| async move {
            if let Some(event) = receiver.recv().await {
                return Some((Ok(progress(event)), (receiver, handle)));
            }
            let handle = handle?;
            match handle.await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some((Err(error), (receiver, None))),
                Err(error) => Some((Err(Error::Internal(error.to_string())), (receiver, None))),
            }
        },
    );
    Ok(ndjson::response(events))
}

pub async fn pull(
    State(state): SharedState,
    Json(request): Json<api::PullRequest>,
) -> Result<Response, Error> {
    let reference = model::parse_name(&request.model)?;
    let options = PullOptions {
        insecure: request.insecure.unwrap_or(false),
        mirror: state.config.registry_mirror.clone(),
        ..PullOptions::default()
    };
    let store = state.store.clone();
    transfer(request.stream != Some(false), move |sender| {
        tokio::spawn(async move {
            Puller::new(options)
                .pull(&store, &reference, &sender)
                .await
                .map(drop)
                .map_err(Error::from)
        })
    })
    .await
}

pub async fn push(
    State(state): SharedState,
    Json(request): Json<api::PushRequest>,
) -> Result<Response, Error> {
    let reference = model::parse_name(&request.model)?;
    let Some(reference) = state.store.resolve(&reference) else {
        return Err(Error::ModelNotFound(request.model.clone()));
    };
    let options = PushOptions {
        insecure: request.insecure.unwrap_or(false),
    };
    let store = state.store.clone();
    transfer(request.stream != Some(false), move |sender| {
        tokio::spawn(async move {
            Pusher::new(options)
                .push(&store, &reference, &sender)
                .await
                .map_err(Error::from)
        })
    })
    .await
}

pub async fn create(
    State(state): SharedState,
    Json(request): Json<api::CreateRequest>,
) -> Result<Response, Error> {
    let store = state.store.clone();
    let stream = request.stream != Some(false);
    // Validate before streaming, so a bad request is a plain 400.
    let plan = crate::create::plan(&store, request).await?;
    transfer(stream, move |sender| {
        tokio::spawn(async move { crate::create::run(&store, plan, &sender).await })
    })
    .await
}

pub async fn blob_exists(
    State(state): SharedState,
    Path(digest): Path<String>,
) -> Result<StatusCode, Error> {
    let digest = Digest::parse(&digest)?;
    Ok(if state.store.has_blob(&digest) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    })
}

pub async fn blob_upload(
    State(state): SharedState,
    Path(digest): Path<String>,
    body: Body,
) -> Result<StatusCode, Error> {
    let digest = Digest::parse(&digest)?;
    if state.store.has_blob(&digest) {
        return Ok(StatusCode::OK);
    }
    let stream = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other));
    let reader = tokio_util::io::StreamReader::new(stream);
    state.store.write_blob(&digest, reader).await?;
    Ok(StatusCode::CREATED)
}

pub async fn embed(
    State(state): SharedState,
    Json(request): Json<api::EmbedRequest>,
) -> Result<axum::Json<api::EmbedResponse>, Error> {
    let started = Instant::now();
    let inputs = request.input.clone().into_vec();
    let truncate = request.truncate.unwrap_or(true);
    let (mut embeddings, load_duration) = run_embedding(
        &state,
        &request.model,
        request.options.as_ref(),
        request.keep_alive,
        inputs,
        truncate,
    )
    .await?;
    embeddings.normalize();
    embeddings.shorten(request.dimensions.unwrap_or(0) as usize);
    Ok(axum::Json(api::EmbedResponse {
        model: request.model.clone(),
        embeddings: embeddings.vectors,
        total_duration: nanos(started.elapsed()),
        load_duration: nanos(load_duration),
        prompt_eval_count: Some(u64::from(embeddings.prompt_tokens)),
    }))
}

/// The legacy endpoint: one prompt, its vector as the model gives it (not normalised).
pub async fn embeddings(
    State(state): SharedState,
    Json(request): Json<api::EmbeddingRequest>,
) -> Result<axum::Json<api::EmbeddingResponse>, Error> {
    let (mut embeddings, _) = run_embedding(
        &state,
        &request.model,
        request.options.as_ref(),
        request.keep_alive,
        vec![request.prompt.clone()],
        true,
    )
    .await?;
    Ok(axum::Json(api::EmbeddingResponse {
        embedding: embeddings
            .vectors
            .pop()
            .unwrap_or_default()
            .into_iter()
            .map(f64::from)
            .collect(),
    }))
}

/// Loads `name` for embeddings and embeds `inputs`; also returns how long loading took.
pub(super) async fn run_embedding(
    state: &AppState,
    name: &str,
    request_options: Option<&api::Options>,
    keep_alive: Option<KeepAlive>,
    inputs: Vec<String>,
    truncate: bool,
) -> Result<(crate::engine::Embeddings, Duration), Error> {
    let started = Instant::now();
    let (model, options) = model_and_options(state, name, request_options).await?;
    let lease = lease_for(state, &model, name, &options, keep_alive, true).await?;
    let load_duration = started.elapsed();
    let embeddings = lease.engine().embed(inputs, truncate).await?;
    Ok((embeddings, load_duration))
}
