//! Progress is data: pulls and pushes report [`ProgressEvent`]s (Ollama's `ProgressResponse`
//! shape and status strings) to a [`Reporter`]; the daemon streams them as NDJSON and only the
//! CLI draws them.

use crate::digest::Digest;

/// One progress line: `{"status":"pulling 6e4c38e1172f","digest":"sha256:…","total":…,"completed":…}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressEvent {
    pub status: String,
    pub digest: Option<Digest>,
    pub total: Option<u64>,
    pub completed: Option<u64>,
}

/// The name the daemon's brief uses; pushes report the same shape.
pub type PullEvent = ProgressEvent;

impl ProgressEvent {
    /// A status-only line (`pulling manifest`, `success`, ...).
    pub fn status(status: impl Into<String>) -> Self {
        ProgressEvent {
            status: status.into(),
            digest: None,
            total: None,
            completed: None,
        }
    }

    /// A per-blob line, `<verb> <first 12 hex>` with byte counts.
    pub fn blob(verb: &str, digest: &Digest, total: u64, completed: u64) -> Self {
        ProgressEvent {
            status: format!("{verb} {}", digest.short()),
            digest: Some(digest.clone()),
            total: Some(total),
            completed: Some(completed),
        }
    }
}

/// Receives progress. Implemented for closures and for tokio mpsc senders (a closed channel
/// is ignored: a client that went away does not stop the transfer).
pub trait Reporter: Send + Sync {
    fn report(&self, event: ProgressEvent);

    /// `bytes` of a blob arrived from the network and were written to the store. Called as
    /// each write lands, so a meter of network traffic sees every byte once: bytes a resumed
    /// pull already had, or blobs already stored, are never counted. Ignored by default.
    fn received(&self, bytes: u64) {
        let _ = bytes;
    }
}

impl<F: Fn(ProgressEvent) + Send + Sync> Reporter for F {
    fn report(&self, event: ProgressEvent) {
        self(event);
    }
}

impl Reporter for tokio::sync::mpsc::UnboundedSender<ProgressEvent> {
    fn report(&self, event: ProgressEvent) {
        let _ = self.send(event);
    }
}

impl Reporter for tokio::sync::mpsc::Sender<ProgressEvent> {
    fn report(&self, event: ProgressEvent) {
        let _ = self.try_send(event);
    }
}

/// Discards progress.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Reporter for NoProgress {
    fn report(&self, _event: ProgressEvent) {}
}
