//! Ollama's native API, field for field (see `shared/reference/ollama.md` §1). Generation and
//! embedding handlers translate Ollama's requests into [`inference`]'s and its answers back.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tracing::Instrument as _;
use whale_api as api;
use whale_registry::{Digest, ProgressEvent, PullOptions, Puller, PushOptions, Pusher};

use super::{Json, ndjson};
use crate::chat::{self, ChatMessage, Think, ThinkLevel};
use crate::error::Error;
use crate::gguf::GgufFile;
use crate::inference::{self, Chunk, EmbedRequest, GenerateRequest, Input};
use crate::model::{self, LocalModel};
use crate::remote::{self, RemoteModel};
use crate::state::AppState;
use crate::{catalogue, fit, memory};

pub(super) type SharedState = State<Arc<AppState>>;

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

fn metrics(finished: &inference::Finished) -> api::Metrics {
    let drafted = finished.summary.draft_count > 0;
    api::Metrics {
        total_duration: nanos(finished.total_duration),
        load_duration: nanos(finished.load_duration),
        prompt_eval_count: Some(u64::from(finished.summary.prompt_eval_count)),
        prompt_eval_duration: nanos(finished.summary.prompt_eval_duration),
        eval_count: Some(u64::from(finished.summary.eval_count)),
        eval_duration: nanos(finished.summary.eval_duration),
        draft_count: drafted.then_some(u64::from(finished.summary.draft_count)),
        draft_accepted_count: drafted.then_some(u64::from(finished.summary.draft_accepted_count)),
    }
}

/// A parsed tool call on the wire: `call_` + 8 random characters as its id, as Ollama gives.
fn tool_call(index: usize, call: chat::ToolCall) -> api::ToolCall {
    let arguments = match call.arguments {
        serde_json::Value::Object(map) => map.into_iter().collect(),
        _ => std::collections::BTreeMap::new(),
    };
    api::ToolCall {
        id: Some(format!("call_{}", inference::random_id(8))),
        function: api::ToolCallFunction {
            index: Some(index as u32),
            name: call.name,
            arguments,
        },
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

/// The engine's log probabilities in Ollama's shape; `None` when there are none.
fn wire_logprobs(logprobs: Vec<crate::engine::Logprobs>) -> Option<Vec<api::Logprob>> {
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

/// Ollama refuses images for models without vision, naming the model.
fn refuse_images(model: &str, images: Option<&Vec<String>>) -> Result<(), Error> {
    if images.is_some_and(|images| !images.is_empty()) {
        return Err(Error::BadRequest(format!(
            "\"{model}\" does not support images"
        )));
    }
    Ok(())
}

pub async fn generate(
    State(state): SharedState,
    Json(request): Json<api::GenerateRequest>,
) -> Result<Response, Error> {
    let started = Instant::now();
    let name = request.model.clone();
    let suffix = request.suffix.as_deref().unwrap_or_default();
    refuse_images(&name, request.images.as_ref())?;
    if request.debug_render_only == Some(true) {
        let rendered = inference::render(&state, generate_request(request)?, started).await?;
        return Ok(axum::Json(api::GenerateResponse {
            model: name,
            created_at: now(),
            debug_info: Some(api::DebugInfo {
                rendered_template: rendered,
                image_count: 0,
            }),
            ..api::GenerateResponse::default()
        })
        .into_response());
    }
    if request.prompt.is_empty() && suffix.is_empty() {
        let reason =
            inference::load_or_unload(&state, &name, request.options.as_ref(), request.keep_alive)
                .await?;
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
    let chunks = inference::generate(&state, generate_request(request)?, started).await?;
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

/// `/api/generate`'s request in the daemon's terms.
fn generate_request(request: api::GenerateRequest) -> Result<GenerateRequest, Error> {
    Ok(GenerateRequest {
        logprobs: inference::logprobs_wanted(request.logprobs, request.top_logprobs)?,
        think: think(request.think.as_ref()),
        input: Input::Prompt {
            prompt: request.prompt,
            system: request.system,
            suffix: request.suffix,
            raw: request.raw == Some(true),
            template: request.template,
            context: request
                .context
                .iter()
                .flatten()
                .filter_map(|&t| i32::try_from(t).ok())
                .collect(),
        },
        model: request.model,
        options: request.options,
        keep_alive: request.keep_alive,
        format: request.format,
        truncate: request.truncate,
        shift: request.shift,
        require_tool_call: false,
    })
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
            response.done_reason =
                Some(inference::done_reason(finished.summary.done_reason).to_owned());
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

pub async fn chat(
    State(state): SharedState,
    Json(request): Json<api::ChatRequest>,
) -> Result<Response, Error> {
    let started = Instant::now();
    if request.messages.is_empty() {
        let name = request.model;
        let reason =
            inference::load_or_unload(&state, &name, request.options.as_ref(), request.keep_alive)
                .await?;
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
    if request.debug_render_only == Some(true) {
        let rendered = inference::render(&state, chat_request(request)?, started).await?;
        return Ok(axum::Json(api::ChatResponse {
            model: name,
            created_at: now(),
            message: api::Message::new("assistant", ""),
            debug_info: Some(api::DebugInfo {
                rendered_template: rendered,
                image_count: 0,
            }),
            ..api::ChatResponse::default()
        })
        .into_response());
    }
    let chunks = inference::generate(&state, chat_request(request)?, started).await?;
    if !stream {
        let whole = inference::collect(chunks).await?;
        return Ok(axum::Json(whole_chat_response(&name, whole)).into_response());
    }
    let responses = chunks.map(move |chunk| chunk.map(|chunk| chat_response(&name, chunk)));
    Ok(ndjson::response(responses))
}

/// `/api/chat`'s request in the daemon's terms.
fn chat_request(request: api::ChatRequest) -> Result<GenerateRequest, Error> {
    let mut messages = Vec::with_capacity(request.messages.len());
    for message in request.messages {
        refuse_images(&request.model, message.images.as_ref())?;
        messages.push(ChatMessage {
            role: message.role,
            content: message.content,
            thinking: message.thinking,
            tool_calls: message
                .tool_calls
                .into_iter()
                .flatten()
                .map(|call| chat::ToolCall {
                    name: call.function.name,
                    arguments: serde_json::Value::Object(
                        call.function.arguments.into_iter().collect(),
                    ),
                })
                .collect(),
            tool_name: message.tool_name,
        });
    }
    Ok(GenerateRequest {
        logprobs: inference::logprobs_wanted(request.logprobs, request.top_logprobs)?,
        think: think(request.think.as_ref()),
        input: Input::Chat {
            messages,
            tools: request
                .tools
                .iter()
                .flatten()
                .map(|tool| serde_json::to_value(tool).unwrap_or_default())
                .collect(),
        },
        model: request.model,
        options: request.options,
        keep_alive: request.keep_alive,
        format: request.format,
        truncate: request.truncate,
        shift: request.shift,
        require_tool_call: false,
    })
}

/// The whole answer of a non-streamed chat, as one response.
fn whole_chat_response(name: &str, whole: inference::Whole) -> api::ChatResponse {
    let mut response = chat_response(name, Chunk::Done(Box::new(whole.finished)));
    response.message.content = whole.content;
    response.message.thinking = (!whole.thinking.is_empty()).then_some(whole.thinking);
    response.message.tool_calls = (!whole.tool_calls.is_empty()).then(|| {
        whole
            .tool_calls
            .into_iter()
            .enumerate()
            .map(|(index, call)| tool_call(index, call))
            .collect()
    });
    response.logprobs = wire_logprobs(whole.logprobs);
    response
}

fn chat_response(name: &str, chunk: Chunk) -> api::ChatResponse {
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
            response.done_reason =
                Some(inference::done_reason(finished.summary.done_reason).to_owned());
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
        let upstream = entry
            .manifest
            .layer(whale_registry::manifest::media_type::MODEL)
            .is_none()
            .then(|| remote::upstream_of(&state.store, &entry.manifest))
            .flatten();
        models.push(api::ListModel {
            name: name.clone(),
            model: name,
            modified_at: rfc3339(entry.modified),
            size: entry.size,
            digest: entry.manifest_digest.hex().to_owned(),
            details,
            capabilities: None,
            remote_model: upstream.as_ref().map(|upstream| upstream.model.clone()),
            remote_host: upstream.map(|upstream| upstream.base.to_string()),
        });
    }
    Ok(axum::Json(api::ListResponse { models }))
}

pub async fn show(
    State(state): SharedState,
    Json(request): Json<api::ShowRequest>,
) -> Result<axum::Json<api::ShowResponse>, Error> {
    if let Some(remote) = RemoteModel::find(&state.store, &state.config, &request.model).await {
        return Ok(axum::Json(show_remote(&remote)));
    }
    let model = LocalModel::find_or_alias(&state.store, &state.config, &request.model).await?;
    let verbose = request.verbose == Some(true);
    let gguf = read_gguf(model.weights_path.clone(), verbose).await;
    let gguf_template = gguf.as_ref().and_then(|g| g.chat_template());
    // The template generation will use (see `ChatTemplate::select`), and its capabilities.
    let selected = chat::ChatTemplate::select(
        chat::TemplateSources {
            template: model.template.as_deref(),
            gguf: gguf_template,
            catalogue: model.catalogue_template(),
        },
        chat::SpecialTokens::default(),
    );
    let template = match &selected {
        Ok(selected) if selected.source() != chat::template::FALLBACK_TEMPLATE => {
            selected.source().to_owned()
        }
        Ok(_) => String::new(),
        Err(_) => model.template.clone().unwrap_or_default(),
    };
    let mut capabilities = vec!["completion".to_owned()];
    if let Ok(parsed) = &selected {
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
        remote_model: None,
        remote_host: None,
    }))
}

/// `/api/show` of a model another server runs: what whaled knows of it, without asking.
fn show_remote(model: &RemoteModel) -> api::ShowResponse {
    let mut modelfile = format!(
        "# Modelfile generated by \"whale show\"\n# To build a new Modelfile based on this, replace FROM with:\n# FROM {}\n\nFROM {}\n",
        model.name(),
        model.upstream.from_line()
    );
    if let Some(system) = &model.system {
        let _ = writeln!(modelfile, "SYSTEM \"\"\"{system}\"\"\"");
    }
    let mut parameters = Vec::new();
    for (key, value) in &model.params {
        let values = match value {
            serde_json::Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for value in values {
            let _ = writeln!(modelfile, "PARAMETER {key} {value}");
            parameters.push(parameter_line(key, &value));
        }
    }
    api::ShowResponse {
        license: model.license.join("\n"),
        modelfile,
        parameters: parameters.join("\n"),
        system: model.system.clone().unwrap_or_default(),
        details: api::ModelDetails {
            format: "remote".to_owned(),
            ..api::ModelDetails::default()
        },
        capabilities: vec!["completion".to_owned(), "tools".to_owned()],
        remote_model: Some(model.upstream.model.clone()),
        remote_host: Some(model.upstream.base.to_string()),
        ..api::ShowResponse::default()
    }
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
            let info = runner.runner.info();
            let family = info.architecture.clone();
            // What the load took of the GPUs once the runner has measured it, else the plan.
            let measured: u64 = info.gpus.iter().map(|gpu| gpu.used).sum();
            let size_vram = if measured > 0 {
                measured
            } else {
                runner.estimate.vram
            };
            api::ProcessModel {
                name: runner.name.clone(),
                model: runner.name.clone(),
                size: runner.estimate.ram() + runner.estimate.remote + size_vram,
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
                size_vram,
                context_length: u64::from(runner.num_ctx),
                layers: info
                    .shares
                    .iter()
                    .map(|share| api::LayerShare {
                        place: share.place.clone(),
                        layers: share.layers,
                    })
                    .collect(),
                gpus: info
                    .gpus
                    .iter()
                    .map(|gpu| api::ProcessGpu {
                        name: gpu.name.clone(),
                        description: gpu.description.clone(),
                        size_vram: gpu.used,
                    })
                    .collect(),
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

/// `POST /api/verify` (whale's own): re-hashes every blob and checks every model's blobs.
/// Loaded models are untouched: a runner holds its weights open, and repair only unlinks.
pub async fn verify(
    State(state): SharedState,
    Json(request): Json<api::VerifyRequest>,
) -> Result<axum::Json<api::VerifyResponse>, Error> {
    let started = Instant::now();
    let report = state.store.verify(request.repair, |_, _| {}).await?;
    let root = state.store.root().to_path_buf();
    let relative = |path: &std::path::Path| {
        path.strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    tracing::info!(
        blobs = report.blobs,
        bytes = report.bytes,
        corrupt = report.corrupt.len(),
        missing = report.missing.len(),
        elapsed = ?started.elapsed(),
        "store verified"
    );
    Ok(axum::Json(api::VerifyResponse {
        status: if report.is_clean() { "ok" } else { "damaged" }.to_owned(),
        blobs: report.blobs as u64,
        bytes: report.bytes,
        corrupt: report.corrupt.iter().map(ToString::to_string).collect(),
        missing: report
            .missing
            .iter()
            .map(|(model, digest)| api::MissingBlob {
                model: model.short(),
                digest: digest.to_string(),
            })
            .collect(),
        invalid_manifests: report
            .invalid_manifests
            .iter()
            .map(|p| relative(p))
            .collect(),
        leftovers: report.leftovers.iter().map(|p| relative(p)).collect(),
    }))
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
    let weights = LocalModel::find(&state.store, name)
        .await
        .ok()
        .map(|model| model.weights);
    let removed = state.store.delete(&reference).await?;
    // A loaded model goes only with its weights: other names may still use them.
    if let Some(weights) = weights.filter(|weights| removed.contains(weights)) {
        state.scheduler.unload(&weights.to_string()).await;
    }
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
        from: request.from.as_deref().map(pull_source).transpose()?,
        ..PullOptions::default()
    };
    // A catalogue name is fetched from the catalogue's source (another tag, or another
    // registry) and kept under its own name; another whale (`from`) holds it by that name.
    let source = match catalogue::find(&reference.short()) {
        Some(entry) if options.from.is_none() && entry.source != entry.name => {
            model::parse_name(&entry.source)?
        }
        _ => reference.clone(),
    };
    let store = state.store.clone();
    let force = request.force.unwrap_or(false);
    transfer(request.stream != Some(false), move |sender| {
        let progress = state.metrics.pull_progress(sender);
        tokio::spawn(
            async move {
                let puller = Puller::new(options);
                let resolved = puller.resolve(&source, &progress).await?;
                if !force {
                    will_it_fit(&state, &puller, &resolved, &reference).await?;
                }
                puller
                    .fetch(&store, &reference, resolved, &progress)
                    .await
                    .map(drop)
                    .map_err(Error::from)
            }
            .in_current_span(),
        )
    })
    .await
}

/// What this machine offers a model: RAM (or `WHALE_MAX_MEMORY`), GPUs, workers, free disk.
pub(super) async fn this_machine(state: &AppState) -> fit::Machine {
    let limits = state.scheduler.limits();
    let workers = crate::rpc::worker_memory(&limits.workers).await;
    fit::Machine {
        ram: limits.max_memory.unwrap_or_else(memory::total_memory),
        gpus: state.scheduler.gpus().await,
        workers: workers.iter().map(|memory| memory.total).collect(),
        disk_free: fit::disk_free(&state.store),
    }
}

/// Refuses a pull whose model cannot fit this machine, before any blob is fetched.
async fn will_it_fit(
    state: &AppState,
    puller: &Puller,
    resolved: &whale_registry::Resolved,
    reference: &whale_registry::ModelRef,
) -> Result<(), Error> {
    let limits = state.scheduler.limits();
    let machine = this_machine(state).await;
    let plan = fit::Plan {
        num_ctx: state.config.context_length,
        num_parallel: limits.num_parallel,
    };
    let need = fit::need(puller, resolved, &state.store, &machine, plan).await;
    tracing::debug!(?need, ?machine, "will it fit");
    fit::check(&reference.short(), &need, &machine)
}

/// The address of another whale to pull from: `http(s)://host:port`, or `host:port` for plain
/// http on a local network.
fn pull_source(from: &str) -> Result<url::Url, Error> {
    let from = from.trim();
    let with_scheme = if from.contains("://") {
        from.to_owned()
    } else {
        format!("http://{from}")
    };
    match url::Url::parse(&with_scheme) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        _ => Err(Error::BadRequest(format!(
            "from must be the address of another whale, like http://host:11434, got {from:?}"
        ))),
    }
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
        tokio::spawn(
            async move {
                Pusher::new(options)
                    .push(&store, &reference, &sender)
                    .await
                    .map_err(Error::from)
            }
            .in_current_span(),
        )
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
    let (mut embeddings, load_duration) = inference::embed(
        &state,
        EmbedRequest {
            model: request.model.clone(),
            inputs: request.input.clone().into_vec(),
            options: request.options.clone(),
            keep_alive: request.keep_alive,
            truncate: request.truncate.unwrap_or(true),
        },
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
    let (mut embeddings, _) = inference::embed(
        &state,
        EmbedRequest {
            model: request.model,
            inputs: vec![request.prompt],
            options: request.options,
            keep_alive: request.keep_alive,
            truncate: true,
        },
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
