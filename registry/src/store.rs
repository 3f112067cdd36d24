//! `Store`: models on disk in Ollama's layout, so an existing `~/.ollama/models` reads as is.
//!
//! ```text
//! <root>/blobs/sha256-<hex>                          content-addressed blobs (0644)
//! <root>/blobs/sha256-<hex>-partial                  an interrupted download, pre-sized
//! <root>/blobs/sha256-<hex>-partial.json             which parts of it are complete
//! <root>/blobs/sha256-<hex>.lock                     per-digest lock (flock) for downloads
//! <root>/manifests/<host>/<namespace>/<model>/<tag>  manifest JSON (0644)
//! <root>/…/*.tmp                                     a write in progress, renamed when done
//! ```
//!
//! A crash leaves `*.tmp` files and partial downloads behind; [`Store::open`] removes the ones
//! no process can use any more and keeps the downloads that can resume.
//!
//! Invariants: a file named `sha256-<hex>` holds bytes that hash to `<hex>` (written to a temp
//! name in the same directory, hashed while written, checked, renamed; never rewritten once
//! present), and a manifest is written only after every blob it names exists.
//!
//! Durability: manifests, uploads and imports are fsynced before their rename. Downloaded blobs
//! are not (as in Ollama): an fsync of a freshly downloaded blob costs as much as the download
//! itself when the data still sits in the page cache, and the kernel writes it back anyway. A
//! machine that goes down before that can leave such a blob short; journaling file systems
//! (ext4 `data=ordered`, XFS, btrfs) never expose garbage in its place. Pulls and the daemon
//! compare a blob's size with its manifest's, so a short blob is fetched again, never used.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::reference::ModelRef;

/// Environment variable that names the store root (like Ollama's `OLLAMA_MODELS`). Read by the
/// daemon's config, which passes the root to [`Store::open`].
pub const MODELS_ENV: &str = "WHALE_MODELS";

/// How old a stray file must be before [`Store::prune`] removes it, so that a download or an
/// upload in progress is never pruned from under its writer (Ollama uses the same hour).
pub const PRUNE_GRACE: Duration = Duration::from_hours(1);

/// How long a temporary file or an unusable partial download must have been left alone before
/// [`Store::open`] removes it. Every writer writes its temporary file continuously (an upload,
/// an import, a download) or for milliseconds (a manifest, a download's state), so a file
/// untouched this long was left by a process that died; the margin keeps the files of another
/// process working on the same store safe.
pub const STALE_AFTER: Duration = Duration::from_mins(10);

/// Size of the buffers blobs are read, hashed and written with.
pub(crate) const IO_BUFFER: usize = 4 * 1024 * 1024;

/// A model store rooted at a directory. Cheap to clone; all state is on disk.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// One model found by [`Store::list`].
#[derive(Clone, Debug)]
pub struct StoredModel {
    /// The name, spelled as on disk.
    pub reference: ModelRef,
    pub manifest: Manifest,
    /// sha256 of the manifest file's bytes (`ollama list`'s ID is its first 12 hex digits).
    pub manifest_digest: Digest,
    /// Sum of the config and layer sizes.
    pub size: u64,
    /// When the manifest was last written.
    pub modified: SystemTime,
}

/// What [`Store::prune`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: Vec<PathBuf>,
    pub bytes: u64,
}

/// An exclusive lock on one digest's download, held until dropped. It is an `flock` on a
/// lock file, so the kernel releases it when a process dies, and two handles in one process
/// exclude each other as two processes do.
#[derive(Debug)]
pub(crate) struct BlobLock {
    _file: File,
}

/// Runs blocking file work off the async runtime's threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

fn create_dirs(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|e| Error::io("create directory", path, e))
}

/// The ending of every temporary file the store writes: what a start after a crash removes.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// A new temporary file in `dir`, named `<prefix><random>.tmp` so that no other writer picks
/// the name, removed when dropped unless [`persist`]ed.
pub(crate) fn temp_file(dir: &Path, prefix: &str) -> Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix(prefix)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)
        .map_err(|e| Error::io("create a temporary file in", dir, e))
}

/// Whether a file is fsynced before it is renamed into place (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    Sync,
    WriteBack,
}

/// Fsyncs `temp` (with [`Durability::Sync`]), makes it 0644 and renames it to `path` (atomic
/// within one directory). For a file that keeps its name until then: a partial download.
fn commit_file(file: &File, temp: &Path, path: &Path, durability: Durability) -> Result<()> {
    if durability == Durability::Sync {
        file.sync_all().map_err(|e| Error::io("sync", temp, e))?;
    }
    fs::set_permissions(temp, fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io("set permissions of", temp, e))?;
    fs::rename(temp, path).map_err(|e| Error::io("rename into place", path, e))
}

/// [`commit_file`] for a temporary file: fsynced (with [`Durability::Sync`]), made 0644 (temp
/// files are created 0600) and renamed to `path`.
fn persist(temp: NamedTempFile, path: &Path, durability: Durability) -> Result<()> {
    if durability == Durability::Sync {
        temp.as_file()
            .sync_all()
            .map_err(|e| Error::io("sync", temp.path(), e))?;
    }
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io("set permissions of", temp.path(), e))?;
    temp.persist(path)
        .map_err(|e| Error::io("rename into place", path, e.error))?;
    Ok(())
}

impl Store {
    /// The default root: `~/.local/share/whale/models` on Linux (the platform's data directory
    /// elsewhere). `None` when the platform reports no home directory.
    pub fn default_root() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "whale").map(|dirs| dirs.data_dir().join("models"))
    }

    /// Opens (creating if needed) a store at `root`, and removes what a crash left in it (see
    /// [`Store::remove_stale_files`]).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        create_dirs(&root.join("blobs"))?;
        create_dirs(&root.join("manifests"))?;
        let store = Store { root };
        let removed = store.remove_stale_files(STALE_AFTER);
        if !removed.is_empty() {
            tracing::info!(
                count = removed.len(),
                "removed files left by an interrupted write"
            );
        }
        Ok(store)
    }

    /// Removes what an interrupted process leaves behind, once untouched for `grace`: the
    /// temporary files of uploads, imports, manifests and download state (`*.tmp`), and partial
    /// downloads that cannot resume (data without its state file or the other way round, or a
    /// state that does not match the data). A partial download that can resume is kept however
    /// old it is, since the next pull of that blob continues it, and so is anything of a download
    /// whose lock is held. Lock files stay: removing one another process holds would let a
    /// third take the lock too. Returns what was removed; a file that cannot be removed is
    /// skipped, so that a start never fails on it.
    pub fn remove_stale_files(&self, grace: Duration) -> Vec<PathBuf> {
        let now = SystemTime::now();
        let untouched = |path: &Path| {
            fs::symlink_metadata(path)
                .ok()
                .filter(fs::Metadata::is_file)
                .and_then(|meta| meta.modified().ok())
                .and_then(|modified| now.duration_since(modified).ok())
                .is_some_and(|age| age >= grace)
        };
        // Each candidate is removed when `untouched` holds for the file that decides: itself, or
        // for the state file of an unusable partial download, its data file.
        let mut candidates: Vec<(PathBuf, PathBuf)> = Vec::new();
        let blobs = self.blobs_dir();
        for entry in fs::read_dir(&blobs).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.ends_with(TEMP_SUFFIX) {
                candidates.push((path.clone(), path));
            } else if name.ends_with("-partial") {
                let state = blobs.join(format!("{name}.json"));
                if !crate::pull::is_resumable(&path, &state) && !self.download_in_progress(&name) {
                    candidates.push((state, path.clone()));
                    candidates.push((path.clone(), path));
                }
            } else if let Some(data) = name.strip_suffix(".json")
                && data.ends_with("-partial")
                && !blobs.join(data).exists()
                && !self.download_in_progress(&name)
            {
                candidates.push((path.clone(), path));
            }
        }
        let mut dirs = vec![self.manifests_dir()];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                match entry.file_type() {
                    Ok(kind) if kind.is_dir() => dirs.push(path),
                    Ok(kind)
                        if kind.is_file()
                            && entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) =>
                    {
                        candidates.push((path.clone(), path));
                    }
                    _ => {}
                }
            }
        }
        candidates
            .into_iter()
            .filter(|(path, decides)| path.exists() && untouched(decides))
            .map(|(path, _)| path)
            .filter(|path| match fs::remove_file(path) {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot remove a stale file");
                    false
                }
            })
            .collect()
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub(crate) fn manifests_dir(&self) -> PathBuf {
        self.root.join("manifests")
    }

    /// Where a blob lives: `<root>/blobs/sha256-<hex>`. The only way a blob path is built.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.file_name())
    }

    /// The sparse data file of an interrupted download.
    pub(crate) fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir()
            .join(format!("{}-partial", digest.file_name()))
    }

    /// The JSON file that records which parts of the partial file are complete.
    pub(crate) fn partial_state_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir()
            .join(format!("{}-partial.json", digest.file_name()))
    }

    fn lock_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir()
            .join(format!("{}.lock", digest.file_name()))
    }

    /// Whether the blob is present (present blobs are complete: they are only ever renamed
    /// into place after verification).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Whether an interrupted download of the blob waits to be resumed.
    pub fn has_partial_blob(&self, digest: &Digest) -> bool {
        self.partial_state_path(digest).is_file()
    }

    /// Whether the blob is present with the size its manifest declares.
    pub fn has_complete_blob(&self, digest: &Digest, size: u64) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok_and(|meta| meta.is_file() && meta.len() == size)
    }

    /// Size of a present blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::BlobNotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    /// Takes the download lock of a digest, waiting for another puller (task or process) to
    /// finish with it.
    pub(crate) async fn lock_blob(&self, digest: &Digest) -> Result<BlobLock> {
        let path = self.lock_path(digest);
        blocking(move || {
            let file = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io("open lock file", &path, e))?;
            file.lock().map_err(|e| Error::io("lock", &path, e))?;
            Ok(BlobLock { _file: file })
        })
        .await
    }

    /// Moves a verified partial download into place as the blob.
    pub(crate) fn commit_partial(&self, digest: &Digest, file: &File) -> Result<()> {
        commit_file(
            file,
            &self.partial_path(digest),
            &self.blob_path(digest),
            Durability::WriteBack,
        )?;
        let state = self.partial_state_path(digest);
        match fs::remove_file(&state) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove", state, e))
            }
            _ => Ok(()),
        }
    }

    /// Writes a blob from a stream (an upload to `/api/blobs/:digest`), hashing while writing.
    /// Returns its size. If the bytes do not hash to `expected` nothing is kept. A blob that is
    /// already present is left alone and the stream is not read.
    pub async fn write_blob(
        &self,
        expected: &Digest,
        mut reader: impl AsyncRead + Unpin,
    ) -> Result<u64> {
        if self.has_blob(expected) {
            return self.blob_size(expected);
        }
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
        let (dir, prefix) = (self.blobs_dir(), format!("{}-", expected.file_name()));
        let writer =
            tokio::task::spawn_blocking(move || -> Result<(NamedTempFile, u64, Digest)> {
                let mut temp = temp_file(&dir, &prefix)?;
                let mut hasher = Sha256::new();
                let mut size = 0u64;
                while let Some(chunk) = receiver.blocking_recv() {
                    hasher.update(&chunk);
                    temp.write_all(&chunk)
                        .map_err(|e| Error::io("write", temp.path(), e))?;
                    size += chunk.len() as u64;
                }
                Ok((temp, size, Digest::from_hasher(hasher)))
            });
        let mut read_error = None;
        loop {
            let mut buffer = BytesMut::with_capacity(IO_BUFFER);
            let mut eof = false;
            while buffer.len() < IO_BUFFER {
                match reader.read_buf(&mut buffer).await {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        read_error = Some(e);
                        eof = true;
                        break;
                    }
                }
            }
            if !buffer.is_empty() && sender.send(buffer.freeze()).await.is_err() {
                // The writer failed (its error is reported below). The rest of the upload is
                // read and dropped, so that the client, still sending, gets the answer that
                // says why instead of a broken pipe.
                let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
                break;
            }
            if eof {
                break;
            }
        }
        drop(sender);
        let (temp, size, actual) = match writer.await {
            Ok(result) => result?,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        if let Some(e) = read_error {
            return Err(Error::io("read upload for", temp.path(), e));
        }
        if &actual != expected {
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let path = self.blob_path(expected);
        blocking(move || {
            // Another writer may have put the same blob in place meanwhile: then the temp
            // file is dropped, which removes it.
            if !path.exists() {
                persist(temp, &path, Durability::Sync)?;
            }
            Ok(size)
        })
        .await
    }

    /// Copies a local file (a GGUF for `create`) into the store, hashing in the same pass, and
    /// returns its digest.
    pub async fn import_file(&self, source: impl AsRef<Path>) -> Result<Digest> {
        let source = source.as_ref().to_owned();
        let store = self.clone();
        blocking(move || {
            let mut input = File::open(&source).map_err(|e| Error::io("open", &source, e))?;
            let mut output = temp_file(&store.blobs_dir(), "import-")?;
            let mut hasher = Sha256::new();
            let mut buffer = vec![0u8; IO_BUFFER];
            loop {
                let n = input
                    .read(&mut buffer)
                    .map_err(|e| Error::io("read", &source, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                output
                    .write_all(&buffer[..n])
                    .map_err(|e| Error::io("write", output.path(), e))?;
            }
            let digest = Digest::from_hasher(hasher);
            let path = store.blob_path(&digest);
            if !path.exists() {
                persist(output, &path, Durability::Sync)?;
            }
            Ok(digest)
        })
        .await
    }

    /// Alias of [`Store::import_file`] under the name of what it does to the file.
    pub async fn write_blob_from_file(&self, source: impl AsRef<Path>) -> Result<Digest> {
        self.import_file(source).await
    }

    /// Finds a manifest file, matching each path component case-insensitively when the exact
    /// spelling is absent (Ollama's names are case-insensitive; the on-disk spelling wins).
    fn find_manifest(&self, reference: &ModelRef) -> Option<PathBuf> {
        let exact = self.root.join(reference.manifest_path());
        if exact.is_file() {
            return Some(exact);
        }
        let mut dir = self.manifests_dir();
        for part in [
            reference.host(),
            reference.namespace(),
            reference.model(),
            reference.tag(),
        ] {
            let entry = fs::read_dir(&dir).ok()?.flatten().find(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .is_some_and(|name| name.eq_ignore_ascii_case(part))
            })?;
            dir = entry.path();
        }
        dir.is_file().then_some(dir)
    }

    /// The name as spelled on disk, if a manifest for it exists in any spelling.
    pub fn resolve(&self, reference: &ModelRef) -> Option<ModelRef> {
        let path = self.find_manifest(reference)?;
        let relative = path.strip_prefix(self.manifests_dir()).ok()?;
        let parts: Vec<&str> = relative.iter().filter_map(|p| p.to_str()).collect();
        match parts.as_slice() {
            [host, ns, model, tag] => ModelRef::from_parts(host, ns, model, tag).ok(),
            _ => None,
        }
    }

    /// The manifest file's bytes as stored (what the `/v2/` server sends and digests).
    pub async fn read_manifest_bytes(&self, reference: &ModelRef) -> Result<Vec<u8>> {
        let store = self.clone();
        let reference = reference.clone();
        blocking(move || {
            let path = store
                .find_manifest(&reference)
                .ok_or_else(|| Error::ModelNotFound {
                    reference: reference.short(),
                })?;
            fs::read(&path).map_err(|e| Error::io("read", path, e))
        })
        .await
    }

    /// Reads a model's manifest; [`Error::ModelNotFound`] when there is none.
    pub async fn read_manifest(&self, reference: &ModelRef) -> Result<Manifest> {
        Manifest::parse(&self.read_manifest_bytes(reference).await?)
    }

    /// Writes a manifest (serialised), after checking that all its blobs are present.
    pub async fn write_manifest(&self, reference: &ModelRef, manifest: &Manifest) -> Result<()> {
        self.write_manifest_bytes(reference, manifest.to_json())
            .await
    }

    /// Writes manifest bytes exactly as given (a pull keeps the registry's bytes, so the
    /// manifest digest matches the registry's), atomically, after checking that every blob it
    /// names is present with its declared size.
    pub async fn write_manifest_bytes(&self, reference: &ModelRef, bytes: Vec<u8>) -> Result<()> {
        let manifest = Manifest::parse(&bytes)?;
        let store = self.clone();
        let reference = reference.clone();
        blocking(move || {
            for layer in manifest.blobs() {
                let present = fs::metadata(store.blob_path(&layer.digest));
                if !present.is_ok_and(|meta| meta.len() == layer.size) {
                    return Err(Error::MissingBlob {
                        reference: reference.short(),
                        digest: layer.digest.clone(),
                    });
                }
            }
            let path = store
                .find_manifest(&reference)
                .unwrap_or_else(|| store.root.join(reference.manifest_path()));
            let dir = path.parent().expect("a manifest path has a parent");
            create_dirs(dir)?;
            let mut temp = temp_file(dir, &format!(".{}.", reference.tag()))?;
            temp.write_all(&bytes)
                .map_err(|e| Error::io("write", temp.path(), e))?;
            persist(temp, &path, Durability::Sync)
        })
        .await
    }

    /// Every model in the store, walking `manifests/<host>/<ns>/<model>/<tag>`. Files that are
    /// not valid names or manifests (editor backups, temp files, `.DS_Store`) are skipped.
    pub async fn list(&self) -> Result<Vec<StoredModel>> {
        let store = self.clone();
        blocking(move || Ok(store.list_blocking())).await
    }

    fn list_blocking(&self) -> Vec<StoredModel> {
        self.list_noting_invalid(&mut Vec::new())
    }

    /// [`Store::list`], blocking; manifest files with a model's name that do not parse as
    /// manifests go to `invalid`.
    pub(crate) fn list_noting_invalid(&self, invalid: &mut Vec<PathBuf>) -> Vec<StoredModel> {
        fn children(dir: &Path) -> Vec<(String, PathBuf)> {
            let Ok(entries) = fs::read_dir(dir) else {
                return Vec::new();
            };
            let mut out: Vec<_> = entries
                .flatten()
                .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
                .collect();
            out.sort();
            out
        }
        let mut models = Vec::new();
        for (host, host_dir) in children(&self.manifests_dir()) {
            for (ns, ns_dir) in children(&host_dir) {
                for (model, model_dir) in children(&ns_dir) {
                    for (tag, path) in children(&model_dir) {
                        let Ok(reference) = ModelRef::from_parts(&host, &ns, &model, &tag) else {
                            continue;
                        };
                        let Ok(meta) = fs::metadata(&path) else {
                            continue;
                        };
                        if !meta.is_file() {
                            continue;
                        }
                        let Ok(bytes) = fs::read(&path) else { continue };
                        let Ok(manifest) = Manifest::parse(&bytes) else {
                            tracing::debug!(path = %path.display(), "skipping invalid manifest");
                            invalid.push(path);
                            continue;
                        };
                        models.push(StoredModel {
                            reference,
                            size: manifest.total_size(),
                            manifest_digest: Digest::of_bytes(&bytes),
                            manifest,
                            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        });
                    }
                }
            }
        }
        models
    }

    /// Copies a model to a new name (the manifest only; blobs are shared).
    pub async fn copy(&self, source: &ModelRef, destination: &ModelRef) -> Result<()> {
        let bytes = self.read_manifest_bytes(source).await?;
        self.write_manifest_bytes(destination, bytes).await
    }

    /// Removes a model's manifest, then the blobs no other manifest references (Ollama's
    /// `rm`). Returns the removed blobs.
    pub async fn delete(&self, reference: &ModelRef) -> Result<Vec<Digest>> {
        let store = self.clone();
        let reference = reference.clone();
        blocking(move || {
            let path = store
                .find_manifest(&reference)
                .ok_or_else(|| Error::ModelNotFound {
                    reference: reference.short(),
                })?;
            let bytes = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
            fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            store.remove_empty_parents(&path);
            let Ok(manifest) = Manifest::parse(&bytes) else {
                return Ok(Vec::new());
            };
            let referenced = store.referenced_blobs();
            let mut removed = Vec::new();
            for layer in manifest.blobs() {
                if referenced.contains(&layer.digest) || removed.contains(&layer.digest) {
                    continue;
                }
                let blob = store.blob_path(&layer.digest);
                match fs::remove_file(&blob) {
                    Ok(()) => removed.push(layer.digest.clone()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", blob, e)),
                }
            }
            Ok(removed)
        })
        .await
    }

    fn referenced_blobs(&self) -> std::collections::HashSet<Digest> {
        self.list_blocking()
            .iter()
            .flat_map(|model| model.manifest.blobs().map(|layer| layer.digest.clone()))
            .collect()
    }

    /// Removes now-empty `<model>`, `<ns>` and `<host>` directories above a removed manifest.
    fn remove_empty_parents(&self, manifest: &Path) {
        let top = self.manifests_dir();
        let mut dir = manifest.parent();
        while let Some(d) = dir {
            if d == top || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    /// Removes what no manifest needs: unreferenced blobs, and temp files and partial
    /// downloads nobody is working on, all only when older than [`PRUNE_GRACE`].
    pub async fn prune(&self) -> Result<PruneReport> {
        self.prune_older_than(PRUNE_GRACE).await
    }

    /// [`Store::prune`] with another grace period (tests use zero).
    pub async fn prune_older_than(&self, grace: Duration) -> Result<PruneReport> {
        let store = self.clone();
        blocking(move || {
            let referenced = store.referenced_blobs();
            let mut report = PruneReport::default();
            let dir = store.blobs_dir();
            let entries = fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))?;
            let now = SystemTime::now();
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age >= grace);
                if !meta.is_file() || !old {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Ok(digest) = Digest::parse(&name) {
                    if referenced.contains(&digest) {
                        continue;
                    }
                } else if store.download_in_progress(&name) {
                    continue;
                }
                if fs::remove_file(entry.path()).is_ok() {
                    report.bytes += meta.len();
                    report.removed.push(entry.path());
                }
            }
            Ok(report)
        })
        .await
    }

    /// Whether a partial/lock file belongs to a download whose lock someone holds now.
    fn download_in_progress(&self, file_name: &str) -> bool {
        let Some(digest) = file_name
            .get(..71)
            .and_then(|prefix| Digest::parse(prefix).ok())
        else {
            return false;
        };
        let Ok(lock) = File::open(self.lock_path(&digest)) else {
            return false;
        };
        match lock.try_lock() {
            Ok(()) => false,
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Layer, media_type};

    async fn model(store: &Store, name: &str, blobs: &[&[u8]]) -> (ModelRef, Manifest) {
        let mut layers = Vec::new();
        for blob in blobs {
            let digest = Digest::of_bytes(blob);
            store.write_blob(&digest, *blob).await.unwrap();
            layers.push(Layer {
                media_type: media_type::MODEL.into(),
                digest,
                size: blob.len() as u64,
                from: None,
                name: None,
            });
        }
        let config = br#"{"model_format":"gguf"}"#;
        let config_digest = Digest::of_bytes(config);
        store.write_blob(&config_digest, &config[..]).await.unwrap();
        let manifest = Manifest::new(
            Layer {
                media_type: media_type::DOCKER_CONFIG.into(),
                digest: config_digest,
                size: config.len() as u64,
                from: None,
                name: None,
            },
            layers,
        );
        let reference = ModelRef::parse(name).unwrap();
        store.write_manifest(&reference, &manifest).await.unwrap();
        (reference, manifest)
    }

    #[tokio::test]
    async fn writes_reads_lists_copies_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, manifest) = model(&store, "a:1", &[b"shared", b"only-a"]).await;
        let (b, _) = model(&store, "ns/b:2", &[b"shared"]).await;
        fs::write(store.manifests_dir().join("junk"), b"x").unwrap();
        fs::create_dir_all(store.manifests_dir().join("h/n/m")).unwrap();
        fs::write(store.manifests_dir().join("h/n/m/.t.tmp"), b"{").unwrap();

        assert_eq!(store.read_manifest(&a).await.unwrap(), manifest);
        let upper = ModelRef::parse("A:1").unwrap();
        assert_eq!(store.read_manifest(&upper).await.unwrap(), manifest);
        assert_eq!(store.resolve(&upper).unwrap(), a);

        let names: Vec<String> = store
            .list()
            .await
            .unwrap()
            .iter()
            .map(|m| m.reference.short())
            .collect();
        assert_eq!(names, ["a:1", "ns/b:2"]);

        let c = ModelRef::parse("c").unwrap();
        store.copy(&a, &c).await.unwrap();
        assert_eq!(store.read_manifest(&c).await.unwrap(), manifest);

        // a and c share blobs: deleting a removes nothing.
        assert!(store.delete(&a).await.unwrap().is_empty());
        let removed = store.delete(&c).await.unwrap();
        assert_eq!(removed, vec![Digest::of_bytes(b"only-a")]);
        assert!(store.has_blob(&Digest::of_bytes(b"shared")));
        assert!(matches!(
            store.read_manifest(&a).await,
            Err(Error::ModelNotFound { .. })
        ));
        assert!(
            !store
                .manifests_dir()
                .join("registry.ollama.ai/library/a")
                .exists()
        );
        store.delete(&b).await.unwrap();
        assert!(!store.has_blob(&Digest::of_bytes(b"shared")));
    }

    #[tokio::test]
    async fn refuses_bad_blobs_and_incomplete_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let wrong = Digest::of_bytes(b"other");
        let err = store.write_blob(&wrong, &b"bytes"[..]).await.unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert_eq!(
            fs::read_dir(store.blobs_dir()).unwrap().count(),
            0,
            "no temp left"
        );

        let layer = Layer {
            media_type: media_type::MODEL.into(),
            digest: wrong.clone(),
            size: 5,
            from: None,
            name: None,
        };
        let manifest = Manifest::new(layer.clone(), vec![layer]);
        let err = store
            .write_manifest(&ModelRef::parse("m").unwrap(), &manifest)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::MissingBlob { .. }), "{err}");
    }

    #[tokio::test]
    async fn imports_files_and_prunes_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("models")).unwrap();
        let source = dir.path().join("model.gguf");
        fs::write(&source, b"GGUF...").unwrap();
        let digest = store.import_file(&source).await.unwrap();
        assert_eq!(digest, Digest::of_bytes(b"GGUF..."));
        assert_eq!(fs::read(store.blob_path(&digest)).unwrap(), b"GGUF...");
        let mode = fs::metadata(store.blob_path(&digest))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        fs::write(store.blobs_dir().join("sha256-junk.tmp"), b"x").unwrap();

        assert!(
            store.prune().await.unwrap().removed.is_empty(),
            "grace period"
        );
        let report = store.prune_older_than(Duration::ZERO).await.unwrap();
        assert_eq!(report.removed.len(), 2);
        assert!(!store.has_blob(&digest));
    }

    /// Sets a file's modification time `age` in the past.
    fn age(path: &Path, age: Duration) {
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
    }

    #[test]
    fn open_removes_what_a_crash_left_and_keeps_resumable_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blobs = store.blobs_dir();
        let digest = |byte: u8| format!("sha256-{}", hex::encode([byte; 32]));
        let write = |path: PathBuf, bytes: &[u8]| {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, bytes).unwrap();
            path
        };
        let state = |size: u64, parts: usize| {
            serde_json::json!({"size": size, "part_size": 4, "done": vec![false; parts]})
                .to_string()
                .into_bytes()
        };
        let old = Duration::from_hours(2);
        // A download that can resume: kept however old.
        let resumable = write(blobs.join(format!("{}-partial", digest(1))), &[0; 10]);
        let resumable_state = write(
            blobs.join(format!("{}-partial.json", digest(1))),
            &state(10, 3),
        );
        // What a crash leaves: temp files of an upload, an import, a manifest and a state
        // file; a partial without its state, a state without its partial, and a state that
        // does not match its data.
        let leftovers = [
            write(blobs.join(format!("{}-1a2b3c.tmp", digest(2))), b"x"),
            write(blobs.join("import-4d5e6f.tmp"), b"x"),
            write(store.manifests_dir().join("h/n/m/.latest.7a8b9c.tmp"), b"{"),
            write(
                blobs.join(format!("{}-partial.json.0d0e0f.tmp", digest(1))),
                b"{",
            ),
            write(blobs.join(format!("{}-partial", digest(3))), &[0; 10]),
            write(
                blobs.join(format!("{}-partial.json", digest(4))),
                &state(10, 3),
            ),
            write(blobs.join(format!("{}-partial", digest(5))), &[0; 10]),
            write(
                blobs.join(format!("{}-partial.json", digest(5))),
                &state(12, 3),
            ),
        ];
        // A temp file someone may still be writing: too young to remove.
        let fresh = write(blobs.join(format!("{}-fresh.tmp", digest(6))), b"x");
        for path in leftovers.iter().chain([&resumable, &resumable_state]) {
            age(path, old);
        }

        let reopened = Store::open(dir.path()).unwrap();
        for path in &leftovers {
            assert!(!path.exists(), "{} was kept", path.display());
        }
        for path in [&resumable, &resumable_state, &fresh] {
            assert!(path.exists(), "{} was removed", path.display());
        }
        let later = reopened.remove_stale_files(Duration::ZERO);
        assert_eq!(
            later,
            vec![fresh],
            "only the temp file, once it is old enough"
        );
        assert!(resumable.exists() && resumable_state.exists());
    }

    #[test]
    fn default_root_is_the_data_dir() {
        let root = Store::default_root().unwrap();
        assert!(root.ends_with("whale/models"), "{}", root.display());
    }
}
