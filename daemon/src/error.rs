//! The daemon's error type and the one table that maps it to HTTP statuses; the body is
//! Ollama's `{"error": "..."}`, or OpenAI's error object on `/v1/*` ([`OpenAiError`]).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::engine::EngineError;

/// Everything a request can fail with; `IntoResponse` turns it into `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("model '{0}' not found")]
    ModelNotFound(String),
    #[error("{0}")]
    NotFound(String),
    #[error("server busy, please try again.  maximum pending requests exceeded")]
    QueueFull,
    #[error("model '{0}' is busy with requests using other options; try again when they finish")]
    Busy(String),
    /// The memory plan says the model cannot fit, with the numbers.
    #[error("cannot load '{name}': {detail}")]
    InsufficientMemory { name: String, detail: String },
    #[error("model '{name}' cannot be loaded: {message}")]
    InvalidModel { name: String, message: String },
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Registry(#[from] whale_registry::Error),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::ModelNotFound(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::QueueFull | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InsufficientMemory { .. } | Self::InvalidModel { .. } | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::Engine(error) => match error {
                EngineError::ContextTooLong { .. } | EngineError::InvalidInput(_) => {
                    StatusCode::BAD_REQUEST
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::Registry(error) => registry_status(error),
        }
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
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Error {
    /// Server errors are logged; a client's mistakes are the client's to read.
    fn log(&self, status: StatusCode) {
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        self.log(status);
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
        whale_api::openai::ErrorResponse::new(error.status().as_u16(), error.to_string())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        self.0.log(status);
        (status, Json(Self::body(&self.0))).into_response()
    }
}
