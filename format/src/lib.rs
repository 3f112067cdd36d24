//! whale-format: what whaled reads out of untrusted model files and Modelfiles before llama.cpp
//! sees them, in plain Rust with no native code, so that it builds fast and can be fuzzed.
//!
//! - [`gguf`]: the GGUF header reader and validator (a hostile file is refused with a
//!   [`gguf::GgufError`], never handed on).
//! - [`chat`]: chat templates (Jinja, and Ollama's Go templates translated into it), the
//!   reasoning splitter, the `think` policy and tool-call parsers.
//!
//! whale-daemon re-exports both modules (`whale_daemon::gguf`, `whale_daemon::chat`).

pub mod chat;
pub mod gguf;
