//! `Store::verify`: re-hashes every blob and checks every manifest against the blobs, so that
//! after a crash, a full disk or a failing drive a person can tell whether the store is whole.

use std::fs::{self, File};
use std::io::Read;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::reference::ModelRef;
use crate::store::{Store, TEMP_SUFFIX, blocking};

/// What [`Store::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs re-hashed, and their bytes.
    pub blobs: usize,
    pub bytes: u64,
    /// Blobs whose content does not hash to their name (removed when repairing, so that a
    /// pull fetches them again).
    pub corrupt: Vec<Digest>,
    /// Blobs a model needs that the store does not hold (or held corrupt).
    pub missing: Vec<(ModelRef, Digest)>,
    /// Manifest files that cannot be read as manifests.
    pub invalid_manifests: Vec<PathBuf>,
    /// Temporary files and partial downloads (a pull may resume from these; whaled removes
    /// stale ones when it starts).
    pub leftovers: Vec<PathBuf>,
}

impl VerifyReport {
    /// Whether every model is whole and every blob is what its name says.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty() && self.invalid_manifests.is_empty()
    }
}

/// Reads a file through SHA-256.
fn hash_file(path: &std::path::Path) -> std::io::Result<(Digest, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
    }
    Ok((Digest::from_hasher(hasher), bytes))
}

impl Store {
    /// Re-hashes every blob and checks that every manifest's blobs are present. With
    /// `repair`, corrupt blobs are removed. `progress` is told each blob as it is done.
    pub async fn verify(
        &self,
        repair: bool,
        progress: impl FnMut(&Digest, u64) + Send + 'static,
    ) -> Result<VerifyReport> {
        let store = self.clone();
        blocking(move || store.verify_blocking(repair, progress)).await
    }

    fn verify_blocking(
        &self,
        repair: bool,
        mut progress: impl FnMut(&Digest, u64),
    ) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let dir = self.blobs_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(report),
            Err(error) => return Err(Error::io("read directory", &dir, error)),
        };
        let mut names: Vec<_> = entries.flatten().map(|entry| entry.file_name()).collect();
        names.sort();
        let mut good = std::collections::HashSet::new();
        for name in names {
            let name = name.to_string_lossy().into_owned();
            let path = dir.join(&name);
            let Ok(digest) = Digest::parse(&name) else {
                if name.ends_with(TEMP_SUFFIX) || name.contains("-partial") {
                    report.leftovers.push(path);
                }
                continue;
            };
            if !path.is_file() {
                continue;
            }
            let (actual, bytes) =
                hash_file(&path).map_err(|error| Error::io("read", &path, error))?;
            report.blobs += 1;
            report.bytes += bytes;
            progress(&digest, bytes);
            if actual == digest {
                good.insert(digest);
                continue;
            }
            tracing::warn!(%digest, %actual, "blob does not match its digest");
            if repair {
                fs::remove_file(&path).map_err(|error| Error::io("remove", &path, error))?;
            }
            report.corrupt.push(digest);
        }
        for (reference, manifest) in self.manifests_with_invalid(&mut report.invalid_manifests) {
            for layer in manifest.blobs() {
                if !good.contains(&layer.digest) {
                    report
                        .missing
                        .push((reference.clone(), layer.digest.clone()));
                }
            }
        }
        Ok(report)
    }

    /// Every readable manifest with its name; the paths of those that are not manifests go
    /// to `invalid`.
    fn manifests_with_invalid(&self, invalid: &mut Vec<PathBuf>) -> Vec<(ModelRef, Manifest)> {
        let mut found = Vec::new();
        let mut dirs = vec![self.manifests_dir()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            let mut entries: Vec<_> = entries.flatten().collect();
            entries.sort_by_key(fs::DirEntry::file_name);
            for entry in entries {
                let path = entry.path();
                match entry.file_type() {
                    Ok(kind) if kind.is_dir() => dirs.push(path),
                    Ok(kind) if kind.is_file() => {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        if name.ends_with(TEMP_SUFFIX) {
                            continue;
                        }
                        let Some(reference) = self.reference_of(&path) else {
                            continue;
                        };
                        match fs::read(&path).ok().map(|bytes| Manifest::parse(&bytes)) {
                            Some(Ok(manifest)) => found.push((reference, manifest)),
                            _ => invalid.push(path),
                        }
                    }
                    _ => {}
                }
            }
        }
        found
    }

    /// The model name a manifest path stands for (`manifests/<host>/<ns>/<model>/<tag>`).
    fn reference_of(&self, path: &std::path::Path) -> Option<ModelRef> {
        let relative = path.strip_prefix(self.manifests_dir()).ok()?;
        let parts: Vec<&str> = relative.iter().filter_map(|part| part.to_str()).collect();
        let [host, namespace, model, tag] = parts.as_slice() else {
            return None;
        };
        ModelRef::from_parts(host, namespace, model, tag).ok()
    }
}
