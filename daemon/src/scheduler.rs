//! The scheduler: which models are loaded, who is using them, and when they go.
//!
//! A model is loaded on first use and keyed by the digest of its weights blob, so two tags of
//! the same weights share one engine. Each request holds a [`Lease`] for as long as it runs;
//! when the last lease of a model is dropped its `keep_alive` timer starts (0 unloads at once,
//! [`KeepAlive::Forever`] never). Before a load the GGUF is read and validated (so no hostile
//! file reaches llama.cpp) and its memory is planned: idle models are evicted, least recently
//! used first, until the new one fits; a busy model is never evicted; a model that cannot fit
//! is refused with the numbers instead of letting the kernel kill the machine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::KeepAlive;
use crate::engine::{self, Engine, LoadParams};
use crate::error::Error;
use crate::gguf::GgufFile;
use crate::memory::{self, MemoryEstimate};
use crate::offload::{LayerSizes, Placement};

/// Limits the scheduler works within, from the daemon's config.
#[derive(Debug, Clone)]
pub struct Limits {
    pub num_parallel: u32,
    pub max_queue: u32,
    pub max_loaded_models: u32,
    pub max_memory: Option<u64>,
    /// GPU bytes never planned into (`WHALE_GPU_OVERHEAD`).
    pub gpu_overhead: u64,
    pub default_keep_alive: KeepAlive,
    pub num_threads: Option<u32>,
}

/// What a request needs loaded.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    /// Digest of the weights blob: the key two tags of the same model share.
    pub key: String,
    /// The name the request used, shown by `ps`.
    pub name: String,
    /// Digest of the manifest, shown by `ps`.
    pub manifest_digest: String,
    pub path: PathBuf,
    /// What the loaded model is made with.
    pub options: RunnerOptions,
    /// The request's `keep_alive`; `None` keeps the model's current setting.
    pub keep_alive: Option<KeepAlive>,
}

/// The options that shape a loaded model: a request that differs in any of them reloads it
/// (as Ollama's `needsReload`), e.g. another `num_ctx` or `num_gpu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerOptions {
    pub num_ctx: u32,
    pub num_batch: u32,
    pub num_gpu: Option<i32>,
    pub num_thread: Option<u32>,
    pub use_mmap: bool,
    pub embedding: bool,
}

/// A loaded model.
pub struct Runner {
    pub name: String,
    pub key: String,
    pub manifest_digest: String,
    pub engine: Engine,
    pub estimate: MemoryEstimate,
    /// Context length per sequence, after capping at the model's trained length.
    pub num_ctx: u32,
    /// The options requests asked for; a request asking for others reloads the model.
    requested: RunnerOptions,
    /// Leases outstanding: running requests plus those waiting for a slot.
    active: AtomicU32,
    /// Bumped on every acquire, so an expiry timer started earlier knows it is stale.
    generation: AtomicU64,
    keep_alive: Mutex<KeepAlive>,
    expires_at: Mutex<Option<SystemTime>>,
    last_used: Mutex<Instant>,
}

impl Runner {
    fn is_idle(&self) -> bool {
        self.active.load(Ordering::SeqCst) == 0
    }

    /// When the model will be unloaded if no request comes (`None` while it is in use forever).
    pub fn expires_at(&self) -> Option<SystemTime> {
        *self.expires_at.lock().expect("expires_at lock")
    }
}

/// A request's hold on a loaded model; dropping it starts the model's keep-alive timer.
pub struct Lease {
    runner: Arc<Runner>,
    scheduler: Arc<Shared>,
}

impl Lease {
    pub fn engine(&self) -> &Engine {
        &self.runner.engine
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.runner.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.scheduler.start_expiry(&self.runner);
        }
    }
}

/// Loaded models and the policy that loads and unloads them.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

struct Shared {
    limits: Limits,
    /// Invariant: a key maps to at most one runner; entries leave only through `remove`.
    runners: Mutex<HashMap<String, Arc<Runner>>>,
    /// One load at a time, as memory is planned against what is loaded.
    loading: tokio::sync::Mutex<()>,
    /// Requests waiting on a load, bounded by `max_queue` like those waiting for a slot.
    waiting: AtomicU32,
}

impl Scheduler {
    pub fn new(limits: Limits) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                runners: Mutex::new(HashMap::new()),
                loading: tokio::sync::Mutex::new(()),
                waiting: AtomicU32::new(0),
            }),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// Hands out the model `request` names, loading it (and evicting idle models) if needed.
    pub async fn acquire(&self, request: &LoadRequest) -> Result<Lease, Error> {
        if let Some(lease) = self.shared.try_attach(request)? {
            return Ok(lease);
        }
        let limits = &self.shared.limits;
        // The request that loads the model is served, not waiting: only those behind it count.
        if self.shared.waiting.fetch_add(1, Ordering::SeqCst) > limits.max_queue {
            self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::QueueFull);
        }
        let result = self.load(request).await;
        self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn load(&self, request: &LoadRequest) -> Result<Lease, Error> {
        let _one_load = self.shared.loading.lock().await;
        // Another request may have loaded it while this one waited.
        if let Some(lease) = self.shared.try_attach(request)? {
            return Ok(lease);
        }
        // Loaded with other options (num_ctx, num_gpu, embedding, …): unload it first, once idle.
        if let Some(stale) = self.shared.get(&request.key) {
            self.shared.wait_idle(&stale).await?;
            self.shared.remove(&request.key).await;
        }

        let path = request.path.clone();
        let gguf = tokio::task::spawn_blocking(move || GgufFile::open(&path))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|source| Error::InvalidModel {
                name: request.name.clone(),
                message: source.to_string(),
            })?;
        let num_ctx = clamp_context(request.options.num_ctx, &gguf);
        let num_parallel = self.shared.limits.num_parallel;
        let estimate = memory::estimate(&gguf, num_ctx, num_parallel, memory::KvType::F16);
        let layers = LayerSizes::new(
            &gguf,
            memory::kv_cache_per_layer(&gguf, num_ctx, num_parallel, memory::KvType::F16),
            estimate.compute,
        );
        let estimate = self
            .shared
            .make_gpu_room(&layers, request.options.num_gpu, estimate)
            .await;
        self.shared.make_room(&request.name, &estimate).await?;

        let params = LoadParams {
            model_path: request.path.clone(),
            name: request.name.clone(),
            num_ctx,
            num_parallel: self.shared.limits.num_parallel,
            num_batch: request.options.num_batch,
            num_threads: request
                .options
                .num_thread
                .or(self.shared.limits.num_threads),
            placement: Placement {
                gpu_layers: estimate.gpu_layers,
                cpu_moe_layers: estimate.cpu_moe_layers,
                vram: estimate.vram,
            },
            use_mmap: request.options.use_mmap,
            embedding: request.options.embedding,
        };
        let started = Instant::now();
        let engine = Engine::load(params).await.map_err(Error::from)?;
        tracing::info!(model = %request.name, elapsed = ?started.elapsed(), "loaded");
        let keep_alive = request
            .keep_alive
            .unwrap_or(self.shared.limits.default_keep_alive);
        let runner = Arc::new(Runner {
            name: request.name.clone(),
            key: request.key.clone(),
            manifest_digest: request.manifest_digest.clone(),
            engine,
            estimate,
            num_ctx,
            requested: request.options,
            active: AtomicU32::new(1),
            generation: AtomicU64::new(0),
            keep_alive: Mutex::new(keep_alive),
            expires_at: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
        });
        self.shared
            .runners
            .lock()
            .expect("runners lock")
            .insert(request.key.clone(), Arc::clone(&runner));
        Ok(Lease {
            runner,
            scheduler: Arc::clone(&self.shared),
        })
    }

    /// Unloads the model with this key now if idle, else as soon as its requests finish.
    pub async fn unload(&self, key: &str) {
        let Some(runner) = self.shared.get(key) else {
            return;
        };
        *runner.keep_alive.lock().expect("keep_alive lock") = KeepAlive::For(Duration::ZERO);
        if runner.is_idle() {
            self.shared.remove(key).await;
        }
    }

    /// Unloads every model (daemon shutdown).
    pub async fn unload_all(&self) {
        let keys: Vec<String> = self
            .shared
            .runners
            .lock()
            .expect("runners lock")
            .keys()
            .cloned()
            .collect();
        for key in keys {
            self.shared.remove(&key).await;
        }
    }

    /// The loaded models, most recently expiring first (as `/api/ps` lists them).
    pub fn loaded(&self) -> Vec<Arc<Runner>> {
        let mut runners: Vec<Arc<Runner>> = self
            .shared
            .runners
            .lock()
            .expect("runners lock")
            .values()
            .cloned()
            .collect();
        runners.sort_by_key(|runner| std::cmp::Reverse(runner.expires_at()));
        runners
    }

    /// Whether the model with this key is loaded.
    pub fn is_loaded(&self, key: &str) -> bool {
        self.shared.get(key).is_some()
    }
}

impl Shared {
    fn get(&self, key: &str) -> Option<Arc<Runner>> {
        self.runners.lock().expect("runners lock").get(key).cloned()
    }

    /// Attaches to an already loaded runner with matching options, or says none is there.
    fn try_attach(self: &Arc<Self>, request: &LoadRequest) -> Result<Option<Lease>, Error> {
        let Some(runner) = self.get(&request.key) else {
            return Ok(None);
        };
        if runner.requested != request.options {
            return Ok(None);
        }
        let capacity = self.limits.num_parallel + self.limits.max_queue;
        if runner.active.fetch_add(1, Ordering::SeqCst) >= capacity {
            runner.active.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::QueueFull);
        }
        runner.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(keep_alive) = request.keep_alive {
            *runner.keep_alive.lock().expect("keep_alive lock") = keep_alive;
        }
        *runner.last_used.lock().expect("last_used lock") = Instant::now();
        *runner.expires_at.lock().expect("expires_at lock") = None;
        Ok(Some(Lease {
            runner,
            scheduler: Arc::clone(self),
        }))
    }

    /// Called when a runner's last lease goes: arm its keep-alive timer.
    fn start_expiry(self: &Arc<Self>, runner: &Arc<Runner>) {
        *runner.last_used.lock().expect("last_used lock") = Instant::now();
        let keep_alive = *runner.keep_alive.lock().expect("keep_alive lock");
        let after = match keep_alive {
            KeepAlive::Forever => {
                *runner.expires_at.lock().expect("expires_at lock") = None;
                return;
            }
            KeepAlive::For(after) => after,
        };
        *runner.expires_at.lock().expect("expires_at lock") = SystemTime::now().checked_add(after);
        let generation = runner.generation.load(Ordering::SeqCst);
        let shared = Arc::clone(self);
        let key = runner.key.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            tokio::time::sleep(after).await;
            let Some(runner) = shared.get(&key) else {
                return;
            };
            if runner.is_idle() && runner.generation.load(Ordering::SeqCst) == generation {
                drop(runner);
                shared.remove(&key).await;
            }
        });
    }

    /// Waits until nobody uses `runner`, for at most the load timeout.
    async fn wait_idle(&self, runner: &Runner) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_mins(5);
        while !runner.is_idle() {
            if Instant::now() > deadline {
                return Err(Error::Busy(runner.name.clone()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Takes the runner out of the table and frees its model before returning.
    async fn remove(&self, key: &str) {
        let Some(runner) = self.runners.lock().expect("runners lock").remove(key) else {
            return;
        };
        tracing::info!(model = %runner.name, "unloading");
        // Leases dropped just now may still hold the Arc for an instant.
        let mut runner = runner;
        for _ in 0..500 {
            match Arc::try_unwrap(runner) {
                Ok(owned) => {
                    owned.engine.shutdown().await;
                    return;
                }
                Err(shared) => {
                    runner = shared;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        tracing::warn!(model = %runner.name, "still referenced; its memory is freed when the last request ends");
    }

    /// Places the model's layers on the GPU, evicting idle models that hold GPU memory (least
    /// recently used first) while the model would not fit there whole. On a CPU-only build or
    /// machine the estimate comes back unchanged.
    async fn make_gpu_room(
        &self,
        layers: &LayerSizes,
        num_gpu: Option<i32>,
        estimate: MemoryEstimate,
    ) -> MemoryEstimate {
        loop {
            let free = tokio::task::spawn_blocking(engine::gpu_free_memory)
                .await
                .unwrap_or(None)
                .map(|free| free.saturating_sub(self.limits.gpu_overhead));
            let placement = layers.place(free, num_gpu);
            let whole =
                placement.gpu_layers > layers.weights.len() as u32 && placement.cpu_moe_layers == 0;
            if free.is_some() {
                tracing::info!(
                    free,
                    num_gpu,
                    gpu_layers = placement.gpu_layers,
                    layers = layers.weights.len() + 1,
                    experts_in_ram_layers = placement.cpu_moe_layers,
                    vram = placement.vram,
                    "GPU plan"
                );
            }
            if free.is_none() || whole || num_gpu.is_some_and(|n| n >= 0) {
                return estimate.place(placement);
            }
            let victim = {
                let runners = self.runners.lock().expect("runners lock");
                runners
                    .values()
                    .filter(|runner| runner.is_idle() && runner.estimate.vram > 0)
                    .min_by_key(|runner| *runner.last_used.lock().expect("last_used lock"))
                    .map(|runner| runner.key.clone())
            };
            match victim {
                Some(key) => self.remove(&key).await,
                None => return estimate.place(placement),
            }
        }
    }

    /// Evicts idle models, least recently used first, until `estimate` fits in RAM.
    async fn make_room(&self, name: &str, estimate: &MemoryEstimate) -> Result<(), Error> {
        loop {
            let (used, count, victim) = {
                let runners = self.runners.lock().expect("runners lock");
                let used: u64 = runners.values().map(|runner| runner.estimate.ram()).sum();
                let victim = runners
                    .values()
                    .filter(|runner| runner.is_idle())
                    .min_by_key(|runner| *runner.last_used.lock().expect("last_used lock"))
                    .map(|runner| runner.key.clone());
                (used, runners.len() as u32, victim)
            };
            let budget = self
                .limits
                .max_memory
                .unwrap_or_else(|| memory::available_memory().saturating_add(used));
            let too_many =
                self.limits.max_loaded_models > 0 && count >= self.limits.max_loaded_models;
            if !too_many && used + estimate.ram() <= budget {
                return Ok(());
            }
            match victim {
                Some(key) => self.remove(&key).await,
                None if estimate.ram() > budget.saturating_sub(used) => {
                    let refusal = estimate
                        .check_fits(budget.saturating_sub(used))
                        .expect_err("does not fit");
                    return Err(Error::InsufficientMemory {
                        name: name.to_owned(),
                        detail: refusal.to_string(),
                    });
                }
                None => return Err(Error::Busy(name.to_owned())),
            }
        }
    }
}

/// Caps `num_ctx` at what the model was trained for, and at least 4 (as Ollama does).
fn clamp_context(num_ctx: u32, gguf: &GgufFile) -> u32 {
    let trained = gguf
        .arch_u64("context_length")
        .unwrap_or(u64::from(num_ctx));
    u64::from(num_ctx).min(trained).max(4) as u32
}
