//! whale-daemon: the engine, scheduler and HTTP API behind `whaled`.
//!
//! `whaled`'s `main` resolves a [`Config`] and calls [`serve`]; everything else lives here.
//! Only `engine` touches llama.cpp; `gguf` reads model headers in plain Rust so that a hostile
//! file is refused before llama.cpp sees it.

pub mod chat;
pub mod completion;
pub mod config;
pub mod create;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod http;
pub mod memory;
pub mod model;
pub mod offload;
pub mod options;
pub mod scheduler;
pub mod state;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use whale_registry::Store;

pub use config::Config;
pub use state::AppState;

/// The version `/api/version` reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Opens the store named by `config` and builds the shared state.
pub fn state(config: Config) -> anyhow::Result<AppState> {
    let root = match &config.models {
        Some(root) => root.clone(),
        None => Store::default_root()
            .ok_or_else(|| anyhow::anyhow!("no home directory: set {}", config::ENV_MODELS))?,
    };
    let store = Store::open(&root)?;
    let scheduler = scheduler::Scheduler::new(scheduler::Limits {
        num_parallel: config.num_parallel,
        max_queue: config.max_queue,
        max_loaded_models: config.max_loaded_models,
        max_memory: config.max_memory,
        gpu_overhead: config.gpu_overhead,
        default_keep_alive: config.keep_alive,
        num_threads: config.num_threads,
    });
    Ok(AppState {
        config,
        store,
        scheduler,
        started: Instant::now(),
    })
}

/// Serves the API on `listener` until `shutdown` resolves, then unloads every model.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(state);
    let app = http::router(&state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    state.scheduler.unload_all().await;
    Ok(())
}
