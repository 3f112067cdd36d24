//! `POST /api/generate`: single-prompt completion, request and streamed response.

use serde::{Deserialize, Serialize};

use crate::{Format, KeepAlive, Options, Think};

/// Body of `POST /api/generate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Base64 images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::format::deserialize_optional"
    )]
    pub format: Option<Format>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Deprecated token context from a previous response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<i64>>,
    /// Absent means streaming (Ollama's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<KeepAlive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<Think>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<bool>,
    /// Return each generated token's log probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// With `logprobs`, this many most likely tokens at each position too (0–20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// Answer with the prompt the model would evaluate (`_debug_info`) instead of running it.
    #[serde(
        default,
        rename = "_debug_render_only",
        skip_serializing_if = "Option::is_none"
    )]
    pub debug_render_only: Option<bool>,
}

/// What `_debug_render_only` answers with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugInfo {
    /// The prompt as the model would see it: the template rendered, special tokens as text.
    pub rendered_template: String,
    pub image_count: u32,
}

/// One NDJSON line of `/api/generate` (or the whole answer when not streaming).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateResponse {
    pub model: String,
    /// RFC 3339 UTC timestamp.
    pub created_at: String,
    #[serde(default)]
    pub response: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<i64>>,
    /// The log probabilities of this chunk's tokens, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Logprob>>,
    #[serde(flatten)]
    pub metrics: Metrics,
    /// The rendered prompt, for `_debug_render_only`.
    #[serde(
        default,
        rename = "_debug_info",
        skip_serializing_if = "Option::is_none"
    )]
    pub debug_info: Option<DebugInfo>,
}

/// A generated token's log probability, and the most likely tokens at its position.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Logprob {
    #[serde(flatten)]
    pub token: TokenLogprob,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_logprobs: Vec<TokenLogprob>,
}

/// One token: its text, log probability, and UTF-8 bytes (a token may hold part of a
/// character).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<Vec<u8>>,
}

/// Final-chunk timings and counts; durations in nanoseconds, omitted when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_duration: Option<u64>,
    /// Tokens drafted ahead by speculative decoding, and how many of them the model accepted
    /// (whale's own fields; absent when nothing was drafted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_accepted_count: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_reference_examples() {
        for json in [
            r#"{"model":"llama3.2","prompt":"Why is the sky blue?"}"#,
            r#"{"model":"deepseek-r1","prompt":"hi","format":"json","stream":false,"keep_alive":"5m0s","think":true}"#,
            r#"{"model":"m","prompt":"p","options":{"temperature":0.6,"stop":["a"]},"raw":true,"images":["aGk="],"context":[1,2]}"#,
            r#"{"model":"m","prompt":"p","logprobs":true,"top_logprobs":5}"#,
        ] {
            let request: GenerateRequest = serde_json::from_str(json).unwrap();
            assert_eq!(
                serde_json::to_value(&request).unwrap(),
                serde_json::from_str::<serde_json::Value>(json).unwrap(),
                "{json}"
            );
        }
        for json in [
            r#"{"model":"llama3.2","created_at":"2025-01-01T00:00:00.1Z","response":"The","done":false}"#,
            r#"{"model":"m","created_at":"2025-01-01T00:00:00.1Z","response":" 6","done":false,"logprobs":[{"token":" 6","logprob":-0.01,"bytes":[32,54],"top_logprobs":[{"token":" 6","logprob":-0.01,"bytes":[32,54]},{"token":" six","logprob":-5.5}]}]}"#,
            r#"{"model":"llama3.2","created_at":"2025-01-01T00:00:00.3Z","response":"","done":true,"done_reason":"stop","context":[1,2,3],"total_duration":5043500667,"load_duration":5025959,"prompt_eval_count":26,"prompt_eval_duration":325953000,"eval_count":290,"eval_duration":4709213000}"#,
        ] {
            let response: GenerateResponse = serde_json::from_str(json).unwrap();
            assert_eq!(
                serde_json::to_value(&response).unwrap(),
                serde_json::from_str::<serde_json::Value>(json).unwrap(),
                "{json}"
            );
        }
        let empty_format: GenerateRequest =
            serde_json::from_str(r#"{"model":"m","format":""}"#).unwrap();
        assert_eq!(empty_format.format, None);
    }
}
