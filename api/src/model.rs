//! Model management endpoints: pull, push, create, tags, show, copy, delete, ps, version,
//! and the NDJSON progress lines they stream.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Message;

/// Body of `POST /api/pull` and `POST /api/push`. Old clients send `name` instead of `model`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    #[serde(default, alias = "name")]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Pull only: fetch from another whale's `/v2/` at this address (`http://host:11434`)
    /// instead of the name's registry (whale's own field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Pull only: download even when the model will not fit this machine's memory or disk
    /// (whale's own field; without it such a pull is refused before any blob is fetched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// `POST /api/push` takes the same fields as pull.
pub type PushRequest = PullRequest;

/// One progress line of pull, push or create.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressResponse {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
}

impl ProgressResponse {
    /// A line with only a status.
    pub fn status(status: impl Into<String>) -> Self {
        Self {
            status: status.into(),
            ..Self::default()
        }
    }
}

/// `license` in create: one text or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum License {
    One(String),
    Many(Vec<String>),
}

impl License {
    /// Every license text.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// Body of `POST /api/create` (the ≥0.5.5 form; the legacy `modelfile`/`path` fields are
/// accepted so the daemon can parse them or say they are unsupported).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    #[serde(default, alias = "name")]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// File name → `sha256:<hex>` of blobs uploaded beforehand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapters: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<License>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Option name → JSON value (`stop` as an array).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Legacy (< 0.5.5): the whole Modelfile text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modelfile: Option<String>,
    /// Legacy (< 0.5.5): a Modelfile path on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Model details shared by tags, show and ps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDetails {
    #[serde(default)]
    pub parent_model: String,
    #[serde(default)]
    pub format: String,
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub families: Option<Vec<String>>,
    #[serde(default)]
    pub parameter_size: String,
    #[serde(default)]
    pub quantization_level: String,
}

/// Answer of `GET /api/tags`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    #[serde(default)]
    pub models: Vec<ListModel>,
}

/// One local model in `/api/tags`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListModel {
    pub name: String,
    pub model: String,
    /// RFC 3339 with local offset.
    pub modified_at: String,
    pub size: u64,
    /// Hex sha256 of the manifest, without the `sha256:` prefix.
    pub digest: String,
    #[serde(default)]
    pub details: ModelDetails,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    /// A model another server runs: its name there, and that server's API address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_host: Option<String>,
}

/// Body of `POST /api/show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowRequest {
    #[serde(default, alias = "name")]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbose: Option<bool>,
}

/// Answer of `POST /api/show`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShowResponse {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub license: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub modelfile: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parameters: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub template: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system: String,
    #[serde(default)]
    pub details: ModelDetails,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    /// GGUF metadata; always present (at least `{}`), clients require it.
    #[serde(default)]
    pub model_info: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub modified_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_host: Option<String>,
}

/// Body of `POST /api/copy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRequest {
    pub source: String,
    pub destination: String,
}

/// Body of `DELETE /api/delete`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    #[serde(default, alias = "name")]
    pub model: String,
}

/// Answer of `GET /api/ps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessResponse {
    #[serde(default)]
    pub models: Vec<ProcessModel>,
}

/// One loaded model in `/api/ps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessModel {
    pub name: String,
    pub model: String,
    pub size: u64,
    pub digest: String,
    #[serde(default)]
    pub details: ModelDetails,
    pub expires_at: String,
    pub size_vram: u64,
    #[serde(default)]
    pub context_length: u64,
    /// whale's own: with workers (`whaled --workers`), how many layers (the output layer counted
    /// as one) live on this machine (`local`) and on each worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerShare>,
    /// whale's own: the GPUs the model was loaded on and what its load took of each (then
    /// `size_vram` is their sum).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<ProcessGpu>,
}

/// A GPU a loaded model uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessGpu {
    /// llama.cpp's device name (`CUDA0`).
    pub name: String,
    /// What the driver calls it (`NVIDIA H200`).
    pub description: String,
    /// Bytes the model's load took on it.
    pub size_vram: u64,
}

/// Where some of a model's layers live.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerShare {
    /// `local`, or a worker's `host:port`.
    #[serde(rename = "where")]
    pub place: String,
    pub layers: u32,
}

/// Body of `POST /api/verify` (whale's own): re-hash every blob of the store and check every
/// model's blobs are there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// Remove blobs whose content does not match their digest, so a pull fetches them again.
    #[serde(default)]
    pub repair: bool,
}

/// A blob a model needs that the store does not hold whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingBlob {
    pub model: String,
    pub digest: String,
}

/// Answer of `POST /api/verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyResponse {
    /// `"ok"` when every model is whole and every blob matches its digest, else `"damaged"`.
    pub status: String,
    /// Blobs re-hashed, and their bytes.
    pub blobs: u64,
    pub bytes: u64,
    /// Digests of blobs whose content does not match (removed if `repair` was asked).
    #[serde(default)]
    pub corrupt: Vec<String>,
    #[serde(default)]
    pub missing: Vec<MissingBlob>,
    /// Manifest files that are not manifests, relative to the store.
    #[serde(default)]
    pub invalid_manifests: Vec<String>,
    /// Temporary files and partial downloads, relative to the store.
    #[serde(default)]
    pub leftovers: Vec<String>,
}

/// Answer of `GET /api/version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionResponse {
    /// The Ollama API version served (clients gate features on it).
    pub version: String,
    /// `"whaled"` when the server is whale's daemon; absent from Ollama.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// whale's own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whale_version: Option<String>,
}

/// The error body of every native endpoint: `{"error": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + for<'de> Deserialize<'de>>(json: &str) {
        let value: T = serde_json::from_str(json).unwrap();
        assert_eq!(
            serde_json::to_value(&value).unwrap(),
            serde_json::from_str::<serde_json::Value>(json).unwrap(),
            "{json}"
        );
    }

    #[test]
    fn round_trips_reference_examples() {
        round_trip::<PullRequest>(r#"{"model":"deepseek-r1:14b","insecure":true,"stream":false}"#);
        round_trip::<ProgressResponse>(r#"{"status":"pulling manifest"}"#);
        round_trip::<ProgressResponse>(
            r#"{"status":"pulling 6e4c38e1172f","digest":"sha256:6e4c38e1172f42fdbff13edf9a7a017679fb82b0fde415a3e8b3c31c6ed4a4e4","total":4683075271,"completed":241970}"#,
        );
        round_trip::<CreateRequest>(
            r#"{"model":"mario","from":"llama3.2","template":"{{ .Prompt }}","license":["a","b"],"system":"You are Mario.","parameters":{"stop":["x"],"temperature":0.6},"messages":[{"role":"user","content":"hi"}],"quantize":"q4_K_M"}"#,
        );
        round_trip::<CreateRequest>(
            r#"{"model":"m","files":{"model.gguf":"sha256:abc"},"license":"MIT"}"#,
        );
        round_trip::<ListResponse>(
            r#"{"models":[{"name":"deepseek-r1:latest","model":"deepseek-r1:latest","modified_at":"2025-05-10T08:06:48.639712648-07:00","size":4683075271,"digest":"0a8c26691023","details":{"parent_model":"","format":"gguf","family":"qwen2","families":["qwen2"],"parameter_size":"7.6B","quantization_level":"Q4_K_M"}}]}"#,
        );
        round_trip::<ShowResponse>(
            r#"{"parameters":"stop                           \"<｜end▁of▁sentence｜>\"","template":"{{ .Prompt }}","details":{"parent_model":"","format":"gguf","family":"qwen2","families":null,"parameter_size":"7.6B","quantization_level":"Q4_K_M"},"model_info":{"general.architecture":"qwen2"},"capabilities":["completion","thinking"],"modified_at":"2025-05-10T08:06:48-07:00"}"#,
        );
        round_trip::<CopyRequest>(r#"{"source":"a","destination":"b"}"#);
        round_trip::<ProcessResponse>(
            r#"{"models":[{"name":"mistral:latest","model":"mistral:latest","size":5137025024,"digest":"2ae6","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"7.2B","quantization_level":"Q4_0"},"expires_at":"2024-06-04T14:38:31.83753-07:00","size_vram":5137025024,"context_length":4096}]}"#,
        );
        round_trip::<VersionResponse>(r#"{"version":"0.1.0"}"#);
        round_trip::<ErrorResponse>(r#"{"error":"model 'x' not found"}"#);
    }

    #[test]
    fn legacy_name_is_accepted() {
        let pull: PullRequest = serde_json::from_str(r#"{"name":"llama3"}"#).unwrap();
        assert_eq!(pull.model, "llama3");
        let delete: DeleteRequest = serde_json::from_str(r#"{"name":"llama3"}"#).unwrap();
        assert_eq!(delete.model, "llama3");
        let create: CreateRequest =
            serde_json::from_str(r#"{"name":"m","modelfile":"FROM x","path":"/tmp/Modelfile"}"#)
                .unwrap();
        assert_eq!(create.model, "m");
        assert_eq!(create.modelfile.as_deref(), Some("FROM x"));
    }
}
