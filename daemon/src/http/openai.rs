//! The OpenAI / DeepSeek-compatible API (see `shared/reference/ollama.md` §2): thin
//! translators onto [`inference`], as Ollama's handlers are. A `/v1/chat/completions` request
//! becomes an [`inference::GenerateRequest`] (its sampling fields an `options` overlay,
//! validated by the same `options::resolve`); the chunks become one `chat.completion` (joined
//! by [`inference::collect`]) or `chat.completion.chunk` events. Reasoning goes out under
//! DeepSeek's `reasoning_content` and Ollama's `reasoning`; both are accepted on input.
//! `/v1/completions` is a templated prompt the same way, and `/v1/embeddings` the path of
//! `/api/embed`. Errors use the status table of [`Error`] and OpenAI's body ([`OpenAiError`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::prelude::{BASE64_STANDARD, Engine as _};
use futures::{Stream, StreamExt};
use whale_api as api;
use whale_api::openai as wire;
use whale_registry::ModelRef;

use super::error::OpenAiError;
use super::{Json, sse};
use crate::chat::{self, ChatMessage, Think, ThinkLevel};
use crate::error::Error;
use crate::inference::{self, Chunk, EmbedRequest, Finished, GenerateRequest, Input};
use crate::model::{self, LocalModel};
use crate::state::AppState;

type SharedState = State<Arc<AppState>>;

/// `system_fingerprint` of every answer.
const FINGERPRINT: &str = "fp_whale";

pub async fn chat_completions(
    State(state): SharedState,
    body: Result<Json<wire::ChatCompletionRequest>, Error>,
) -> Result<Response, OpenAiError> {
    let started = Instant::now();
    let Json(request) = body?;
    let stream = request.stream == Some(true);
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    let native = chat_request(request)?;
    let writer = Writer {
        id: format!("chatcmpl-{}", inference::random_id(24)),
        created: unix(SystemTime::now()),
        model: native.model.clone(),
        first: true,
        calls: 0,
    };
    let chunks = inference::generate(&state, native, started).await?;
    if stream {
        return Ok(sse::response(writer.chunks(chunks, include_usage)));
    }
    let whole = inference::collect(chunks).await?;
    Ok(axum::Json(writer.completion(whole)).into_response())
}

/// `/v1/completions`: a templated `/api/generate` (as Ollama's, not raw), its text in one
/// `text_completion` or streamed as `text_completion` chunks.
pub async fn completions(
    State(state): SharedState,
    body: Result<Json<wire::CompletionRequest>, Error>,
) -> Result<Response, OpenAiError> {
    let started = Instant::now();
    let Json(request) = body?;
    let stream = request.stream == Some(true);
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    let options = request.sampling.into_options(request.max_tokens);
    if request.prompt.is_empty() {
        return Err(Error::BadRequest("prompt is required".to_owned()).into());
    }
    let native = GenerateRequest {
        model: request.model.clone(),
        input: Input::Prompt {
            prompt: request.prompt,
            system: None,
            suffix: request.suffix,
            raw: false,
            template: None,
            context: Vec::new(),
        },
        options: Some(options),
        keep_alive: None,
        think: Think::Unset,
        format: None,
        logprobs: None,
        truncate: None,
        shift: None,
        require_tool_call: false,
    };
    let chunks = inference::generate(&state, native, started).await?;
    let writer = TextWriter {
        id: format!("cmpl-{}", inference::random_id(24)),
        created: unix(SystemTime::now()),
        model: request.model,
    };
    // Reasoning is not part of a text completion.
    let pieces = chunks.filter_map(|chunk| {
        futures::future::ready(match chunk {
            Ok(Chunk::Text { content, .. }) if content.is_empty() => None,
            Ok(Chunk::Text { content, .. }) => Some(Ok(Piece::Text(content))),
            Ok(Chunk::Done(finished)) => Some(Ok(Piece::Done(
                inference::done_reason(finished.summary.done_reason).to_owned(),
                usage_of(&finished),
            ))),
            Ok(Chunk::ToolCalls(_)) => None,
            Err(error) => Some(Err(error)),
        })
    });
    if stream {
        let events = pieces.flat_map(move |piece| {
            let out = match piece {
                Err(error) => vec![Err(error)],
                Ok(Piece::Text(text)) => vec![Ok(writer.completion(text, None, None))],
                Ok(Piece::Done(reason, usage)) => {
                    let mut out = vec![Ok(writer.completion(String::new(), Some(reason), None))];
                    if include_usage {
                        let mut last = writer.completion(String::new(), None, Some(usage));
                        last.choices.clear();
                        out.push(Ok(last));
                    }
                    out
                }
            };
            futures::stream::iter(out)
        });
        return Ok(sse::response(events));
    }
    let mut text = String::new();
    let mut pieces = std::pin::pin!(pieces);
    while let Some(piece) = pieces.next().await {
        match piece? {
            Piece::Text(piece) => text.push_str(&piece),
            Piece::Done(reason, usage) => {
                return Ok(
                    axum::Json(writer.completion(text, Some(reason), Some(usage))).into_response(),
                );
            }
        }
    }
    Err(Error::Internal("the generation ended without a final chunk".to_owned()).into())
}

/// What a text completion is made of.
enum Piece {
    Text(String),
    /// `finish_reason` and usage.
    Done(String, wire::Usage),
}

/// Builds the `text_completion` objects of one answer.
struct TextWriter {
    id: String,
    created: i64,
    model: String,
}

impl TextWriter {
    fn completion(
        &self,
        text: String,
        finish_reason: Option<String>,
        usage: Option<wire::Usage>,
    ) -> wire::Completion {
        wire::Completion {
            id: self.id.clone(),
            object: "text_completion".to_owned(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(FINGERPRINT.to_owned()),
            choices: vec![wire::CompletionChoice {
                text,
                index: 0,
                finish_reason,
            }],
            usage,
        }
    }
}

/// `/v1/embeddings`: `/api/embed`'s normalised vectors, as floats or base64 (little-endian
/// f32), cut to `dimensions`.
pub async fn embeddings(
    State(state): SharedState,
    body: Result<Json<wire::EmbeddingRequest>, Error>,
) -> Result<axum::Json<wire::EmbeddingList>, OpenAiError> {
    let Json(request) = body?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "invalid encoding format: {other} (float or base64)"
            ))
            .into());
        }
    };
    let inputs = request.input.into_vec();
    if inputs.is_empty() {
        return Err(Error::BadRequest("invalid input".to_owned()).into());
    }
    let (mut embeddings, _) = inference::embed(
        &state,
        EmbedRequest {
            model: request.model.clone(),
            inputs,
            options: None,
            keep_alive: None,
            truncate: true,
        },
    )
    .await?;
    embeddings.normalize();
    embeddings.shorten(request.dimensions.unwrap_or(0) as usize);
    let data = embeddings
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| wire::Embedding {
            object: "embedding".to_owned(),
            embedding: if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                wire::EmbeddingVector::Base64(BASE64_STANDARD.encode(bytes))
            } else {
                wire::EmbeddingVector::Float(vector)
            },
            index: index as u32,
        })
        .collect();
    let tokens = u64::from(embeddings.prompt_tokens);
    Ok(axum::Json(wire::EmbeddingList {
        object: "list".to_owned(),
        data,
        model: request.model,
        usage: wire::EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

pub async fn models(State(state): SharedState) -> Result<axum::Json<wire::ModelList>, OpenAiError> {
    let stored = state.store.list().await.map_err(Error::from)?;
    let mut data: Vec<wire::Model> = stored
        .iter()
        .map(|entry| model_entry(&entry.reference, entry.modified))
        .collect();
    // The DeepSeek API's names, where the models they stand for are here.
    for (alias, target) in model::aliases_present(&state.store, &state.config) {
        if let Some(entry) = stored.iter().find(|entry| entry.reference == target) {
            let mut listed = model_entry(&entry.reference, entry.modified);
            alias.clone_into(&mut listed.id);
            data.push(listed);
        }
    }
    Ok(axum::Json(wire::ModelList {
        object: "list".to_owned(),
        data,
    }))
}

pub async fn model(
    State(state): SharedState,
    Path(name): Path<String>,
) -> Result<axum::Json<wire::Model>, OpenAiError> {
    let model = LocalModel::find_or_alias(&state.store, &state.config, &name).await?;
    let mut entry = model_entry(&model.reference, model.modified);
    if model::alias_target(&state.config, &name).is_some() && entry.id != name {
        entry.id.clone_from(&name);
    }
    Ok(axum::Json(entry))
}

/// A model as `/v1/models` lists it: the name `/api/tags` shows, owned by its namespace.
fn model_entry(reference: &ModelRef, modified: SystemTime) -> wire::Model {
    wire::Model {
        id: reference.short(),
        object: "model".to_owned(),
        created: unix(modified),
        owned_by: reference.namespace().to_owned(),
    }
}

fn unix(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// The request an OpenAI chat request means.
fn chat_request(request: wire::ChatCompletionRequest) -> Result<GenerateRequest, Error> {
    if request.messages.is_empty() {
        return Err(Error::BadRequest(
            "messages: [] is too short - 'messages'".to_owned(),
        ));
    }
    let think = think(&request)?;
    let format = format(request.response_format)?;
    let tools = tools(
        request.tools.unwrap_or_default(),
        request.tool_choice.as_ref(),
    )?;
    // `required` or a named function (the tools are narrowed to it): a call must come.
    let require_tool_call = match &request.tool_choice {
        Some(serde_json::Value::String(mode)) => mode == "required",
        Some(serde_json::Value::Object(_)) => true,
        _ => false,
    };
    let options = request
        .sampling
        .into_options(request.max_completion_tokens.or(request.max_tokens));
    Ok(GenerateRequest {
        input: Input::Chat {
            messages: messages(&request.model, request.messages)?,
            tools,
        },
        model: request.model,
        options: Some(options),
        keep_alive: None,
        think,
        format,
        logprobs: inference::logprobs_wanted(request.logprobs, request.top_logprobs)?,
        truncate: None,
        shift: None,
        require_tool_call,
    })
}

/// The tools the model is shown, as `tool_choice` narrows them: `"none"` shows none (so the
/// model answers in text and nothing is read as a call), a named function shows that one
/// alone; `"auto"`, `"required"` or no choice show them all.
fn tools(
    tools: Vec<whale_api::chat::Tool>,
    choice: Option<&serde_json::Value>,
) -> Result<Vec<serde_json::Value>, Error> {
    let bad = |why: String| Err(Error::BadRequest(format!("tool_choice: {why}")));
    let named = match choice {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(mode)) => match mode.as_str() {
            "auto" | "required" => None,
            "none" => return Ok(Vec::new()),
            other => return bad(format!("{other:?} is not one of none, auto, required")),
        },
        Some(object) => match object["function"]["name"].as_str() {
            Some(name) if object["type"] == "function" => Some(name),
            _ => {
                return bad(format!(
                    "{object} is not {{\"type\": \"function\", \"function\": {{\"name\": …}}}}"
                ));
            }
        },
    };
    if let Some(name) = named
        && !tools.iter().any(|tool| tool.function.name == name)
    {
        return bad(format!("function {name:?} is not among the tools"));
    }
    Ok(tools
        .into_iter()
        .filter(|tool| named.is_none_or(|name| tool.function.name == name))
        .map(|tool| serde_json::to_value(tool).unwrap_or_default())
        .collect())
}

/// `reasoning_effort` (or `reasoning.effort`) as Ollama maps it to `think`; else DeepSeek's
/// `thinking: {"type": "enabled" | "disabled"}`; else the model's default.
fn think(request: &wire::ChatCompletionRequest) -> Result<Think, Error> {
    let effort = match (&request.reasoning_effort, &request.reasoning) {
        (Some(effort), _) => Some(("reasoning_effort", effort.as_str())),
        (
            None,
            Some(wire::ReasoningOptions {
                effort: Some(effort),
            }),
        ) => Some(("reasoning.effort", effort.as_str())),
        _ => None,
    };
    if let Some((field, effort)) = effort {
        let think = match effort {
            "none" => Think::Off,
            "minimal" | "low" => Think::Level(ThinkLevel::Low),
            "medium" => Think::Level(ThinkLevel::Medium),
            "high" => Think::Level(ThinkLevel::High),
            "max" | "xhigh" | "ultra" => Think::Level(ThinkLevel::Max),
            other => {
                return Err(Error::BadRequest(format!(
                    "{field}: invalid value {other:?} (expected none, minimal, low, medium, high, xhigh or max)"
                )));
            }
        };
        return Ok(think);
    }
    match request
        .thinking
        .as_ref()
        .map(|thinking| thinking.kind.as_str())
    {
        None => Ok(Think::Unset),
        Some("enabled") => Ok(Think::On),
        Some("disabled") => Ok(Think::Off),
        Some(other) => Err(Error::BadRequest(format!(
            "thinking.type: invalid value {other:?} (expected enabled or disabled)"
        ))),
    }
}

/// `response_format` as the native `format`.
fn format(response_format: Option<wire::ResponseFormat>) -> Result<Option<api::Format>, Error> {
    Ok(match response_format {
        None | Some(wire::ResponseFormat::Text) => None,
        Some(wire::ResponseFormat::JsonObject) => Some(api::Format::Json),
        Some(wire::ResponseFormat::JsonSchema { json_schema }) => {
            Some(api::Format::Schema(json_schema.schema.ok_or_else(
                || Error::BadRequest("response_format.json_schema.schema is required".to_owned()),
            )?))
        }
    })
}

/// The conversation: text parts joined, reasoning (under either name) as `thinking` (dropped
/// from turns before the last user message), tool-call arguments parsed from their JSON
/// strings, and a tool result's name taken from the call it answers.
fn messages(model: &str, messages: Vec<wire::ChatMessage>) -> Result<Vec<ChatMessage>, Error> {
    let mut call_names: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(messages.len());
    for (index, message) in messages.into_iter().enumerate() {
        let content = match &message.content {
            None => String::new(),
            Some(wire::Content::Text(text)) => text.clone(),
            Some(content @ wire::Content::Parts(parts)) => {
                if parts
                    .iter()
                    .any(|part| !matches!(part, wire::ContentPart::Text { .. }))
                {
                    return Err(Error::BadRequest(format!(
                        "messages[{index}].content: \"{model}\" supports only text parts"
                    )));
                }
                content.text()
            }
        };
        let mut tool_calls = Vec::new();
        for (position, call) in message.tool_calls.iter().flatten().enumerate() {
            let arguments = if call.function.arguments.trim().is_empty() {
                serde_json::Value::Object(serde_json::Map::new())
            } else {
                let parsed: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&call.function.arguments).map_err(|error| {
                        Error::BadRequest(format!(
                            "messages[{index}].tool_calls[{position}].function.arguments: not a JSON object: {error}"
                        ))
                    })?;
                serde_json::Value::Object(parsed)
            };
            if let Some(id) = &call.id {
                call_names.insert(id.clone(), call.function.name.clone());
            }
            tool_calls.push(chat::ToolCall {
                name: call.function.name.clone(),
                arguments,
            });
        }
        let tool_name = message.name.clone().or_else(|| {
            message
                .tool_call_id
                .as_ref()
                .and_then(|id| call_names.get(id).cloned())
        });
        out.push(ChatMessage {
            thinking: message.reasoning_text().map(str::to_owned),
            role: message.role,
            content,
            tool_calls,
            tool_name,
        });
    }
    Ok(out)
}

/// Writes one completion as OpenAI objects; `id` and `created` are the same in every chunk of
/// a stream.
struct Writer {
    id: String,
    created: i64,
    model: String,
    /// No chunk sent yet: the next delta carries the role.
    first: bool,
    /// Tool calls sent so far, which numbers the next ones.
    calls: usize,
}

impl Writer {
    /// The non-streaming answer.
    fn completion(&self, whole: inference::Whole) -> wire::ChatCompletion {
        let tool_calls = (!whole.tool_calls.is_empty()).then(|| {
            whole
                .tool_calls
                .into_iter()
                .enumerate()
                .map(|(index, call)| openai_tool_call(index, call))
                .collect::<Vec<_>>()
        });
        let done_reason = inference::done_reason(whole.finished.summary.done_reason);
        let finish_reason = finish_reason(done_reason, tool_calls.is_some());
        let thinking = (!whole.thinking.is_empty()).then_some(whole.thinking);
        wire::ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".to_owned(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(FINGERPRINT.to_owned()),
            choices: vec![wire::ChatChoice {
                index: 0,
                message: wire::ChatMessage {
                    role: "assistant".to_owned(),
                    content: Some(wire::Content::Text(whole.content)),
                    reasoning_content: thinking.clone(),
                    reasoning: thinking,
                    tool_calls,
                    ..wire::ChatMessage::default()
                },
                finish_reason: Some(finish_reason),
                logprobs: (!whole.logprobs.is_empty()).then(|| openai_logprobs(whole.logprobs)),
            }],
            usage: Some(usage_of(&whole.finished)),
        }
    }

    /// The SSE chunks: deltas (the first with the role; reasoning before content when a piece
    /// carries both), one chunk with `finish_reason`, and the usage when asked for.
    fn chunks(
        mut self,
        chunks: impl Stream<Item = Result<Chunk, Error>> + Send + 'static,
        include_usage: bool,
    ) -> impl Stream<Item = Result<wire::ChatCompletionChunk, Error>> + Send + 'static {
        chunks.flat_map(move |chunk| {
            let out = match chunk {
                Err(error) => vec![Err(error)],
                Ok(Chunk::Text {
                    content,
                    thinking,
                    logprobs,
                }) => {
                    let mut out = Vec::new();
                    if !thinking.is_empty() {
                        out.push(Ok(self.delta(
                            wire::Delta {
                                reasoning_content: Some(thinking.clone()),
                                reasoning: Some(thinking),
                                ..wire::Delta::default()
                            },
                            None,
                        )));
                    }
                    if !content.is_empty() {
                        out.push(Ok(self.delta(
                            wire::Delta {
                                content: Some(content),
                                ..wire::Delta::default()
                            },
                            None,
                        )));
                    }
                    if !logprobs.is_empty() {
                        if out.is_empty() {
                            out.push(Ok(self.delta(wire::Delta::default(), None)));
                        }
                        if let Some(Ok(last)) = out.last_mut() {
                            last.choices[0].logprobs = Some(openai_logprobs(logprobs));
                        }
                    }
                    out
                }
                Ok(Chunk::ToolCalls(calls)) => {
                    let calls = calls
                        .into_iter()
                        .map(|call| {
                            self.calls += 1;
                            openai_tool_call(self.calls - 1, call)
                        })
                        .collect();
                    let delta = wire::Delta {
                        tool_calls: Some(calls),
                        ..wire::Delta::default()
                    };
                    vec![Ok(self.delta(delta, None))]
                }
                Ok(Chunk::Done(finished)) => {
                    let done_reason = inference::done_reason(finished.summary.done_reason);
                    let reason = finish_reason(done_reason, self.calls > 0);
                    let mut out = vec![Ok(self.delta(wire::Delta::default(), Some(reason)))];
                    if include_usage {
                        out.push(Ok(self.chunk(Vec::new(), Some(usage_of(&finished)))));
                    }
                    out
                }
            };
            futures::stream::iter(out)
        })
    }

    /// A chunk with one delta; the first of the stream names the role.
    fn delta(
        &mut self,
        mut delta: wire::Delta,
        finish_reason: Option<String>,
    ) -> wire::ChatCompletionChunk {
        if std::mem::take(&mut self.first) {
            delta.role = Some("assistant".to_owned());
        }
        let choice = wire::ChunkChoice {
            index: 0,
            delta,
            finish_reason,
            logprobs: None,
        };
        self.chunk(vec![choice], None)
    }

    fn chunk(
        &self,
        choices: Vec<wire::ChunkChoice>,
        usage: Option<wire::Usage>,
    ) -> wire::ChatCompletionChunk {
        wire::ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(FINGERPRINT.to_owned()),
            choices,
            usage,
        }
    }
}

/// OpenAI's `finish_reason` from Ollama's `done_reason`: `tool_calls` when the model stopped
/// after calling tools.
fn finish_reason(done_reason: &str, called: bool) -> String {
    if called && done_reason == "stop" {
        "tool_calls".to_owned()
    } else {
        done_reason.to_owned()
    }
}

/// Token counts. The prompt is every token in the context before the answer; the part reused
/// from the slot's cache and the part evaluated are DeepSeek's `prompt_cache_hit_tokens` and
/// `prompt_cache_miss_tokens`.
fn usage_of(finished: &Finished) -> wire::Usage {
    let summary = &finished.summary;
    let completion_tokens = u64::from(summary.eval_count);
    let evaluated = u64::from(summary.prompt_eval_count);
    let prompt_tokens = (summary.context.len() as u64)
        .saturating_sub(completion_tokens)
        .max(evaluated);
    wire::Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        completion_tokens_details: None,
        prompt_cache_hit_tokens: Some(prompt_tokens - evaluated),
        prompt_cache_miss_tokens: Some(evaluated),
    }
}

/// Log probabilities in OpenAI's shape.
fn openai_logprobs(logprobs: Vec<crate::engine::Logprobs>) -> wire::ChoiceLogprobs {
    wire::ChoiceLogprobs {
        content: logprobs
            .into_iter()
            .map(|entry| wire::TokenLogprob {
                token: entry.chosen.token,
                logprob: f64::from(entry.chosen.logprob),
                bytes: Some(entry.chosen.bytes),
                top_logprobs: entry
                    .top
                    .into_iter()
                    .map(|top| wire::TopLogprob {
                        token: top.token,
                        logprob: f64::from(top.logprob),
                        bytes: Some(top.bytes),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// A parsed tool call in OpenAI's shape: `call_` + 8 random characters as its id (as Ollama
/// gives), the arguments as a JSON string.
fn openai_tool_call(index: usize, call: chat::ToolCall) -> wire::ToolCall {
    wire::ToolCall {
        id: Some(format!("call_{}", inference::random_id(8))),
        index: Some(index as u32),
        kind: "function".to_owned(),
        function: wire::FunctionCall {
            arguments: crate::chat::tools::arguments_text(&call.arguments),
            name: call.name,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<GenerateRequest, Error> {
        chat_request(serde_json::from_value(json).unwrap())
    }

    fn messages_of(request: &GenerateRequest) -> &[ChatMessage] {
        match &request.input {
            Input::Chat { messages, .. } => messages,
            Input::Prompt { .. } => panic!("a chat"),
        }
    }

    #[test]
    fn sampling_fields_become_options_and_formats() {
        let native = request(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5, "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9,
            "seed": 3, "stop": "END", "frequency_penalty": 0.1, "presence_penalty": 0.2,
            "response_format": {"type": "json_object"}}))
        .unwrap();
        let options = native.options.unwrap();
        assert_eq!(options.num_predict, Some(7));
        assert_eq!(options.temperature, Some(0.5));
        assert_eq!(options.top_p, Some(0.9));
        assert_eq!(options.seed, Some(3));
        assert_eq!(options.stop, Some(vec!["END".to_owned()]));
        assert_eq!(options.frequency_penalty, Some(0.1));
        assert_eq!(options.presence_penalty, Some(0.2));
        assert_eq!(native.format, Some(api::Format::Json));
        assert_eq!(native.think, Think::Unset);

        let schema = serde_json::json!({"type": "object"});
        let native = request(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}))
        .unwrap();
        assert_eq!(native.format, Some(api::Format::Schema(schema)));
    }

    #[test]
    fn reasoning_effort_and_thinking_map_to_think() {
        let think = |extra: serde_json::Value| {
            let mut json =
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            json.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            request(json).map(|native| native.think)
        };
        for (effort, want) in [
            ("none", Think::Off),
            ("minimal", Think::Level(ThinkLevel::Low)),
            ("medium", Think::Level(ThinkLevel::Medium)),
            ("high", Think::Level(ThinkLevel::High)),
            ("xhigh", Think::Level(ThinkLevel::Max)),
        ] {
            let got = think(serde_json::json!({"reasoning_effort": effort})).unwrap();
            assert_eq!(got, want, "{effort}");
        }
        let got = think(serde_json::json!({"reasoning": {"effort": "low"}})).unwrap();
        assert_eq!(got, Think::Level(ThinkLevel::Low));
        let got = think(serde_json::json!({"thinking": {"type": "disabled"}})).unwrap();
        assert_eq!(got, Think::Off);
        let error = think(serde_json::json!({"reasoning_effort": "lots"})).unwrap_err();
        assert!(
            error.to_string().starts_with("reasoning_effort: "),
            "{error}"
        );
        assert!(think(serde_json::json!({"thinking": {"type": "maybe"}})).is_err());
    }

    #[test]
    fn messages_carry_reasoning_and_tool_calls_across() {
        let native = request(serde_json::json!({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null, "reasoning_content": "r",
             "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
            {"role": "tool", "content": "2", "tool_call_id": "call_1"}]}))
        .unwrap();
        let messages = messages_of(&native);
        assert_eq!(messages[0].content, "ab");
        let assistant = &messages[1];
        assert_eq!(assistant.thinking.as_deref(), Some("r"));
        let call = &assistant.tool_calls[0];
        assert_eq!(call.name, "f");
        assert_eq!(call.arguments["x"], 1);
        assert_eq!(messages[2].tool_name.as_deref(), Some("f"));

        let error = request(serde_json::json!({"model": "m", "messages": [
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1"}}]}]}))
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("messages[0].tool_calls[0].function.arguments"),
            "{error}"
        );
        assert!(request(serde_json::json!({"model": "m", "messages": []})).is_err());
    }

    #[test]
    fn tool_choice_narrows_the_tools_shown() {
        let with = |choice: serde_json::Value| {
            request(serde_json::json!({"model": "m", "tool_choice": choice,
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "a"}},
                          {"type": "function", "function": {"name": "b"}}]}))
        };
        let names = |request: &GenerateRequest| match &request.input {
            Input::Chat { tools, .. } => tools
                .iter()
                .map(|tool| tool["function"]["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>(),
            Input::Prompt { .. } => panic!("a chat"),
        };
        assert_eq!(names(&with(serde_json::json!("auto")).unwrap()), ["a", "b"]);
        assert_eq!(
            names(&with(serde_json::json!("required")).unwrap()),
            ["a", "b"]
        );
        assert!(names(&with(serde_json::json!("none")).unwrap()).is_empty());
        let only_b = serde_json::json!({"type": "function", "function": {"name": "b"}});
        assert_eq!(names(&with(only_b).unwrap()), ["b"]);
        for bad in [
            serde_json::json!("sometimes"),
            serde_json::json!({"type": "function", "function": {"name": "c"}}),
            serde_json::json!({"name": "a"}),
        ] {
            let error = with(bad).unwrap_err().to_string();
            assert!(error.starts_with("tool_choice: "), "{error}");
        }
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason("stop", false), "stop");
        assert_eq!(finish_reason("stop", true), "tool_calls");
        assert_eq!(finish_reason("length", true), "length");
    }
}
