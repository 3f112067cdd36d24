//! The daemon's error type: what a request can fail with, in words a person can act on. It
//! knows nothing of HTTP; `http::error` maps it to statuses and bodies, in one table.

use crate::engine::EngineError;

/// Everything a request can fail with.
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
    /// A pull refused before downloading: the model cannot fit this machine (the message has
    /// the numbers and what to do).
    #[error("{0}")]
    WontFit(String),
    #[error("model '{name}' cannot be loaded: {message}")]
    InvalidModel { name: String, message: String },
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("whaled is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Registry(#[from] whale_registry::Error),
    /// The server a remote model runs on failed or refused: its status, if it answered.
    #[error("{message}")]
    Upstream {
        status: Option<u16>,
        message: String,
    },
    #[error("{0}")]
    Internal(String),
}
