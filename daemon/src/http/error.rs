//! The one table from the daemon's [`Error`] to HTTP: its status, and its body — Ollama's
//! `{"error": "..."}`, or OpenAI's error object on `/v1/*` ([`OpenAiError`]).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::engine::EngineError;
use crate::error::Error;

/// The status an error answers with.
pub fn status(error: &Error) -> StatusCode {
    match error {
        Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::ModelNotFound(_) | Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::QueueFull | Error::Busy(_) | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Error::WontFit(_) => StatusCode::INSUFFICIENT_STORAGE,
        Error::InsufficientMemory { .. } | Error::InvalidModel { .. } | Error::Internal(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        Error::Engine(error) => match error {
            EngineError::ContextTooLong { .. } | EngineError::InvalidInput(_) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        Error::Registry(error) => registry_status(error),
        // What the client got wrong (a bad request, too large, too many) is passed on; an
        // upstream that fails, or refuses whaled's key or model, is a bad gateway.
        Error::Upstream { status, .. } => status
            .filter(|status| matches!(status, 400 | 413 | 422 | 429))
            .and_then(|status| StatusCode::from_u16(status).ok())
            .unwrap_or(StatusCode::BAD_GATEWAY),
    }
}

fn registry_status(error: &whale_registry::Error) -> StatusCode {
    use whale_registry::Error as E;
    match error {
        E::InvalidName { .. }
        | E::InvalidDigest { .. }
        | E::DigestMismatch { .. }
        | E::SizeMismatch { .. } => StatusCode::BAD_REQUEST,
        E::ModelNotFound { .. } | E::BlobNotFound { .. } => StatusCode::NOT_FOUND,
        E::NoSpace { .. } => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Server errors are logged; a client's mistakes are the client's to read.
fn log(error: &Error, status: StatusCode) {
    if status.is_server_error() {
        tracing::warn!(%error, "request failed");
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status(&self);
        log(&self, status);
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// An [`Error`] as the OpenAI-compatible `/v1/*` routes answer it: the same status, and OpenAI's
/// body `{"error": {"message", "type", "param", "code"}}` with the type taken from the status.
/// Those handlers return it, and `?` converts any [`Error`].
#[derive(Debug)]
pub struct OpenAiError(pub Error);

impl From<Error> for OpenAiError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl OpenAiError {
    /// The body alone, also sent as the last event of a stream that fails midway.
    pub fn body(error: &Error) -> whale_api::openai::ErrorResponse {
        whale_api::openai::ErrorResponse::new(status(error).as_u16(), error.to_string())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = status(&self.0);
        log(&self.0, status);
        (status, Json(Self::body(&self.0))).into_response()
    }
}
