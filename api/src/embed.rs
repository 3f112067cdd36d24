//! `POST /api/embed` (batch, normalised) and the legacy `POST /api/embeddings`.

use serde::{Deserialize, Serialize};

use crate::{KeepAlive, Options};

/// `input`: one string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

impl EmbedInput {
    /// The inputs as a list; `""` is one empty input, as Ollama treats it.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// Body of `POST /api/embed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedRequest {
    pub model: String,
    pub input: EmbedInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<KeepAlive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

/// Answer of `POST /api/embed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbedResponse {
    pub model: String,
    pub embeddings: Vec<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
}

/// Body of the legacy `POST /api/embeddings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<KeepAlive>,
}

/// Answer of the legacy `POST /api/embeddings` (not normalised).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    pub embedding: Vec<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_string_or_list() {
        for json in [
            r#"{"model":"all-minilm","input":"Why is the sky blue?"}"#,
            r#"{"model":"all-minilm","input":["a","b"],"truncate":false,"dimensions":256}"#,
        ] {
            let request: EmbedRequest = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&request).unwrap(), json);
        }
        let r: EmbedRequest = serde_json::from_str(r#"{"model":"m","input":"x"}"#).unwrap();
        assert_eq!(r.input.into_vec(), vec!["x".to_owned()]);
        assert!(serde_json::from_str::<EmbedRequest>(r#"{"model":"m","input":[1]}"#).is_err());
    }
}
