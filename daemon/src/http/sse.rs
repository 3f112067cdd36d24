//! Streaming responses as Server-Sent Events, the OpenAI wire format: `data: <json>\n\n` per
//! object, then `data: [DONE]\n\n`. An error after the stream started is a last event carrying
//! OpenAI's error object, with no `[DONE]` after it.

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::error::{Error, OpenAiError};

/// Turns a stream of items into a `text/event-stream` response.
pub fn response<S, T>(items: S) -> Response
where
    S: Stream<Item = Result<T, Error>> + Send + 'static,
    T: Serialize + Send + 'static,
{
    let events = items
        .map(Some)
        .chain(futures::stream::once(async { None }))
        .scan(false, |failed, item| {
            let event = match item {
                Some(Ok(value)) => Some(event(&value)),
                Some(Err(error)) => {
                    *failed = true;
                    Some(event(&OpenAiError::body(&error)))
                }
                None => (!*failed).then(|| "data: [DONE]\n\n".to_owned()),
            };
            futures::future::ready(event.map(Ok::<_, std::convert::Infallible>))
        });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

fn event(value: &impl Serialize) -> String {
    let json = serde_json::to_string(value)
        .unwrap_or_else(|error| format!("{{\"error\":{{\"message\":\"{error}\"}}}}"));
    format!("data: {json}\n\n")
}
