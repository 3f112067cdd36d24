//! The crate's one error type. Variants carry what a person needs to act: the name, the
//! digest, the path, the URL, the numbers that disagree.

use std::path::PathBuf;

use crate::digest::Digest;

/// Everything that can go wrong in whale-registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model name that does not follow Ollama's grammar.
    #[error("invalid model name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },

    /// A digest string that is not `sha256:` (or `sha256-`) followed by 64 lowercase hex digits.
    #[error("invalid digest {value:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest { value: String },

    /// Manifest JSON that does not parse or breaks a limit.
    #[error("invalid manifest: {reason}")]
    InvalidManifest { reason: String },

    /// A manifest larger than [`crate::manifest::Manifest::MAX_SIZE`].
    #[error("manifest from {url} is larger than the {limit} byte limit")]
    ManifestTooLarge { url: String, limit: usize },

    /// No manifest for this model, locally or on the registry.
    #[error("model {reference} not found")]
    ModelNotFound { reference: String },

    /// A blob that is not in the store or not on the registry.
    #[error("blob {digest} not found")]
    BlobNotFound { digest: Digest },

    /// A manifest names a blob the store does not hold, so writing it would leave a broken model.
    #[error("cannot write manifest for {reference}: blob {digest} is missing from the store")]
    MissingBlob { reference: String, digest: Digest },

    /// The bytes of a blob do not hash to the digest they were fetched or uploaded under.
    #[error("digest mismatch, file must be downloaded again: want {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },

    /// A blob is longer or shorter than declared.
    #[error("blob {digest} has the wrong size: declared {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },

    /// The store's disk is full. What was being written is removed, never kept half-done.
    #[error("no space left on device: cannot {action} {}; free some disk (whale rm removes models)", path.display())]
    NoSpace { action: &'static str, path: PathBuf },

    /// A file system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An HTTP request could not be completed (connection refused, reset, TLS, ...).
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The registry answered with an error status.
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },

    /// The registry refused our credentials, or asked for them without saying how to get them.
    #[error("unauthorized at {url}: {reason}")]
    Unauthorized { url: String, reason: String },

    /// A plain-http URL without `insecure`, or a redirect to a scheme we do not follow.
    #[error("refusing {url}: {reason}")]
    InsecureOrUnsupportedUrl { url: String, reason: String },

    /// The TLS handshake failed: the server speaks plain http, or its certificate is not
    /// trusted. Not retried.
    #[error(
        "TLS handshake with {url} failed ({reason}); if this registry serves plain http, use --insecure (\"insecure\": true in the API)"
    )]
    Tls { url: String, reason: String },

    /// A download made no progress for the configured stall timeout, too many times.
    #[error("max retries exceeded: {url}: {last}")]
    RetriesExhausted { url: String, last: String },

    /// The registry answered in a way the protocol does not allow.
    #[error("protocol error from {url}: {reason}")]
    Protocol { url: String, reason: String },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        if source.kind() == std::io::ErrorKind::StorageFull {
            return Error::NoSpace {
                action,
                path: path.into(),
            };
        }
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Whether a pull of the same blob might succeed if tried again in a moment.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Error::Http { .. } | Error::RetriesExhausted { .. } | Error::Protocol { .. } => true,
            Error::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}
