//! The scheduler: which models are loaded, who is using them, and when they go.
//!
//! A model is loaded on first use and keyed by the digest of its weights blob, so two tags of
//! the same weights share one runner process. Each request holds a [`Lease`] for as long as it
//! runs; when the last lease of a model is dropped its `keep_alive` timer starts (0 unloads at
//! once, [`KeepAlive::Forever`] never). Before a load the GGUF is read and validated (so no
//! hostile file reaches llama.cpp) and its memory is planned: idle models are evicted, least
//! recently used first, until the new one fits; a busy model is never evicted; a model that
//! cannot fit is refused with the numbers instead of letting the kernel kill the machine.
//!
//! Each loaded model runs in its own runner process ([`crate::runner`]). A runner that dies is
//! taken out of the table at once, and the next request for its model loads it again.
//!
//! Locking: `models` is a plain mutex held only for lookups and changes, never across an
//! await. A lease is taken (its count raised) and an idle model is taken out for eviction under
//! that lock, so a model a request has just leased is never evicted. `loading` serialises loads
//! (memory is planned against what is loaded) but is not held while waiting for a busy model.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::KeepAlive;
use crate::engine::{DraftParams, Gpu, LoadParams};
use crate::error::Error;
use crate::gguf::GgufFile;
use crate::memory::{self, MemoryEstimate};
use crate::offload::{LayerSizes, Placement};
use crate::runner::{Launcher, Process, Runner};

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
    /// Threads picking a step's tokens side by side (`WHALE_SAMPLE_THREADS`); `None`: off.
    pub sample_threads: Option<u32>,
    /// Workers models are split over (`--workers`).
    pub workers: Vec<crate::rpc::WorkerLink>,
    /// KV cells the slots of a model share (`WHALE_KV_POOL`); `None`: each slot its own.
    pub kv_pool: Option<u32>,
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
/// (as Ollama's `needsReload`), e.g. another `num_ctx` or `num_gpu`. Chat and embeddings share
/// a loaded model: the runner makes an embedding context beside the chat one when first asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerOptions {
    pub num_ctx: u32,
    pub num_batch: u32,
    pub num_gpu: Option<i32>,
    pub num_thread: Option<u32>,
    pub use_mmap: bool,
    /// A small model loaded beside this one to draft its tokens (speculative decoding).
    pub draft: Option<DraftModel>,
}

/// A draft model to load beside a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftModel {
    pub name: String,
    /// Digest of its weights blob.
    pub key: String,
    pub path: PathBuf,
}

/// A loaded model: its runner process and what the scheduler knows about it.
pub struct Loaded {
    pub name: String,
    pub key: String,
    pub manifest_digest: String,
    pub runner: Runner,
    pub estimate: MemoryEstimate,
    /// The GPUs the runner saw when it was planned.
    pub gpus: Vec<Gpu>,
    /// Context length per sequence, after capping at the model's trained length.
    pub num_ctx: u32,
    /// The options requests asked for; a request asking for others reloads the model.
    requested: RunnerOptions,
    /// Leases outstanding: running requests plus those waiting for a slot. Raised only under
    /// the scheduler's `models` lock (see the module's notes on locking).
    active: AtomicU32,
    /// Bumped on every acquire, so an expiry timer started earlier knows it is stale.
    generation: AtomicU64,
    keep_alive: Mutex<KeepAlive>,
    expires_at: Mutex<Option<SystemTime>>,
    last_used: Mutex<Instant>,
}

impl Loaded {
    fn is_idle(&self) -> bool {
        self.active.load(Ordering::SeqCst) == 0
    }

    /// Leases outstanding: requests running on the model plus those waiting for a slot.
    pub fn leases(&self) -> u32 {
        self.active.load(Ordering::SeqCst)
    }

    /// When the model will be unloaded if no request comes (`None` while it is in use forever).
    pub fn expires_at(&self) -> Option<SystemTime> {
        *self.expires_at.lock().expect("expires_at lock")
    }
}

/// A request's hold on a loaded model; dropping it starts the model's keep-alive timer.
pub struct Lease {
    loaded: Arc<Loaded>,
    scheduler: Arc<Shared>,
}

impl Lease {
    /// The model's runner, to generate, tokenize and embed with.
    pub fn runner(&self) -> &Runner {
        &self.loaded.runner
    }

    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.loaded.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.scheduler.start_expiry(&self.loaded);
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
    launcher: Launcher,
    /// Invariant: a key maps to at most one loaded model; see the module's notes on locking.
    models: Mutex<HashMap<String, Arc<Loaded>>>,
    /// One load at a time, as memory is planned against what is loaded.
    loading: tokio::sync::Mutex<()>,
    /// Requests waiting on a load, bounded by `max_queue` like those waiting for a slot.
    waiting: AtomicU32,
    /// Set when whaled shuts down: no new leases.
    closed: AtomicBool,
    /// The GPUs a runner reported when first asked (their totals do not change).
    gpus: tokio::sync::OnceCell<Vec<Gpu>>,
}

impl Scheduler {
    pub fn new(limits: Limits, launcher: Launcher) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                launcher,
                models: Mutex::new(HashMap::new()),
                loading: tokio::sync::Mutex::new(()),
                waiting: AtomicU32::new(0),
                closed: AtomicBool::new(false),
                gpus: tokio::sync::OnceCell::new(),
            }),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// The GPUs llama.cpp sees on this machine, with their total memory: asked once of a
    /// runner started for the question (llama.cpp lives in runners only), then remembered.
    /// Empty on a CPU-only build or machine, and when no runner could say.
    pub async fn gpus(&self) -> Vec<Gpu> {
        self.ask_gpus().await.unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot ask a runner for the GPUs");
            Vec::new()
        })
    }

    /// [`Self::gpus`], or why no runner could say.
    pub async fn ask_gpus(&self) -> Result<Vec<Gpu>, crate::engine::EngineError> {
        self.shared
            .gpus
            .get_or_try_init(|| async {
                let process = self.shared.launcher.spawn("gpu probe").await?;
                let gpus = process.gpus().await;
                tokio::spawn(async move { process.shutdown(crate::engine::UNLOADED).await });
                gpus
            })
            .await
            .cloned()
    }

    /// Hands out the model `request` names, loading it (and evicting idle models) if needed.
    pub async fn acquire(&self, request: &LoadRequest) -> Result<Lease, Error> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
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
        loop {
            if let Some(lease) = self.shared.try_attach(request)? {
                return Ok(lease);
            }
            // Loaded with other options (num_ctx, num_gpu, …), or its runner died: unload it
            // once idle. No lock is held while waiting, so other models load meanwhile.
            if let Some(stale) = self.shared.get(&request.key) {
                if stale.runner.process().exit_reason().is_none() {
                    self.shared.wait_idle(&stale).await?;
                }
                self.shared
                    .remove_if(&request.key, |loaded| {
                        Arc::ptr_eq(loaded, &stale) && loaded.is_idle()
                    })
                    .await;
                continue;
            }
            let _one_load = self.shared.loading.lock().await;
            if self.shared.closed.load(Ordering::SeqCst) {
                return Err(Error::ShuttingDown);
            }
            // Another request may have loaded it while this one waited.
            if self.shared.get(&request.key).is_some() {
                continue;
            }
            return self.load_now(request).await;
        }
    }

    /// Plans memory, makes room, starts a runner and loads the model in it.
    async fn load_now(&self, request: &LoadRequest) -> Result<Lease, Error> {
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
        let kv_pool = shared_pool(self.shared.limits.kv_pool, num_ctx, num_parallel);
        let kv_cells = kv_pool.map_or(u64::from(num_ctx) * u64::from(num_parallel), u64::from);
        let estimate = memory::estimate_cells(&gguf, kv_cells, num_parallel, memory::KvType::F16);
        let draft = match &request.options.draft {
            None => None,
            Some(draft) => {
                let path = draft.path.clone();
                let gguf = tokio::task::spawn_blocking(move || GgufFile::open(&path))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .map_err(|source| Error::InvalidModel {
                        name: request.name.clone(),
                        message: format!("its draft model {}: {source}", draft.name),
                    })?;
                let cost = memory::estimate(&gguf, num_ctx, num_parallel, memory::KvType::F16);
                Some((draft, cost))
            }
        };
        let layers = LayerSizes::new(
            &gguf,
            memory::kv_cache_per_layer(&gguf, kv_cells, num_parallel, memory::KvType::F16),
            estimate.compute,
        );
        let process = self.shared.launcher.spawn(&request.name).await?;
        let (mut estimate, gpus) = self
            .shared
            .make_gpu_room(&process, &layers, request.options.num_gpu, estimate)
            .await?;
        // The draft model goes to the GPU whole when the model did and there is room left for
        // it; else it runs on the CPU.
        let draft = draft.map(|(draft, cost)| {
            let whole =
                estimate.gpu_layers > layers.weights.len() as u32 && estimate.cpu_moe_layers == 0;
            let free = gpus
                .iter()
                .map(|gpu| gpu.free)
                .sum::<u64>()
                .saturating_sub(self.shared.limits.gpu_overhead + estimate.vram);
            let gpu = !gpus.is_empty() && whole && cost.total <= free;
            estimate = estimate.with_draft(&cost, gpu);
            DraftParams {
                model_path: draft.path.clone(),
                name: draft.name.clone(),
                gpu,
            }
        });
        let worker_layers = if self.shared.limits.workers.is_empty() {
            0
        } else {
            let offloaded = self
                .shared
                .plan_workers(&layers, request.options.num_gpu)
                .await;
            estimate = estimate.on_workers(layers.offloaded_bytes(offloaded));
            offloaded
        };
        if let Err(error) = self.shared.make_room(&request.name, &estimate).await {
            process.shutdown(crate::engine::UNLOADED).await;
            return Err(error);
        }

        let params = LoadParams {
            model_path: request.path.clone(),
            name: request.name.clone(),
            num_ctx,
            num_parallel,
            num_batch: request.options.num_batch,
            num_threads: request
                .options
                .num_thread
                .or(self.shared.limits.num_threads),
            sample_threads: self.shared.limits.sample_threads,
            placement: Placement {
                gpu_layers: estimate.gpu_layers,
                cpu_moe_layers: estimate.cpu_moe_layers,
                vram: estimate.vram,
            },
            use_mmap: request.options.use_mmap,
            kv_pool,
            draft,
            workers: self.shared.limits.workers.clone(),
            worker_layers,
        };
        let started = Instant::now();
        let pid = process.pid();
        let runner = process
            .load(params)
            .await
            .map_err(|error| Error::InvalidModel {
                name: request.name.clone(),
                message: error.to_string(),
            })?;
        tracing::info!(model = %request.name, pid, elapsed = ?started.elapsed(), "loaded");
        let keep_alive = request
            .keep_alive
            .unwrap_or(self.shared.limits.default_keep_alive);
        let loaded = Arc::new(Loaded {
            name: request.name.clone(),
            key: request.key.clone(),
            manifest_digest: request.manifest_digest.clone(),
            runner,
            estimate,
            gpus,
            num_ctx,
            requested: request.options.clone(),
            active: AtomicU32::new(1),
            generation: AtomicU64::new(0),
            keep_alive: Mutex::new(keep_alive),
            expires_at: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
        });
        self.shared
            .models
            .lock()
            .expect("models lock")
            .insert(request.key.clone(), Arc::clone(&loaded));
        self.shared.watch(&loaded);
        Ok(Lease {
            loaded,
            scheduler: Arc::clone(&self.shared),
        })
    }

    /// Unloads the model with this key now if idle, else as soon as its requests finish.
    pub async fn unload(&self, key: &str) {
        let Some(loaded) = self.shared.get(key) else {
            return;
        };
        *loaded.keep_alive.lock().expect("keep_alive lock") = KeepAlive::For(Duration::ZERO);
        self.shared.remove_if(key, |loaded| loaded.is_idle()).await;
    }

    /// Refuses new leases from now on (whaled is shutting down).
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
    }

    /// Whether any request holds a lease.
    pub fn is_busy(&self) -> bool {
        self.shared
            .models
            .lock()
            .expect("models lock")
            .values()
            .any(|loaded| !loaded.is_idle())
    }

    /// Unloads every model, busy or not (whaled shutting down): requests still running end
    /// with `reason`, and every runner process is gone when this returns.
    pub async fn unload_all(&self, reason: &str) {
        let all: Vec<Arc<Loaded>> = self
            .shared
            .models
            .lock()
            .expect("models lock")
            .drain()
            .map(|(_, loaded)| loaded)
            .collect();
        let stops = all.iter().map(|loaded| {
            tracing::info!(model = %loaded.name, "unloading");
            loaded.runner.shutdown(reason)
        });
        futures::future::join_all(stops).await;
    }

    /// The loaded models, most recently expiring first (as `/api/ps` lists them).
    pub fn loaded(&self) -> Vec<Arc<Loaded>> {
        let mut models: Vec<Arc<Loaded>> = self
            .shared
            .models
            .lock()
            .expect("models lock")
            .values()
            .filter(|loaded| loaded.runner.process().exit_reason().is_none())
            .cloned()
            .collect();
        models.sort_by_key(|loaded| std::cmp::Reverse(loaded.expires_at()));
        models
    }

    /// Whether the model with this key is loaded.
    pub fn is_loaded(&self, key: &str) -> bool {
        self.shared.get(key).is_some()
    }
}

impl Shared {
    fn get(&self, key: &str) -> Option<Arc<Loaded>> {
        self.models.lock().expect("models lock").get(key).cloned()
    }

    /// Attaches to an already loaded model with matching options, or says none is there.
    fn try_attach(self: &Arc<Self>, request: &LoadRequest) -> Result<Option<Lease>, Error> {
        let models = self.models.lock().expect("models lock");
        let Some(loaded) = models.get(&request.key) else {
            return Ok(None);
        };
        if loaded.requested != request.options || loaded.runner.process().exit_reason().is_some() {
            return Ok(None);
        }
        let capacity = self.limits.num_parallel + self.limits.max_queue;
        if loaded.active.fetch_add(1, Ordering::SeqCst) >= capacity {
            loaded.active.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::QueueFull);
        }
        let loaded = Arc::clone(loaded);
        drop(models);
        loaded.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(keep_alive) = request.keep_alive {
            *loaded.keep_alive.lock().expect("keep_alive lock") = keep_alive;
        }
        *loaded.last_used.lock().expect("last_used lock") = Instant::now();
        *loaded.expires_at.lock().expect("expires_at lock") = None;
        Ok(Some(Lease {
            loaded,
            scheduler: Arc::clone(self),
        }))
    }

    /// Takes a model whose runner dies out of the table at once, so that `ps` stops listing it
    /// and the next request loads it again.
    fn watch(self: &Arc<Self>, loaded: &Arc<Loaded>) {
        let exited = loaded.runner.process().on_exit();
        let shared = Arc::downgrade(self);
        let watched = Arc::downgrade(loaded);
        tokio::spawn(async move {
            let reason = exited.await;
            let (Some(shared), Some(watched)) = (shared.upgrade(), watched.upgrade()) else {
                return;
            };
            let mut models = shared.models.lock().expect("models lock");
            if models
                .get(&watched.key)
                .is_some_and(|current| Arc::ptr_eq(current, &watched))
            {
                models.remove(&watched.key);
                tracing::warn!(model = %watched.name, "{reason}; it is loaded again on the next request");
            }
        });
    }

    /// Called when a model's last lease goes: arm its keep-alive timer.
    fn start_expiry(self: &Arc<Self>, loaded: &Arc<Loaded>) {
        *loaded.last_used.lock().expect("last_used lock") = Instant::now();
        let keep_alive = *loaded.keep_alive.lock().expect("keep_alive lock");
        let after = match keep_alive {
            KeepAlive::Forever => {
                *loaded.expires_at.lock().expect("expires_at lock") = None;
                return;
            }
            KeepAlive::For(after) => after,
        };
        *loaded.expires_at.lock().expect("expires_at lock") = SystemTime::now().checked_add(after);
        let generation = loaded.generation.load(Ordering::SeqCst);
        let shared = Arc::clone(self);
        let key = loaded.key.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            tokio::time::sleep(after).await;
            shared
                .remove_if(&key, |loaded| {
                    loaded.is_idle() && loaded.generation.load(Ordering::SeqCst) == generation
                })
                .await;
        });
    }

    /// Waits until nobody uses `loaded`, for at most the load timeout.
    async fn wait_idle(&self, loaded: &Loaded) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_mins(5);
        while !loaded.is_idle() {
            if Instant::now() > deadline {
                return Err(Error::Busy(loaded.name.clone()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Takes the model with this key out of the table if `condition` holds (checked under the
    /// lock, so no lease can be taken in between), then ends its runner. True if it did.
    async fn remove_if(&self, key: &str, condition: impl FnOnce(&Arc<Loaded>) -> bool) -> bool {
        let removed = {
            let mut models = self.models.lock().expect("models lock");
            match models.get(key) {
                Some(loaded) if condition(loaded) => models.remove(key),
                _ => None,
            }
        };
        let Some(loaded) = removed else {
            return false;
        };
        tracing::info!(model = %loaded.name, "unloading");
        loaded.runner.shutdown(crate::engine::UNLOADED).await;
        true
    }

    /// Places the model's layers on the GPU, evicting idle models that hold GPU memory (least
    /// recently used first) while the model would not fit there whole. On a CPU-only build or
    /// machine the estimate comes back unchanged. Free memory is what the new runner sees.
    async fn make_gpu_room(
        &self,
        process: &Process,
        layers: &LayerSizes,
        num_gpu: Option<i32>,
        estimate: MemoryEstimate,
    ) -> Result<(MemoryEstimate, Vec<Gpu>), Error> {
        loop {
            let gpus = process.gpus().await?;
            let free = (!gpus.is_empty()).then(|| {
                gpus.iter()
                    .map(|gpu| gpu.free)
                    .sum::<u64>()
                    .saturating_sub(self.limits.gpu_overhead)
            });
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
                return Ok((estimate.place(placement), gpus));
            }
            let victim = self.least_recently_used(|loaded| loaded.estimate.vram > 0);
            let evicted = match victim {
                Some(key) => self.remove_if(&key, |loaded| loaded.is_idle()).await,
                None => false,
            };
            if !evicted {
                return Ok((estimate.place(placement), gpus));
            }
        }
    }

    /// The idle model used least recently among those `eligible`.
    fn least_recently_used(&self, eligible: impl Fn(&Loaded) -> bool) -> Option<String> {
        self.models
            .lock()
            .expect("models lock")
            .values()
            .filter(|loaded| loaded.is_idle() && eligible(loaded))
            .min_by_key(|loaded| *loaded.last_used.lock().expect("last_used lock"))
            .map(|loaded| loaded.key.clone())
    }

    /// How many of the model's layers go to the workers: `num_gpu` when set, else a share in
    /// proportion to the free memory of this machine and of each worker that answers (one
    /// that does not is left for the load to report).
    async fn plan_workers(&self, layers: &LayerSizes, num_gpu: Option<i32>) -> u32 {
        let n_layer = layers.n_layer();
        if let Some(layers) = num_gpu.and_then(|layers| u32::try_from(layers).ok()) {
            return layers.min(n_layer + 1);
        }
        let free = crate::rpc::worker_memory(&self.limits.workers)
            .await
            .into_iter()
            .map(|memory| memory.free)
            .collect::<Vec<_>>();
        let local = memory::available_memory();
        let offloaded = crate::rpc::remote_layers(n_layer, local, &free);
        tracing::info!(local, ?free, offloaded, layers = n_layer + 1, "worker plan");
        offloaded
    }

    /// Evicts idle models, least recently used first, until `estimate` fits in RAM.
    async fn make_room(&self, name: &str, estimate: &MemoryEstimate) -> Result<(), Error> {
        loop {
            let (used, count) = {
                let models = self.models.lock().expect("models lock");
                let used: u64 = models.values().map(|loaded| loaded.estimate.ram()).sum();
                (used, models.len() as u32)
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
            if let Some(key) = self.least_recently_used(|_| true) {
                // A request may lease it first; then look again.
                self.remove_if(&key, |loaded| loaded.is_idle()).await;
                continue;
            }
            if estimate.ram() > budget.saturating_sub(used) {
                let refusal = estimate
                    .check_fits(budget.saturating_sub(used))
                    .expect_err("does not fit");
                return Err(Error::InsufficientMemory {
                    name: name.to_owned(),
                    detail: refusal.to_string(),
                });
            }
            return Err(Error::Busy(name.to_owned()));
        }
    }
}

/// The KV cells a model's `num_parallel` slots share when `WHALE_KV_POOL` makes them share:
/// at least one slot's full context, and `None` when the pool would be as large as a context
/// for every slot (then each slot keeps its own).
fn shared_pool(pool: Option<u32>, num_ctx: u32, num_parallel: u32) -> Option<u32> {
    let all = num_ctx.saturating_mul(num_parallel);
    pool.map(|pool| pool.max(num_ctx))
        .filter(|&pool| pool < all)
}

/// Caps `num_ctx` at what the model was trained for, and at least 4 (as Ollama does).
pub(crate) fn clamp_context(num_ctx: u32, gguf: &GgufFile) -> u32 {
    let trained = gguf
        .arch_u64("context_length")
        .unwrap_or(u64::from(num_ctx));
    u64::from(num_ctx).min(trained).max(4) as u32
}

#[cfg(test)]
mod tests {
    use super::shared_pool;

    #[test]
    fn a_pool_is_shared_only_when_smaller_than_a_context_per_slot() {
        assert_eq!(shared_pool(None, 512, 16), None);
        assert_eq!(shared_pool(Some(2048), 512, 16), Some(2048));
        // At least one full context; as large as all of them means each slot its own.
        assert_eq!(shared_pool(Some(100), 512, 16), Some(512));
        assert_eq!(shared_pool(Some(8192), 512, 16), None);
        assert_eq!(shared_pool(Some(512), 512, 1), None);
    }
}
