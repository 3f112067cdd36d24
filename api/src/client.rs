//! Async client for whaled's native API (`/api/*`), used by the CLI and the tests.
//!
//! Streaming endpoints return a [`ResponseStream`] of NDJSON objects. Connection failures are
//! [`Error::Connect`] (so the CLI can start the daemon), non-2xx answers and `{"error":…}`
//! lines are [`Error::Api`].

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::host::{Host, WHALE_API_KEY};
use crate::stream::LineSplitter;
use crate::{
    ChatRequest, ChatResponse, CopyRequest, CreateRequest, DeleteRequest, EmbedRequest,
    EmbedResponse, EmbeddingRequest, EmbeddingResponse, Error, ErrorResponse, GenerateRequest,
    GenerateResponse, ListResponse, ProcessResponse, ProgressResponse, PullRequest, PushRequest,
    ShowRequest, ShowResponse, VerifyRequest, VerifyResponse, VersionResponse,
};

/// A stream of NDJSON objects; ends after the last line, or with an error.
pub type ResponseStream<T> = BoxStream<'static, Result<T, Error>>;

/// Client of one whaled. Cheap to clone (shares the connection pool).
#[derive(Debug, Clone)]
pub struct Client {
    host: Host,
    /// `host`'s URL, which every request path is appended to.
    base_url: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for an address in any form `WHALE_HOST` takes (see [`Host`]).
    pub fn new(address: &str) -> Result<Self, Error> {
        Self::for_host(Host::parse(address)?)
    }

    /// A client for a parsed address.
    pub fn for_host(host: Host) -> Result<Self, Error> {
        Self::build(host, None)
    }

    /// A client for a parsed address that sends `key` as `Authorization: Bearer <key>`.
    pub fn with_api_key(host: Host, key: &str) -> Result<Self, Error> {
        Self::build(host, Some(key))
    }

    fn build(host: Host, key: Option<&str>) -> Result<Self, Error> {
        let base_url = host.url();
        let http_error = |source| Error::Http {
            url: base_url.clone(),
            source,
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = key {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| Error::InvalidApiKey)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        // No system proxy: the daemon is usually on loopback, and an HTTP(S)_PROXY meant
        // for the internet would swallow those requests.
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("whale/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .build()
            .map_err(http_error)?;
        Ok(Self {
            host,
            base_url,
            http,
        })
    }

    /// A client for `$WHALE_HOST`, or [`DEFAULT_HOST`](crate::host::DEFAULT_HOST), sending
    /// `$WHALE_API_KEY` (its first key) when set.
    pub fn from_env() -> Result<Self, Error> {
        let host = Host::from_env()?;
        let key = std::env::var(WHALE_API_KEY).unwrap_or_default();
        match key.split(',').map(str::trim).find(|key| !key.is_empty()) {
            Some(key) => Self::with_api_key(host, key),
            None => Self::for_host(host),
        }
    }

    /// The address this client talks to.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The normalised base URL, e.g. `http://127.0.0.1:11434`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, Error> {
        let response = request
            .send()
            .await
            .map_err(|source| transport(url, source))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(api_error(status.as_u16(), &body, status.canonical_reason()))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, Error> {
        let response = self.send(request, url).await?;
        let body = response
            .bytes()
            .await
            .map_err(|source| transport(url, source))?;
        decode(url, &body)
    }

    async fn post_json<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        let url = self.url(path);
        self.json(self.http.post(&url).json(body), &url).await
    }

    async fn stream<B: Serialize + Sync, T: DeserializeOwned + Send + 'static>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<ResponseStream<T>, Error> {
        let url = self.url(path);
        let request = self
            .http
            .post(&url)
            .header(reqwest::header::ACCEPT, "application/x-ndjson")
            .json(body);
        let response = self.send(request, &url).await?;
        Ok(ndjson(url, response))
    }

    /// `GET /api/version`.
    pub async fn version(&self) -> Result<VersionResponse, Error> {
        let url = self.url("/api/version");
        self.json(self.http.get(&url), &url).await
    }

    /// `HEAD /`: is a server answering?
    pub async fn heartbeat(&self) -> Result<(), Error> {
        let url = self.url("/");
        self.send(self.http.head(&url), &url).await.map(drop)
    }

    /// `POST /api/generate` streaming (`stream` is forced on).
    pub async fn generate_stream(
        &self,
        request: &GenerateRequest,
    ) -> Result<ResponseStream<GenerateResponse>, Error> {
        let mut request = request.clone();
        request.stream = Some(true);
        self.stream("/api/generate", &request).await
    }

    /// `POST /api/generate` with `stream: false`: one accumulated answer.
    pub async fn generate(&self, request: &GenerateRequest) -> Result<GenerateResponse, Error> {
        let mut request = request.clone();
        request.stream = Some(false);
        self.post_json("/api/generate", &request).await
    }

    /// `POST /api/chat` streaming (`stream` is forced on).
    pub async fn chat_stream(
        &self,
        request: &ChatRequest,
    ) -> Result<ResponseStream<ChatResponse>, Error> {
        let mut request = request.clone();
        request.stream = Some(true);
        self.stream("/api/chat", &request).await
    }

    /// `POST /api/chat` with `stream: false`.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        let mut request = request.clone();
        request.stream = Some(false);
        self.post_json("/api/chat", &request).await
    }

    /// `POST /api/pull`, progress lines.
    pub async fn pull_stream(
        &self,
        request: &PullRequest,
    ) -> Result<ResponseStream<ProgressResponse>, Error> {
        let mut request = request.clone();
        request.stream = Some(true);
        self.stream("/api/pull", &request).await
    }

    /// `POST /api/push`, progress lines.
    pub async fn push_stream(
        &self,
        request: &PushRequest,
    ) -> Result<ResponseStream<ProgressResponse>, Error> {
        let mut request = request.clone();
        request.stream = Some(true);
        self.stream("/api/push", &request).await
    }

    /// `POST /api/create`, progress lines.
    pub async fn create_stream(
        &self,
        request: &CreateRequest,
    ) -> Result<ResponseStream<ProgressResponse>, Error> {
        let mut request = request.clone();
        request.stream = Some(true);
        self.stream("/api/create", &request).await
    }

    /// `GET /api/tags`.
    pub async fn list(&self) -> Result<ListResponse, Error> {
        let url = self.url("/api/tags");
        self.json(self.http.get(&url), &url).await
    }

    /// `POST /api/show`.
    pub async fn show(&self, request: &ShowRequest) -> Result<ShowResponse, Error> {
        self.post_json("/api/show", request).await
    }

    /// `POST /api/copy`.
    pub async fn copy(&self, request: &CopyRequest) -> Result<(), Error> {
        let url = self.url("/api/copy");
        self.send(self.http.post(&url).json(request), &url)
            .await
            .map(drop)
    }

    /// `POST /api/verify` (whale's own): re-hashes the whole store, so it may take minutes.
    pub async fn verify(&self, request: &VerifyRequest) -> Result<VerifyResponse, Error> {
        self.post_json("/api/verify", request).await
    }

    /// `DELETE /api/delete`.
    pub async fn delete(&self, request: &DeleteRequest) -> Result<(), Error> {
        let url = self.url("/api/delete");
        self.send(self.http.delete(&url).json(request), &url)
            .await
            .map(drop)
    }

    /// `GET /api/ps`.
    pub async fn ps(&self) -> Result<ProcessResponse, Error> {
        let url = self.url("/api/ps");
        self.json(self.http.get(&url), &url).await
    }

    /// `GET /api/catalog` (whale's own): the catalogue, and what fits here.
    pub async fn catalog(&self) -> Result<crate::CatalogResponse, Error> {
        let url = self.url("/api/catalog");
        self.json(self.http.get(&url), &url).await
    }

    /// `POST /api/embed`.
    pub async fn embed(&self, request: &EmbedRequest) -> Result<EmbedResponse, Error> {
        self.post_json("/api/embed", request).await
    }

    /// `POST /api/embeddings` (legacy).
    pub async fn embeddings(&self, request: &EmbeddingRequest) -> Result<EmbeddingResponse, Error> {
        self.post_json("/api/embeddings", request).await
    }

    /// `HEAD /api/blobs/<digest>`: `true` on 200, `false` on 404.
    pub async fn blob_exists(&self, digest: &str) -> Result<bool, Error> {
        let url = self.url(&format!("/api/blobs/{digest}"));
        match self.send(self.http.head(&url), &url).await {
            Ok(_) => Ok(true),
            Err(Error::Api { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `POST /api/blobs/<digest>` with the bytes as body.
    pub async fn upload_blob(&self, digest: &str, data: impl Into<Bytes>) -> Result<(), Error> {
        let url = self.url(&format!("/api/blobs/{digest}"));
        self.send(self.http.post(&url).body(data.into()), &url)
            .await
            .map(drop)
    }

    /// `POST /api/blobs/<digest>` streaming a file from disk (GGUF files are large).
    pub async fn upload_blob_file(&self, digest: &str, path: &Path) -> Result<(), Error> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        let length = file.metadata().await.map_err(io)?.len();
        let url = self.url(&format!("/api/blobs/{digest}"));
        let request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(reqwest::Body::from(file));
        self.send(request, &url).await.map(drop)
    }
}

/// Sorts a transport failure: nothing listening is [`Error::Connect`].
fn transport(url: &str, source: reqwest::Error) -> Error {
    if source.is_connect() {
        Error::Connect {
            url: url.to_owned(),
            source,
        }
    } else {
        Error::Http {
            url: url.to_owned(),
            source,
        }
    }
}

/// A non-2xx answer: the `{"error": …}` message, else the body text, else the reason phrase.
fn api_error(status: u16, body: &str, reason: Option<&str>) -> Error {
    let message = match serde_json::from_str::<ErrorResponse>(body) {
        Ok(e) => e.error,
        Err(_) if !body.trim().is_empty() => body.trim().to_owned(),
        Err(_) => reason.unwrap_or("request failed").to_owned(),
    };
    Error::Api { status, message }
}

fn decode<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|source| Error::Decode {
        url: url.to_owned(),
        body: String::from_utf8_lossy(body).into_owned(),
        source,
    })
}

/// Decodes one NDJSON line; an object with an `error` key is a failure.
fn decode_line<T: DeserializeOwned>(url: &str, line: &[u8]) -> Result<T, Error> {
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(line)
        && let Some(error) = object.get("error")
    {
        let message = error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned);
        return Err(Error::Api {
            status: 200,
            message,
        });
    }
    decode(url, line)
}

/// Splits the body into lines (a line may span chunks) and decodes each. Stops after the
/// first error.
fn ndjson<T: DeserializeOwned + Send + 'static>(
    url: String,
    response: reqwest::Response,
) -> ResponseStream<T> {
    struct State {
        url: String,
        body: BoxStream<'static, reqwest::Result<Bytes>>,
        lines: LineSplitter,
        finished: bool,
    }
    let state = State {
        url,
        body: response.bytes_stream().boxed(),
        lines: LineSplitter::new(),
        finished: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if state.finished {
                return None;
            }
            if let Some(line) = state.lines.next_line() {
                let item = decode_line(&state.url, line);
                state.finished = item.is_err();
                return Some((item, state));
            }
            match state.body.next().await {
                Some(Ok(chunk)) => state.lines.push(&chunk),
                Some(Err(source)) => {
                    state.finished = true;
                    let error = transport(&state.url, source);
                    return Some((Err(error), state));
                }
                None => {
                    state.finished = true;
                    let rest = state.lines.finish()?;
                    return Some((decode_line(&state.url, &rest), state));
                }
            }
        }
    })
    .boxed()
}
