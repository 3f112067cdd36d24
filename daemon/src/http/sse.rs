//! Streaming responses as Server-Sent Events, the OpenAI wire format: `data: <json>\n\n` per
//! object, then `data: [DONE]\n\n`. An error after the stream started is a last event carrying
//! OpenAI's error object, with no `[DONE]` after it. While nothing is ready — a long prompt
//! being evaluated — a comment line goes out every few seconds, so that proxies and clients
//! with read timeouts keep the connection.

use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;

use super::error::OpenAiError;
use crate::error::Error;

/// How long a stream may be silent before a keep-alive comment is sent.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

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
                None => (!*failed).then(|| Event::default().data("[DONE]")),
            };
            futures::future::ready(event.map(Ok::<_, std::convert::Infallible>))
        });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

fn event(value: &impl Serialize) -> Event {
    Event::default().json_data(value).unwrap_or_else(|error| {
        Event::default().data(format!("{{\"error\":{{\"message\":\"{error}\"}}}}"))
    })
}
