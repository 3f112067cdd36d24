//! The test suite's models. Tiny GGUF files with the real architectures of the DeepSeek family
//! (`deepseek2` as V3/R1 671B, `deepseek32` as V3.2, `deepseek4` as V4, each with its NextN block;
//! `qwen2` and `llama` as the R1 distills) and random weights, made
//! on demand with [`crate::gguf`] and cached; plus the real Gemma 3 270M, fetched once, for checks
//! that generation is actually right. All tiny fixtures carry the real DeepSeek V3 tokenizer and
//! chat template, so tokenizer and template tests see what a real V3/R1 GGUF holds.
//!
//! Files live under [`root`] (`$WHALE_FIXTURES`, default `<workspace>/.cache/fixtures`); the
//! generated ones under `generated/`, named with [`GENERATOR_VERSION`] so that a change to the
//! generator makes new files instead of reusing stale ones. Generation and fetching take a file
//! lock and write to a temporary file then rename, so parallel tests (and test binaries) are safe.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value as Json;

use crate::gguf::{Builder, Tensor, TensorType, Value};

/// Bump when the generated files change, so caches of older generators are not reused.
pub const GENERATOR_VERSION: u32 = 3;

/// Environment variable naming the fixtures folder.
pub const FIXTURES_ENV: &str = "WHALE_FIXTURES";

/// DeepSeek V3's vocabulary size (`vocab_size` of its config; the tokenizer defines 128,815 ids,
/// the rest are padding, written as `[PAD<id>]` with type unused as llama.cpp's converter does).
pub const DEEPSEEK_VOCAB_SIZE: usize = 129_280;

/// Everything that can go wrong making or fetching a fixture.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not the tokenizer file expected: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("scripts/fetch-fixtures.sh failed ({status}); run it by hand to see why")]
    Fetch { status: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A tiny model with a real DeepSeek-family architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fixture {
    /// `deepseek2` as DeepSeek V3 / R1 671B: MLA, dense lead blocks then MoE blocks with
    /// shared experts, sigmoid gating with the selection bias, expert groups, YaRN.
    DeepSeek2,
    /// `deepseek32` as DeepSeek V3.2: the `deepseek2` layout plus the lightning indexer of
    /// its sparse attention (DSA), which picks the top-k earlier tokens each query attends to.
    DeepSeek32,
    /// `deepseek4` as DeepSeek V4: one shared KV head of queries' width with sinks and grouped
    /// low-rank output, hyper-connections (four residual streams mixed by Sinkhorn), a
    /// sliding window plus compressed attention (ratio 4 with the lightning indexer, ratio 128),
    /// hash-routed experts in the first block and square-root-softplus gating after.
    DeepSeek4,
    /// `qwen2` as the R1 distills Qwen 1.5B/7B/14B/32B: GQA with q/k/v biases.
    Qwen2,
    /// `llama` as the R1 distills Llama 8B/70B: GQA, no biases.
    Llama,
    /// `llama` wide enough (1024, 12 blocks, f32 weights, about 1.2 GB) that decoding one token
    /// reads far more bytes than it computes on, as real models decode on a GPU or any large
    /// model on a CPU. Not in [`Fixture::ALL`]: only benchmarks use it.
    WideLlama,
}

impl Fixture {
    pub const ALL: [Fixture; 5] = [
        Fixture::DeepSeek2,
        Fixture::DeepSeek32,
        Fixture::DeepSeek4,
        Fixture::Qwen2,
        Fixture::Llama,
    ];

    /// The GGUF architecture name (`general.architecture`).
    pub fn architecture(self) -> &'static str {
        match self {
            Fixture::DeepSeek2 => "deepseek2",
            Fixture::DeepSeek32 => "deepseek32",
            Fixture::DeepSeek4 => "deepseek4",
            Fixture::Qwen2 => "qwen2",
            Fixture::Llama | Fixture::WideLlama => "llama",
        }
    }

    /// The name of the fixture's file (without generator version and extension).
    pub fn name(self) -> &'static str {
        match self {
            Fixture::WideLlama => "wide-llama",
            other => other.architecture(),
        }
    }

    /// Path of the fixture's GGUF, generated first if absent.
    pub fn path(self) -> PathBuf {
        self.try_path()
            .unwrap_or_else(|e| panic!("fixture {}: {e}", self.name()))
    }

    /// Like [`Fixture::path`] but returning the error.
    pub fn try_path(self) -> Result<PathBuf, Error> {
        let dir = root().join("generated");
        let path = dir.join(format!("tiny-{}-v{GENERATOR_VERSION}.gguf", self.name()));
        if path.exists() {
            return Ok(path);
        }
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let _lock = FileLock::acquire(&dir.join(format!(".{}.lock", self.name())))?;
        if path.exists() {
            return Ok(path);
        }
        let builder = self.build()?;
        // Removed when dropped, should writing fail or the test panic.
        let temp = tempfile::Builder::new()
            .prefix(&format!(".tiny-{}.", self.name()))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(io_error(&dir))?;
        builder.write(temp.path()).map_err(io_error(temp.path()))?;
        temp.persist(&path)
            .map_err(|error| io_error(&path)(error.error))?;
        remove_stale(&dir, self.name());
        Ok(path)
    }

    /// The file's contents, built in memory (deterministic: same bytes every time).
    pub fn build(self) -> Result<Builder, Error> {
        let tokenizer = DeepSeekTokenizer::load()?;
        let mut builder = Builder::new();
        self.write_general(&mut builder);
        tokenizer.write(&mut builder);
        let mut weights = Weights::new(self);
        match self {
            Fixture::DeepSeek2 => deepseek2_model(&mut builder, &mut weights, "deepseek2"),
            Fixture::DeepSeek32 => deepseek2_model(&mut builder, &mut weights, "deepseek32"),
            Fixture::DeepSeek4 => deepseek4_model(&mut builder, &mut weights),
            Fixture::Qwen2 => dense_model(&mut builder, &mut weights, &QWEN2),
            Fixture::Llama => dense_model(&mut builder, &mut weights, &LLAMA),
            Fixture::WideLlama => dense_model(&mut builder, &mut weights, &WIDE_LLAMA),
        }
        Ok(builder)
    }

    fn write_general(self, builder: &mut Builder) {
        let arch = self.architecture();
        let (name, size_label) = match self {
            Fixture::DeepSeek2 => ("Tiny DeepSeek V3 (whale test fixture)", "tiny-671B-shape"),
            Fixture::DeepSeek32 => ("Tiny DeepSeek V3.2 (whale test fixture)", "tiny-685B-shape"),
            Fixture::DeepSeek4 => ("Tiny DeepSeek V4 (whale test fixture)", "tiny"),
            Fixture::Qwen2 => ("Tiny DeepSeek R1 Distill Qwen (whale test fixture)", "tiny"),
            Fixture::Llama => (
                "Tiny DeepSeek R1 Distill Llama (whale test fixture)",
                "tiny",
            ),
            Fixture::WideLlama => (
                "Wide DeepSeek R1 Distill Llama (whale benchmark fixture)",
                "300M",
            ),
        };
        builder.set("general.architecture", arch);
        builder.set("general.type", "model");
        builder.set("general.name", name);
        builder.set("general.size_label", size_label);
        builder.set("general.license", "mit");
        builder.set("general.alignment", 32u32);
        // 1 = mostly f16 (the embedding and output are q8_0 to keep the files small), 0 = all f32
        let file_type = u32::from(self != Fixture::WideLlama);
        builder.set("general.file_type", file_type);
        builder.set("general.quantization_version", 2u32);
    }
}

/// The tiny `deepseek32` fixture (DeepSeek V3.2: V3's shapes and the DSA indexer).
pub fn deepseek32() -> PathBuf {
    Fixture::DeepSeek32.path()
}

/// The tiny `deepseek4` fixture (DeepSeek V4's structure).
pub fn deepseek4() -> PathBuf {
    Fixture::DeepSeek4.path()
}

/// The tiny `deepseek2` fixture (DeepSeek V3 / R1 shapes).
pub fn deepseek2() -> PathBuf {
    Fixture::DeepSeek2.path()
}

/// The tiny `qwen2` fixture (R1-Distill-Qwen shapes).
pub fn qwen2() -> PathBuf {
    Fixture::Qwen2.path()
}

/// The tiny `llama` fixture (R1-Distill-Llama shapes).
pub fn llama() -> PathBuf {
    Fixture::Llama.path()
}

/// Gemma 3 270M Q4_K_M, a real model small enough for CPU tests: fetched once by
/// `scripts/fetch-fixtures.sh` if absent.
pub fn gemma() -> PathBuf {
    let path = root().join("gemma-3-270m-q4_k_m.gguf");
    ensure_fetched(&path).unwrap_or_else(|e| panic!("gemma fixture: {e}"));
    path
}

/// The folder holding DeepSeek V3's `tokenizer.json` and `tokenizer_config.json`, fetched once
/// if absent.
pub fn deepseek_tokenizer_dir() -> PathBuf {
    let dir = root().join("deepseek-v3-tokenizer");
    ensure_fetched(&dir.join("tokenizer_config.json"))
        .unwrap_or_else(|e| panic!("deepseek tokenizer fixture: {e}"));
    dir
}

/// One of the DeepSeek chat templates kept in llama.cpp's `models/templates` (e.g.
/// `deepseek-ai-DeepSeek-V3.1.jinja`), fetched once if absent from the PyPI sdist of
/// llama-cpp-python, which vendors llama.cpp.
pub fn deepseek_template(file: &str) -> PathBuf {
    let path = root().join("deepseek-templates").join(file);
    ensure_fetched(&path).unwrap_or_else(|e| panic!("deepseek template {file}: {e}"));
    path
}

/// The fixtures folder: `$WHALE_FIXTURES`, else `<workspace>/.cache/fixtures`.
pub fn root() -> PathBuf {
    match std::env::var_os(FIXTURES_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => crate::workspace_root().join(".cache").join("fixtures"),
    }
}

/// Runs the fetch script (once per machine, under a lock) when `wanted` is missing.
fn ensure_fetched(wanted: &Path) -> Result<(), Error> {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    if wanted.exists() {
        return Ok(());
    }
    let _guard = IN_PROCESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = root();
    fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let _lock = FileLock::acquire(&dir.join(".fetch.lock"))?;
    if wanted.exists() {
        return Ok(());
    }
    let script = crate::workspace_root()
        .join("scripts")
        .join("fetch-fixtures.sh");
    let status = Command::new("bash")
        .arg(&script)
        .env(FIXTURES_ENV, &dir)
        .status()
        .map_err(io_error(&script))?;
    if !status.success() || !wanted.exists() {
        return Err(Error::Fetch {
            status: status.to_string(),
        });
    }
    Ok(())
}

/// Removes generated files of other generator versions for this fixture.
fn remove_stale(dir: &Path, name: &str) {
    let current = format!("tiny-{name}-v{GENERATOR_VERSION}.gguf");
    let prefix = format!("tiny-{name}-v");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".gguf") && name != current {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// An exclusive advisory lock on a file, released on drop (also across processes).
struct FileLock(File);

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock, Error> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_error(path))?;
        file.lock().map_err(io_error(path))?;
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

/// llama.cpp's token types (`llama_token_type`).
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
}

/// The DeepSeek V3 tokenizer, read from the fetched `tokenizer.json` / `tokenizer_config.json`
/// and turned into llama.cpp's `tokenizer.*` keys the way its HF converter does.
#[derive(Debug)]
pub struct DeepSeekTokenizer {
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    pub chat_template: String,
    /// Every token's id by its text (added tokens included).
    pub ids: HashMap<String, u32>,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: u32,
    pub add_bos: bool,
    pub add_eos: bool,
}

impl DeepSeekTokenizer {
    /// Reads the tokenizer files from [`deepseek_tokenizer_dir`].
    pub fn load() -> Result<DeepSeekTokenizer, Error> {
        let dir = deepseek_tokenizer_dir();
        let tokenizer_path = dir.join("tokenizer.json");
        let config_path = dir.join("tokenizer_config.json");
        let tokenizer = read_json(&tokenizer_path)?;
        let config = read_json(&config_path)?;
        let bad = |path: &Path, reason: &str| Error::Tokenizer {
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        };

        let vocab = tokenizer["model"]["vocab"]
            .as_object()
            .ok_or_else(|| bad(&tokenizer_path, "no model.vocab"))?;
        let mut tokens: Vec<Option<String>> = vec![None; DEEPSEEK_VOCAB_SIZE];
        let mut token_types = vec![token_type::UNUSED; DEEPSEEK_VOCAB_SIZE];
        let mut ids = HashMap::new();
        for (text, id) in vocab {
            let id = id
                .as_u64()
                .ok_or_else(|| bad(&tokenizer_path, "vocab id"))? as usize;
            let slot = tokens
                .get_mut(id)
                .ok_or_else(|| bad(&tokenizer_path, "id past vocab size"))?;
            *slot = Some(text.clone());
            token_types[id] = token_type::NORMAL;
            ids.insert(text.clone(), id as u32);
        }
        let added = tokenizer["added_tokens"]
            .as_array()
            .ok_or_else(|| bad(&tokenizer_path, "no added_tokens"))?;
        for token in added {
            let id = token["id"]
                .as_u64()
                .ok_or_else(|| bad(&tokenizer_path, "added id"))? as usize;
            let text = token["content"]
                .as_str()
                .ok_or_else(|| bad(&tokenizer_path, "added content"))?;
            let special = token["special"].as_bool().unwrap_or(false);
            // as llama.cpp's converter: special tokens and ones that look special are control,
            // other added tokens user-defined (matched in text even without parse_special)
            let kind = if special || looks_special(text) {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            };
            let slot = tokens
                .get_mut(id)
                .ok_or_else(|| bad(&tokenizer_path, "id past vocab size"))?;
            *slot = Some(text.to_owned());
            token_types[id] = kind;
            ids.insert(text.to_owned(), id as u32);
        }
        let tokens = tokens
            .into_iter()
            .enumerate()
            .map(|(id, text)| text.unwrap_or_else(|| format!("[PAD{id}]")))
            .collect();

        let merges = tokenizer["model"]["merges"]
            .as_array()
            .ok_or_else(|| bad(&tokenizer_path, "no model.merges"))?
            .iter()
            .map(|merge| match merge {
                Json::String(s) => Some(s.clone()),
                Json::Array(pair) => Some(format!("{} {}", pair[0].as_str()?, pair[1].as_str()?)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(&tokenizer_path, "merge entry"))?;

        let chat_template = config["chat_template"]
            .as_str()
            .ok_or_else(|| bad(&config_path, "no chat_template"))?
            .to_owned();
        let special_id = |key: &str| -> Result<u32, Error> {
            let text = match &config[key] {
                Json::String(s) => s.as_str(),
                Json::Object(o) => o
                    .get("content")
                    .and_then(Json::as_str)
                    .ok_or_else(|| bad(&config_path, key))?,
                _ => return Err(bad(&config_path, key)),
            };
            ids.get(text).copied().ok_or_else(|| bad(&config_path, key))
        };
        Ok(DeepSeekTokenizer {
            bos_id: special_id("bos_token")?,
            eos_id: special_id("eos_token")?,
            pad_id: special_id("pad_token")?,
            add_bos: config["add_bos_token"].as_bool().unwrap_or(true),
            add_eos: config["add_eos_token"].as_bool().unwrap_or(false),
            tokens,
            token_types,
            merges,
            chat_template,
            ids,
        })
    }

    /// Writes the `tokenizer.*` keys.
    pub fn write(&self, builder: &mut Builder) {
        builder.set("tokenizer.ggml.model", "gpt2");
        builder.set("tokenizer.ggml.pre", "deepseek-v3");
        builder.set(
            "tokenizer.ggml.tokens",
            Value::strings(self.tokens.iter().cloned()),
        );
        builder.set(
            "tokenizer.ggml.token_type",
            Value::i32s(self.token_types.iter().copied()),
        );
        builder.set(
            "tokenizer.ggml.merges",
            Value::strings(self.merges.iter().cloned()),
        );
        builder.set("tokenizer.ggml.bos_token_id", self.bos_id);
        builder.set("tokenizer.ggml.eos_token_id", self.eos_id);
        builder.set("tokenizer.ggml.padding_token_id", self.pad_id);
        builder.set("tokenizer.ggml.add_bos_token", self.add_bos);
        builder.set("tokenizer.ggml.add_eos_token", self.add_eos);
        builder.set("tokenizer.chat_template", self.chat_template.as_str());
    }
}

/// The converter's heuristic for added tokens that are special though not marked so.
fn looks_special(text: &str) -> bool {
    (text.starts_with("<|") && text.ends_with("|>"))
        || (text.starts_with("<｜") && text.ends_with("｜>"))
}

fn read_json(path: &Path) -> Result<Json, Error> {
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    serde_json::from_str(&text).map_err(|e| Error::Tokenizer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Weights

/// Seeded random weights: the same fixture always gets the same bytes.
struct Weights(StdRng);

impl Weights {
    fn new(fixture: Fixture) -> Weights {
        let seed = match fixture {
            Fixture::DeepSeek2 => 0xdee9_5eec,
            Fixture::DeepSeek32 => 0xdee9_5ee2,
            Fixture::DeepSeek4 => 0xdee9_5ee4,
            Fixture::Qwen2 => 0x0c0e_2002,
            Fixture::Llama => 0x11a3_a008,
            Fixture::WideLlama => 0x0019_a11a,
        };
        Weights(StdRng::seed_from_u64(seed))
    }

    /// A matrix/stack of the given ggml dims, uniform in ±1/sqrt(dims[0]).
    fn random(&mut self, name: &str, dims: &[u64], kind: TensorType) -> Tensor {
        let count: u64 = dims.iter().product();
        let scale = 1.0 / (dims[0] as f32).sqrt();
        let values: Vec<f32> = (0..count)
            .map(|_| self.0.random_range(-scale..scale))
            .collect();
        Tensor::new(name, dims, kind, &values)
    }

    /// A norm weight of ones.
    fn ones(name: &str, len: u64) -> Tensor {
        Tensor::new(name, &[len], TensorType::F32, &vec![1.0; len as usize])
    }
}

/// Embedding width of every tiny fixture: small, and a multiple of 32 for q8_0.
const N_EMBD: u64 = 64;

/// Embedding (q8_0) and output head (`head`) of width `embd`: the bulk of a tiny file with a
/// 129k vocabulary.
fn embedding_and_head(builder: &mut Builder, weights: &mut Weights, embd: u64, head: TensorType) {
    let vocab = DEEPSEEK_VOCAB_SIZE as u64;
    builder.push_tensor(weights.random("token_embd.weight", &[embd, vocab], TensorType::Q8_0));
    builder.push_tensor(Weights::ones("output_norm.weight", embd));
    builder.push_tensor(weights.random("output.weight", &[embd, vocab], head));
}

/// The `deepseek2` hyperparameters: V3's structure at toy sizes.
pub mod deepseek2_shape {
    /// Trunk blocks; one more follows them, the NextN (MTP) block.
    pub const BLOCK_COUNT: u64 = 3;
    /// The multi-token prediction blocks after the trunk (V3, R1 and V3.2 have one).
    pub const NEXTN_LAYERS: u64 = 1;
    pub const LEADING_DENSE: u64 = 1;
    pub const HEADS: u64 = 4;
    pub const Q_LORA_RANK: u64 = 32;
    pub const KV_LORA_RANK: u64 = 32;
    pub const QK_NOPE: u64 = 16;
    pub const QK_ROPE: u64 = 8;
    pub const V_HEAD: u64 = 16;
    pub const FFN: u64 = 96;
    pub const EXPERT_FFN: u64 = 32;
    pub const EXPERTS: u64 = 16;
    pub const EXPERTS_USED: u32 = 4;
    pub const SHARED_EXPERTS: u64 = 1;
    pub const EXPERT_GROUPS: u32 = 4;
    pub const EXPERT_GROUPS_USED: u32 = 2;
    /// `deepseek32` only: the indexer's heads, their size (`[rope | nope]`, a multiple of the
    /// 64-wide Hadamard rotation llama.cpp applies to it) and how many earlier tokens each
    /// query keeps — few, so that a short test already attends sparsely.
    pub const INDEXER_HEADS: u64 = 4;
    pub const INDEXER_HEAD_SIZE: u64 = 64;
    pub const INDEXER_TOP_K: u32 = 16;
}

/// The `deepseek2` layout under `arch`; `deepseek32` adds the DSA indexer to every block. Both
/// keep the NextN block (multi-token prediction) after the trunk, as llama.cpp's converter
/// writes it: a MoE block plus the projection of `[embedding, hidden state]`.
fn deepseek2_model(builder: &mut Builder, weights: &mut Weights, arch: &str) {
    use deepseek2_shape::{
        BLOCK_COUNT, EXPERT_FFN, EXPERT_GROUPS, EXPERT_GROUPS_USED, EXPERTS, EXPERTS_USED, FFN,
        HEADS, KV_LORA_RANK, LEADING_DENSE, Q_LORA_RANK, QK_NOPE, QK_ROPE, SHARED_EXPERTS, V_HEAD,
    };
    use deepseek2_shape::{INDEXER_HEAD_SIZE, INDEXER_HEADS, INDEXER_TOP_K};
    let indexer = arch == "deepseek32";
    let nextn = deepseek2_shape::NEXTN_LAYERS;
    let key = |k: &str| format!("{arch}.{k}");
    let vocab = DEEPSEEK_VOCAB_SIZE as u32;
    builder.set(key("block_count"), (BLOCK_COUNT + nextn) as u32);
    if nextn > 0 {
        builder.set(key("nextn_predict_layers"), nextn as u32);
    }
    builder.set(key("context_length"), 163_840u32);
    builder.set(key("embedding_length"), N_EMBD as u32);
    builder.set(key("feed_forward_length"), FFN as u32);
    builder.set(key("attention.head_count"), HEADS as u32);
    // the converter stores MLA as MQA with one latent KV head
    builder.set(key("attention.head_count_kv"), 1u32);
    builder.set(key("rope.freq_base"), 10_000f32);
    builder.set(key("attention.layer_norm_rms_epsilon"), 1e-6f32);
    builder.set(key("expert_used_count"), EXPERTS_USED);
    builder.set(key("expert_group_count"), EXPERT_GROUPS);
    builder.set(key("expert_group_used_count"), EXPERT_GROUPS_USED);
    builder.set(key("leading_dense_block_count"), LEADING_DENSE as u32);
    builder.set(key("vocab_size"), vocab);
    builder.set(key("attention.q_lora_rank"), Q_LORA_RANK as u32);
    builder.set(key("attention.kv_lora_rank"), KV_LORA_RANK as u32);
    builder.set(key("attention.key_length"), (KV_LORA_RANK + QK_ROPE) as u32);
    builder.set(key("attention.value_length"), KV_LORA_RANK as u32);
    builder.set(key("attention.key_length_mla"), (QK_NOPE + QK_ROPE) as u32);
    builder.set(key("attention.value_length_mla"), V_HEAD as u32);
    builder.set(key("expert_feed_forward_length"), EXPERT_FFN as u32);
    builder.set(key("expert_count"), EXPERTS as u32);
    builder.set(key("expert_shared_count"), SHARED_EXPERTS as u32);
    builder.set(key("expert_weights_scale"), 2.5f32);
    builder.set(key("expert_weights_norm"), true);
    builder.set(key("expert_gating_func"), 2u32);
    builder.set(key("rope.dimension_count"), QK_ROPE as u32);
    builder.set(key("rope.scaling.type"), "yarn");
    builder.set(key("rope.scaling.factor"), 40f32);
    builder.set(key("rope.scaling.original_context_length"), 4096u32);
    // the converter writes 0.1 × mscale_all_dim (V3: mscale_all_dim = 1.0)
    builder.set(key("rope.scaling.yarn_log_multiplier"), 0.1f32);
    if indexer {
        builder.set(key("attention.indexer.head_count"), INDEXER_HEADS as u32);
        builder.set(
            key("attention.indexer.key_length"),
            INDEXER_HEAD_SIZE as u32,
        );
        builder.set(key("attention.indexer.top_k"), INDEXER_TOP_K);
    }

    embedding_and_head(builder, weights, N_EMBD, TensorType::Q8_0);
    let f16 = TensorType::F16;
    for layer in 0..BLOCK_COUNT + nextn {
        let name = |t: &str| format!("blk.{layer}.{t}.weight");
        if layer >= BLOCK_COUNT {
            nextn_projections(builder, weights, layer);
        }
        builder.push_tensor(Weights::ones(&name("attn_norm"), N_EMBD));
        builder.push_tensor(weights.random(&name("attn_q_a"), &[N_EMBD, Q_LORA_RANK], f16));
        builder.push_tensor(Weights::ones(&name("attn_q_a_norm"), Q_LORA_RANK));
        builder.push_tensor(weights.random(
            &name("attn_q_b"),
            &[Q_LORA_RANK, HEADS * (QK_NOPE + QK_ROPE)],
            f16,
        ));
        builder.push_tensor(weights.random(
            &name("attn_kv_a_mqa"),
            &[N_EMBD, KV_LORA_RANK + QK_ROPE],
            f16,
        ));
        builder.push_tensor(Weights::ones(&name("attn_kv_a_norm"), KV_LORA_RANK));
        // kv_b_proj split for absorbed MLA: k_b transposed per head, v_b as is
        builder.push_tensor(weights.random(
            &name("attn_k_b"),
            &[QK_NOPE, KV_LORA_RANK, HEADS],
            f16,
        ));
        builder.push_tensor(weights.random(&name("attn_v_b"), &[KV_LORA_RANK, V_HEAD, HEADS], f16));
        builder.push_tensor(weights.random(&name("attn_output"), &[HEADS * V_HEAD, N_EMBD], f16));
        builder.push_tensor(Weights::ones(&name("ffn_norm"), N_EMBD));
        if indexer {
            builder.push_tensor(Weights::ones(&name("indexer.k_norm"), INDEXER_HEAD_SIZE));
            builder.push_tensor(weights.random(
                &format!("blk.{layer}.indexer.k_norm.bias"),
                &[INDEXER_HEAD_SIZE],
                TensorType::F32,
            ));
            builder.push_tensor(weights.random(
                &name("indexer.proj"),
                &[N_EMBD, INDEXER_HEADS],
                f16,
            ));
            builder.push_tensor(weights.random(
                &name("indexer.attn_k"),
                &[N_EMBD, INDEXER_HEAD_SIZE],
                f16,
            ));
            builder.push_tensor(weights.random(
                &name("indexer.attn_q_b"),
                &[Q_LORA_RANK, INDEXER_HEADS * INDEXER_HEAD_SIZE],
                f16,
            ));
        }
        if layer < LEADING_DENSE {
            builder.push_tensor(weights.random(&name("ffn_gate"), &[N_EMBD, FFN], f16));
            builder.push_tensor(weights.random(&name("ffn_up"), &[N_EMBD, FFN], f16));
            builder.push_tensor(weights.random(&name("ffn_down"), &[FFN, N_EMBD], f16));
        } else {
            let f32 = TensorType::F32;
            builder.push_tensor(weights.random(&name("ffn_gate_inp"), &[N_EMBD, EXPERTS], f32));
            builder.push_tensor(weights.random(
                &format!("blk.{layer}.exp_probs_b.bias"),
                &[EXPERTS],
                f32,
            ));
            experts(builder, weights, layer, EXPERT_FFN, EXPERTS, SHARED_EXPERTS);
        }
    }
}

/// The `deepseek4` hyperparameters: V4's structure at toy sizes.
pub mod deepseek4_shape {
    pub const HEADS: u64 = 4;
    /// Queries, the one KV head and values share this width; rope covers its last part. Wider
    /// than the indexer's heads, as V4's (512 and 128).
    pub const HEAD: u64 = 128;
    pub const ROPE: u64 = 16;
    pub const Q_LORA_RANK: u64 = 32;
    pub const OUTPUT_GROUPS: u64 = 2;
    pub const OUTPUT_LORA_RANK: u64 = 16;
    /// Residual streams mixed by the hyper-connections (llama.cpp's graph takes 4).
    pub const HYPER: u64 = 4;
    pub const SLIDING_WINDOW: u32 = 16;
    /// Per block: plain sliding window, compressed 4:1 with the indexer, compressed 128:1.
    pub const COMPRESS_RATIOS: [u32; 3] = [0, 4, 128];
    pub const INDEXER_HEADS: u64 = 4;
    pub const INDEXER_HEAD_SIZE: u64 = 64;
    pub const INDEXER_TOP_K: u32 = 8;
    pub const EXPERT_FFN: u64 = 32;
    pub const EXPERTS: u64 = 8;
    pub const EXPERTS_USED: u32 = 2;
    pub const SHARED_EXPERTS: u64 = 1;
    /// Blocks whose experts a token's id picks (a fixed table) instead of the router.
    pub const HASH_LAYERS: u32 = 1;
    /// V4's NextN block (multi-token prediction), after the trunk: a whole block of the trunk's
    /// kind, uncompressed, with the block's own projections (it reads the hidden state of all
    /// the residual streams).
    pub const NEXTN_LAYERS: u64 = 1;
}

/// The `deepseek4` layout: the tensors and keys llama.cpp's `deepseek4` loader reads.
fn deepseek4_model(builder: &mut Builder, weights: &mut Weights) {
    use deepseek4_shape::{
        COMPRESS_RATIOS, EXPERT_FFN, EXPERTS, EXPERTS_USED, HASH_LAYERS, HEAD, HEADS, HYPER,
        INDEXER_HEAD_SIZE, INDEXER_HEADS, INDEXER_TOP_K, NEXTN_LAYERS, OUTPUT_GROUPS,
        OUTPUT_LORA_RANK, Q_LORA_RANK, ROPE, SHARED_EXPERTS, SLIDING_WINDOW,
    };
    let key = |k: &str| format!("deepseek4.{k}");
    let blocks = COMPRESS_RATIOS.len() as u64 + NEXTN_LAYERS;
    let vocab = DEEPSEEK_VOCAB_SIZE as u64;
    // The NextN block attends without compression.
    let ratios: Vec<u32> = COMPRESS_RATIOS
        .iter()
        .copied()
        .chain((0..NEXTN_LAYERS).map(|_| 0))
        .collect();
    builder.set(key("block_count"), blocks as u32);
    builder.set(key("nextn_predict_layers"), NEXTN_LAYERS as u32);
    builder.set(key("context_length"), 65_536u32);
    builder.set(key("embedding_length"), N_EMBD as u32);
    builder.set(key("attention.head_count"), HEADS as u32);
    builder.set(key("attention.head_count_kv"), 1u32);
    builder.set(key("attention.key_length"), HEAD as u32);
    builder.set(key("attention.value_length"), HEAD as u32);
    builder.set(key("rope.dimension_count"), ROPE as u32);
    builder.set(key("rope.freq_base"), 10_000f32);
    builder.set(key("attention.layer_norm_rms_epsilon"), 1e-6f32);
    builder.set(key("attention.q_lora_rank"), Q_LORA_RANK as u32);
    builder.set(key("attention.sliding_window"), SLIDING_WINDOW);
    builder.set(key("attention.output_group_count"), OUTPUT_GROUPS as u32);
    builder.set(key("attention.output_lora_rank"), OUTPUT_LORA_RANK as u32);
    builder.set(key("attention.compress_rope_freq_base"), 160_000f32);
    builder.set(
        key("attention.compress_ratios"),
        Value::Array(
            crate::gguf::ValueType::U32,
            ratios.iter().map(|&r| Value::U32(r)).collect(),
        ),
    );
    builder.set(key("attention.indexer.head_count"), INDEXER_HEADS as u32);
    builder.set(
        key("attention.indexer.key_length"),
        INDEXER_HEAD_SIZE as u32,
    );
    builder.set(key("attention.indexer.top_k"), INDEXER_TOP_K);
    builder.set(key("hyper_connection.count"), HYPER as u32);
    builder.set(key("hyper_connection.sinkhorn_iterations"), 3u32);
    builder.set(key("hyper_connection.epsilon"), 1e-6f32);
    builder.set(key("hash_layer_count"), HASH_LAYERS);
    builder.set(key("expert_count"), EXPERTS as u32);
    builder.set(key("expert_used_count"), EXPERTS_USED);
    builder.set(key("expert_shared_count"), SHARED_EXPERTS as u32);
    builder.set(key("expert_feed_forward_length"), EXPERT_FFN as u32);
    builder.set(key("expert_weights_scale"), 1.5f32);
    builder.set(key("expert_weights_norm"), true);
    // 4: square root of softplus
    builder.set(key("expert_gating_func"), 4u32);
    builder.set(key("swiglu_clamp_exp"), 10f32);
    builder.set(key("vocab_size"), vocab as u32);

    embedding_and_head(builder, weights, N_EMBD, TensorType::Q8_0);
    let (f16, f32) = (TensorType::F16, TensorType::F32);
    let hyper_dim = HYPER * N_EMBD;
    let mix = (2 + HYPER) * HYPER;
    builder.push_tensor(weights.random("output_hc_fn.weight", &[hyper_dim, HYPER], f32));
    builder.push_tensor(weights.random("output_hc_base.weight", &[HYPER], f32));
    builder.push_tensor(Weights::ones("output_hc_scale.weight", 1));
    for (layer, &ratio) in ratios.iter().enumerate() {
        let name = |t: &str| format!("blk.{layer}.{t}.weight");
        if layer >= COMPRESS_RATIOS.len() {
            nextn_projections(builder, weights, layer as u64);
        }
        builder.push_tensor(Weights::ones(&name("attn_norm"), N_EMBD));
        builder.push_tensor(weights.random(&name("attn_sinks"), &[HEADS], f32));
        builder.push_tensor(weights.random(&name("attn_q_a"), &[N_EMBD, Q_LORA_RANK], f16));
        builder.push_tensor(Weights::ones(&name("attn_q_a_norm"), Q_LORA_RANK));
        builder.push_tensor(weights.random(&name("attn_q_b"), &[Q_LORA_RANK, HEADS * HEAD], f16));
        builder.push_tensor(weights.random(&name("attn_kv"), &[N_EMBD, HEAD], f16));
        builder.push_tensor(Weights::ones(&name("attn_kv_a_norm"), HEAD));
        // stored 2-D, as the converter writes it; llama.cpp views it per group
        builder.push_tensor(weights.random(
            &name("attn_output_a"),
            &[
                HEADS * HEAD / OUTPUT_GROUPS,
                OUTPUT_LORA_RANK * OUTPUT_GROUPS,
            ],
            f16,
        ));
        builder.push_tensor(weights.random(
            &name("attn_output_b"),
            &[OUTPUT_GROUPS * OUTPUT_LORA_RANK, N_EMBD],
            f16,
        ));
        for part in ["attn", "ffn"] {
            builder.push_tensor(weights.random(
                &name(&format!("hc_{part}_fn")),
                &[hyper_dim, mix],
                f32,
            ));
            builder.push_tensor(weights.random(&name(&format!("hc_{part}_base")), &[mix], f32));
            builder.push_tensor(Weights::ones(&name(&format!("hc_{part}_scale")), 3));
        }
        if ratio != 0 {
            let coff = if ratio == 4 { 2 } else { 1 };
            let ratio = u64::from(ratio);
            builder.push_tensor(weights.random(
                &name("attn_compressor_kv"),
                &[N_EMBD, coff * HEAD],
                f16,
            ));
            builder.push_tensor(weights.random(
                &name("attn_compressor_gate"),
                &[N_EMBD, coff * HEAD],
                f16,
            ));
            builder.push_tensor(weights.random(
                &name("attn_compressor_ape"),
                &[coff * HEAD, ratio],
                f32,
            ));
            builder.push_tensor(Weights::ones(&name("attn_compressor_norm"), HEAD));
            if ratio == 4 {
                let size = INDEXER_HEAD_SIZE;
                builder.push_tensor(weights.random(
                    &name("indexer.proj"),
                    &[N_EMBD, INDEXER_HEADS],
                    f16,
                ));
                builder.push_tensor(weights.random(
                    &name("indexer.attn_q_b"),
                    &[Q_LORA_RANK, INDEXER_HEADS * size],
                    f16,
                ));
                builder.push_tensor(weights.random(
                    &name("indexer_compressor_kv"),
                    &[N_EMBD, 2 * size],
                    f16,
                ));
                builder.push_tensor(weights.random(
                    &name("indexer_compressor_gate"),
                    &[N_EMBD, 2 * size],
                    f16,
                ));
                builder.push_tensor(weights.random(
                    &name("indexer_compressor_ape"),
                    &[2 * size, ratio],
                    f32,
                ));
                builder.push_tensor(Weights::ones(&name("indexer_compressor_norm"), size));
            }
        }
        builder.push_tensor(weights.random(&name("ffn_gate_inp"), &[N_EMBD, EXPERTS], f32));
        if (layer as u32) < HASH_LAYERS {
            // the experts each token id is sent to: a fixed table
            let used = u64::from(EXPERTS_USED);
            let table: Vec<f32> = (0..vocab * used)
                .map(|i| ((i / used * 7 + i % used * 3) % EXPERTS) as f32)
                .collect();
            builder.push_tensor(Tensor::new(
                name("ffn_gate_tid2eid"),
                &[used, vocab],
                TensorType::I32,
                &table,
            ));
        } else {
            builder.push_tensor(weights.random(
                &format!("blk.{layer}.exp_probs_b.bias"),
                &[EXPERTS],
                f32,
            ));
        }
        builder.push_tensor(Weights::ones(&name("ffn_norm"), N_EMBD));
        experts(
            builder,
            weights,
            layer as u64,
            EXPERT_FFN,
            EXPERTS,
            SHARED_EXPERTS,
        );
    }
}

/// What a NextN block has beyond a trunk block: the projection of the token's embedding and the
/// trunk's hidden state into one, their norms and its own output norm (it shares the trunk's
/// embedding and output head).
fn nextn_projections(builder: &mut Builder, weights: &mut Weights, layer: u64) {
    let name = |t: &str| format!("blk.{layer}.nextn.{t}.weight");
    builder.push_tensor(weights.random(&name("eh_proj"), &[2 * N_EMBD, N_EMBD], TensorType::F16));
    builder.push_tensor(Weights::ones(&name("enorm"), N_EMBD));
    builder.push_tensor(Weights::ones(&name("hnorm"), N_EMBD));
    builder.push_tensor(Weights::ones(&name("shared_head_norm"), N_EMBD));
}

/// Block `layer`'s routed experts (`count` of width `ffn`) and shared experts (`shared` of the
/// same width), f16, as the `deepseek2`, `deepseek32` and `deepseek4` loaders read them.
fn experts(
    builder: &mut Builder,
    weights: &mut Weights,
    layer: u64,
    ffn: u64,
    count: u64,
    shared: u64,
) {
    let f16 = TensorType::F16;
    let name = |t: &str| format!("blk.{layer}.{t}.weight");
    builder.push_tensor(weights.random(&name("ffn_gate_exps"), &[N_EMBD, ffn, count], f16));
    builder.push_tensor(weights.random(&name("ffn_up_exps"), &[N_EMBD, ffn, count], f16));
    builder.push_tensor(weights.random(&name("ffn_down_exps"), &[ffn, N_EMBD, count], f16));
    let shared = ffn * shared;
    builder.push_tensor(weights.random(&name("ffn_gate_shexp"), &[N_EMBD, shared], f16));
    builder.push_tensor(weights.random(&name("ffn_up_shexp"), &[N_EMBD, shared], f16));
    builder.push_tensor(weights.random(&name("ffn_down_shexp"), &[shared, N_EMBD], f16));
}

/// Shape of a dense (Qwen2 / Llama) fixture.
struct DenseShape {
    arch: &'static str,
    embd: u64,
    blocks: u64,
    heads: u64,
    kv_heads: u64,
    ffn: u64,
    context: u32,
    rope_base: f32,
    rms_eps: f32,
    /// Qwen2 has q/k/v biases; Llama none.
    qkv_bias: bool,
    /// Type of the blocks' matrices.
    weights: TensorType,
    /// Type of the output head.
    head: TensorType,
}

/// R1-Distill-Qwen: 7:1 GQA (28 heads / 4 KV heads on 7B), rope base 10000, 128K context.
const QWEN2: DenseShape = DenseShape {
    arch: "qwen2",
    embd: N_EMBD,
    blocks: 2,
    heads: 4,
    kv_heads: 2,
    ffn: 128,
    context: 131_072,
    rope_base: 10_000.0,
    rms_eps: 1e-6,
    qkv_bias: true,
    weights: TensorType::F16,
    head: TensorType::Q8_0,
};

/// R1-Distill-Llama: 4:1 GQA (32 / 8 on 8B), rope base 500000, 128K context.
const LLAMA: DenseShape = DenseShape {
    arch: "llama",
    embd: N_EMBD,
    blocks: 2,
    heads: 4,
    kv_heads: 1,
    ffn: 128,
    context: 131_072,
    rope_base: 500_000.0,
    rms_eps: 1e-5,
    qkv_bias: false,
    weights: TensorType::F16,
    head: TensorType::Q8_0,
};

/// [`LLAMA`] at 1024 wide, 12 blocks, f32 (the type with the most bytes per multiply): 135 M
/// parameters in the blocks and 132 M in the head, all read for every decoded token.
const WIDE_LLAMA: DenseShape = DenseShape {
    embd: 1024,
    blocks: 12,
    heads: 16,
    kv_heads: 4,
    ffn: 2816,
    context: 8192,
    weights: TensorType::F32,
    head: TensorType::F32,
    ..LLAMA
};

fn dense_model(builder: &mut Builder, weights: &mut Weights, shape: &DenseShape) {
    let key = |k: &str| format!("{}.{k}", shape.arch);
    let head_dim = shape.embd / shape.heads;
    builder.set(key("block_count"), shape.blocks as u32);
    builder.set(key("context_length"), shape.context);
    builder.set(key("embedding_length"), shape.embd as u32);
    builder.set(key("feed_forward_length"), shape.ffn as u32);
    builder.set(key("attention.head_count"), shape.heads as u32);
    builder.set(key("attention.head_count_kv"), shape.kv_heads as u32);
    builder.set(key("rope.freq_base"), shape.rope_base);
    builder.set(key("attention.layer_norm_rms_epsilon"), shape.rms_eps);
    if shape.arch == "llama" {
        builder.set(key("rope.dimension_count"), head_dim as u32);
        builder.set(key("vocab_size"), DEEPSEEK_VOCAB_SIZE as u32);
    }

    embedding_and_head(builder, weights, shape.embd, shape.head);
    let matrix = shape.weights;
    let kv = shape.kv_heads * head_dim;
    for layer in 0..shape.blocks {
        let name = |t: &str| format!("blk.{layer}.{t}.weight");
        let bias = |t: &str| format!("blk.{layer}.{t}.bias");
        builder.push_tensor(Weights::ones(&name("attn_norm"), shape.embd));
        builder.push_tensor(weights.random(&name("attn_q"), &[shape.embd, shape.embd], matrix));
        builder.push_tensor(weights.random(&name("attn_k"), &[shape.embd, kv], matrix));
        builder.push_tensor(weights.random(&name("attn_v"), &[shape.embd, kv], matrix));
        if shape.qkv_bias {
            let f32 = TensorType::F32;
            builder.push_tensor(weights.random(&bias("attn_q"), &[shape.embd], f32));
            builder.push_tensor(weights.random(&bias("attn_k"), &[kv], f32));
            builder.push_tensor(weights.random(&bias("attn_v"), &[kv], f32));
        }
        builder.push_tensor(weights.random(
            &name("attn_output"),
            &[shape.embd, shape.embd],
            matrix,
        ));
        builder.push_tensor(Weights::ones(&name("ffn_norm"), shape.embd));
        builder.push_tensor(weights.random(&name("ffn_gate"), &[shape.embd, shape.ffn], matrix));
        builder.push_tensor(weights.random(&name("ffn_up"), &[shape.embd, shape.ffn], matrix));
        builder.push_tensor(weights.random(&name("ffn_down"), &[shape.ffn, shape.embd], matrix));
    }
}
