//! whale-daemon: the engine, scheduler and HTTP API behind `whaled`.
//!
//! `whaled`'s `main` resolves a [`Config`] and calls [`serve`]; everything else lives here.
//! Only `engine` touches llama.cpp; `gguf` (from whale-format) reads model headers in plain Rust
//! so that a hostile file is refused before llama.cpp sees it.

pub mod catalogue;
pub mod config;
pub mod create;
pub mod engine;
pub mod error;
pub mod fit;
pub mod http;
pub mod inference;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod offload;
pub mod options;
pub mod remote;
pub mod rpc;
pub mod runner;
pub mod scheduler;
pub mod state;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use whale_registry::Store;

pub use config::Config;
pub use state::AppState;
/// The GGUF reader and chat templates live in whale-format (plain Rust, fuzzed); the daemon
/// reaches them under their old paths.
pub use whale_format::{chat, gguf};

/// What requests still running when whaled stops are told.
const SHUT_DOWN: &str = "whaled is shutting down";

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
    let launcher = runner::Launcher::current(&config.log)?;
    let scheduler = scheduler::Scheduler::new(
        scheduler::Limits {
            num_parallel: config.num_parallel,
            max_queue: config.max_queue,
            max_loaded_models: config.max_loaded_models,
            max_memory: config.max_memory,
            gpu_overhead: config.gpu_overhead,
            default_keep_alive: config.keep_alive,
            num_threads: config.num_threads,
            sample_threads: config.sample_threads,
            kv_pool: config.kv_pool,
            workers: config
                .workers
                .iter()
                .map(|address| rpc::WorkerLink {
                    address: address.clone(),
                    token: config.worker_token.as_ref().map(|token| token.0.clone()),
                    ca: config.worker_ca.clone(),
                })
                .collect(),
        },
        launcher,
    );
    Ok(AppState {
        config,
        store,
        metrics: metrics::Metrics::new(scheduler.clone()),
        scheduler,
        started: Instant::now(),
    })
}

/// Serves the API on `listener` until `shutdown` resolves. Then it takes no new connections
/// and no new generations, lets those in flight finish for up to the configured grace period,
/// cancels what is left, and stops every runner before returning.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(state);
    let app = http::router(&state);
    tokio::spawn(log_compute(Arc::clone(&state)));
    let signalled = Arc::new(tokio::sync::Notify::new());
    let notice = {
        let signalled = Arc::clone(&signalled);
        let scheduler = state.scheduler.clone();
        let grace = state.config.shutdown_grace;
        async move {
            shutdown.await;
            tracing::info!(?grace, "shutting down: finishing the requests in flight");
            scheduler.close();
            signalled.notify_one();
        }
    };
    let server = http::server::serve(
        listener,
        app,
        http::server::Limits {
            max_connections: state.config.max_connections as usize,
            header_timeout: state.config.header_timeout.max(Duration::from_secs(1)),
        },
        notice,
    );
    let mut server = std::pin::pin!(server);
    let grace_over = async {
        signalled.notified().await;
        tokio::time::sleep(state.config.shutdown_grace).await;
    };
    tokio::select! {
        result = &mut server => result?,
        () = grace_over => {
            if state.scheduler.is_busy() {
                tracing::warn!("grace period over: cancelling the requests still running");
            }
            state.scheduler.unload_all(SHUT_DOWN).await;
            // Their streams now end with an error; give the server a moment to send it.
            if let Ok(result) = tokio::time::timeout(Duration::from_secs(2), &mut server).await {
                result?;
            }
        }
    }
    state.scheduler.unload_all(SHUT_DOWN).await;
    Ok(())
}

/// Says in the log, once at start, what models will run on (Ollama's "inference compute"
/// lines): each GPU llama.cpp can use here, asked of a runner as every question about devices
/// is, or the CPU when there is none. The answer is kept for a pull's fit check.
async fn log_compute(state: Arc<AppState>) {
    let gpus = match state.scheduler.ask_gpus().await {
        Ok(gpus) => gpus,
        Err(error) => {
            tracing::warn!(%error, "inference compute: cannot ask a runner for the devices");
            return;
        }
    };
    for gpu in &gpus {
        tracing::info!(
            id = %gpu.name,
            name = %gpu.description,
            total = %memory::format_bytes(gpu.total),
            available = %memory::format_bytes(gpu.free),
            "inference compute"
        );
    }
    if gpus.is_empty() {
        let threads = state.config.num_threads.map_or_else(
            || std::thread::available_parallelism().map_or(4, std::num::NonZeroUsize::get),
            |threads| threads as usize,
        );
        tracing::info!(
            id = %"cpu",
            threads,
            total = %memory::format_bytes(memory::total_memory()),
            available = %memory::format_bytes(memory::available_memory()),
            "inference compute: no GPU, models run on the CPU"
        );
    }
}
