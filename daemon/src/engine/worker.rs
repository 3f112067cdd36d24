//! The engine thread: loads the model, then runs the continuous-batching loop.
//!
//! Invariants: each slot `i` is llama.cpp sequence `i`; `Slot::cached` is exactly the tokens
//! whose KV entries that sequence holds (positions `0..cached.len()`), whether or not a job is
//! running in it, so a later job can reuse the longest common prefix. Nothing here blocks except
//! waiting for a command when there is no work.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::CString;
use std::num::NonZeroU32;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use super::draft::{self, DraftModel};
use super::lookup::{Drafter, Drafters, Source};
use super::mtp::Mtp;
use super::output::{Pushed, TextOutput};
use super::sampler::SequenceSampler;
use super::{
    DoneReason, EngineError, Event, EventSink, Flush, GenerateJob, GrammarSource, LoadParams,
    Logprobs, MAX_TOP_LOGPROBS, ModelInfo, Prompt, SinkError, Summary, TokenLogprob,
    UNBOUNDED_FACTOR, gpus, llama_backend,
};
use crate::engine::Embeddings;
use crate::offload;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaContextType, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;

/// How long an idle loop waits before retrying delivery to a client whose channel was full.
const DELIVERY_RETRY: Duration = Duration::from_millis(5);

/// How the engine thread answers a command: called once, on the engine thread, so it must be
/// quick (send on a channel).
pub type Reply<T> = Box<dyn FnOnce(Result<T, EngineError>) + Send>;

/// What the engine thread is asked. Each command carries its own reply.
pub enum Command {
    Generate {
        job: Box<GenerateJob>,
        events: Box<dyn EventSink>,
    },
    Tokenize {
        text: String,
        add_special: bool,
        reply: Reply<Vec<i32>>,
    },
    Detokenize {
        tokens: Vec<i32>,
        reply: Reply<String>,
    },
    Embed {
        inputs: Vec<String>,
        truncate: bool,
        reply: Reply<Embeddings>,
    },
    /// Stop: jobs still running or waiting end with this message.
    Shutdown(String),
}

/// What jobs still running are told when their model is unloaded.
pub const UNLOADED: &str = "the model was unloaded";

/// Tokens at the start of a slot that a context shift never drops (Ollama's `num_keep`
/// default).
const NUM_KEEP: usize = 4;

/// Entry point of the engine thread.
pub(super) fn run(
    params: &LoadParams,
    commands: &Receiver<Command>,
    ready: Reply<ModelInfo>,
    after_step: &mut dyn FnMut(Flush),
) {
    let load_error = |message: String| EngineError::Load {
        path: params.model_path.clone(),
        message,
    };
    let backend = match llama_backend() {
        Ok(backend) => backend,
        Err(error) => {
            ready(Err(error));
            return;
        }
    };
    if params.num_ctx == 0 || params.num_parallel == 0 || params.num_batch == 0 {
        ready(Err(load_error(
            "num_ctx, num_parallel and num_batch must be positive".to_owned(),
        )));
        return;
    }
    // Before any device takes part of the model (workers' devices are not read).
    let free_before = if params.placement.gpu_layers > 0 {
        gpus()
    } else {
        Vec::new()
    };
    let workers = match link_workers(params) {
        Ok(workers) => workers,
        Err(message) => {
            ready(Err(load_error(message)));
            return;
        }
    };
    let model = match load_model(
        backend,
        &params.model_path,
        params.use_mmap,
        params.placement,
        workers.as_ref(),
    ) {
        Ok(model) => model,
        Err(message) => {
            ready(Err(load_error(message)));
            return;
        }
    };
    let context = match new_context(backend, &model, params, false) {
        Ok(context) => context,
        Err(message) => {
            ready(Err(load_error(message)));
            return;
        }
    };
    // The draft model, if any, with a context shaped like the model's.
    let draft_model = match &params.draft {
        None => None,
        Some(draft) => {
            let placement = offload::Placement {
                gpu_layers: if draft.gpu { u32::MAX } else { 0 },
                ..offload::Placement::default()
            };
            match load_model(backend, &draft.model_path, params.use_mmap, placement, None) {
                Ok(loaded) => Some(loaded),
                Err(message) => {
                    ready(Err(load_error(format!(
                        "draft model {}: {message}",
                        draft.name
                    ))));
                    return;
                }
            }
        }
    };
    let draft = match (&draft_model, &params.draft) {
        (Some(loaded), Some(draft)) => {
            let made = new_context(backend, loaded, params, false).and_then(|context| {
                DraftModel::new(loaded, context, &model, params.num_parallel as usize)
            });
            match made {
                Ok(made) => Some(made),
                Err(message) => {
                    ready(Err(load_error(format!(
                        "draft model {} cannot draft for it: {message}",
                        draft.name
                    ))));
                    return;
                }
            }
        }
        _ => None,
    };
    let mtp = load_mtp(backend, &model, &context, params);
    let mut info = model_info(backend, &model, params);
    if let Some(workers) = workers {
        info.shares = workers.shares;
    }
    if !free_before.is_empty() {
        info.gpus = super::gpu_use(&free_before, &gpus());
        for gpu in &info.gpus {
            tracing::info!(model = %params.name, gpu = %gpu.name, description = %gpu.description,
                used_mib = gpu.used / (1 << 20), "loaded on a GPU");
        }
    }
    let sliding_window = info
        .metadata
        .get(&format!("{}.attention.sliding_window", info.architecture))
        .and_then(|value| value.parse().ok());
    let can_shift = can_shift_context(&info, sliding_window);
    let sampling = sampling_threads(params);
    ready(Ok(info));
    tracing::info!(model = %params.name, can_shift, "engine ready");
    let mut worker = Worker::new(&model, context, params, sliding_window);
    worker.can_shift = can_shift;
    worker.sampling = sampling;
    worker.draft = draft;
    worker.mtp = mtp;
    worker.serve(commands, after_step);
    tracing::info!(model = %params.name, "engine stopped");
}

/// The model's NextN block in a context of its own, when the GGUF has one (`DeepSeek` V3/R1
/// converted with it): drafts for `speculative: "mtp"`. A model whose block llama.cpp cannot
/// run loads and answers without it.
fn load_mtp<'m>(
    backend: &LlamaBackend,
    model: &'m LlamaModel,
    target: &LlamaContext<'m>,
    params: &LoadParams,
) -> Option<Mtp<'m>> {
    let arch = model.meta_val_str("general.architecture").ok()?;
    let layers: u32 = model
        .meta_val_str(&format!("{arch}.nextn_predict_layers"))
        .ok()?
        .parse()
        .ok()?;
    if layers == 0 {
        return None;
    }
    if super::mtp::needs_snapshots(target) {
        tracing::info!(
            model = %params.name,
            "NextN block not loaded: this model's KV cache cannot drop rejected drafts"
        );
        return None;
    }
    let made = context_params(model, params, false).and_then(|(context_params, _)| {
        let context = model
            .new_context(
                backend,
                context_params.with_context_type(LlamaContextType::Mtp),
            )
            .map_err(|error| format!("cannot create its context ({error})"))?;
        Mtp::new(model, context, target, params.num_parallel as usize)
    });
    match made {
        Ok(mtp) => {
            tracing::info!(model = %params.name, layers, "NextN block loaded: drafting with it");
            Some(mtp)
        }
        Err(error) => {
            tracing::warn!(model = %params.name, %error, "the NextN block cannot draft");
            None
        }
    }
}

/// Whether a full slot may drop old tokens and go on (context shift). llama.cpp shifts the
/// positions of a plain KV cache (MLA included), but aborts the process for caches that cannot
/// shift (M-RoPE, recurrent and hybrid models, a sliding-window cache of another size than the
/// global one), so this is an allowlist of the architectures of the `DeepSeek` family and their
/// distills' bases; others end a full slot with `done_reason: "length"`.
fn can_shift_context(info: &ModelInfo, sliding_window: Option<usize>) -> bool {
    const SHIFTABLE: [&str; 7] = [
        "llama",
        "qwen2",
        "qwen3",
        "qwen2moe",
        "qwen3moe",
        "deepseek",
        "deepseek2",
    ];
    let mrope = info
        .metadata
        .contains_key(&format!("{}.rope.dimension_sections", info.architecture));
    SHIFTABLE.contains(&info.architecture.as_str())
        && sliding_window.is_none_or(|window| window == 0)
        && !mrope
}

/// The workers' devices and how many layers go to them.
struct Workers {
    /// ggml device indices, in the order of `params.workers`.
    devices: Vec<usize>,
    /// llama.cpp's `n_gpu_layers`: the last layers, spread over `devices`.
    offloaded: u32,
    shares: Vec<crate::rpc::Share>,
}

/// Links to each worker (refusing with the reason when one cannot be reached or refuses the
/// token: llama.cpp would abort the process), adds its devices to ggml's, and spreads the
/// `worker_layers` the scheduler planned over them by their free memory, as llama.cpp will.
fn link_workers(params: &LoadParams) -> Result<Option<Workers>, String> {
    use crate::rpc::{self, Share, link};
    if params.workers.is_empty() {
        return Ok(None);
    }
    let gguf = whale_format::gguf::GgufFile::open(&params.model_path)
        .map_err(|error| error.to_string())?;
    let n_layer = u32::try_from(gguf.arch_u64("block_count").unwrap_or(0))
        .map_err(|_| "block_count out of range".to_owned())?;
    let mut devices = Vec::new();
    let mut free = Vec::new();
    let mut places = Vec::new();
    for worker in &params.workers {
        let peer = link::Peer::new(worker)?;
        link::memory_blocking(&peer).map_err(|error| error.to_string())?;
        let connector = link::Connector::start(peer)
            .map_err(|error| format!("cannot link to worker {}: {error}", worker.address))?;
        let added = rpc::ggml::add_server(&connector.local.to_string())
            .map_err(|error| format!("worker {}: {error}", worker.address))?;
        let several = added.len() > 1;
        for device in added {
            devices.push(device.index);
            free.push(device.free);
            places.push(if several {
                format!("{}/{}", worker.address, device.name)
            } else {
                worker.address.clone()
            });
        }
    }
    let offloaded = params.worker_layers.min(n_layer + 1);
    let counts = rpc::split(n_layer, offloaded, &free);
    let shares = std::iter::once("local".to_owned())
        .chain(places)
        .zip(counts)
        .map(|(place, layers)| Share { place, layers })
        .collect();
    Ok(Some(Workers {
        devices,
        offloaded,
        shares,
    }))
}

/// Checks the file before llama.cpp sees it (a missing path would trip an assertion in
/// `llama-cpp-2`), then loads the weights.
fn load_model(
    backend: &LlamaBackend,
    path: &std::path::Path,
    use_mmap: bool,
    placement: offload::Placement,
    workers: Option<&Workers>,
) -> Result<LlamaModel, String> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .map_err(|error| error.to_string())?;
    if &magic != b"GGUF" {
        return Err("not a GGUF file".to_owned());
    }
    // The NextN (MTP) block, where a GGUF has one, drafts tokens: load it too.
    let mut model_params = LlamaModelParams::default()
        .with_use_mmap(use_mmap)
        .with_load_mtp(true);
    model_params = match workers {
        None => model_params.with_n_gpu_layers(placement.gpu_layers),
        Some(workers) => model_params
            .with_devices(&workers.devices)
            .map_err(|error| error.to_string())?
            .with_n_gpu_layers(workers.offloaded),
    };
    let mut model_params = std::pin::pin!(model_params);
    // llama.cpp keeps a pointer to the pattern: it must outlive the load.
    let cpu_moe = offload::cpu_moe_pattern(placement.cpu_moe_layers)
        .map(|pattern| CString::new(pattern).expect("pattern has no NUL"));
    if let Some(pattern) = &cpu_moe {
        model_params.as_mut().add_cpu_buft_override(pattern);
    }
    let model = LlamaModel::load_from_file(backend, path, &model_params)
        .map_err(|error| format!("llama.cpp could not load it ({error})"));
    drop(cpu_moe);
    model
}

/// The generation context (`num_parallel` slots of `num_ctx`), or with `embedding` the one
/// that embeds: a single sequence whose batch holds a whole input, pooled.
fn new_context<'m>(
    backend: &LlamaBackend,
    model: &'m LlamaModel,
    params: &LoadParams,
    embedding: bool,
) -> Result<LlamaContext<'m>, String> {
    let (context_params, total_ctx) = context_params(model, params, embedding)?;
    model
        .new_context(backend, context_params)
        .map_err(|error| format!("cannot create a context of {total_ctx} tokens ({error})"))
}

/// The parameters of [`new_context`], and the tokens its context holds.
fn context_params(
    model: &LlamaModel,
    params: &LoadParams,
    embedding: bool,
) -> Result<(LlamaContextParams, u32), String> {
    let threads = params
        .num_threads
        .map_or_else(default_threads, |n| n as i32);
    let (total_ctx, n_seq) = if embedding {
        (params.num_ctx, 1)
    } else if let Some(pool) = params.kv_pool {
        (pool, params.num_parallel)
    } else {
        let total = params
            .num_ctx
            .checked_mul(params.num_parallel)
            .ok_or("num_ctx * num_parallel overflows")?;
        (total, params.num_parallel)
    };
    // Embeddings of a whole input come from one decode, so the batch must hold a full input.
    let n_batch = if embedding {
        params.num_ctx
    } else {
        params.num_batch.max(params.num_parallel)
    };
    let mut context_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(total_ctx))
        .with_n_batch(n_batch)
        .with_n_ubatch(if embedding { n_batch } else { n_batch.min(512) })
        .with_n_seq_max(n_seq)
        // A pool: one buffer whose cells any slot may take (else each slot has its own).
        .with_kv_unified(!embedding && params.kv_pool.is_some())
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_embeddings(embedding);
    if !embedding {
        // llama.cpp keeps a rollback snapshot per sequence only for caches that cannot drop a
        // tail otherwise (V4's compressed one, recurrent states) and ignores this for the rest:
        // a context that has one is how the worker learns not to draft (see `most_drafts`).
        context_params = context_params.with_n_rs_seq(1);
    }
    if embedding {
        // Ollama returns one pooled vector per input; models without a pooling type of their own
        // (generative models) get mean pooling.
        let arch = model
            .meta_val_str("general.architecture")
            .unwrap_or_default();
        let pooling = model
            .meta_val_str(&format!("{arch}.pooling_type"))
            .ok()
            .and_then(|value| value.parse::<i32>().ok())
            .unwrap_or(0);
        if pooling == 0 {
            context_params = context_params.with_pooling_type(LlamaPoolingType::Mean);
        }
    }
    Ok((context_params, total_ctx))
}

/// Threads that pick a step's tokens side by side (`sample_threads`, the engine thread among
/// them; off unless set to 2 or more). Meant for a model on a GPU serving many sequences,
/// where the host's cores wait on the GPU while the engine thread reads row after row of
/// logits; on a CPU llama.cpp's own threads want the cores, and on the 2-core machine it was
/// measured on it made no difference, so it is not on by default.
fn sampling_threads(params: &LoadParams) -> Option<rayon::ThreadPool> {
    let threads = params.sample_threads.unwrap_or(0) as usize;
    if threads < 2 || params.num_parallel < 2 {
        return None;
    }
    // The engine thread is one of them: it picks rows itself and never waits for a helper
    // still waking up; helpers take what it has not reached.
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .use_current_thread()
        .thread_name(|index| format!("sample:{index}"))
        .build()
    {
        Ok(pool) => {
            tracing::info!(model = %params.name, threads, "sampling threads");
            Some(pool)
        }
        Err(error) => {
            tracing::warn!(model = %params.name, %error, "no sampling threads");
            None
        }
    }
}

/// One thread per core. `available_parallelism` counts logical CPUs; on machines with SMT that
/// is more than the physical cores llama.cpp scales with, but it is the portable answer.
fn default_threads() -> i32 {
    std::thread::available_parallelism().map_or(4, |n| n.get() as i32)
}

fn model_info(backend: &LlamaBackend, model: &LlamaModel, params: &LoadParams) -> ModelInfo {
    let mut metadata = BTreeMap::new();
    for index in 0..model.meta_count() {
        if let (Ok(key), Ok(value)) = (
            model.meta_key_by_index(index),
            model.meta_val_str_by_index(index),
        ) {
            metadata.insert(key, value);
        }
    }
    let vocab = model.vocab();
    let token_text = |token: LlamaToken| {
        (token.0 >= 0 && token.0 < model.n_vocab())
            .then(|| String::from_utf8_lossy(&vocab.token_to_piece(token, true, None)).into_owned())
    };
    let n_layer = model.n_layer();
    let gpu_layers = if backend.supports_gpu_offload() {
        params.placement.gpu_layers.min(n_layer + 1)
    } else {
        0
    };
    ModelInfo {
        architecture: metadata
            .get("general.architecture")
            .cloned()
            .unwrap_or_default(),
        n_ctx_train: model.n_ctx_train(),
        n_vocab: model.n_vocab() as u32,
        n_embd: model.n_embd() as u32,
        n_layer,
        n_ctx: params.num_ctx,
        n_params: model.n_params(),
        size_bytes: model.size(),
        chat_template: metadata.get("tokenizer.chat_template").cloned(),
        bos_token: token_text(vocab.bos()),
        eos_token: token_text(vocab.eos()),
        add_bos: vocab.should_add_bos(),
        gpu_layers,
        shares: Vec::new(),
        gpus: Vec::new(),
        metadata,
    }
}

/// Where a job's events go. Sending never blocks the engine: text that does not fit is kept and
/// coalesced, and retried on the next step.
struct Outbox {
    events: Box<dyn EventSink>,
    unsent: String,
    unsent_logprobs: Vec<Logprobs>,
    last: Option<Event>,
}

impl Outbox {
    fn new(events: Box<dyn EventSink>) -> Self {
        Self {
            events,
            unsent: String::new(),
            unsent_logprobs: Vec::new(),
            last: None,
        }
    }

    fn is_closed(&self) -> bool {
        self.events.is_closed()
    }

    fn text(&mut self, text: &str) {
        self.unsent.push_str(text);
        self.flush();
    }

    /// Queues a token's log probabilities; they go with the next text sent.
    fn logprobs(&mut self, logprobs: Logprobs) {
        self.unsent_logprobs.push(logprobs);
    }

    /// Queues the final event (after any unsent text).
    fn finish(&mut self, event: Event) {
        self.last = Some(event);
        self.flush();
    }

    /// Sends what it can; true when nothing is left to send (or nobody is listening).
    fn flush(&mut self) -> bool {
        if !self.unsent.is_empty() || (self.last.is_some() && !self.unsent_logprobs.is_empty()) {
            let text = Event::Text(
                std::mem::take(&mut self.unsent),
                std::mem::take(&mut self.unsent_logprobs),
            );
            match self.events.try_send(text) {
                Ok(()) => {}
                Err(SinkError::Full(Event::Text(text, logprobs))) => {
                    self.unsent = text;
                    self.unsent_logprobs = logprobs;
                    return false;
                }
                Err(SinkError::Full(_)) => unreachable!("only text was sent"),
                Err(SinkError::Closed) => return true,
            }
        }
        if let Some(event) = self.last.take() {
            match self.events.try_send(event) {
                Ok(()) | Err(SinkError::Closed) => {}
                Err(SinkError::Full(event)) => {
                    self.last = Some(event);
                    return false;
                }
            }
        }
        true
    }
}

/// A job that has been tokenized but has no slot yet.
struct Waiting {
    prompt: Vec<LlamaToken>,
    job: Box<GenerateJob>,
    outbox: Outbox,
}

/// A job running in a slot.
struct Running {
    outbox: Outbox,
    sampler: SequenceSampler,
    text: TextOutput,
    prompt: Vec<LlamaToken>,
    generated: Vec<LlamaToken>,
    /// The token sampled last, to be decoded in the next batch (`None` while prefilling).
    next: Option<LlamaToken>,
    /// Most tokens to generate.
    limit: u32,
    /// Whether a full context is shifted (else the job ends with `Length`).
    shift: bool,
    /// Alternatives reported with each token's log probability; `None`: no log probabilities.
    logprobs: Option<usize>,
    prompt_eval_count: u32,
    started: Instant,
    prefilled: Option<Instant>,
    /// Tokens this job put in the current batch, and the batch row whose logits it samples.
    in_batch: usize,
    row: Option<i32>,
    /// The batch row of the first of those tokens.
    first_row: i32,
    /// Drafts tokens ahead of `next` (speculative decoding); the drafts of the current batch
    /// sit from row `draft_row` on.
    drafter: Drafter,
    draft_row: i32,
    /// The token of `row`, when it was picked on the sampling threads before the step's rows
    /// are handed on one by one.
    picked: Option<LlamaToken>,
    /// KV cells the job may come to hold (its prompt and all it may generate, within the
    /// slot's context), held for it in a shared pool.
    reserved: usize,
}

struct Slot {
    seq: i32,
    cached: Vec<LlamaToken>,
    job: Option<Running>,
    /// When a job last started here (a counter), for least-recently-used choice.
    last_used: u64,
}

struct Worker<'m> {
    model: &'m LlamaModel,
    /// Most drafts a sequence verifies in one step: none where the cache cannot drop them.
    most_drafts: usize,
    context: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    /// Context per slot.
    n_ctx: u32,
    /// KV cells all slots share, when they share a pool (else each slot has `n_ctx`).
    pool: Option<usize>,
    n_batch: usize,
    /// The context `embed` uses, made on the first embedding request: a model serves chat and
    /// embeddings without being loaded twice.
    embed_context: Option<LlamaContext<'m>>,
    /// The batch of `embed_context`, a whole input long.
    embed_batch: Option<LlamaBatch<'static>>,
    params: LoadParams,
    sliding_window: Option<usize>,
    slots: Vec<Slot>,
    waiting: VecDeque<Waiting>,
    /// Finished jobs whose last events did not fit their channel yet.
    draining: Vec<Outbox>,
    /// Reused buffer for token pieces.
    piece: Vec<u8>,
    /// Counts job starts, to stamp `Slot::last_used`.
    starts: u64,
    /// Whether a full slot drops its older half and goes on (see [`can_shift_context`]).
    can_shift: bool,
    /// Threads that pick the tokens of a step's rows side by side (see [`sampling_threads`]).
    sampling: Option<rayon::ThreadPool>,
    /// Where decode steps spend their time.
    clock: StepClock,
    /// The draft model loaded beside the model, if any.
    draft: Option<DraftModel<'m>>,
    /// The model's NextN block, if it has one.
    mtp: Option<Mtp<'m>>,
}

/// Where the time of decode steps goes, summed and logged at debug level every
/// [`StepClock::REPORT_EVERY`]: building the batch, llama.cpp's decode, sampling, and the rest
/// (turning tokens into text, stop strings, handing events on). Everything but the decode is
/// host work that a GPU does not hide.
#[derive(Debug, Default)]
struct StepClock {
    steps: u32,
    tokens: u32,
    batch: Duration,
    decode: Duration,
    sample: Duration,
    output: Duration,
    since: Option<Instant>,
}

impl StepClock {
    const REPORT_EVERY: Duration = Duration::from_secs(10);

    /// One step: `tokens` in its batch and the time of each phase (sampling is added to
    /// `sample` as it happens).
    fn record(&mut self, tokens: usize, batch: Duration, decode: Duration, output: Duration) {
        let since = *self.since.get_or_insert_with(Instant::now);
        self.steps += 1;
        self.tokens += tokens as u32;
        self.batch += batch;
        self.decode += decode;
        self.output += output;
        if since.elapsed() >= Self::REPORT_EVERY {
            self.report();
        }
    }

    fn report(&mut self) {
        if self.steps > 0 && tracing::enabled!(tracing::Level::DEBUG) {
            let per_step = |total: Duration| total.as_secs_f64() * 1e6 / f64::from(self.steps);
            let host = self.batch + self.sample + self.output;
            let all = host + self.decode;
            tracing::debug!(
                steps = self.steps,
                tokens = self.tokens,
                batch_us = format!("{:.1}", per_step(self.batch)),
                decode_us = format!("{:.1}", per_step(self.decode)),
                sample_us = format!("{:.1}", per_step(self.sample)),
                output_us = format!("{:.1}", per_step(self.output)),
                host_share = format!(
                    "{:.1}%",
                    100.0 * host.as_secs_f64() / all.as_secs_f64().max(1e-9)
                ),
                "decode steps"
            );
        }
        *self = Self::default();
    }
}

impl<'m> Worker<'m> {
    fn new(
        model: &'m LlamaModel,
        context: LlamaContext<'m>,
        params: &LoadParams,
        sliding_window: Option<usize>,
    ) -> Self {
        let n_batch = context.n_batch() as usize;
        // Rejected drafts must leave the KV cache. A cache that rolls back only to snapshots
        // (llama.cpp's, for V4, marked experimental) does not give back the same state in every
        // case, so such models verify no drafts: output stays exact, at plain decoding's speed.
        let most_drafts = if super::mtp::needs_snapshots(&context) {
            0
        } else {
            usize::MAX
        };
        Self {
            model,
            most_drafts,
            context,
            batch: LlamaBatch::new(n_batch, 1),
            n_ctx: params.num_ctx,
            pool: params.kv_pool.map(|pool| pool as usize),
            n_batch,
            embed_context: None,
            embed_batch: None,
            params: params.clone(),
            sliding_window,
            slots: (0..params.num_parallel)
                .map(|seq| Slot {
                    seq: seq as i32,
                    cached: Vec::new(),
                    job: None,
                    last_used: 0,
                })
                .collect(),
            waiting: VecDeque::new(),
            draining: Vec::new(),
            piece: Vec::with_capacity(64),
            starts: 0,
            can_shift: false,
            sampling: None,
            clock: StepClock::default(),
            draft: None,
            mtp: None,
        }
    }

    fn serve(&mut self, commands: &Receiver<Command>, after_step: &mut dyn FnMut(Flush)) {
        loop {
            let busy = !self.waiting.is_empty() || self.slots.iter().any(|slot| slot.job.is_some());
            after_step(if busy { Flush::Soon } else { Flush::Now });
            if !busy {
                // Idle: say where the steps since the last report went.
                self.clock.report();
            }
            // Block only when there is nothing to decode.
            let first = if busy {
                match commands.try_recv() {
                    Ok(command) => Some(command),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else if self.draining.is_empty() {
                match commands.recv() {
                    Ok(command) => Some(command),
                    Err(_) => break,
                }
            } else {
                match commands.recv_timeout(DELIVERY_RETRY) {
                    Ok(command) => Some(command),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut next = first;
            while let Some(command) = next {
                if let Err(reason) = self.handle(command) {
                    self.stop_all(&reason);
                    after_step(Flush::Now);
                    return;
                }
                next = commands.try_recv().ok();
            }
            self.draining.retain_mut(|outbox| !outbox.flush());
            self.cancel_abandoned();
            self.admit();
            // A step that processes a prompt may take long: text waiting goes out first.
            let prompting = self
                .slots
                .iter()
                .any(|slot| slot.job.as_ref().is_some_and(|job| job.next.is_none()));
            if prompting {
                after_step(Flush::Now);
            }
            self.step();
        }
        self.stop_all(UNLOADED);
        after_step(Flush::Now);
    }

    /// Handles one command; `Err` with the reason means shut down.
    fn handle(&mut self, command: Command) -> Result<(), String> {
        match command {
            Command::Shutdown(reason) => return Err(reason),
            Command::Tokenize {
                text,
                add_special,
                reply,
            } => {
                let tokens = self.tokenize(&text, add_special);
                reply(Ok(tokens.into_iter().map(|t| t.0).collect()));
            }
            Command::Detokenize { tokens, reply } => {
                reply(self.detokenize(&tokens));
            }
            Command::Embed {
                inputs,
                truncate,
                reply,
            } => {
                reply(self.embed(&inputs, truncate));
            }
            Command::Generate { mut job, events } => {
                let mut outbox = Outbox::new(events);
                match self.prepare(&mut job) {
                    Ok(prompt) => self.waiting.push_back(Waiting {
                        prompt,
                        job,
                        outbox,
                    }),
                    Err(error) => outbox.finish(Event::Rejected(error.to_string())),
                }
                // An undeliverable error is dropped with the outbox: the channel has room for it.
            }
        }
        Ok(())
    }

    fn tokenize(&self, text: &str, add_special: bool) -> Vec<LlamaToken> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_special, true)
    }

    fn validate_tokens(&self, tokens: &[i32]) -> Result<Vec<LlamaToken>, EngineError> {
        let n_vocab = self.model.n_vocab();
        if let Some(bad) = tokens.iter().find(|&&t| t < 0 || t >= n_vocab) {
            return Err(EngineError::InvalidInput(format!(
                "token {bad} is outside the vocabulary (0..{n_vocab})"
            )));
        }
        Ok(tokens.iter().map(|&t| LlamaToken(t)).collect())
    }

    fn detokenize(&self, tokens: &[i32]) -> Result<String, EngineError> {
        let tokens = self.validate_tokens(tokens)?;
        let bytes = self.model.vocab().detokenize(&tokens, false, true);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Tokenizes and checks a job before it waits for a slot; a JSON-schema grammar becomes
    /// GBNF here, so that a schema llama.cpp cannot convert refuses the job (a tool's schema
    /// it cannot convert allows any object instead).
    fn prepare(&self, job: &mut GenerateJob) -> Result<Vec<LlamaToken>, EngineError> {
        if let Some(grammar) = &mut job.grammar {
            match &grammar.source {
                GrammarSource::JsonSchema(schema) => {
                    let gbnf = super::grammar_from_json_schema(schema).map_err(|error| {
                        EngineError::InvalidInput(format!("invalid format schema: {error}"))
                    })?;
                    grammar.source = GrammarSource::Gbnf(gbnf);
                }
                GrammarSource::ToolCalls { tools, most } => {
                    let gbnf = super::schema::tool_calls_grammar(tools, *most as usize);
                    grammar.source = GrammarSource::Gbnf(gbnf);
                }
                GrammarSource::Gbnf(_) => {}
            }
        }
        let prompt = match &job.prompt {
            Prompt::Text { text, add_special } => self.tokenize(text, *add_special),
            Prompt::Tokens(tokens) => self.validate_tokens(tokens)?,
        };
        if prompt.is_empty() {
            return Err(EngineError::InvalidInput("the prompt is empty".to_owned()));
        }
        let limit = self.n_ctx as usize;
        if prompt.len() <= limit {
            return Ok(prompt);
        }
        if !job.truncate {
            return Err(EngineError::ContextTooLong {
                tokens: prompt.len(),
                limit,
            });
        }
        // As Ollama's runner: the first tokens (BOS, the start of the system prompt) and the
        // last `limit - NUM_KEEP`; generation then starts with a context shift.
        let keep = NUM_KEEP.min(limit);
        let dropped = prompt.len() - limit;
        tracing::warn!(
            prompt = prompt.len(),
            limit,
            keep,
            "truncating the prompt to the context length"
        );
        let mut truncated = prompt;
        truncated.drain(keep..keep + dropped);
        Ok(truncated)
    }

    /// Moves waiting jobs into free slots, each into the free slot sharing its longest prefix.
    fn admit(&mut self) {
        while !self.waiting.is_empty() {
            let Some(waiting) = self.waiting.front() else {
                break;
            };
            if waiting.outbox.is_closed() {
                self.waiting.pop_front();
                continue;
            }
            // A match of only the BOS token is not worth evicting another prompt's cache for:
            // then the least recently used slot (an empty one first) is taken.
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, slot)| slot.job.is_none())
                .max_by_key(|(_, slot)| {
                    let shared = common_prefix(&slot.cached, &waiting.prompt);
                    (
                        if shared > 1 { shared } else { 0 },
                        std::cmp::Reverse(slot.last_used),
                    )
                })
                .map(|(index, _)| index);
            let Some(index) = best else { break };
            let need = self.reservation(waiting);
            if !self.make_pool_room(index, need) {
                // Waits, and those behind it too, until running jobs give cells back.
                break;
            }
            let Some(waiting) = self.waiting.pop_front() else {
                break;
            };
            self.start(index, waiting, need);
        }
    }

    /// The KV cells a waiting job may come to hold: its prompt and all it may generate, at
    /// most a slot's context (a longer generation shifts the context or ends).
    fn reservation(&self, waiting: &Waiting) -> usize {
        let n_ctx = self.n_ctx as usize;
        let generate = usize::try_from(waiting.job.num_predict)
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or(n_ctx);
        waiting.prompt.len().saturating_add(generate).min(n_ctx)
    }

    /// With a shared KV pool, whether a job holding `need` cells can start in slot `index`
    /// now: the cells running jobs hold for themselves and `need` must fit the pool, and the
    /// prompts idle slots keep cached are dropped (least recently used first) to make room.
    /// The pool is never promised past its size, so no decode can run out of cells.
    fn make_pool_room(&mut self, index: usize, need: usize) -> bool {
        let Some(pool) = self.pool else {
            return true;
        };
        let held: usize = self
            .slots
            .iter()
            .filter_map(|slot| slot.job.as_ref())
            .map(|job| job.reserved)
            .sum();
        if held + need > pool {
            return false;
        }
        loop {
            let idle = |(at, slot): &(usize, &Slot)| *at != index && slot.job.is_none();
            let cached: usize = self
                .slots
                .iter()
                .enumerate()
                .filter(idle)
                .map(|(_, slot)| slot.cached.len())
                .sum();
            if held + need + cached <= pool {
                return true;
            }
            let Some(victim) = self
                .slots
                .iter()
                .enumerate()
                .filter(idle)
                .filter(|(_, slot)| !slot.cached.is_empty())
                .min_by_key(|(_, slot)| slot.last_used)
                .map(|(at, _)| at)
            else {
                return true;
            };
            let slot = &mut self.slots[victim];
            let _ = self
                .context
                .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
            slot.cached.clear();
        }
    }

    fn start(&mut self, index: usize, waiting: Waiting, reserved: usize) {
        let Waiting {
            prompt,
            job,
            mut outbox,
        } = waiting;
        // The NextN block follows a job that drafts with it from what it holds of the text.
        let drafter = Drafter::new(job.speculation);
        let seq = self.slots[index].seq as usize;
        let mtp_keep = self
            .mtp
            .as_mut()
            .filter(|_| drafter.may_use_mtp())
            .map(|mtp| mtp.reusable(seq, &prompt));
        let keep = self.reuse_prefix(index, &prompt, mtp_keep);
        let sampler = match SequenceSampler::new(
            self.model,
            &job.sampling,
            job.grammar.as_ref(),
            &prompt,
            self.n_ctx,
        ) {
            Ok(sampler) => sampler,
            Err(error) => {
                outbox.finish(Event::Error(error.to_string()));
                if !outbox.flush() {
                    self.draining.push(outbox);
                }
                return;
            }
        };
        let (limit, shift) = match job.num_predict {
            n if n > 0 => (n as u32, job.shift),
            -2 => (u32::MAX, false),
            _ => (self.n_ctx.saturating_mul(UNBOUNDED_FACTOR), job.shift),
        };
        self.starts += 1;
        self.slots[index].last_used = self.starts;
        self.slots[index].job = Some(Running {
            outbox,
            sampler,
            text: TextOutput::new(job.stop),
            prompt_eval_count: (prompt.len() - keep) as u32,
            prompt,
            generated: Vec::new(),
            next: None,
            limit,
            shift,
            logprobs: job.logprobs.map(|top| top.min(MAX_TOP_LOGPROBS)),
            started: Instant::now(),
            prefilled: None,
            in_batch: 0,
            row: None,
            first_row: 0,
            drafter,
            draft_row: 0,
            picked: None,
            reserved,
        });
    }

    /// Drops the slot's cache past the common prefix with `prompt` and returns how many prompt
    /// tokens are kept. At least the last prompt token is always evaluated again, for its logits.
    fn reuse_prefix(&mut self, index: usize, prompt: &[LlamaToken], most: Option<usize>) -> usize {
        let slot = &mut self.slots[index];
        let mut keep = common_prefix(&slot.cached, prompt)
            .min(prompt.len() - 1)
            .min(most.unwrap_or(usize::MAX));
        let seq = slot.seq as u32;
        if keep < slot.cached.len() {
            let removed = self
                .context
                .clear_kv_cache_seq(Some(seq), Some(keep as u32), None)
                .unwrap_or(false);
            if !removed {
                keep = 0;
            }
        }
        if keep > 0 {
            // A sliding-window cache forgets old positions; the kept prefix is only usable if
            // what the next token attends to is still there.
            let needed_from = self
                .sliding_window
                .map_or(0, |window| keep.saturating_sub(window));
            let pos_min = self.context.kv_cache_seq_pos_min(slot.seq);
            if pos_min < 0 || pos_min as usize > needed_from {
                keep = 0;
            }
        }
        if keep == 0 {
            let _ = self.context.clear_kv_cache_seq(Some(seq), None, None);
        }
        slot.cached.truncate(keep);
        keep
    }

    /// Frees the slots of jobs whose client went away; their KV stays cached for prefix reuse.
    fn cancel_abandoned(&mut self) {
        for slot in &mut self.slots {
            if slot.job.as_ref().is_some_and(|job| job.outbox.is_closed()) {
                slot.job = None;
            }
        }
    }

    /// One decode: a token for every generating job plus prefill chunks, then sampling.
    fn step(&mut self) {
        let started = Instant::now();
        self.batch.clear();
        let mut batch_failed = None;
        for slot in &mut self.slots {
            let Some(job) = slot.job.as_mut() else {
                continue;
            };
            job.in_batch = 0;
            job.row = None;
            job.picked = None;
            if let Some(token) = job.next {
                if let Err(error) =
                    self.batch
                        .add(token, slot.cached.len() as i32, &[slot.seq], true)
                {
                    batch_failed = Some(error.to_string());
                    break;
                }
                job.in_batch = 1;
                job.row = Some(self.batch.n_tokens() - 1);
                job.first_row = self.batch.n_tokens() - 1;
            }
        }
        for slot in &mut self.slots {
            let room = self.n_batch - self.batch.n_tokens() as usize;
            if room == 0 || batch_failed.is_some() {
                break;
            }
            let Some(job) = slot.job.as_mut() else {
                continue;
            };
            if job.next.is_some() {
                continue;
            }
            let start = slot.cached.len();
            let take = (job.prompt.len() - start).min(room);
            job.first_row = self.batch.n_tokens();
            for (offset, &token) in job.prompt[start..start + take].iter().enumerate() {
                let position = start + offset;
                let last = position + 1 == job.prompt.len();
                if let Err(error) = self.batch.add(token, position as i32, &[slot.seq], last) {
                    batch_failed = Some(error.to_string());
                    break;
                }
                if last {
                    job.row = Some(self.batch.n_tokens() - 1);
                }
            }
            job.in_batch = take;
        }
        if batch_failed.is_none() {
            batch_failed = self.add_drafts().err();
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        if let Some(mtp) = self.mtp.as_mut() {
            let any = self.slots.iter().any(|slot| {
                slot.job
                    .as_ref()
                    .is_some_and(|job| job.in_batch > 0 && job.drafter.may_use_mtp())
            });
            mtp.follow(any);
        }
        let built = Instant::now();
        let decoded = match batch_failed {
            Some(error) => Err(error),
            None => self
                .context
                .decode(&mut self.batch)
                .map_err(|error| error.to_string()),
        };
        let decoded_at = Instant::now();
        if let Err(error) = decoded {
            self.fail_batch(&error);
            return;
        }
        let sampled_before = self.clock.sample;
        self.pick_side_by_side();
        for index in 0..self.slots.len() {
            self.after_decode(index);
        }
        if let Some(mtp) = self.mtp.as_mut() {
            mtp.catch_up();
        }
        let output = decoded_at
            .elapsed()
            .saturating_sub(self.clock.sample.saturating_sub(sampled_before));
        self.clock.record(
            self.batch.n_tokens() as usize,
            built - started,
            decoded_at - built,
            output,
        );
    }

    /// With sampling threads, picks the tokens of the step's plain rows (one row of a job on
    /// the fast path, no drafts to check) side by side, before [`Self::after_decode`] hands
    /// them on in slot order. Each job has its own sampler and random numbers, so the tokens
    /// are those one thread would pick.
    fn pick_side_by_side(&mut self) {
        let Some(pool) = self.sampling.as_ref() else {
            return;
        };
        let context = &self.context;
        let mut rows: Vec<_> = self
            .slots
            .iter_mut()
            .filter_map(|slot| {
                let job = slot.job.as_mut()?;
                let row = job
                    .row
                    .filter(|_| job.in_batch > 0 && job.drafter.drafts.is_empty())?;
                let pick = job.sampler.fast_pick()?;
                Some((pick, context.get_logits_ith(row), &mut job.picked))
            })
            .collect();
        if rows.len() < 2 {
            return;
        }
        let started = Instant::now();
        pool.install(|| {
            use rayon::prelude::*;
            rows.par_iter_mut()
                .with_max_len(1)
                .for_each(|(pick, logits, picked)| **picked = Some(pick.pick(logits)));
        });
        self.clock.sample += started.elapsed();
    }

    /// Drafts tokens after each generating sequence's next token (speculative decoding), in
    /// the batch room that decode tokens and prefill left: from the sequence's own text (prompt
    /// lookup) or from the draft model, all sequences that want its drafts in one go. A draft
    /// stays inside the slot's context and within the tokens the job may still generate.
    fn add_drafts(&mut self) -> Result<(), String> {
        let streams = self
            .slots
            .iter()
            .filter(|slot| slot.job.as_ref().is_some_and(|job| job.next.is_some()))
            .count();
        let drafters = Drafters {
            model: self.draft.is_some(),
            mtp: self.mtp.is_some(),
        };
        let mut free = self.n_batch - self.batch.n_tokens() as usize;
        let mut from_model: Vec<(usize, usize)> = Vec::new();
        let mut from_mtp: Vec<(usize, usize)> = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(job) = slot.job.as_mut() else {
                continue;
            };
            let Some(next) = job.next else {
                continue;
            };
            let room = free
                .min((self.n_ctx as usize).saturating_sub(slot.cached.len() + 1))
                .min((job.limit as usize).saturating_sub(job.generated.len() + 1))
                .min(self.most_drafts);
            let cheap = job.sampler.checks_drafts();
            match job.drafter.plan(room, streams, cheap, drafters) {
                None => {}
                Some((Source::Lookup(min_ngram), want)) => {
                    job.drafter.look_up(&slot.cached, next, min_ngram, want);
                    free -= job.drafter.drafts.len();
                    push_drafts(&mut self.batch, slot)?;
                }
                Some((Source::Model, want)) => {
                    free -= want;
                    from_model.push((index, want));
                }
                Some((Source::Mtp, want)) => {
                    free -= want;
                    from_mtp.push((index, want));
                }
            }
        }
        if !from_mtp.is_empty()
            && let Some(mtp) = self.mtp.as_mut()
        {
            let requests = draft_requests(&self.slots, &from_mtp);
            let proposals = mtp.propose(&requests);
            drop(requests);
            take_drafts(&mut self.batch, &mut self.slots, &from_mtp, proposals)?;
        }
        let Some(model) = self.draft.as_mut() else {
            return Ok(());
        };
        if from_model.is_empty() {
            return Ok(());
        }
        let requests = draft_requests(&self.slots, &from_model);
        let proposals = model.propose(&requests);
        drop(requests);
        take_drafts(&mut self.batch, &mut self.slots, &from_model, proposals)
    }

    /// Records what the batch evaluated for slot `index` and samples its next token. With
    /// drafts in the batch, each row in turn is sampled with the draft that followed it: while
    /// the model picks the draft, the draft is kept (its KV entry is already right) and the
    /// next row decides; the first other pick, or the pick after the last draft, is the next
    /// token. Drafts after it leave the KV cache.
    fn after_decode(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        let Some(job) = slot.job.as_mut() else {
            return;
        };
        if job.in_batch == 0 {
            return;
        }
        let start = slot.cached.len();
        let first_row = job.first_row;
        // The NextN block follows the text of the jobs that may draft with it.
        let follow = self.mtp.is_some() && job.drafter.may_use_mtp();
        let generating = job.next.is_some();
        if let Some(token) = job.next.take() {
            slot.cached.push(token);
        } else {
            slot.cached
                .extend_from_slice(&job.prompt[start..start + job.in_batch]);
            if follow && let Some(mtp) = self.mtp.as_mut() {
                mtp.accepted(slot.seq as usize, start, &slot.cached, first_row..);
            }
        }
        let Some(mut row) = job.row else {
            return;
        };
        if job.prefilled.is_none() {
            job.prefilled = Some(Instant::now());
        }
        let drafted = job.drafter.drafts.len();
        let draft_row = job.draft_row;
        let mut accepted = 0;
        let next = loop {
            let draft = self.slots[index]
                .job
                .as_ref()
                .and_then(|job| job.drafter.drafts.get(accepted).copied());
            let Some(token) = self.emit(index, row, draft) else {
                break None;
            };
            if Some(token) != draft {
                break Some(token);
            }
            let slot = &mut self.slots[index];
            slot.cached.push(token);
            if let Some(job) = slot.job.as_mut() {
                job.drafter.accepted += 1;
            }
            row = draft_row + accepted as i32;
            accepted += 1;
        };
        let slot = &mut self.slots[index];
        if generating
            && follow
            && let Some(mtp) = self.mtp.as_mut()
        {
            // `next` at its row, then the accepted drafts at theirs.
            let rows = std::iter::once(first_row).chain(draft_row..);
            mtp.accepted(slot.seq as usize, start, &slot.cached, rows);
        }
        if drafted > accepted || (drafted > 0 && next.is_none()) {
            let dropped = self
                .context
                .clear_kv_cache_seq(Some(slot.seq as u32), Some(slot.cached.len() as u32), None)
                .unwrap_or(false);
            if !dropped {
                // The cache kept the rejected drafts (it could not roll back that far): nothing
                // it holds for this sequence can be built on.
                tracing::error!(drafted, accepted, "the KV cache kept rejected drafts");
                self.fail_slot(
                    index,
                    "the KV cache could not drop rejected draft tokens; retry with speculative \
                     set to off",
                );
                if let Some(mtp) = self.mtp.as_mut() {
                    mtp.forget(self.slots[index].seq as usize);
                }
                return;
            }
        }
        let (Some(job), Some(token)) = (slot.job.as_mut(), next) else {
            return;
        };
        job.drafter.settle(accepted);
        job.next = Some(token);
        let shift = job.shift;
        if slot.cached.len() >= self.n_ctx as usize && !(shift && self.shift_context(index)) {
            self.finish(index, DoneReason::Length, None);
        }
    }

    /// Samples the token of output row `row` for the job in slot `index` (checking `draft`,
    /// the token drafted for that position) and hands it on: text, stop strings, limits.
    /// `None` when the job ended with it.
    fn emit(&mut self, index: usize, row: i32, draft: Option<LlamaToken>) -> Option<LlamaToken> {
        let slot = &mut self.slots[index];
        let job = slot.job.as_mut()?;
        let sampling = Instant::now();
        let token = match job.picked.take() {
            Some(token) => {
                job.sampler.accept(token);
                token
            }
            None => job.sampler.sample(&self.context, row, draft),
        };
        self.clock.sample += sampling.elapsed();
        let model: &'m LlamaModel = self.model;
        let vocab = model.vocab();
        if vocab.is_eog(token) {
            self.finish(index, DoneReason::Stop, None);
            return None;
        }
        if let Some(top) = job.logprobs {
            let logits = self.context.get_logits_ith(row);
            job.outbox.logprobs(logprobs(model, logits, token, top));
        }
        job.generated.push(token);
        self.piece.clear();
        vocab.token_to_piece_into(token, &mut self.piece, true, None);
        if let Err(error) =
            job.sampler
                .observe_text(model, &String::from_utf8_lossy(&self.piece), self.n_ctx)
        {
            job.outbox.finish(Event::Error(error.to_string()));
            slot.job = None;
            return None;
        }
        match job.text.push(&self.piece) {
            Pushed::Text(text) => {
                if !text.is_empty() {
                    job.outbox.text(&text);
                }
            }
            Pushed::Stopped(text) => {
                self.finish(index, DoneReason::Stop, Some(text));
                return None;
            }
        }
        if job.generated.len() >= job.limit as usize {
            self.finish(index, DoneReason::Length, None);
            return None;
        }
        Some(token)
    }

    /// Makes room in a full slot: keeps the first [`NUM_KEEP`] tokens, drops half of the rest,
    /// and moves the newer half down in the KV cache. `false` when the model cannot shift.
    fn shift_context(&mut self, index: usize) -> bool {
        if !self.can_shift {
            return false;
        }
        let slot = &mut self.slots[index];
        let len = slot.cached.len();
        let keep = NUM_KEEP.min(len);
        let discard = (len - keep) / 2;
        if discard == 0 {
            return false;
        }
        let (keep32, end32, len32) = (keep as u32, (keep + discard) as u32, len as u32);
        let shifted = self
            .context
            .kv_cache_seq_rm(slot.seq, Some(keep32), Some(end32))
            .and_then(|()| {
                self.context
                    .kv_cache_seq_add(slot.seq, Some(end32), Some(len32), -(discard as i32))
            });
        if shifted.is_err() {
            return false;
        }
        slot.cached.drain(keep..keep + discard);
        if let Some(mtp) = self.mtp.as_mut() {
            mtp.forget(slot.seq as usize);
        }
        tracing::debug!(seq = slot.seq, keep, discard, "context shifted");
        true
    }

    /// Ends the job in slot `index`; `stopped_text` is the text before a matched stop string,
    /// `None` means flush everything still held back.
    fn finish(&mut self, index: usize, reason: DoneReason, stopped_text: Option<String>) {
        let Some(mut job) = self.slots[index].job.take() else {
            return;
        };
        let tail = stopped_text.unwrap_or_else(|| job.text.finish());
        if !tail.is_empty() {
            job.outbox.text(&tail);
        }
        let now = Instant::now();
        let prefilled = job.prefilled.unwrap_or(now);
        let mut context: Vec<i32> = job.prompt.iter().map(|t| t.0).collect();
        context.extend(job.generated.iter().map(|t| t.0));
        job.outbox.finish(Event::Done(Summary {
            done_reason: reason,
            prompt_eval_count: job.prompt_eval_count,
            prompt_eval_duration: prefilled - job.started,
            eval_count: job.generated.len() as u32,
            eval_duration: now - prefilled,
            context,
            draft_count: job.drafter.drafted,
            draft_accepted_count: job.drafter.accepted,
        }));
        if !job.outbox.flush() {
            self.draining.push(job.outbox);
        }
    }

    /// A decode failed: the jobs in the batch get the error and their slots are reset.
    fn fail_batch(&mut self, error: &str) {
        tracing::error!(%error, "decode failed");
        let message = format!("llama.cpp decode failed: {error}");
        for index in 0..self.slots.len() {
            let in_batch = self.slots[index]
                .job
                .as_ref()
                .is_some_and(|job| job.in_batch > 0);
            if in_batch {
                self.fail_slot(index, &message);
            }
        }
    }

    /// Ends the job in slot `index` (if any) with `message` and empties the slot's KV cache.
    fn fail_slot(&mut self, index: usize, message: &str) {
        let slot = &mut self.slots[index];
        if let Some(mut job) = slot.job.take() {
            job.outbox.finish(Event::Error(message.to_owned()));
            if !job.outbox.flush() {
                self.draining.push(job.outbox);
            }
        }
        let _ = self
            .context
            .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
        slot.cached.clear();
    }

    /// Engine going away: every job still running or waiting is told so.
    fn stop_all(&mut self, message: &str) {
        for slot in &mut self.slots {
            if let Some(mut job) = slot.job.take() {
                job.outbox.finish(Event::Error(message.to_owned()));
            }
        }
        for mut waiting in self.waiting.drain(..) {
            waiting.outbox.finish(Event::Error(message.to_owned()));
        }
    }

    /// Embeds each input alone in the embedding context, made on first use.
    fn embed(&mut self, inputs: &[String], truncate: bool) -> Result<Embeddings, EngineError> {
        let limit = self.n_ctx as usize;
        let mut all = Vec::with_capacity(inputs.len());
        for input in inputs {
            let mut tokens = self.tokenize(input, true);
            if tokens.len() > limit {
                if !truncate {
                    return Err(EngineError::ContextTooLong {
                        tokens: tokens.len(),
                        limit,
                    });
                }
                tokens.truncate(limit);
            }
            if tokens.is_empty() {
                return Err(EngineError::InvalidInput("an input is empty".to_owned()));
            }
            all.push(tokens);
        }
        if self.embed_context.is_none() {
            let backend = llama_backend()?;
            let context =
                new_context(backend, self.model, &self.params, true).map_err(EngineError::Llama)?;
            self.embed_batch = Some(LlamaBatch::new(context.n_batch() as usize, 1));
            self.embed_context = Some(context);
        }
        let (Some(context), Some(batch)) = (self.embed_context.as_mut(), self.embed_batch.as_mut())
        else {
            unreachable!("made above");
        };
        let llama = |error: &dyn std::fmt::Display| EngineError::Llama(error.to_string());
        let mut vectors = Vec::with_capacity(all.len());
        let mut prompt_tokens = 0;
        for tokens in &all {
            context.clear_kv_cache();
            batch.clear();
            for (position, &token) in tokens.iter().enumerate() {
                batch
                    .add(token, position as i32, &[0], true)
                    .map_err(|error| llama(&error))?;
            }
            context.decode(batch).map_err(|error| llama(&error))?;
            let pooled = context
                .embeddings_seq_ith(0)
                .map_err(|_| EngineError::Llama("no pooled embedding".to_owned()))?;
            if pooled.iter().any(|x| !x.is_finite()) {
                return Err(EngineError::Llama(
                    "the embedding contains NaN or infinity".to_owned(),
                ));
            }
            vectors.push(pooled.to_vec());
            prompt_tokens += tokens.len() as u32;
        }
        context.clear_kv_cache();
        Ok(Embeddings {
            vectors,
            prompt_tokens,
        })
    }
}

/// What the slots listed in `wanted` (slot index, most tokens) ask a draft model or the NextN
/// block for.
fn draft_requests<'a>(slots: &'a [Slot], wanted: &[(usize, usize)]) -> Vec<draft::Request<'a>> {
    wanted
        .iter()
        .filter_map(|&(index, want)| {
            let slot = &slots[index];
            Some(draft::Request {
                seq: slot.seq as usize,
                history: &slot.cached,
                next: slot.job.as_ref()?.next?,
                want,
            })
        })
        .collect()
}

/// Gives each slot in `wanted` its proposed drafts and puts them into the batch.
fn take_drafts(
    batch: &mut LlamaBatch<'static>,
    slots: &mut [Slot],
    wanted: &[(usize, usize)],
    proposals: Vec<Vec<LlamaToken>>,
) -> Result<(), String> {
    for (&(index, _), tokens) in wanted.iter().zip(proposals) {
        let slot = &mut slots[index];
        if let Some(job) = slot.job.as_mut() {
            job.drafter.take(&tokens);
            push_drafts(batch, slot)?;
        }
    }
    Ok(())
}

/// Puts the drafts of the job in `slot` into the batch after its next token.
fn push_drafts(batch: &mut LlamaBatch<'static>, slot: &mut Slot) -> Result<(), String> {
    let Some(job) = slot.job.as_mut() else {
        return Ok(());
    };
    if job.drafter.drafts.is_empty() {
        return Ok(());
    }
    job.draft_row = batch.n_tokens();
    let first = slot.cached.len() + 1;
    for (offset, &token) in job.drafter.drafts.iter().enumerate() {
        batch
            .add(token, (first + offset) as i32, &[slot.seq], true)
            .map_err(|error| error.to_string())?;
    }
    job.in_batch += job.drafter.drafts.len();
    Ok(())
}

/// How many tokens `a` and `b` start with alike.
pub(super) fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The log probability of `chosen` under `logits` (log-softmax), and the `top` most likely
/// tokens with theirs.
fn logprobs(model: &LlamaModel, logits: &[f32], chosen: LlamaToken, top: usize) -> Logprobs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let entry = |id: usize| {
        let token = LlamaToken(id as i32);
        let mut bytes = Vec::new();
        model
            .vocab()
            .token_to_piece_into(token, &mut bytes, true, None);
        TokenLogprob {
            token: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
            logprob: logits[id] - log_sum,
        }
    };
    let top = top.min(logits.len());
    let mut ids: Vec<usize> = if top > 0 {
        (0..logits.len()).collect()
    } else {
        Vec::new()
    };
    let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]);
    if top > 0 && top < ids.len() {
        ids.select_nth_unstable_by(top - 1, by_logit);
    }
    ids.truncate(top);
    ids.sort_by(by_logit);
    Logprobs {
        chosen: entry(chosen.0 as usize),
        top: ids.into_iter().map(entry).collect(),
    }
}
