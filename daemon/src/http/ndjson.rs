//! Streaming responses as newline-delimited JSON, Ollama's wire format: one object per line,
//! flushed per object; an error after the stream started is a final `{"error": ...}` line.

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;

/// Turns a stream of items into an `application/x-ndjson` response.
pub fn response<S, T>(items: S) -> Response
where
    S: Stream<Item = Result<T, crate::error::Error>> + Send + 'static,
    T: Serialize + Send + 'static,
{
    let lines = items.map(|item| {
        let mut line = match item {
            Ok(value) => serde_json::to_vec(&value),
            Err(error) => serde_json::to_vec(&serde_json::json!({ "error": error.to_string() })),
        }
        .unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}").into_bytes());
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(line)
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}
