//! `whale create NAME -f Modelfile`: parses the Modelfile with whale-api, uploads the local
//! files it names (FROM/ADAPTER paths, relative to the Modelfile; sha256-hashed, sent with
//! `POST /api/blobs/:digest` unless `HEAD` finds them already there), then asks whaled to
//! build the model with `POST /api/create` and draws its progress.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use whale_api::Client;
use whale_api::modelfile::Modelfile;

use crate::cli::CreateArgs;
use crate::commands::Context;
use crate::commands::pull::follow;
use crate::error::Error;
use crate::render::Style;
use crate::render::progress::{Progress, Update};

pub async fn run(args: CreateArgs, context: &Context) -> Result<(), Error> {
    let modelfile = Modelfile::from_path(&args.file)?;
    let base = args
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let client = context.client().await?;

    // Local files named by FROM / ADAPTER, as written → digest of the uploaded blob.
    let mut files = BTreeMap::new();
    for written in std::iter::once(&modelfile.from).chain(&modelfile.adapters) {
        match resolve(written, &base) {
            Source::File(path) => {
                let digest = upload(&client, &path, context.style).await?;
                files.insert(written.clone(), digest);
            }
            Source::Name(_) if written != &modelfile.from => {
                return Err(Error::Modelfile {
                    path: args.file.clone(),
                    message: format!("ADAPTER {written}: no such file"),
                });
            }
            Source::Name(_) => {}
        }
    }
    let mut request = modelfile.to_create_request(&args.model, &files);
    request.quantize = args.quantize;
    request.stream = Some(true);
    let stream = client.create_stream(&request).await?;
    follow(stream, context.style).await
}

/// What a FROM or ADAPTER argument names.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    /// A local file, to upload.
    File(PathBuf),
    /// A model name (the path does not exist), for the daemon to resolve.
    Name(String),
}

/// Resolves a FROM/ADAPTER argument: `~` is the home directory, a relative path is relative
/// to the Modelfile's directory; a path that does not exist is a model name.
pub fn resolve(value: &str, modelfile_dir: &Path) -> Source {
    let expanded = match value.strip_prefix("~/") {
        Some(rest) => directories::BaseDirs::new().map(|dirs| dirs.home_dir().join(rest)),
        None => None,
    };
    let path = expanded.unwrap_or_else(|| modelfile_dir.join(value));
    if path.exists() {
        Source::File(path)
    } else {
        Source::Name(value.to_owned())
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// Hashes `path` and uploads it unless the daemon has it; returns its `sha256:<hex>` digest.
async fn upload(client: &Client, path: &Path, style: Style) -> Result<String, Error> {
    if path.is_dir() {
        return Err(Error::Modelfile {
            path: path.to_path_buf(),
            message: "a directory (safetensors) cannot be imported yet: convert it to GGUF first"
                .into(),
        });
    }
    let owned = path.to_path_buf();
    let digest = tokio::task::spawn_blocking(move || sha256_file(&owned, style))
        .await
        .map_err(std::io::Error::other)?
        .map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if !client.blob_exists(&digest).await? {
        crate::output::note(&format!("copying file {digest}"));
        client.upload_blob_file(&digest, path).await?;
    }
    Ok(digest)
}

/// The `sha256:<hex>` digest of a file, with progress (a model file is gigabytes).
pub fn sha256_file(path: &Path, style: Style) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let total = file.metadata()?.len();
    let status = format!("hashing {}", file_name(path));
    let key = path.to_string_lossy().into_owned();
    let mut progress = Progress::new(style);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    let mut done = 0_u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        done += read as u64;
        progress.update(Update {
            status: &status,
            digest: Some(&key),
            total: Some(total),
            completed: Some(done),
        });
    }
    progress.finish();
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::Style;

    #[test]
    fn paths_resolve_relative_to_the_modelfile() {
        let dir = std::env::temp_dir().join(format!("whale-cli-create-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.gguf"), b"GGUF").unwrap();
        assert_eq!(
            resolve("model.gguf", &dir),
            Source::File(dir.join("model.gguf"))
        );
        assert_eq!(
            resolve("deepseek-r1:7b", &dir),
            Source::Name("deepseek-r1:7b".into())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hashes_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path, Style::PLAIN).unwrap(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
