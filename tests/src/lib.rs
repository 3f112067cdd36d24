//! Test support shared by the end-to-end tests: the GGUF writer ([`gguf`]) and the fixture
//! models it makes or fetches ([`fixtures`]), a real `whaled` to test against ([`whaled`]), and
//! the raw llama-cpp-2 decode loop benchmarks compare with ([`raw`]) with their statistics
//! ([`bench`]).

// DeepSeek, MoE, YaRN, Q4_K_M are names in prose here, not code to put in backticks
#![allow(clippy::doc_markdown)]

use std::path::{Path, PathBuf};

pub mod bench;
pub mod fixtures;
pub mod gguf;
pub mod raw;
pub mod whaled;

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}
