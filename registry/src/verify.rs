//! `Store::verify`: re-hashes every blob and checks every manifest against the blobs, so that
//! after a crash, a full disk or a failing drive a person can tell whether the store is whole.

use std::fs::{self, File};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Error, Result};
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

/// Reads a file through SHA-256: its digest and its length.
fn hash_file(path: &std::path::Path) -> std::io::Result<(Digest, u64)> {
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut File::open(path)?, &mut hasher)?;
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
        for model in self.list_noting_invalid(&mut report.invalid_manifests) {
            for layer in model.manifest.blobs() {
                if !good.contains(&layer.digest) {
                    report
                        .missing
                        .push((model.reference.clone(), layer.digest.clone()));
                }
            }
        }
        Ok(report)
    }
}
