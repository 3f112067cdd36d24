//! A JSON extractor whose rejections speak Ollama's error shape: an empty body is
//! `missing request body`, malformed JSON and wrong field types are 400 with serde's message
//! (which names the field), and a body over the limit is 413 — at once when its
//! `Content-Length` says so, before a byte of it is read.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::Error;

/// Like `axum::Json`, but failing with [`Error`].
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared = request
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > super::MAX_JSON_BODY as u64) {
            return Err(Error::PayloadTooLarge);
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    Error::PayloadTooLarge
                } else {
                    Error::BadRequest(rejection.body_text())
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::BadRequest("missing request body".to_owned()));
        }
        serde_json::from_slice(&bytes)
            .map(Json)
            .map_err(|error| Error::BadRequest(error.to_string()))
    }
}
