//! The HTTP surface: one router for Ollama's `/api/*`, the OpenAI/DeepSeek `/v1/*`, and the
//! store's read-only `/v2/` registry routes. Handlers are thin: they extract, validate into
//! typed requests, call the core ([`crate::inference`]), and map the result; errors become
//! `{"error": ...}` (OpenAI's error object on `/v1/*`) through the one table in [`error`].
//! Streams are NDJSON on `/api/*` and Server-Sent Events on `/v1/*`. Before any of it,
//! [`guard`] decides who may ask at all, and [`server`] bounds connections. Every request gets
//! an id ([`request_id`]) and is counted ([`metrics`]); `/metrics` serves the counts to
//! Prometheus.

mod catalogue;
pub mod error;
mod extract;
pub mod guard;
mod metrics;
mod ndjson;
mod ollama;
mod openai;
mod request_id;
pub mod server;
mod sse;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, head, post};

use crate::state::AppState;

pub use extract::Json;

/// Largest JSON body accepted; blob uploads are streamed and not bound by it.
pub const MAX_JSON_BODY: usize = 32 << 20;

/// Every route whaled serves.
pub fn router(state: &Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/", get(ollama::root).head(ollama::root))
        .route("/api/version", get(ollama::version).head(ollama::version))
        .route("/metrics", get(metrics::scrape))
        .route("/api/generate", post(ollama::generate))
        .route("/api/chat", post(ollama::chat))
        .route("/api/tags", get(ollama::tags).head(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/catalog", get(catalogue::list))
        .route("/api/copy", post(ollama::copy))
        .route("/api/delete", axum::routing::delete(ollama::delete))
        .route("/api/pull", post(ollama::pull))
        .route("/api/push", post(ollama::push))
        .route("/api/create", post(ollama::create))
        .route("/api/verify", post(ollama::verify))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        // Names may hold slashes (`hf.co/user/repo:tag`).
        .route("/v1/models/{*model}", get(openai::model))
        .route(
            "/api/blobs/{digest}",
            head(ollama::blob_exists)
                .post(ollama::blob_upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .with_state(Arc::clone(state));
    let policy = Arc::new(policy(&state.config));
    // CORS outside the guard, so that what the guard refuses is readable by pages it allows.
    api.merge(whale_registry::server::router(state.store.clone()))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&policy),
            guard::check,
        ))
        // Refusals are counted too.
        .layer(middleware::from_fn_with_state(
            Arc::clone(state),
            metrics::track,
        ))
        .layer(policy.cors())
        // Outermost, so that everything below logs under the request's id.
        .layer(middleware::from_fn(request_id::assign))
}

/// The guard's policy from whaled's configuration.
pub fn policy(config: &crate::Config) -> guard::Policy {
    let keys: Vec<String> = config.api_key.iter().map(|key| key.0.clone()).collect();
    guard::Policy::new(&config.allowed_hosts, &config.origins, &keys)
}
