//! `Puller`: downloads a model from an OCI registry into a [`Store`].
//!
//! Manifest first (size-limited), then each missing blob: split into parts fetched with `Range`
//! requests and written at their offsets into `blobs/sha256-<hex>-partial`; one part at a time
//! while a single connection would finish the blob soon, several in parallel once it would not
//! (a slow link or a per-connection limit at the registry's CDN); a
//! JSON state file records finished parts so a killed pull resumes where it was (re-fetching
//! only the parts in flight). A hashing thread follows the written bytes part by part, so the
//! sha256 is ready when the last byte lands. A registry that ignores `Range` and answers 200 is
//! read as one sequential stream. Transient failures and stalls retry with exponential backoff.
//! The verified file is renamed into place (not fsynced, see the store's module doc); the
//! manifest is written last.
//!
//! Plain http needs `insecure`, loopback included (as Ollama's `--insecure`): one rule, no
//! surprises when a "local" name is actually forwarded. A mirror (`WHALE_REGISTRY_MIRROR`) is
//! an explicit URL chosen by the operator, so its own scheme is used as given.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_RANGE, RANGE};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{Layer, Manifest, media_type};
use crate::progress::{ProgressEvent, Reporter};
use crate::reference::ModelRef;
use crate::store::{IO_BUFFER, Store, blocking};
use crate::transport::{self, Session};

/// Environment variable naming a mirror tried first for `registry.ollama.ai` names
/// (`http://host:port`, e.g. another whaled's `/v2/`). Read by the daemon's config.
pub const MIRROR_ENV: &str = "WHALE_REGISTRY_MIRROR";

/// Smallest and largest default part size; a blob gets 16 parts within these bounds.
const MIN_PART: u64 = 16 * 1024 * 1024;
const MAX_PART: u64 = 100 * 1024 * 1024;

/// How much of a part is buffered before it is written (and becomes hashable).
const WRITE_CHUNK: usize = 1024 * 1024;

/// How a pull behaves. `Default` gives production values; tests shorten the timings.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Allow plain http to the registry (and its redirects and token realm).
    pub insecure: bool,
    /// Tried first for names on `registry.ollama.ai`; on any error the registry is used.
    pub mirror: Option<Url>,
    /// The only place fetched from, whatever the name's host: another whale's `/v2/`
    /// (`http://host:port`), e.g. on the same network. Plain http is allowed: it was asked for.
    pub from: Option<Url>,
    /// Fixed part size; `None` = size/16 clamped to 16–100 MiB.
    pub part_size: Option<u64>,
    /// Most parts downloaded at once (a blob starts with one, see `Ramp`).
    pub parts_in_flight: usize,
    /// A part that receives no bytes for this long is abandoned and retried.
    pub stall_timeout: Duration,
    /// Attempts per part (and per manifest fetch) before giving up.
    pub max_attempts: u32,
    /// First retry delay; doubled each retry, capped at 30 s.
    pub retry_delay: Duration,
    /// How often byte progress is reported while a blob downloads.
    pub progress_interval: Duration,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            insecure: false,
            mirror: None,
            from: None,
            part_size: None,
            parts_in_flight: 4,
            stall_timeout: Duration::from_secs(30),
            max_attempts: 6,
            retry_delay: Duration::from_secs(1),
            progress_interval: Duration::from_millis(60),
        }
    }
}

/// Pulls models. Holds only options; each pull gets its own HTTP session and token.
#[derive(Clone, Debug)]
pub struct Puller {
    options: PullOptions,
}

/// A manifest fetched by [`Puller::resolve`], with where it came from.
pub struct Resolved {
    source: Source,
    bytes: Vec<u8>,
    manifest: Manifest,
}

impl Resolved {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("base", &self.source.base.as_str())
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

/// Where a model is fetched from: its registry, or the mirror.
struct Source {
    session: Session,
    /// `…/v2/<ns>/<model>/`
    base: Url,
    is_mirror: bool,
}

/// What the state file beside a partial download records.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct PartialState {
    size: u64,
    part_size: u64,
    done: Vec<bool>,
}

/// One in-progress blob download; shared by its part tasks.
struct Download<'a> {
    store: &'a Store,
    source: &'a Source,
    url: Url,
    layer: &'a Layer,
    file: Arc<File>,
    /// `(offset, length)` of each part.
    parts: Vec<(u64, u64)>,
    part_size: u64,
    /// Bytes of each part written contiguously from its start; only ever grows. The hashing
    /// thread reads up to these marks.
    written: Arc<Vec<AtomicU64>>,
    done: std::sync::Mutex<Vec<bool>>,
    completed: AtomicU64,
    progress: &'a dyn Reporter,
}

/// Part outcome that is not an error of the blob: the server ignored `Range`.
enum PartError {
    Fatal(Error),
    /// Worth another attempt (network error, stall, 5xx, short body).
    Transient(Error),
    /// A 200 to a ranged request of one of several parts: restart as one stream.
    RangesIgnored,
}

impl From<Error> for PartError {
    fn from(error: Error) -> Self {
        if error.is_transient() {
            PartError::Transient(error)
        } else {
            PartError::Fatal(error)
        }
    }
}

impl Puller {
    pub fn new(options: PullOptions) -> Self {
        Puller { options }
    }

    /// Pulls `reference` into `store`, reporting Ollama's progress lines, and returns the
    /// manifest written. Blobs already present are not fetched again.
    pub async fn pull(
        &self,
        store: &Store,
        reference: &ModelRef,
        progress: &dyn Reporter,
    ) -> Result<Manifest> {
        let resolved = self.resolve(reference, progress).await?;
        self.fetch(store, reference, resolved, progress).await
    }

    /// The first step of [`Puller::pull`]: fetches and parses the manifest, from the mirror or
    /// the registry, so that a caller can look at what a pull would fetch before it does.
    pub async fn resolve(&self, reference: &ModelRef, progress: &dyn Reporter) -> Result<Resolved> {
        progress.report(ProgressEvent::status("pulling manifest"));
        let sources = self.sources(reference)?;
        let count = sources.len();
        for (index, source) in sources.into_iter().enumerate() {
            match self.fetch_manifest(&source, reference).await {
                Ok(bytes) => {
                    let manifest = Manifest::parse(&bytes)?;
                    return Ok(Resolved {
                        source,
                        bytes,
                        manifest,
                    });
                }
                Err(error) if source.is_mirror && index + 1 < count => {
                    tracing::warn!(%error, "mirror failed; trying the registry");
                }
                Err(error) => return Err(error),
            }
        }
        unreachable!("the registry is always the last source")
    }

    /// The first `len` bytes of `layer` (fewer if it is shorter), from where the manifest came
    /// from: a GGUF header can be read this way before deciding to fetch 400 GB. A server that
    /// ignores `Range` is read only as far as needed.
    pub async fn read_prefix(
        &self,
        resolved: &Resolved,
        layer: &Layer,
        len: u64,
    ) -> Result<Vec<u8>> {
        let url = transport::join(&resolved.source.base, &format!("blobs/{}", layer.digest))?;
        let len = len.min(layer.size);
        if len == 0 {
            return Ok(Vec::new());
        }
        let range = format!("bytes=0-{}", len - 1);
        let mut response = resolved
            .source
            .session
            .send(|client| client.get(url.clone()).header(RANGE, &range))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(Error::BlobNotFound {
                digest: layer.digest.clone(),
            });
        }
        if !response.status().is_success() {
            return Err(transport::error_status(response).await);
        }
        let mut bytes = Vec::with_capacity(len as usize);
        while (bytes.len() as u64) < len {
            let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| transport::http_error(url.as_str(), e))?
            else {
                break;
            };
            let take = chunk.len().min((len - bytes.len() as u64) as usize);
            bytes.extend_from_slice(&chunk[..take]);
        }
        Ok(bytes)
    }

    /// The second step of [`Puller::pull`]: fetches each blob the store lacks, then writes the
    /// manifest.
    pub async fn fetch(
        &self,
        store: &Store,
        reference: &ModelRef,
        resolved: Resolved,
        progress: &dyn Reporter,
    ) -> Result<Manifest> {
        let Resolved {
            source,
            bytes,
            manifest,
        } = resolved;
        for layer in manifest.blobs() {
            self.fetch_blob(store, &source, layer, progress).await?;
        }
        progress.report(ProgressEvent::status("verifying sha256 digest"));
        progress.report(ProgressEvent::status("writing manifest"));
        store.write_manifest_bytes(reference, bytes).await?;
        progress.report(ProgressEvent::status("success"));
        Ok(manifest)
    }

    fn sources(&self, reference: &ModelRef) -> Result<Vec<Source>> {
        if let Some(from) = &self.options.from {
            transport::check_scheme(from, true)?;
            return Ok(vec![Source {
                session: Session::new(self.options.insecure || from.scheme() == "http"),
                base: transport::mirror_url(from, reference)?,
                is_mirror: false,
            }]);
        }
        let mut sources = Vec::new();
        if let Some(mirror) = self
            .options
            .mirror
            .as_ref()
            .filter(|_| reference.is_default_host())
        {
            transport::check_scheme(mirror, true)?;
            sources.push(Source {
                session: Session::new(self.options.insecure || mirror.scheme() == "http"),
                base: transport::mirror_url(mirror, reference)?,
                is_mirror: true,
            });
        }
        sources.push(Source {
            session: Session::new(self.options.insecure),
            base: transport::repository_url(reference, self.options.insecure)?,
            is_mirror: false,
        });
        Ok(sources)
    }

    fn retry_delay(&self, attempt: u32) -> Duration {
        self.options
            .retry_delay
            .saturating_mul(1 << attempt.min(16))
            .min(Duration::from_secs(30))
    }

    async fn fetch_manifest(&self, source: &Source, reference: &ModelRef) -> Result<Vec<u8>> {
        let target = match reference.digest() {
            Some(digest) => digest.to_string(),
            None => reference.tag().to_owned(),
        };
        let url = transport::join(&source.base, &format!("manifests/{target}"))?;
        let mut attempt = 0;
        loop {
            match self.fetch_manifest_once(source, &url, reference).await {
                Err(error) if error.is_transient() && attempt + 1 < self.options.max_attempts => {
                    tracing::debug!(%error, "manifest fetch failed; retrying");
                    tokio::time::sleep(self.retry_delay(attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn fetch_manifest_once(
        &self,
        source: &Source,
        url: &Url,
        reference: &ModelRef,
    ) -> Result<Vec<u8>> {
        let accept = format!(
            "{}, {}",
            media_type::DOCKER_MANIFEST,
            media_type::OCI_MANIFEST
        );
        let mut response = source
            .session
            .send(|client| client.get(url.clone()).header(ACCEPT, &accept))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(Error::ModelNotFound {
                reference: reference.short(),
            });
        }
        if !response.status().is_success() {
            return Err(transport::error_status(response).await);
        }
        let too_large = || Error::ManifestTooLarge {
            url: url.to_string(),
            limit: Manifest::MAX_SIZE,
        };
        if response
            .content_length()
            .is_some_and(|len| len > Manifest::MAX_SIZE as u64)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport::http_error(url.as_str(), e))?
        {
            if bytes.len() + chunk.len() > Manifest::MAX_SIZE {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        if let Some(pinned) = reference.digest() {
            let actual = Digest::of_bytes(&bytes);
            if &actual != pinned {
                return Err(Error::DigestMismatch {
                    expected: pinned.clone(),
                    actual,
                });
            }
        }
        Ok(bytes)
    }

    async fn fetch_blob(
        &self,
        store: &Store,
        source: &Source,
        layer: &Layer,
        progress: &dyn Reporter,
    ) -> Result<()> {
        let digest = &layer.digest;
        let finished = || ProgressEvent::blob("pulling", digest, layer.size, layer.size);
        if store.has_complete_blob(digest, layer.size) {
            progress.report(finished());
            return Ok(());
        }
        progress.report(ProgressEvent::blob("pulling", digest, layer.size, 0));
        let _lock = store.lock_blob(digest).await?;
        if store.has_complete_blob(digest, layer.size) {
            // Another pull of the same blob finished while we waited for its lock.
            progress.report(finished());
            return Ok(());
        }
        // A blob cut short (the machine went down before the kernel wrote it back) is fetched
        // again.
        let _ = std::fs::remove_file(store.blob_path(digest));
        let url = transport::join(&source.base, &format!("blobs/{digest}"))?;
        let mut result = self
            .download(store, source, &url, layer, false, progress)
            .await;
        if matches!(result, Err(PartError::RangesIgnored)) {
            tracing::debug!(%url, "registry ignores Range; downloading as one stream");
            result = self
                .download(store, source, &url, layer, true, progress)
                .await;
        }
        match result {
            Ok(()) => {
                progress.report(finished());
                Ok(())
            }
            Err(PartError::Fatal(error) | PartError::Transient(error)) => {
                if matches!(
                    error,
                    Error::DigestMismatch { .. }
                        | Error::SizeMismatch { .. }
                        | Error::NoSpace { .. }
                ) {
                    // The bytes on disk are wrong, or a full disk must not stay full of a
                    // download that cannot finish: the next pull starts from scratch.
                    let _ = std::fs::remove_file(store.partial_path(digest));
                    let _ = std::fs::remove_file(store.partial_state_path(digest));
                }
                Err(error)
            }
            Err(PartError::RangesIgnored) => Err(Error::Protocol {
                url: url.to_string(),
                reason: "server ignored Range on a single-stream download".into(),
            }),
        }
    }

    /// Downloads one blob into its partial file, resuming from its state file, then verifies
    /// and commits it. `whole` plans a single part (for servers that ignore `Range`).
    async fn download(
        &self,
        store: &Store,
        source: &Source,
        url: &Url,
        layer: &Layer,
        whole: bool,
        progress: &dyn Reporter,
    ) -> Result<(), PartError> {
        let size = layer.size;
        let part_size = if whole {
            size.max(1)
        } else {
            self.options
                .part_size
                .unwrap_or_else(|| (size / 16).clamp(MIN_PART, MAX_PART))
                .max(1)
        };
        let (file, done) = open_partial(store, &layer.digest, size, part_size).await?;
        let parts: Vec<(u64, u64)> = (0..done.len() as u64)
            .map(|i| {
                let offset = i * part_size;
                (offset, part_size.min(size - offset))
            })
            .collect();
        let written: Arc<Vec<AtomicU64>> = Arc::new(
            parts
                .iter()
                .zip(&done)
                .map(|((_, len), done)| AtomicU64::new(if *done { *len } else { 0 }))
                .collect(),
        );
        let completed: u64 = written.iter().map(|w| w.load(Ordering::Relaxed)).sum();
        let file = Arc::new(file);
        let cancel = Arc::new(AtomicBool::new(false));
        let hasher = {
            let (file, parts, written, cancel) =
                (file.clone(), parts.clone(), written.clone(), cancel.clone());
            let path = store.partial_path(&layer.digest);
            tokio::task::spawn_blocking(move || hash_parts(&file, &path, &parts, &written, &cancel))
        };
        let download = Download {
            store,
            source,
            url: url.clone(),
            layer,
            file,
            part_size,
            written,
            done: std::sync::Mutex::new(done.clone()),
            completed: AtomicU64::new(completed),
            parts,
            progress,
        };
        let mut pending = (0..done.len()).filter(|&i| !done[i]);
        let mut running = futures::stream::FuturesUnordered::new();
        let mut ramp = Ramp::new(self.options.parts_in_flight, completed);
        let mut ticker = tokio::time::interval(self.options.progress_interval);
        let result = loop {
            while running.len() < ramp.width {
                let Some(index) = pending.next() else { break };
                running.push(self.fetch_part(&download, index));
            }
            if running.is_empty() {
                break Ok(());
            }
            tokio::select! {
                Some(result) = running.next() => {
                    if let Err(error) = result {
                        break Err(error);
                    }
                }
                _ = ticker.tick() => {
                    let completed = download.completed.load(Ordering::Relaxed);
                    ramp.observe(completed, size);
                    progress.report(ProgressEvent::blob("pulling", &layer.digest, size, completed));
                }
            }
        };
        // Parts still running stop with their futures, here.
        drop(running);
        if let Err(error) = result {
            cancel.store(true, Ordering::Relaxed);
            return Err(error);
        }
        let actual = match hasher.await {
            Ok(result) => result?,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        if actual != layer.digest {
            return Err(PartError::Fatal(Error::DigestMismatch {
                expected: layer.digest.clone(),
                actual,
            }));
        }
        let (store, digest, file) = (store.clone(), layer.digest.clone(), download.file.clone());
        blocking(move || store.commit_partial(&digest, &file)).await?;
        Ok(())
    }

    /// Fetches one part, retrying transient failures from where the part got to.
    async fn fetch_part(&self, download: &Download<'_>, index: usize) -> Result<(), PartError> {
        let mut attempt = 0;
        loop {
            match self.fetch_part_once(download, index).await {
                Ok(()) => break,
                Err(PartError::Transient(error)) if attempt + 1 < self.options.max_attempts => {
                    tracing::debug!(part = index, %error, "part failed; retrying");
                    tokio::time::sleep(self.retry_delay(attempt)).await;
                    attempt += 1;
                }
                Err(PartError::Transient(error)) => {
                    return Err(PartError::Fatal(Error::RetriesExhausted {
                        url: download.url.to_string(),
                        last: error.to_string(),
                    }));
                }
                Err(other) => return Err(other),
            }
        }
        let state = {
            let mut done = download.done.lock().expect("part table lock");
            done[index] = true;
            PartialState {
                size: download.layer.size,
                part_size: download.part_size,
                done: done.clone(),
            }
        };
        let path = download.store.partial_state_path(&download.layer.digest);
        blocking(move || write_state(&path, &state)).await?;
        Ok(())
    }

    async fn fetch_part_once(
        &self,
        download: &Download<'_>,
        index: usize,
    ) -> Result<(), PartError> {
        let (offset, len) = download.parts[index];
        let written = download.written[index].load(Ordering::Acquire);
        if written == len {
            return Ok(());
        }
        let start = offset + written;
        let end = offset + len - 1;
        let size = download.layer.size;
        let digest = &download.layer.digest;
        let url = &download.url;
        let stall = self.options.stall_timeout;
        let stalled = || {
            PartError::Transient(Error::Protocol {
                url: url.to_string(),
                reason: format!("no data for {} s (stalled)", stall.as_secs_f32()),
            })
        };
        let request = download.source.session.send(|client| {
            client
                .get(url.clone())
                .header(RANGE, format!("bytes={start}-{end}"))
        });
        let mut response = tokio::time::timeout(stall, request)
            .await
            .map_err(|_| stalled())??;
        // Bytes of the body to throw away before `start` (a 200 always starts at 0).
        let mut skip = 0;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(ContentRange::parse)
                    .ok_or_else(|| {
                        PartError::Fatal(Error::Protocol {
                            url: url.to_string(),
                            reason: "206 without a valid Content-Range".into(),
                        })
                    })?;
                if let Some(total) = range.total.filter(|&t| t != size) {
                    return Err(PartError::Fatal(Error::SizeMismatch {
                        digest: digest.clone(),
                        expected: size,
                        actual: total,
                    }));
                }
                if range.start != start || range.end != end {
                    return Err(PartError::Fatal(Error::Protocol {
                        url: url.to_string(),
                        reason: format!(
                            "asked for bytes {start}-{end}, got {}-{}",
                            range.start, range.end
                        ),
                    }));
                }
            }
            StatusCode::OK if download.parts.len() > 1 => return Err(PartError::RangesIgnored),
            StatusCode::OK => {
                if let Some(actual) = response.content_length().filter(|&l| l != size) {
                    return Err(PartError::Fatal(Error::SizeMismatch {
                        digest: digest.clone(),
                        expected: size,
                        actual,
                    }));
                }
                skip = start;
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let actual = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.rsplit('/').next()?.parse().ok())
                    .unwrap_or(0);
                return Err(PartError::Fatal(Error::SizeMismatch {
                    digest: digest.clone(),
                    expected: size,
                    actual,
                }));
            }
            StatusCode::NOT_FOUND => {
                return Err(PartError::Fatal(Error::BlobNotFound {
                    digest: digest.clone(),
                }));
            }
            _ => return Err(transport::error_status(response).await.into()),
        }
        let remaining = end + 1 - start;
        let mut writer = PartWriter::new(start);
        let mut buffer = Chunks::default();
        let mut received = 0u64;
        loop {
            let chunk = tokio::time::timeout(stall, response.chunk())
                .await
                .map_err(|_| stalled())?
                .map_err(|e| PartError::Transient(transport::http_error(url.as_str(), e)));
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    // Keep what arrived: the retry continues from the last written byte.
                    writer.write(download, index, &mut buffer).await?;
                    writer.settle(download, index).await?;
                    return Err(error);
                }
            };
            let Some(mut chunk) = chunk else { break };
            if skip > 0 {
                let n = skip.min(chunk.len() as u64);
                skip -= n;
                let _ = chunk.split_to(n as usize);
            }
            received += chunk.len() as u64;
            if received > remaining {
                return Err(PartError::Fatal(Error::SizeMismatch {
                    digest: digest.clone(),
                    expected: size,
                    actual: size + (received - remaining),
                }));
            }
            buffer.push(chunk);
            if buffer.len >= WRITE_CHUNK {
                writer.write(download, index, &mut buffer).await?;
            }
        }
        writer.write(download, index, &mut buffer).await?;
        writer.settle(download, index).await?;
        if received < remaining {
            return Err(PartError::Transient(Error::Protocol {
                url: url.to_string(),
                reason: format!("connection closed after {received} of {remaining} bytes"),
            }));
        }
        Ok(())
    }
}

/// Received chunks waiting to be written, and their total length.
#[derive(Default)]
struct Chunks {
    list: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.list.push(chunk);
    }
}

/// Writes a part's bytes at their offsets on a blocking thread, one write in flight while the
/// next chunk is received, and moves the part's written mark (which the hash follows) as
/// each write completes, in order.
struct PartWriter {
    position: u64,
    in_flight: Option<tokio::task::JoinHandle<Result<u64>>>,
}

impl PartWriter {
    fn new(start: u64) -> Self {
        Self {
            position: start,
            in_flight: None,
        }
    }

    /// Starts writing the buffered bytes once the previous write has landed.
    async fn write(
        &mut self,
        download: &Download<'_>,
        index: usize,
        buffer: &mut Chunks,
    ) -> Result<(), PartError> {
        if buffer.len == 0 {
            return Ok(());
        }
        self.settle(download, index).await?;
        let chunks = std::mem::take(buffer);
        let file = download.file.clone();
        let at = self.position;
        let path = download.store.partial_path(&download.layer.digest);
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            // Each received chunk is written as it is, without gathering them into one buffer.
            let mut offset = at;
            for chunk in &chunks.list {
                file.write_all_at(chunk, offset)
                    .map_err(|e| Error::io("write", &path, e))?;
                offset += chunk.len() as u64;
            }
            Ok(chunks.len as u64)
        }));
        Ok(())
    }

    /// Waits for the write in flight and records its bytes as written.
    async fn settle(&mut self, download: &Download<'_>, index: usize) -> Result<(), PartError> {
        let Some(write) = self.in_flight.take() else {
            return Ok(());
        };
        let n = match write.await {
            Ok(result) => result.map_err(PartError::Fatal)?,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        self.position += n;
        download.written[index].fetch_add(n, Ordering::Release);
        download.completed.fetch_add(n, Ordering::Relaxed);
        download.progress.received(n);
        Ok(())
    }
}

/// How many parts of a blob are fetched at once. A blob starts with one connection: on a fast
/// link more connections only add work (more requests, and a hash that can follow only one
/// part as it arrives, so the others wait to be hashed at the end). Once the bytes so far say
/// one connection would still need more than [`Ramp::PATIENCE`], all `parts_in_flight` parts
/// run at once.
struct Ramp {
    width: usize,
    max: usize,
    started: std::time::Instant,
    start_bytes: u64,
}

impl Ramp {
    /// Time one connection may still need before the download goes parallel.
    const PATIENCE: Duration = Duration::from_secs(2);
    /// Throughput is judged after this long, not on the first packets.
    const WARM_UP: Duration = Duration::from_millis(500);

    fn new(parts_in_flight: usize, start_bytes: u64) -> Self {
        Self {
            width: 1,
            max: parts_in_flight.max(1),
            started: std::time::Instant::now(),
            start_bytes,
        }
    }

    fn observe(&mut self, completed: u64, size: u64) {
        let elapsed = self.started.elapsed();
        if self.width == self.max || elapsed < Self::WARM_UP {
            return;
        }
        let rate = completed.saturating_sub(self.start_bytes) as f64 / elapsed.as_secs_f64();
        let remaining = size.saturating_sub(completed) as f64;
        if remaining > rate * Self::PATIENCE.as_secs_f64() {
            tracing::debug!(rate, remaining, parts = self.max, "download goes parallel");
            self.width = self.max;
        }
    }
}

/// `Content-Range: bytes <start>-<end>/<total or *>`.
struct ContentRange {
    start: u64,
    end: u64,
    total: Option<u64>,
}

impl ContentRange {
    fn parse(value: &str) -> Option<ContentRange> {
        let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
        let (start, end) = range.split_once('-')?;
        Some(ContentRange {
            start: start.trim().parse().ok()?,
            end: end.trim().parse().ok()?,
            total: if total.trim() == "*" {
                None
            } else {
                Some(total.trim().parse().ok()?)
            },
        })
    }
}

/// Opens the partial file of a download, resuming when its state file matches this plan;
/// otherwise starts it afresh (pre-sized, nothing done).
async fn open_partial(
    store: &Store,
    digest: &Digest,
    size: u64,
    part_size: u64,
) -> Result<(File, Vec<bool>)> {
    let data = store.partial_path(digest);
    let state_path = store.partial_state_path(digest);
    blocking(move || {
        let parts = part_count(size, part_size);
        let previous = resumable_state(&data, &state_path)
            .filter(|s| s.size == size && s.part_size == part_size);
        let open = |truncate: bool| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(truncate)
                .open(&data)
                .map_err(|e| Error::io("open", &data, e))
        };
        if let Some(state) = previous {
            tracing::debug!(path = %data.display(), "resuming partial download");
            return Ok((open(false)?, state.done));
        }
        let file = open(true)?;
        file.set_len(size)
            .map_err(|e| Error::io("allocate", &data, e))?;
        let state = PartialState {
            size,
            part_size,
            done: vec![false; parts],
        };
        write_state(&state_path, &state)?;
        Ok((file, state.done))
    })
    .await
}

/// How many parts a blob of `size` has.
fn part_count(size: u64, part_size: u64) -> usize {
    size.div_ceil(part_size.max(1)).max(1) as usize
}

/// The state of a partial download that can resume: the state file reads, its table has a
/// mark for each part, and the data file has the size it records.
fn resumable_state(data: &Path, state: &Path) -> Option<PartialState> {
    std::fs::read(state)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<PartialState>(&bytes).ok())
        .filter(|s| s.part_size > 0 && s.done.len() == part_count(s.size, s.part_size))
        .filter(|s| std::fs::metadata(data).is_ok_and(|m| m.len() == s.size))
}

/// Whether the partial download in `data` (with its state file `state`) can resume: a pull of
/// the same blob with the same part size continues it, whatever its age.
pub(crate) fn is_resumable(data: &Path, state: &Path) -> bool {
    resumable_state(data, state).is_some()
}

/// Replaces the state file atomically, so a crash leaves the old or the new table.
fn write_state(path: &Path, state: &PartialState) -> Result<()> {
    let dir = path
        .parent()
        .expect("a state file is in the blobs directory");
    let name = path.file_name().expect("a state file has a name");
    let mut temp = crate::store::temp_file(dir, &format!("{}.", name.to_string_lossy()))?;
    let bytes = serde_json::to_vec(state).expect("state serialises");
    temp.write_all(&bytes)
        .map_err(|e| Error::io("write", temp.path(), e))?;
    temp.persist(path)
        .map_err(|e| Error::io("rename into place", path, e.error))?;
    Ok(())
}

/// Hashes the partial file part by part, following the written marks, so hashing overlaps
/// the download. Returns early (with whatever digest) once `cancel` is set.
fn hash_parts(
    file: &File,
    path: &Path,
    parts: &[(u64, u64)],
    written: &[AtomicU64],
    cancel: &AtomicBool,
) -> Result<Digest, PartError> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; IO_BUFFER];
    for (index, &(offset, len)) in parts.iter().enumerate() {
        let mut hashed_bytes = 0u64;
        while hashed_bytes < len {
            if cancel.load(Ordering::Relaxed) {
                return Err(PartError::Fatal(Error::Protocol {
                    url: path.display().to_string(),
                    reason: "download cancelled".into(),
                }));
            }
            let available = written[index].load(Ordering::Acquire) - hashed_bytes;
            if available == 0 {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let n = available.min(buffer.len() as u64) as usize;
            file.read_exact_at(&mut buffer[..n], offset + hashed_bytes)
                .map_err(|e| PartError::Fatal(Error::io("read back", path, e)))?;
            hasher.update(&buffer[..n]);
            hashed_bytes += n as u64;
        }
    }
    Ok(Digest::from_hasher(hasher))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        let r = ContentRange::parse("bytes 0-99/1000").unwrap();
        assert_eq!((r.start, r.end, r.total), (0, 99, Some(1000)));
        assert_eq!(ContentRange::parse("bytes 5-9/*").unwrap().total, None);
        assert!(ContentRange::parse("items 0-1/2").is_none());
    }
}
