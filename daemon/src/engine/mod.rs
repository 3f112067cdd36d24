//! The llama.cpp engine: one OS thread per loaded model, reached only by messages.
//!
//! This module is the only place in the daemon that touches `llama-cpp-2`; everything it
//! exposes is plain Rust. whaled itself never runs it: each loaded model's engine runs in a
//! runner process of its own (see [`crate::runner`]), so that a llama.cpp abort ends that model
//! only. Tests and benchmarks also run it in-process. A [`LlamaContext`](llama_cpp_2::context::LlamaContext) is `!Send`,
//! so each [`Engine`] owns a named thread (`engine:<model>`) that holds the model and its one
//! context. The thread runs continuous batching over `num_parallel` sequence slots: every
//! iteration admits waiting jobs into free slots (longest cached prefix first), builds one batch
//! of prefill chunks plus one decode token per generating sequence, decodes once, samples, and
//! streams text to each job's own channel. A job whose receiver is dropped is cancelled at the
//! next step and its slot freed.

mod draft;
mod fast_sampler;
mod lookup;
mod mtp;
mod output;
mod sampler;
mod schema;
mod worker;

pub use schema::{ToolSchema, grammar_from_json_schema};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use llama_cpp_2::llama_backend::LlamaBackend;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use worker::{Command, Reply, UNLOADED};

use crate::offload::Placement;

/// Capacity of each job's event channel. The engine never blocks on a slow client: when the
/// channel is full, text is coalesced in the engine and delivered once there is room.
const EVENT_CHANNEL_CAPACITY: usize = 256;

/// A GBNF grammar that accepts one JSON object, for `format: "json"`.
pub const JSON_GBNF: &str = r#"root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
"#;

/// What a loaded model runs with. Changing any of these means reloading the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadParams {
    /// The GGUF file (a blob in the store).
    pub model_path: PathBuf,
    /// Name used for the thread (`engine:<name>`) and in logs.
    pub name: String,
    /// Context window per slot, in tokens.
    pub num_ctx: u32,
    /// Number of sequences decoded together (slots); the context holds `num_ctx * num_parallel`.
    pub num_parallel: u32,
    /// Most tokens in one decode call (prefill chunk size plus decode tokens).
    pub num_batch: u32,
    /// CPU threads; `None` means one per core.
    pub num_threads: Option<u32>,
    /// Threads picking a step's tokens side by side (`WHALE_SAMPLE_THREADS`); `None`: off.
    #[serde(default)]
    pub sample_threads: Option<u32>,
    /// Which layers go to the GPU (all on the CPU by default and on a CPU-only build).
    pub placement: Placement,
    /// Memory-map the weights instead of reading them.
    pub use_mmap: bool,
    /// A small model sharing the tokenizer that drafts tokens for this one.
    #[serde(default)]
    pub draft: Option<DraftParams>,
    /// KV cells all slots share (llama.cpp's unified KV cache); `None`: `num_ctx` per slot.
    #[serde(default)]
    pub kv_pool: Option<u32>,
    /// Workers whose devices take a share of the layers.
    #[serde(default)]
    pub workers: Vec<crate::rpc::WorkerLink>,
    /// How many layers go to the workers: the scheduler's plan (by free memory, or `num_gpu`).
    #[serde(default)]
    pub worker_layers: u32,
}

/// The draft model loaded beside a model (speculative decoding with a draft model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DraftParams {
    /// The draft model's GGUF file.
    pub model_path: PathBuf,
    /// Its name, for messages.
    pub name: String,
    /// Whether all its layers go to the GPU (else it runs on the CPU).
    pub gpu: bool,
}

/// What the model file says about itself, read once at load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    pub architecture: String,
    pub n_ctx_train: u32,
    pub n_vocab: u32,
    pub n_embd: u32,
    pub n_layer: u32,
    /// Context of each slot (`num_ctx`, after clamping): the most tokens one sequence holds.
    pub n_ctx: u32,
    pub n_params: u64,
    pub size_bytes: u64,
    /// `tokenizer.chat_template`, the Jinja template the chat module renders.
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Whether the tokenizer adds BOS when asked to add special tokens.
    pub add_bos: bool,
    /// Layers that went to a GPU (0 on a CPU-only build).
    pub gpu_layers: u32,
    /// With workers, where the layers (the output layer counted as one) live.
    #[serde(default)]
    pub shares: Vec<crate::rpc::Share>,
    /// The GPUs the load took memory on, and how much of each (empty on the CPU).
    #[serde(default)]
    pub gpus: Vec<GpuUse>,
    /// All GGUF metadata, values rendered as strings by llama.cpp.
    pub metadata: BTreeMap<String, String>,
}

/// The prompt of a job: text to tokenize, or tokens already made (e.g. a deprecated `context`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Prompt {
    Text { text: String, add_special: bool },
    Tokens(Vec<i32>),
}

/// Sampling options of one job (Ollama's `options`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 (or less) means greedy.
    pub temperature: f32,
    /// 0 (or less) disables top-k.
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub typical_p: f32,
    /// 1.0 disables the repeat penalty.
    pub repeat_penalty: f32,
    /// Tokens looked back for penalties: 0 off, -1 the whole context.
    pub repeat_last_n: i32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// `None` picks a random seed.
    pub seed: Option<u32>,
}

impl Default for Sampling {
    /// Ollama's defaults, as `options::resolve` gives them to a request that sets none
    /// (`repeat_penalty` 1.0 since Ollama 0.17.5).
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

impl Sampling {
    /// Pure argmax decoding with no penalties: deterministic, for tests and benchmarks.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }
}

/// A grammar constraining the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grammar {
    pub source: GrammarSource,
    /// Apply the grammar only once the model has produced `</think>` (reasoning models think
    /// freely, then answer in the required format).
    pub after_think: bool,
}

/// Where a grammar comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GrammarSource {
    /// GBNF text with a `root` rule.
    Gbnf(String),
    /// A JSON schema (`format: {...}`), turned into GBNF by llama.cpp's converter in the
    /// engine: that converter is llama.cpp code, and the schema is a request's input.
    JsonSchema(serde_json::Value),
    /// A tool-call block calling one to `most` of `tools`, each with arguments its schema
    /// allows (see `schema::tool_calls_grammar`); made into GBNF in the engine, as a schema is.
    ToolCalls { tools: Vec<ToolSchema>, most: u32 },
}

impl Grammar {
    /// The grammar for `format: "json"`.
    pub fn json(after_think: bool) -> Self {
        Self {
            source: GrammarSource::Gbnf(JSON_GBNF.to_owned()),
            after_think,
        }
    }
}

/// One generation request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateJob {
    pub prompt: Prompt,
    pub sampling: Sampling,
    /// Most tokens to generate (Ollama's meaning): a positive number is the bound; `-2` means
    /// until the context is full; anything else until an end token, at most
    /// [`UNBOUNDED_FACTOR`] × the context length.
    pub num_predict: i32,
    /// Stop strings: matched on text across token boundaries and never emitted.
    pub stop: Vec<String>,
    pub grammar: Option<Grammar>,
    /// When the context fills up during generation, drop the older half of it and go on
    /// (where the model allows it) rather than end with `Length`.
    pub shift: bool,
    /// A prompt longer than the context keeps its first tokens and its end, dropping what lies
    /// between, rather than being refused with [`EngineError::ContextTooLong`].
    pub truncate: bool,
    /// Report each generated token's log probability, with this many of the most likely
    /// tokens at its position (at most [`MAX_TOP_LOGPROBS`]); `None` reports none.
    pub logprobs: Option<usize>,
    /// Whether and how far tokens are drafted ahead and verified in one pass.
    #[serde(default)]
    pub speculation: Speculation,
}

/// How a job drafts tokens ahead of the model and verifies them in one decode (speculative
/// decoding). Whatever the mode, the output is what plain decoding gives: greedy output token
/// for token, sampled output in distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Speculation {
    pub mode: SpeculationMode,
    /// Most tokens drafted at one step.
    pub draft_max: u32,
}

impl Speculation {
    /// The default most tokens drafted at one step.
    pub const DRAFT_MAX: u32 = 8;
    /// The largest `draft_max` accepted.
    pub const DRAFT_MAX_LIMIT: u32 = 64;

    /// No drafting.
    pub fn off() -> Self {
        Self {
            mode: SpeculationMode::Off,
            draft_max: Self::DRAFT_MAX,
        }
    }
}

impl Default for Speculation {
    fn default() -> Self {
        Self {
            mode: SpeculationMode::Auto,
            draft_max: Self::DRAFT_MAX,
        }
    }
}

/// Where drafted tokens come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpeculationMode {
    /// Where it pays: while few sequences share the batch, and for a sequence only while its
    /// drafts keep being accepted. Drafts come from the draft model when one is loaded, else
    /// from prompt lookup.
    Auto,
    Off,
    /// Prompt lookup (n-gram) whenever the sequence's text offers a continuation, however
    /// many sequences share the batch.
    Ngram,
    /// The draft model loaded beside the model ([`LoadParams::draft`]), however many sequences
    /// share the batch; nothing is drafted when none is loaded.
    Draft,
    /// The model's own NextN block (`DeepSeek` V3/R1 multi-token prediction), however many
    /// sequences share the batch; nothing is drafted when the model has none. Not part of
    /// `auto` until measured faster on real weights.
    Mtp,
}

/// Most alternatives a job may ask for at each position (as Ollama and OpenAI).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A token and its log probability under the model (the log-softmax of the raw logits, before
/// any sampling setting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    /// The token's bytes: a token may hold part of a UTF-8 character.
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// A generated token's log probability, and the most likely tokens at its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logprobs {
    pub chosen: TokenLogprob,
    /// Most likely first.
    pub top: Vec<TokenLogprob>,
}

/// An unbounded generation (`num_predict` −1) ends after this many times the context length,
/// as Ollama's: with context shift, a model that never emits an end token would go on forever.
pub const UNBOUNDED_FACTOR: u32 = 10;

/// What a job's channel carries. `Text` pieces are complete UTF-8 and never contain (or end in
/// a prefix of) a stop string that later matched. The last event is `Done` or `Error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// Text, and the log probabilities of the tokens sampled since the last event (when the
    /// job asked for them; a token's text may come in a later event than its log probability,
    /// when stop strings or an incomplete UTF-8 character hold it back).
    Text(String, Vec<Logprobs>),
    Done(Summary),
    /// The job was refused before it started: its own input is wrong (too long for the context
    /// with `truncate` off, empty, invalid tokens).
    Rejected(String),
    Error(String),
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DoneReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `num_predict` (or the bound of an unbounded generation) reached, or the slot's context
    /// is full and cannot be shifted.
    Length,
    /// The job was cancelled (engine shutting down).
    Cancelled,
}

/// Counts and timings of a finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub done_reason: DoneReason,
    /// Prompt tokens actually evaluated (tokens reused from the slot's cache are not counted).
    pub prompt_eval_count: u32,
    pub prompt_eval_duration: Duration,
    /// Tokens generated (end-of-generation tokens are not counted).
    pub eval_count: u32,
    pub eval_duration: Duration,
    /// Prompt plus generated tokens.
    pub context: Vec<i32>,
    /// Tokens drafted ahead (speculative decoding) and how many of them the model accepted.
    #[serde(default)]
    pub draft_count: u32,
    #[serde(default)]
    pub draft_accepted_count: u32,
}

/// Pooled embedding vectors, one per input, as the model computes them: not normalised
/// (Ollama's legacy `/api/embeddings` returns them so; `/api/embed` calls [`Self::normalize`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens evaluated over all inputs.
    pub prompt_tokens: u32,
}

impl Embeddings {
    /// L2-normalises every vector, as Ollama's `/api/embed` returns them. A zero vector stays
    /// zero.
    pub fn normalize(&mut self) {
        self.vectors.iter_mut().for_each(|vector| normalize(vector));
    }

    /// Cuts every vector longer than `dimensions` to its first `dimensions` values and
    /// normalises it again (`dimensions` of `/api/embed` and `/v1/embeddings`); 0 keeps all.
    pub fn shorten(&mut self, dimensions: usize) {
        for vector in &mut self.vectors {
            if dimensions > 0 && dimensions < vector.len() {
                vector.truncate(dimensions);
                normalize(vector);
            }
        }
    }
}

fn normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in vector.iter_mut() {
            *x /= norm;
        }
    }
}

/// Errors of the engine. They cross the runner's channel, so they are plain data.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum EngineError {
    #[error("failed to load model {}: {message}", path.display())]
    Load { path: PathBuf, message: String },
    #[error("the input length ({tokens} tokens) exceeds the context length ({limit} tokens)")]
    ContextTooLong { tokens: usize, limit: usize },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("llama.cpp failed: {0}")]
    Llama(String),
    #[error("the model's engine thread has stopped")]
    Gone,
    /// A runner process could not be started.
    #[error("cannot start a model runner: {0}")]
    Spawn(String),
    /// The runner process running the model died (abort, signal, out of memory).
    #[error("model runner crashed: {0}")]
    Crashed(String),
    /// The model was unloaded (or whaled is shutting down) while the request ran.
    #[error("{0}")]
    Stopped(String),
}

/// A GPU llama.cpp can offload to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// llama.cpp's device name (`CUDA0`, `Vulkan0`).
    pub name: String,
    /// What the driver calls it (`NVIDIA H200`).
    pub description: String,
    pub total: u64,
    pub free: u64,
}

/// What loading a model took of one GPU: the device's free memory before the load less after
/// it, as the driver tells it (so llama.cpp's buffers and the driver's own share for this
/// process, what `nvidia-smi` shows; not the scratch memory decoding adds later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuUse {
    /// llama.cpp's device name (`CUDA0`).
    pub name: String,
    /// What the driver calls it (`NVIDIA H200`).
    pub description: String,
    /// Bytes.
    pub used: u64,
}

/// The GPUs whose free memory went down between `before` and `after` (two readings of
/// [`gpus`] around a load), matched by device name. Devices of RPC workers are left out: their
/// memory is another machine's.
pub fn gpu_use(before: &[Gpu], after: &[Gpu]) -> Vec<GpuUse> {
    after
        .iter()
        .filter(|gpu| !gpu.name.starts_with("RPC"))
        .filter_map(|gpu| {
            let was = before.iter().find(|earlier| earlier.name == gpu.name)?;
            let used = was.free.saturating_sub(gpu.free);
            (used > 0).then(|| GpuUse {
                name: gpu.name.clone(),
                description: gpu.description.clone(),
                used,
            })
        })
        .collect()
}

/// The GPUs this build of llama.cpp can offload to; empty on a CPU-only build or machine.
pub fn gpus() -> Vec<Gpu> {
    use llama_cpp_2::LlamaBackendDeviceType as Kind;
    if llama_backend().is_err() {
        return Vec::new();
    }
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .filter(|device| matches!(device.device_type, Kind::Gpu | Kind::IntegratedGpu))
        .map(|device| Gpu {
            name: device.name,
            description: device.description,
            total: device.memory_total as u64,
            free: device.memory_free as u64,
        })
        .collect()
}

/// The process-wide llama.cpp backend, initialised on first use (llama.cpp keeps global state,
/// so there is exactly one per process). Public so that benchmarks can compare raw
/// `llama-cpp-2` against the engine in one process; the rest of the daemon must not use it.
pub fn llama_backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs a lot at load; route it to `tracing` (target `llama-cpp-2`).
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|error| error.to_string())
        })
        .as_ref()
        .map_err(|message| EngineError::Llama(message.clone()))
}

/// A model loaded in this process. Dropping it stops the engine thread (jobs still running
/// get an `Event::Error`); `shutdown` also waits for it.
pub struct Engine {
    /// The only way into the engine thread. Every command carries its own reply.
    commands: std::sync::mpsc::Sender<Command>,
    info: Arc<ModelInfo>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Loads the model on a new engine thread and waits until it is ready (or failed).
    pub async fn load(params: LoadParams) -> Result<Engine, EngineError> {
        let (commands, receiver) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let path = params.model_path.clone();
        let thread = std::thread::Builder::new()
            .name(format!("engine:{}", params.name))
            .spawn(move || run(&params, &receiver, reply_to(ready_tx), &mut |_| {}))
            .map_err(|error| EngineError::Load {
                path: path.clone(),
                message: format!("cannot start the engine thread: {error}"),
            })?;
        match ready_rx.await {
            Ok(Ok(info)) => Ok(Engine {
                commands,
                info: Arc::new(info),
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(EngineError::Load {
                    path,
                    message: "the engine thread stopped while loading".to_owned(),
                })
            }
        }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Tokenizes with the model's vocabulary; special tokens in the text are parsed.
    pub async fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<i32>, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Tokenize {
            text: text.to_owned(),
            add_special,
            reply: reply_to(reply),
        })?;
        answer.await.map_err(|_| EngineError::Gone)?
    }

    /// Renders tokens back to text (special tokens included).
    pub async fn detokenize(&self, tokens: &[i32]) -> Result<String, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Detokenize {
            tokens: tokens.to_vec(),
            reply: reply_to(reply),
        })?;
        answer.await.map_err(|_| EngineError::Gone)?
    }

    /// Queues a job; its events arrive on the returned channel. Dropping the receiver cancels
    /// the job. Errors about the job itself (too long, invalid tokens) arrive as `Event::Rejected`.
    pub fn generate(&self, job: GenerateJob) -> Result<mpsc::Receiver<Event>, EngineError> {
        let (events, receiver) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        self.send(Command::Generate {
            job: Box::new(job),
            events: Box::new(events),
        })?;
        Ok(receiver)
    }

    /// Embeds each input. Inputs longer than the context are cut to fit when `truncate`, else
    /// rejected.
    pub async fn embed(
        &self,
        inputs: Vec<String>,
        truncate: bool,
    ) -> Result<Embeddings, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Embed {
            inputs,
            truncate,
            reply: reply_to(reply),
        })?;
        answer.await.map_err(|_| EngineError::Gone)?
    }

    /// Stops the engine thread, frees the model and waits for the thread to end.
    pub async fn shutdown(mut self) {
        let _ = self.commands.send(Command::Shutdown(UNLOADED.to_owned()));
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    fn send(&self, command: Command) -> Result<(), EngineError> {
        self.commands.send(command).map_err(|_| EngineError::Gone)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The thread notices the closed channel (or this command) and exits on its own;
        // joining here could block an async runtime.
        let _ = self.commands.send(Command::Shutdown(UNLOADED.to_owned()));
    }
}

/// A [`Reply`] that answers on a oneshot channel.
fn reply_to<T: Send + 'static>(sender: oneshot::Sender<Result<T, EngineError>>) -> Reply<T> {
    Box::new(move |result| {
        let _ = sender.send(result);
    })
}

/// Where a job's events go: a channel in this process, or the runner's connection to whaled.
/// The engine never blocks on a sink: a full one gets the event back, and the engine coalesces
/// text until there is room.
pub trait EventSink: Send {
    /// Delivers `event`, or hands it back when there is no room now.
    fn try_send(&mut self, event: Event) -> Result<(), SinkError>;
    /// Whether nobody listens any more (the job is cancelled).
    fn is_closed(&self) -> bool;
}

/// Why a sink did not take an event.
#[derive(Debug)]
pub enum SinkError {
    Full(Event),
    Closed,
}

impl EventSink for mpsc::Sender<Event> {
    fn try_send(&mut self, event: Event) -> Result<(), SinkError> {
        mpsc::Sender::try_send(self, event).map_err(|error| match error {
            mpsc::error::TrySendError::Full(event) => SinkError::Full(event),
            mpsc::error::TrySendError::Closed(_) => SinkError::Closed,
        })
    }

    fn is_closed(&self) -> bool {
        mpsc::Sender::is_closed(self)
    }
}

/// When the text of the steps so far must go out, as the engine tells `after_step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Before the engine waits for commands, or runs a step that processes a prompt (which may
    /// take long): nothing may wait.
    Now,
    /// Another decode step follows at once: text may wait for it.
    Soon,
}

/// Runs an engine on the calling thread until `commands` closes or says `Shutdown`: loads the
/// model, answers `ready`, then serves. A runner process calls this on its main thread.
/// `after_step` runs after each round of commands and decoding, and before a step that
/// processes a prompt: the events of the steps, sent to sinks, can go out together then, at
/// once when it says [`Flush::Now`].
pub fn run(
    params: &LoadParams,
    commands: &std::sync::mpsc::Receiver<Command>,
    ready: Reply<ModelInfo>,
    after_step: &mut dyn FnMut(Flush),
) {
    worker::run(params, commands, ready, after_step);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str, free: u64) -> Gpu {
        Gpu {
            name: name.to_owned(),
            description: format!("{name} card"),
            total: 100 << 30,
            free,
        }
    }

    #[test]
    fn a_load_takes_what_the_free_memory_lost_on_this_machines_gpus_only() {
        let before = [gpu("CUDA0", 90 << 30), gpu("CUDA1", 80 << 30)];
        let after = [
            gpu("CUDA0", 70 << 30),
            // Freed by someone else meanwhile: took nothing.
            gpu("CUDA1", 81 << 30),
            // A worker's device, linked during the load.
            gpu("RPC0[127.0.0.1:50052]", 1 << 30),
        ];
        assert_eq!(
            gpu_use(&before, &after),
            [GpuUse {
                name: "CUDA0".to_owned(),
                description: "CUDA0 card".to_owned(),
                used: 20 << 30,
            }]
        );
        assert!(gpu_use(&[], &after).is_empty());
    }
}
