//! `Manifest`: the Docker v2 / OCI image manifest that names a model's config and layers, with
//! Ollama's layer media types. Digests inside are validated while parsing, so a manifest from
//! the network can never name a path outside the store.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// Media types of manifests, configs and Ollama's layers.
pub mod media_type {
    /// Docker image manifest v2, schema 2: what Ollama's registry serves and writes.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// OCI image manifest, accepted as well.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// The config blob (Ollama's `ConfigV2` JSON).
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Model weights (GGUF).
    pub const MODEL: &str = "application/vnd.ollama.image.model";
    /// Chat template (Go template text).
    pub const TEMPLATE: &str = "application/vnd.ollama.image.template";
    /// System prompt text.
    pub const SYSTEM: &str = "application/vnd.ollama.image.system";
    /// JSON object of default options.
    pub const PARAMS: &str = "application/vnd.ollama.image.params";
    /// License text (repeatable).
    pub const LICENSE: &str = "application/vnd.ollama.image.license";
    /// JSON array of seed messages.
    pub const MESSAGES: &str = "application/vnd.ollama.image.messages";
    /// `LoRA` adapter (GGUF).
    pub const ADAPTER: &str = "application/vnd.ollama.image.adapter";
    /// Multimodal projector (GGUF).
    pub const PROJECTOR: &str = "application/vnd.ollama.image.projector";
}

/// One blob a manifest points at: the config or a layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// The model this layer came from (Ollama uses it for cross-repository mounts on push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Name of the layer, for the tensor/json layers of newer Ollama models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A model's manifest: config plus layers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Layer,
    pub layers: Vec<Layer>,
}

impl Manifest {
    /// The largest manifest accepted from the network. Real ones are a few KiB; the limit keeps
    /// a hostile server from making us buffer gigabytes.
    pub const MAX_SIZE: usize = 4 * 1024 * 1024;

    /// A Docker v2 manifest with the given config and layers.
    pub fn new(config: Layer, layers: Vec<Layer>) -> Self {
        Manifest {
            schema_version: 2,
            media_type: Some(media_type::DOCKER_MANIFEST.to_owned()),
            config,
            layers,
        }
    }

    /// Parses manifest JSON, enforcing [`Manifest::MAX_SIZE`] and the schema version.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > Manifest::MAX_SIZE {
            return Err(Error::InvalidManifest {
                reason: format!(
                    "{} bytes is more than the {} byte limit",
                    bytes.len(),
                    Manifest::MAX_SIZE
                ),
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| Error::InvalidManifest {
                reason: e.to_string(),
            })?;
        if manifest.schema_version != 2 {
            return Err(Error::InvalidManifest {
                reason: format!(
                    "schemaVersion {} (only 2 is supported)",
                    manifest.schema_version
                ),
            });
        }
        Ok(manifest)
    }

    /// The JSON bytes, as written to the store and pushed.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serialises")
    }

    /// The media type to send with the manifest (Docker v2 when the manifest names none).
    pub fn content_type(&self) -> &str {
        self.media_type
            .as_deref()
            .unwrap_or(media_type::DOCKER_MANIFEST)
    }

    /// Every blob the manifest needs: layers in order, then the config (Ollama's pull order).
    pub fn blobs(&self) -> impl Iterator<Item = &Layer> {
        self.layers.iter().chain(std::iter::once(&self.config))
    }

    /// Sum of the sizes of all blobs: the model's size as `ollama list` shows it.
    pub fn total_size(&self) -> u64 {
        self.blobs().map(|layer| layer.size).sum()
    }

    /// The first layer of the given media type (e.g. [`media_type::MODEL`]).
    pub fn layer(&self, media_type: &str) -> Option<&Layer> {
        self.layers
            .iter()
            .find(|layer| layer.media_type == media_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:6e4c38e1172f42fdbff13edf9a7a017679fb82b0fde415a3e8b3c31c6ed4a4e4";
    const B: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn sample() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{B}","size":487}},"layers":[{{"mediaType":"{}","digest":"{A}","size":4683073184,"from":"x"}}]}}"#,
            media_type::DOCKER_MANIFEST,
            media_type::DOCKER_CONFIG,
            media_type::MODEL
        )
    }

    #[test]
    fn parses_and_round_trips() {
        let manifest = Manifest::parse(sample().as_bytes()).unwrap();
        assert_eq!(manifest.total_size(), 4_683_073_184 + 487);
        assert_eq!(
            manifest.layer(media_type::MODEL).unwrap().from.as_deref(),
            Some("x")
        );
        let order: Vec<_> = manifest.blobs().map(|l| l.digest.to_string()).collect();
        assert_eq!(order, [A, B]);
        assert_eq!(Manifest::parse(&manifest.to_json()).unwrap(), manifest);
    }

    #[test]
    fn rejects_escaping_digests_and_limits() {
        let escaping = sample().replace(A, "sha256:../../../../tmp/x");
        let err = Manifest::parse(escaping.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid digest"), "{err}");
        let huge = vec![b' '; Manifest::MAX_SIZE + 1];
        assert!(
            Manifest::parse(&huge)
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        let v1 = sample().replace("\"schemaVersion\":2", "\"schemaVersion\":1");
        assert!(
            Manifest::parse(v1.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("schemaVersion 1")
        );
    }
}
