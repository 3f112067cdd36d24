//! whale-api: the wire types of every endpoint whaled serves, the Modelfile format, and an
//! async client. No llama.cpp, no axum: the CLI, the tests and the daemon all depend on it.
//!
//! Types follow Ollama field for field (names, optionality, absent fields stay absent), so
//! that the official Ollama clients and scripts written against api.deepseek.com both work.

// Product names (OpenAI, DeepSeek, LoRA) are prose here, not code identifiers.
#![allow(clippy::doc_markdown)]

pub mod catalog;
pub mod chat;
pub mod client;
pub mod embed;
pub mod error;
pub mod format;
pub mod generate;
pub mod host;
pub mod keep_alive;
pub mod model;
pub mod modelfile;
pub mod openai;
pub mod options;
pub mod stream;
pub mod think;

pub use catalog::{CatalogModel, CatalogResponse};
pub use chat::{
    ChatRequest, ChatResponse, Message, Tool, ToolCall, ToolCallFunction, ToolFunction,
};
pub use client::Client;
pub use embed::{EmbedInput, EmbedRequest, EmbedResponse, EmbeddingRequest, EmbeddingResponse};
pub use error::{ClientError, Error, ParseError};
pub use format::Format;
pub use generate::{DebugInfo, GenerateRequest, GenerateResponse, Logprob, Metrics, TokenLogprob};
pub use host::{DEFAULT_HOST, Host, Scheme, WHALE_API_KEY, WHALE_HOST};
pub use keep_alive::KeepAlive;
pub use model::{
    CopyRequest, CreateRequest, DeleteRequest, ErrorResponse, LayerShare, License, ListModel,
    ListResponse, MissingBlob, ModelDetails, ProcessGpu, ProcessModel, ProcessResponse,
    ProgressResponse, PullRequest, PushRequest, ShowRequest, ShowResponse, VerifyRequest,
    VerifyResponse, VersionResponse,
};
pub use modelfile::Modelfile;
pub use options::Options;
pub use think::{Think, ThinkLevel};
