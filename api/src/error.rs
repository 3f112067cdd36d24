//! The one error type of whale-api: Modelfile parsing, parameter validation and the client.

use crate::host::WHALE_API_KEY;
use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Modelfile line could not be understood.
    #[error("Modelfile line {line}: {message}")]
    Modelfile { line: usize, message: String },

    /// A parameter name that is not an option.
    #[error("unknown parameter '{name}'")]
    UnknownParameter { name: String },

    /// A parameter value of the wrong type.
    #[error("invalid value {value:?} for parameter '{name}': expected {expected}")]
    InvalidParameter {
        name: String,
        value: String,
        expected: &'static str,
    },

    /// Reading a file (a Modelfile, a blob to upload) failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `WHALE_HOST` or a base URL could not be understood.
    #[error("invalid server address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },

    /// `WHALE_API_KEY` cannot be sent as a header.
    #[error("{WHALE_API_KEY} holds characters an HTTP header cannot carry")]
    InvalidApiKey,

    /// Nothing is listening at the address (connection refused / unreachable): the CLI
    /// starts the daemon on this one.
    #[error("could not connect to whaled at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The server answered with a non-2xx status, or an `{"error": …}` line mid-stream
    /// (then `status` is the 200 the stream started with).
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },

    /// Any other transport failure (timeout, reset, TLS, body read).
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// A response body or NDJSON line was not the expected JSON.
    #[error("unexpected response from {url}: {source} in {body:?}")]
    Decode {
        url: String,
        body: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Name used by the client's callers.
pub type ClientError = Error;
/// Name used by the Modelfile's callers.
pub type ParseError = Error;
