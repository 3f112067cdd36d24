//! Models another server runs: a Modelfile `FROM openai://host:port/v1/<model>` makes a model
//! whose chats and generations whaled sends to that OpenAI-compatible server (vLLM, `SGLang`,
//! another whaled), streaming, so a team's cluster answers under the same API and names as the
//! models on this machine.
//!
//! The model is a manifest without weights: its config blob names the upstream (Ollama's
//! `remote_host` and `remote_model`, plus `remote_key_env`), and its text layers (`SYSTEM`,
//! `PARAMETER`s, `MESSAGE`s, `LICENSE`) apply as they do to a local model. The upstream's own
//! chat template renders the conversation. Reasoning maps both ways: the upstream's
//! `reasoning_content` (or `reasoning`) becomes `thinking`, and the reasoning a client sends
//! back with the current turn goes up as `reasoning_content`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use serde_json::{Map, Value, json};
use url::Url;
use whale_api as api;
use whale_api::stream::LineSplitter;
use whale_registry::manifest::media_type;
use whale_registry::{Manifest, ModelRef, Store};

use crate::chat::{ChatMessage, Think, ToolCall};
use crate::engine::{DoneReason, Summary};
use crate::error::Error;
use crate::inference::{Chunk, Finished, GenerateRequest, Input, with_history};
use crate::model::HistoryMessage;

/// `FROM openai://host:port/v1/<model>`: an upstream over plain HTTP (a server on the LAN).
pub const SCHEME: &str = "openai://";
/// `FROM openai+https://host/v1/<model>`: an upstream over TLS.
pub const SCHEME_TLS: &str = "openai+https://";
/// The only variables whose value whaled sends upstream as a bearer key: a Modelfile names one
/// (`?key_env=WHALE_UPSTREAM_KEY_VLLM`), and it cannot name any other secret of whaled's
/// environment to send to a host of its choosing.
pub const KEY_PREFIX: &str = "WHALE_UPSTREAM_KEY";

/// Where a remote model's generations go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The API's base, ending in `/v1` (requests go to `{base}/chat/completions`).
    pub base: Url,
    /// The model's name on the upstream.
    pub model: String,
    /// The variable holding the bearer key, if the upstream wants one.
    pub key_env: Option<String>,
}

impl Upstream {
    /// Reads a `FROM` naming an upstream; `None` when `from` is not an upstream URL (a model
    /// name or a file).
    pub fn parse(from: &str) -> Option<Result<Self, Error>> {
        let (scheme, rest) = if let Some(rest) = from.strip_prefix(SCHEME) {
            ("http", rest)
        } else if let Some(rest) = from.strip_prefix(SCHEME_TLS) {
            ("https", rest)
        } else {
            return None;
        };
        Some(Self::parse_parts(scheme, rest).map_err(|problem| {
            Error::BadRequest(format!(
                "FROM {from}: {problem}; write it as {SCHEME}host:port/v1/MODEL \
                 (or {SCHEME_TLS}…), with ?key_env={KEY_PREFIX}_NAME for a key"
            ))
        }))
    }

    fn parse_parts(scheme: &str, rest: &str) -> Result<Self, String> {
        let url = Url::parse(&format!("{scheme}://{rest}")).map_err(|error| error.to_string())?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err("no host".to_owned());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "a key does not belong in the address; name its variable with key_env".to_owned(),
            );
        }
        let path = url.path();
        let Some(at) = path.find("/v1/") else {
            return Err("the path must be the API's /v1/ followed by the model's name".to_owned());
        };
        let model = &path[at + 4..];
        if model.is_empty() {
            return Err("no model named after /v1/".to_owned());
        }
        let mut key_env = None;
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "key_env" => key_env = Some(value.into_owned()),
                other => return Err(format!("unknown setting {other:?} (only key_env)")),
            }
        }
        if let Some(name) = &key_env {
            check_key_env(name)?;
        }
        let mut base = url.clone();
        base.set_path(&path[..at + 3]);
        base.set_query(None);
        base.set_fragment(None);
        Ok(Self {
            base,
            model: model.to_owned(),
            key_env,
        })
    }

    /// The `FROM` that makes this upstream, as `ollama show --modelfile` writes it.
    pub fn from_line(&self) -> String {
        let scheme = if self.base.scheme() == "https" {
            SCHEME_TLS
        } else {
            SCHEME
        };
        let host = self.base.host_str().unwrap_or_default();
        let port = self
            .base
            .port()
            .map(|port| format!(":{port}"))
            .unwrap_or_default();
        let key = self
            .key_env
            .as_ref()
            .map(|name| format!("?key_env={name}"))
            .unwrap_or_default();
        format!(
            "{scheme}{host}{port}{}/{}{key}",
            self.base.path(),
            self.model
        )
    }

    /// The config blob's fields naming the upstream.
    pub fn config(&self) -> Value {
        json!({
            "model_format": "remote",
            "remote_host": self.base.as_str(),
            "remote_model": self.model,
            "remote_key_env": self.key_env,
        })
    }

    /// The upstream a config blob names, if it names one.
    pub fn from_config(config: &Value) -> Option<Self> {
        let base = Url::parse(config["remote_host"].as_str()?).ok()?;
        let model = config["remote_model"].as_str()?.to_owned();
        let key_env = config["remote_key_env"].as_str().map(str::to_owned);
        if !matches!(base.scheme(), "http" | "https")
            || key_env
                .as_deref()
                .is_some_and(|name| check_key_env(name).is_err())
        {
            return None;
        }
        Some(Self {
            base,
            model,
            key_env,
        })
    }

    /// The bearer key, read from the variable at each request (so a rotated key needs no
    /// new model); a variable that is not set is an error naming it.
    fn key(&self) -> Result<Option<String>, Error> {
        let Some(name) = &self.key_env else {
            return Ok(None);
        };
        match std::env::var(name) {
            Ok(key) if !key.is_empty() => Ok(Some(key)),
            _ => Err(Error::Upstream {
                status: None,
                message: format!(
                    "the key for {} is read from {name}, which is not set in whaled's \
                     environment; set it and restart whaled",
                    self.base
                ),
            }),
        }
    }
}

fn check_key_env(name: &str) -> Result<(), String> {
    let shaped = name
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if shaped && name.starts_with(KEY_PREFIX) {
        Ok(())
    } else {
        Err(format!(
            "key_env {name:?} must be a variable whose name starts with {KEY_PREFIX} \
             (e.g. {KEY_PREFIX}_VLLM), so that no other variable is sent upstream"
        ))
    }
}

/// A stored model that another server runs.
#[derive(Debug, Clone)]
pub struct RemoteModel {
    pub reference: ModelRef,
    pub upstream: Upstream,
    pub system: Option<String>,
    pub params: Map<String, Value>,
    pub messages: Vec<HistoryMessage>,
    pub license: Vec<String>,
}

impl RemoteModel {
    /// The remote model `name` resolves to (DeepSeek API aliases included); `None` when it is
    /// absent or a local model.
    pub async fn find(store: &Store, config: &crate::Config, name: &str) -> Option<Self> {
        let reference = ModelRef::parse(name).ok()?;
        let reference = store.resolve(&reference).or_else(|| {
            let (target, _) = crate::model::alias_target(config, name)?;
            store.resolve(&ModelRef::parse(target).ok()?)
        })?;
        let bytes = store.read_manifest_bytes(&reference).await.ok()?;
        let manifest = Manifest::parse(&bytes).ok()?;
        Self::of_manifest(store, reference, &manifest)
    }

    /// The remote model a manifest describes, if it describes one.
    pub fn of_manifest(store: &Store, reference: ModelRef, manifest: &Manifest) -> Option<Self> {
        if manifest.layer(media_type::MODEL).is_some() {
            return None;
        }
        let upstream = upstream_of(store, manifest)?;
        let text = |kind: &str| -> Vec<String> {
            manifest
                .layers
                .iter()
                .filter(|layer| layer.media_type == kind && layer.size <= 1 << 20)
                .filter_map(|layer| std::fs::read_to_string(store.blob_path(&layer.digest)).ok())
                .collect()
        };
        Some(Self {
            reference,
            upstream,
            system: text(media_type::SYSTEM).pop(),
            params: text(media_type::PARAMS)
                .pop()
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_default(),
            messages: text(media_type::MESSAGES)
                .pop()
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_default(),
            license: text(media_type::LICENSE),
        })
    }

    pub fn name(&self) -> String {
        self.reference.short()
    }
}

/// The upstream a manifest's config names (a manifest with no weights).
pub fn upstream_of(store: &Store, manifest: &Manifest) -> Option<Upstream> {
    if manifest.config.size > 1 << 20 {
        return None;
    }
    let bytes = std::fs::read(store.blob_path(&manifest.config.digest)).ok()?;
    Upstream::from_config(&serde_json::from_slice(&bytes).ok()?)
}

/// How long whaled waits for an upstream to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One client for every upstream: connections are kept and reused.
fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("whaled/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS-capable HTTP client")
    })
}

/// Sends a generation upstream; the stream yields its chunks as the upstream streams them,
/// the last being [`Chunk::Done`] or an error. Dropping the stream closes the upstream
/// request.
pub async fn generate(
    model: &RemoteModel,
    request: GenerateRequest,
    started: Instant,
) -> Result<impl Stream<Item = Result<Chunk, Error>> + Send + 'static + use<>, Error> {
    if request.logprobs.is_some() {
        return Err(Error::BadRequest(format!(
            "log probabilities are not available from '{}', a model served by {}",
            model.name(),
            model.upstream.base
        )));
    }
    let think = request.think;
    let (path, mut body) = request_body(model, request)?;
    body.insert("model".to_owned(), model.upstream.model.clone().into());
    body.insert("stream".to_owned(), true.into());
    body.insert("stream_options".to_owned(), json!({"include_usage": true}));
    let url = format!(
        "{}/{path}",
        model.upstream.base.as_str().trim_end_matches('/')
    );
    let mut upstream = client().post(&url).json(&body);
    if let Some(key) = model.upstream.key()? {
        upstream = upstream.bearer_auth(key);
    }
    let response = upstream.send().await.map_err(|error| Error::Upstream {
        status: None,
        message: format!("cannot reach {url}: {}", error_chain(&error)),
    })?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(Error::Upstream {
            status: Some(status.as_u16()),
            message: format!("{url} answered {status}: {}", error_message(&text)),
        });
    }
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut reader = Reader::new(think == Think::Off, started);
        let mut bytes = response.bytes_stream();
        let mut lines = LineSplitter::new();
        loop {
            let next = bytes.next().await;
            let ended = next.is_none();
            let chunks = match next {
                Some(Ok(data)) => {
                    lines.push(&data);
                    reader.lines(&mut lines)
                }
                Some(Err(error)) => vec![Err(Error::Upstream {
                    status: None,
                    message: format!("{url} broke off: {}", error_chain(&error)),
                })],
                None => reader.end(),
            };
            let last = ended
                || chunks
                    .iter()
                    .any(|chunk| matches!(chunk, Ok(Chunk::Done(_)) | Err(_)));
            for chunk in chunks {
                if sender.send(chunk).await.is_err() {
                    return; // the client went away; dropping the response ends the request
                }
            }
            if last {
                return;
            }
        }
    });
    Ok(futures::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|chunk| (chunk, receiver)) },
    ))
}

/// The upstream path and body of a request: a chat for conversations and templated prompts,
/// a completion for raw prompts.
fn request_body(
    model: &RemoteModel,
    request: GenerateRequest,
) -> Result<(&'static str, Map<String, Value>), Error> {
    let mut body = sampling(&model.params, request.options.as_ref())?;
    if let Some(format) = &request.format {
        body.insert(
            "response_format".to_owned(),
            match format {
                api::Format::Json => json!({"type": "json_object"}),
                api::Format::Schema(schema) => json!({
                    "type": "json_schema",
                    "json_schema": {"name": "response", "schema": schema},
                }),
            },
        );
    }
    let path = match request.input {
        Input::Chat { messages, tools } => {
            let messages = with_history(model.system.as_deref(), &model.messages, messages)?;
            body.insert(
                "messages".to_owned(),
                messages.iter().map(wire_message).collect(),
            );
            if !tools.is_empty() {
                body.insert("tools".to_owned(), Value::Array(tools));
            }
            "chat/completions"
        }
        Input::Prompt {
            prompt,
            raw: true,
            suffix,
            ..
        } => {
            body.insert("prompt".to_owned(), prompt.into());
            if let Some(suffix) = suffix.filter(|suffix| !suffix.is_empty()) {
                body.insert("suffix".to_owned(), suffix.into());
            }
            "completions"
        }
        Input::Prompt {
            prompt,
            system,
            suffix,
            template,
            context,
            ..
        } => {
            if template.is_some() || !context.is_empty() || suffix.is_some_and(|s| !s.is_empty()) {
                return Err(Error::BadRequest(format!(
                    "'{}' runs on {}: template, context and suffix do not apply to it",
                    model.name(),
                    model.upstream.base
                )));
            }
            let mut messages = Vec::new();
            if let Some(system) = system.or_else(|| model.system.clone()) {
                messages.push(json!({"role": "system", "content": system}));
            }
            messages.push(json!({"role": "user", "content": prompt}));
            body.insert("messages".to_owned(), Value::Array(messages));
            "chat/completions"
        }
    };
    Ok((path, body))
}

/// The model's parameters overlaid by the request's options, as OpenAI sampling fields. Only
/// what is set is sent: the upstream's defaults apply to the rest.
fn sampling(
    params: &Map<String, Value>,
    request: Option<&api::Options>,
) -> Result<Map<String, Value>, Error> {
    let mut merged = params.clone();
    if let Some(options) = request {
        let Value::Object(set) =
            serde_json::to_value(options).map_err(|error| Error::Internal(error.to_string()))?
        else {
            unreachable!("options serialise as an object");
        };
        merged.extend(set.into_iter().filter(|(_, value)| !value.is_null()));
    }
    let mut body = Map::new();
    for (ours, theirs) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("min_p", "min_p"),
        ("seed", "seed"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
        ("stop", "stop"),
    ] {
        if let Some(value) = merged.get(ours).filter(|value| !value.is_null()) {
            body.insert(theirs.to_owned(), value.clone());
        }
    }
    if let Some(limit) = merged
        .get("num_predict")
        .and_then(Value::as_i64)
        .filter(|limit| *limit > 0)
    {
        body.insert("max_tokens".to_owned(), limit.into());
    }
    Ok(body)
}

/// A message in OpenAI's shape. Reasoning goes up as `reasoning_content` where the
/// conversation kept it (the current turn's; earlier turns' is dropped before this).
fn wire_message(message: &ChatMessage) -> Value {
    let mut out = Map::new();
    out.insert("role".to_owned(), message.role.clone().into());
    out.insert("content".to_owned(), message.content.clone().into());
    if let Some(thinking) = message.thinking.as_ref().filter(|t| !t.is_empty()) {
        out.insert("reasoning_content".to_owned(), thinking.clone().into());
    }
    if !message.tool_calls.is_empty() {
        let calls: Vec<Value> = message
            .tool_calls
            .iter()
            .enumerate()
            .map(|(index, call)| {
                json!({
                    "id": format!("call_{index}"),
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": match &call.arguments {
                            Value::String(text) => text.clone(),
                            other => other.to_string(),
                        },
                    },
                })
            })
            .collect();
        out.insert("tool_calls".to_owned(), Value::Array(calls));
    }
    if let Some(name) = &message.tool_name {
        out.insert("name".to_owned(), name.clone().into());
    }
    Value::Object(out)
}

/// Turns the upstream's server-sent events into chunks.
struct Reader {
    /// `think: false`: reasoning the upstream sends anyway is not passed on.
    drop_reasoning: bool,
    started: Instant,
    first_token: Option<Instant>,
    /// Tool calls by index, their arguments growing piece by piece.
    calls: BTreeMap<u64, (String, String)>,
    finish: Option<String>,
    prompt_tokens: u32,
    completion_tokens: u32,
    done: bool,
}

impl Reader {
    fn new(drop_reasoning: bool, started: Instant) -> Self {
        Self {
            drop_reasoning,
            started,
            first_token: None,
            calls: BTreeMap::new(),
            finish: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            done: false,
        }
    }

    /// The chunks of every whole line `lines` holds; it keeps the unfinished rest.
    fn lines(&mut self, lines: &mut LineSplitter) -> Vec<Result<Chunk, Error>> {
        let mut out = Vec::new();
        while let Some(line) = lines.next_line() {
            // Comments, event names and blank separators carry nothing for a chat.
            let Some(data) = whale_api::stream::sse_data(line) else {
                continue;
            };
            match data {
                b"[DONE]" => out.extend(self.end()),
                data => match serde_json::from_slice::<Value>(data) {
                    Ok(event) => out.extend(self.event(&event)),
                    Err(error) => out.push(Err(Error::Upstream {
                        status: None,
                        message: format!("the upstream sent an event that is not JSON: {error}"),
                    })),
                },
            }
            if self.done {
                break;
            }
        }
        out
    }

    fn event(&mut self, event: &Value) -> Vec<Result<Chunk, Error>> {
        if !event["error"].is_null() {
            return vec![Err(Error::Upstream {
                status: None,
                message: error_message(&event.to_string()),
            })];
        }
        if let Some(usage) = event.get("usage").filter(|usage| usage.is_object()) {
            let count =
                |key: &str| u32::try_from(usage[key].as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
            self.prompt_tokens = count("prompt_tokens");
            self.completion_tokens = count("completion_tokens");
        }
        let mut out = Vec::new();
        let Some(choice) = event["choices"].get(0) else {
            return out;
        };
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish = Some(reason.to_owned());
        }
        let delta = &choice["delta"];
        let content = delta["content"]
            .as_str()
            .or_else(|| choice["text"].as_str())
            .unwrap_or_default();
        let thinking = delta["reasoning_content"]
            .as_str()
            .or_else(|| delta["reasoning"].as_str())
            .filter(|_| !self.drop_reasoning)
            .unwrap_or_default();
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap_or(self.calls.len() as u64);
            let entry = self.calls.entry(index).or_default();
            if let Some(name) = call["function"]["name"].as_str() {
                entry.0.push_str(name);
            }
            if let Some(arguments) = call["function"]["arguments"].as_str() {
                entry.1.push_str(arguments);
            }
        }
        if !content.is_empty() || !thinking.is_empty() {
            self.first_token.get_or_insert_with(Instant::now);
            out.push(Ok(Chunk::Text {
                content: content.to_owned(),
                thinking: thinking.to_owned(),
                logprobs: Vec::new(),
            }));
        }
        out
    }

    /// The tool calls gathered, then the final chunk.
    fn end(&mut self) -> Vec<Result<Chunk, Error>> {
        self.done = true;
        if self.finish.is_none() && self.first_token.is_none() && self.calls.is_empty() {
            return vec![Err(Error::Upstream {
                status: None,
                message: "the upstream closed the stream without an answer".to_owned(),
            })];
        }
        let mut out: Vec<Result<Chunk, Error>> = self.tool_calls().into_iter().map(Ok).collect();
        let now = Instant::now();
        let first = self.first_token.unwrap_or(now);
        let summary = Summary {
            done_reason: if self.finish.as_deref() == Some("length") {
                DoneReason::Length
            } else {
                DoneReason::Stop
            },
            prompt_eval_count: self.prompt_tokens,
            prompt_eval_duration: first.duration_since(self.started),
            eval_count: self.completion_tokens,
            eval_duration: now.duration_since(first),
            context: Vec::new(),
            draft_count: 0,
            draft_accepted_count: 0,
        };
        out.push(Ok(Chunk::Done(Box::new(Finished {
            summary,
            total_duration: self.started.elapsed(),
            load_duration: Duration::ZERO,
        }))));
        out
    }

    /// The tool calls gathered so far, as a chunk (sent before [`Self::end`]'s).
    fn tool_calls(&mut self) -> Option<Chunk> {
        if self.calls.is_empty() {
            return None;
        }
        let calls = std::mem::take(&mut self.calls)
            .into_values()
            .map(|(name, arguments)| ToolCall {
                name,
                arguments: serde_json::from_str(&arguments).unwrap_or(Value::String(arguments)),
            })
            .collect();
        Some(Chunk::ToolCalls(calls))
    }
}

/// The readable part of an upstream's error body: OpenAI's `{"error": {"message": …}}`,
/// Ollama's `{"error": "…"}`, or the text itself (cut short).
fn error_message(text: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let found = parsed.as_ref().and_then(|body| {
        body["error"]["message"]
            .as_str()
            .or_else(|| body["error"].as_str())
            .or_else(|| body["message"].as_str())
            .map(str::to_owned)
    });
    found.unwrap_or_else(|| text.trim().chars().take(300).collect())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_lines_parse_and_round_trip() {
        let upstream = Upstream::parse("openai://10.0.0.5:8000/v1/deepseek-ai/DeepSeek-R1")
            .unwrap()
            .unwrap();
        assert_eq!(upstream.base.as_str(), "http://10.0.0.5:8000/v1");
        assert_eq!(upstream.model, "deepseek-ai/DeepSeek-R1");
        assert_eq!(upstream.key_env, None);
        assert_eq!(
            upstream.from_line(),
            "openai://10.0.0.5:8000/v1/deepseek-ai/DeepSeek-R1"
        );
        let tls =
            Upstream::parse("openai+https://gpu.example/api/v1/r1?key_env=WHALE_UPSTREAM_KEY_GPU")
                .unwrap()
                .unwrap();
        assert_eq!(tls.base.as_str(), "https://gpu.example/api/v1");
        assert_eq!(tls.model, "r1");
        assert_eq!(tls.key_env.as_deref(), Some("WHALE_UPSTREAM_KEY_GPU"));
        assert_eq!(
            tls.from_line(),
            "openai+https://gpu.example/api/v1/r1?key_env=WHALE_UPSTREAM_KEY_GPU"
        );
        assert_eq!(Upstream::from_config(&tls.config()), Some(tls));
        assert!(Upstream::parse("deepseek-r1:14b").is_none());
    }

    #[test]
    fn bad_from_lines_are_refused_with_the_reason() {
        for (from, reason) in [
            ("openai://host:8000/v1/", "no model"),
            ("openai://host:8000/chat/r1", "/v1/"),
            ("openai://user:secret@host/v1/r1", "key does not belong"),
            (
                "openai://host/v1/r1?key_env=AWS_SECRET_ACCESS_KEY",
                "WHALE_UPSTREAM_KEY",
            ),
            ("openai://host/v1/r1?token=x", "unknown setting"),
        ] {
            let error = Upstream::parse(from).unwrap().unwrap_err().to_string();
            assert!(error.contains(reason), "{from}: {error}");
        }
    }

    #[test]
    fn events_become_chunks_with_reasoning_tool_calls_and_counts() {
        let mut reader = Reader::new(false, Instant::now());
        let mut lines = LineSplitter::new();
        lines.push(concat!(
            "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hm\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n",
            "data: [DO"
        )
        .as_bytes());
        let chunks = reader.lines(&mut lines);
        assert_eq!(lines.pending(), b"data: [DO");
        assert!(
            matches!(&chunks[0], Ok(Chunk::Text { thinking, content, .. }) if thinking == "hm" && content.is_empty())
        );
        assert!(matches!(&chunks[1], Ok(Chunk::Text { content, .. }) if content == "Hi"));
        assert_eq!(chunks.len(), 2);
        lines.push(b"NE]\n");
        let mut end = reader.lines(&mut lines);
        let Some(Ok(Chunk::Done(finished))) = end.pop() else {
            panic!("no final chunk: {end:?}");
        };
        assert_eq!(finished.summary.prompt_eval_count, 7);
        assert_eq!(finished.summary.eval_count, 3);
        let [Ok(Chunk::ToolCalls(calls))] = end.as_slice() else {
            panic!("no tool calls before the end: {end:?}");
        };
        assert_eq!(calls[0].name, "get");
        assert_eq!(calls[0].arguments, json!({"a": 1}));
    }
}
