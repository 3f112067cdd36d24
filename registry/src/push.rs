//! `Pusher`: uploads a stored model to an OCI registry — for each blob `HEAD` (skip if
//! present), `POST …/blobs/uploads/`, `PUT <location>?digest=…` with the whole blob; then `PUT`
//! the manifest with its media type. Same `insecure` and token handling as pulls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use tokio_util::io::ReaderStream;
use url::Url;

use crate::error::{Error, Result};
use crate::manifest::{Layer, Manifest};
use crate::progress::{ProgressEvent, Reporter};
use crate::reference::ModelRef;
use crate::store::{IO_BUFFER, Store};
use crate::transport::{self, Session};

/// How often byte progress is reported during an upload (Ollama's rate).
const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(60);

/// How a push behaves.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// Allow plain http to the registry.
    pub insecure: bool,
}

/// Pushes models from a [`Store`].
#[derive(Clone, Debug)]
pub struct Pusher {
    options: PushOptions,
}

impl Pusher {
    pub fn new(options: PushOptions) -> Self {
        Pusher { options }
    }

    /// Pushes `reference` (its host is the destination registry) with Ollama's progress lines:
    /// `retrieving manifest`, `pushing <12hex>`, `pushing manifest`, `success`.
    pub async fn push(
        &self,
        store: &Store,
        reference: &ModelRef,
        progress: &dyn Reporter,
    ) -> Result<()> {
        progress.report(ProgressEvent::status("retrieving manifest"));
        let bytes = store.read_manifest_bytes(reference).await?;
        let manifest = Manifest::parse(&bytes)?;
        let session = Session::new(self.options.insecure);
        let base = transport::repository_url(reference, self.options.insecure)?;
        for layer in manifest.blobs() {
            self.push_blob(&session, &base, store, layer, progress)
                .await?;
        }
        progress.report(ProgressEvent::status("pushing manifest"));
        let url = transport::join(&base, &format!("manifests/{}", reference.tag()))?;
        let content_type = manifest.content_type().to_owned();
        let response = session
            .send(|client| {
                client
                    .put(url.clone())
                    .header(CONTENT_TYPE, &content_type)
                    .body(bytes.clone())
            })
            .await?;
        if !response.status().is_success() {
            return Err(transport::error_status(response).await);
        }
        progress.report(ProgressEvent::status("success"));
        Ok(())
    }

    async fn push_blob(
        &self,
        session: &Session,
        base: &Url,
        store: &Store,
        layer: &Layer,
        progress: &dyn Reporter,
    ) -> Result<()> {
        let digest = &layer.digest;
        let blob_url = transport::join(base, &format!("blobs/{digest}"))?;
        let head = session.send(|client| client.head(blob_url.clone())).await?;
        if head.status().is_success() {
            progress.report(ProgressEvent::blob(
                "pushing", digest, layer.size, layer.size,
            ));
            return Ok(());
        }
        progress.report(ProgressEvent::blob("pushing", digest, layer.size, 0));
        let uploads = transport::join(base, "blobs/uploads/")?;
        let started = session.send(|client| client.post(uploads.clone())).await?;
        if !started.status().is_success() {
            return Err(transport::error_status(started).await);
        }
        let location = started
            .headers()
            .get("docker-upload-location")
            .or_else(|| started.headers().get(LOCATION))
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Protocol {
                url: uploads.to_string(),
                reason: "upload started without a Location".into(),
            })?;
        // Location may be relative and may carry its own query (upload state).
        let mut target = started.url().join(location).map_err(|e| Error::Protocol {
            url: uploads.to_string(),
            reason: format!("bad upload Location {location:?}: {e}"),
        })?;
        target
            .query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let path = store.blob_path(digest);
        let sent = Arc::new(AtomicU64::new(0));
        let upload = session.send(|client| {
            let file = match std::fs::File::open(&path) {
                Ok(file) => tokio::fs::File::from_std(file),
                // Let the request fail with the open error as its body error.
                Err(e) => {
                    return client.put(target.clone()).body(reqwest::Body::wrap_stream(
                        futures::stream::once(async move { Err::<bytes::Bytes, _>(e) }),
                    ));
                }
            };
            sent.store(0, Ordering::Relaxed);
            let counter = sent.clone();
            let stream = ReaderStream::with_capacity(file, IO_BUFFER).inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            });
            client
                .put(target.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, layer.size)
                .body(reqwest::Body::wrap_stream(stream))
        });
        tokio::pin!(upload);
        let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
        let response = loop {
            tokio::select! {
                response = &mut upload => break response?,
                _ = ticker.tick() => progress.report(ProgressEvent::blob(
                    "pushing",
                    digest,
                    layer.size,
                    sent.load(Ordering::Relaxed),
                )),
            }
        };
        match response.status() {
            StatusCode::CREATED
            | StatusCode::ACCEPTED
            | StatusCode::OK
            | StatusCode::NO_CONTENT => {
                progress.report(ProgressEvent::blob(
                    "pushing", digest, layer.size, layer.size,
                ));
                Ok(())
            }
            _ => Err(transport::error_status(response).await),
        }
    }
}
