//! `GET /api/catalog`: whale's catalogue of DeepSeek models (whale's own endpoint; Ollama has
//! none), each with what it is and whether it fits this machine.

use serde::{Deserialize, Serialize};

/// Answer of `GET /api/catalog`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogResponse {
    #[serde(default)]
    pub models: Vec<CatalogModel>,
    /// The memory a model may use here: RAM (or `WHALE_MAX_MEMORY`), GPUs and workers.
    #[serde(default)]
    pub memory: u64,
}

/// One catalogue entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogModel {
    /// The name to pull and run it by (`deepseek-r1:14b`).
    pub name: String,
    /// What it is (`DeepSeek-R1-Distill-Qwen-14B`).
    pub title: String,
    /// Where a pull fetches it from.
    pub source: String,
    /// The GGUF architecture (`qwen2`, `llama`, `deepseek2`…).
    pub architecture: String,
    pub parameter_size: String,
    pub quantization_level: String,
    /// Bytes of its weights.
    pub size: u64,
    pub context_length: u32,
    pub license: String,
    /// The prompt format it speaks (`r1`, `r1-distill`, `v3`, `v3.1`…).
    pub template: String,
    /// A smaller model of the catalogue that can draft for it (speculative decoding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
    /// Whether its weights fit in `memory`.
    pub fits: bool,
    /// Whether the store has it.
    pub pulled: bool,
}
