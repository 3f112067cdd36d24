//! A small GGUF v3 writer, so the test suite can make its own model files: tiny models with the
//! real DeepSeek architectures (see [`crate::fixtures`]) and deliberately broken files (see
//! [`broken`]) for the bad-input tests of the daemon's loader and validator.
//!
//! Layout written (all little-endian): magic `GGUF`, version 3, tensor count (u64), metadata
//! count (u64), the metadata key/values, the tensor infos (name, dims, ggml type, offset relative
//! to the data section), padding to `general.alignment`, then each tensor's bytes at its aligned
//! offset.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use half::f16;

/// The alignment llama.cpp assumes when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

const MAGIC: &[u8; 4] = b"GGUF";
const VERSION: u32 = 3;

/// The type tag of a metadata value, as numbered by the GGUF spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Elements all of `ValueType`; the type is explicit so that empty arrays can be written.
    Array(ValueType, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The type tag written before this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// An array of strings (token lists, merges).
    pub fn strings<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Value {
        Value::Array(
            ValueType::String,
            items.into_iter().map(|s| Value::String(s.into())).collect(),
        )
    }

    /// An array of i32 (token types).
    pub fn i32s(items: impl IntoIterator<Item = i32>) -> Value {
        Value::Array(ValueType::I32, items.into_iter().map(Value::I32).collect())
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::U8(v) => out.push(*v),
            Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Bool(v) => out.push(u8::from(*v)),
            Value::String(v) => write_string(out, v),
            Value::Array(element, items) => {
                out.extend_from_slice(&(*element as u32).to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    debug_assert_eq!(item.value_type(), *element, "mixed GGUF array");
                    item.write(out);
                }
            }
            Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant(v)
            }
        })*
    };
}
value_from!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, u64 => U64, i64 => I64, f64 => F64);

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_owned())
    }
}

/// Tensor element types this writer can encode (ggml's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum TensorType {
    F32 = 0,
    F16 = 1,
    /// Blocks of 32 values: an f16 scale then 32 i8; the first dim must be a multiple of 32.
    Q8_0 = 8,
    /// Integers (the values are whole numbers), as tables of ids are stored.
    I32 = 26,
}

impl TensorType {
    /// Encoded size of `elements` values.
    pub fn byte_size(self, elements: u64) -> u64 {
        match self {
            TensorType::F32 | TensorType::I32 => elements * 4,
            TensorType::F16 => elements * 2,
            TensorType::Q8_0 => elements / 32 * 34,
        }
    }

    fn encode(self, values: &[f32], out: &mut Vec<u8>) {
        match self {
            TensorType::F32 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            TensorType::F16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
            TensorType::I32 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&(*v as i32).to_le_bytes())),
            TensorType::Q8_0 => {
                for block in values.chunks(32) {
                    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let scale = amax / 127.0;
                    let inverse = if scale == 0.0 { 0.0 } else { 1.0 / scale };
                    out.extend_from_slice(&f16::from_f32(scale).to_le_bytes());
                    out.extend(block.iter().map(|v| (v * inverse).round() as i8 as u8));
                }
            }
        }
    }
}

/// One tensor as it will be written: its info and its encoded bytes.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (row) dimension.
    pub dims: Vec<u64>,
    pub kind: TensorType,
    pub data: Vec<u8>,
}

impl Tensor {
    /// Encodes `values` (row-major, `dims[0]` fastest) as `kind`.
    pub fn new(name: impl Into<String>, dims: &[u64], kind: TensorType, values: &[f32]) -> Tensor {
        let elements: u64 = dims.iter().product();
        assert_eq!(elements, values.len() as u64, "tensor element count");
        if kind == TensorType::Q8_0 {
            assert_eq!(dims[0] % 32, 0, "q8_0 rows must be multiples of 32");
        }
        let mut data = Vec::with_capacity(kind.byte_size(elements) as usize);
        kind.encode(values, &mut data);
        Tensor {
            name: name.into(),
            dims: dims.to_vec(),
            kind,
            data,
        }
    }
}

/// Builds a GGUF file in memory: metadata in insertion order, then tensors in insertion order.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    metadata: Vec<(String, Value)>,
    tensors: Vec<Tensor>,
}

/// The byte layout of a built file, for tests that need to corrupt a precise place.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Offset of the tensor-count field (right after magic and version).
    pub tensor_count_at: usize,
    /// Offset of the first metadata key's length.
    pub metadata_at: usize,
    /// Offset of each tensor info, in order.
    pub tensor_infos_at: Vec<usize>,
    /// Offset of the data section (aligned).
    pub data_at: usize,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Adds or replaces a metadata entry.
    #[must_use]
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<Value>) -> Builder {
        self.set(key, value);
        self
    }

    /// Adds or replaces a metadata entry in place.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key, value)),
        }
    }

    /// Removes a metadata entry if present.
    pub fn remove(&mut self, key: &str) {
        self.metadata.retain(|(k, _)| k != key);
    }

    /// The metadata entries so far.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// Adds a tensor.
    #[must_use]
    pub fn tensor(mut self, tensor: Tensor) -> Builder {
        self.tensors.push(tensor);
        self
    }

    /// Adds a tensor in place.
    pub fn push_tensor(&mut self, tensor: Tensor) {
        self.tensors.push(tensor);
    }

    /// The tensors so far.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| match v {
                Value::U32(a) => Some(u64::from(*a)),
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Encodes the whole file.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_with_layout().0
    }

    /// Encodes the whole file and says where its parts are.
    pub fn to_bytes_with_layout(&self) -> (Vec<u8>, Layout) {
        let alignment = self.alignment();
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        let tensor_count_at = out.len();
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        let metadata_at = out.len();
        for (key, value) in &self.metadata {
            write_string(&mut out, key);
            out.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            value.write(&mut out);
        }
        let mut tensor_infos_at = Vec::with_capacity(self.tensors.len());
        let mut offset = 0u64;
        for tensor in &self.tensors {
            tensor_infos_at.push(out.len());
            write_string(&mut out, &tensor.name);
            out.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
            for dim in &tensor.dims {
                out.extend_from_slice(&dim.to_le_bytes());
            }
            out.extend_from_slice(&(tensor.kind as u32).to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = align(offset + tensor.data.len() as u64, alignment);
        }
        pad_to(&mut out, alignment);
        let data_at = out.len();
        for tensor in &self.tensors {
            out.extend_from_slice(&tensor.data);
            let relative = (out.len() - data_at) as u64;
            out.resize(data_at + align(relative, alignment) as usize, 0);
        }
        (
            out,
            Layout {
                tensor_count_at,
                metadata_at,
                tensor_infos_at,
                data_at,
            },
        )
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let mut file = BufWriter::new(File::create(path)?);
        file.write_all(&self.to_bytes())?;
        file.into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .sync_all()
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn align(offset: u64, alignment: u64) -> u64 {
    offset.div_ceil(alignment) * alignment
}

fn pad_to(out: &mut Vec<u8>, alignment: u64) {
    let len = align(out.len() as u64, alignment) as usize;
    out.resize(len, 0);
}

/// Deliberately broken GGUF files for bad-input tests. Each writes a small file at `path` and
/// says in its doc whether llama.cpp itself rejects it cleanly (a load error) or would crash or
/// misbehave on it, so that the daemon's own validator must catch it before llama.cpp sees it.
/// [`LLAMA_ASSERTS`] are whole tiny models with one value that aborts llama.cpp.
pub mod broken {
    use std::io;
    use std::path::Path;
    use std::sync::{Mutex, PoisonError};

    use super::{Builder, Tensor, TensorType, Value, ValueType};
    use crate::fixtures::{DEEPSEEK_VOCAB_SIZE, Fixture, deepseek2_shape};

    /// A valid small file (one llama-shaped f32 tensor and a little metadata) to corrupt.
    pub fn base() -> Builder {
        let values: Vec<f32> = (0..64 * 64).map(|i| (i % 7) as f32 * 0.01).collect();
        Builder::new()
            .meta("general.architecture", "llama")
            .meta("general.name", "broken fixture")
            .meta("general.alignment", 32u32)
            .meta("llama.block_count", 1u32)
            .meta("llama.context_length", 128u32)
            .meta("llama.embedding_length", 64u32)
            .meta("llama.feed_forward_length", 64u32)
            .meta("llama.attention.head_count", 4u32)
            .meta("llama.attention.layer_norm_rms_epsilon", 1e-5f32)
            .tensor(Tensor::new(
                "token_embd.weight",
                &[64, 64],
                TensorType::F32,
                &values,
            ))
    }

    /// Writes one kind of broken file at the given path.
    pub type Writer = fn(&Path) -> io::Result<()>;

    /// Every kind, for tests that loop over them.
    pub const ALL: &[(&str, Writer)] = &[
        ("bad_magic", bad_magic),
        ("bad_version", bad_version),
        ("empty", empty),
        ("truncated_header", truncated_header),
        ("truncated", truncated),
        ("huge_string_length", huge_string_length),
        ("huge_tensor_count", huge_tensor_count),
        ("huge_array_length", huge_array_length),
        ("tensor_out_of_bounds", tensor_out_of_bounds),
        ("tensor_dims_overflow", tensor_dims_overflow),
        ("misaligned_tensor_offset", misaligned_tensor_offset),
        ("unknown_value_type", unknown_value_type),
        ("huge_block_count", huge_block_count),
        ("block_count_mismatch", block_count_mismatch),
    ];

    /// Kinds that the vendored llama.cpp rejects with a load error (checked by
    /// `tests/fixtures.rs`). The others are in [`ALL`] but not here: see each one's doc.
    pub const REJECTED_BY_LLAMA: &[&str] = &[
        "bad_magic",
        "bad_version",
        "empty",
        "truncated_header",
        "truncated",
        "huge_string_length",
        "huge_tensor_count",
        "huge_array_length",
        "tensor_out_of_bounds",
        "tensor_dims_overflow",
        "misaligned_tensor_offset",
        "unknown_value_type",
        "block_count_mismatch",
    ];

    fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
        std::fs::write(path, bytes)
    }

    /// Starts with `GGUX` instead of `GGUF`. llama.cpp: load error.
    pub fn bad_magic(path: &Path) -> io::Result<()> {
        let mut bytes = base().to_bytes();
        bytes[3] = b'X';
        write(path, &bytes)
    }

    /// Version 99. llama.cpp: load error.
    pub fn bad_version(path: &Path) -> io::Result<()> {
        let mut bytes = base().to_bytes();
        bytes[4..8].copy_from_slice(&99u32.to_le_bytes());
        write(path, &bytes)
    }

    /// A zero-byte file. llama.cpp: load error.
    pub fn empty(path: &Path) -> io::Result<()> {
        write(path, &[])
    }

    /// Cut in the middle of the metadata. llama.cpp: load error.
    pub fn truncated_header(path: &Path) -> io::Result<()> {
        let (bytes, layout) = base().to_bytes_with_layout();
        write(path, &bytes[..layout.metadata_at + 20])
    }

    /// Cut in the middle of the tensor data (an interrupted download). llama.cpp: load error.
    pub fn truncated(path: &Path) -> io::Result<()> {
        let (bytes, layout) = base().to_bytes_with_layout();
        let cut = layout.data_at + (bytes.len() - layout.data_at) / 2;
        write(path, &bytes[..cut])
    }

    /// The first metadata key claims a length of 2^62 bytes. llama.cpp: load error.
    pub fn huge_string_length(path: &Path) -> io::Result<()> {
        let (mut bytes, layout) = base().to_bytes_with_layout();
        let at = layout.metadata_at;
        bytes[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        write(path, &bytes)
    }

    /// The header claims 2^40 tensors. llama.cpp: load error.
    pub fn huge_tensor_count(path: &Path) -> io::Result<()> {
        let (mut bytes, layout) = base().to_bytes_with_layout();
        let at = layout.tensor_count_at;
        bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        write(path, &bytes)
    }

    /// A string array (a token list) whose count says 2^40 but holds three. llama.cpp: load error.
    pub fn huge_array_length(path: &Path) -> io::Result<()> {
        let mut builder = base();
        builder.set("tokenizer.ggml.tokens", Value::strings(["a", "b", "c"]));
        let bytes = builder.to_bytes();
        // the array is the last metadata entry: key, type, element type, count, items
        let needle = b"tokenizer.ggml.tokens";
        let key_at = find(&bytes, needle).expect("key written");
        let count_at = key_at + needle.len() + 4 + 4;
        let mut bytes = bytes;
        bytes[count_at..count_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        write(path, &bytes)
    }

    /// A tensor whose offset points past the end of the file. llama.cpp: load error.
    pub fn tensor_out_of_bounds(path: &Path) -> io::Result<()> {
        let (mut bytes, layout) = base().to_bytes_with_layout();
        let info = layout.tensor_infos_at[0];
        let offset_at = tensor_offset_field(&bytes, info);
        bytes[offset_at..offset_at + 8].copy_from_slice(&(1u64 << 30).to_le_bytes());
        write(path, &bytes)
    }

    /// A tensor whose dims multiply past `i64::MAX`. llama.cpp: load error.
    pub fn tensor_dims_overflow(path: &Path) -> io::Result<()> {
        let (mut bytes, layout) = base().to_bytes_with_layout();
        let dims_at = layout.tensor_infos_at[0] + 8 + "token_embd.weight".len() + 4;
        bytes[dims_at..dims_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        bytes[dims_at + 8..dims_at + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        write(path, &bytes)
    }

    /// A tensor offset that is not a multiple of `general.alignment`. llama.cpp: load error.
    pub fn misaligned_tensor_offset(path: &Path) -> io::Result<()> {
        let (mut bytes, layout) = base().to_bytes_with_layout();
        let offset_at = tensor_offset_field(&bytes, layout.tensor_infos_at[0]);
        bytes[offset_at..offset_at + 8].copy_from_slice(&3u64.to_le_bytes());
        write(path, &bytes)
    }

    /// A metadata value typed 77, which no GGUF version defines. llama.cpp: load error.
    pub fn unknown_value_type(path: &Path) -> io::Result<()> {
        let (mut bytes, layout) = base().to_bytes_with_layout();
        let key_len = u64::from_le_bytes(
            bytes[layout.metadata_at..layout.metadata_at + 8]
                .try_into()
                .expect("8 bytes"),
        ) as usize;
        let type_at = layout.metadata_at + 8 + key_len;
        bytes[type_at..type_at + 4].copy_from_slice(&77u32.to_le_bytes());
        write(path, &bytes)
    }

    /// A well-formed file claiming 10^9 layers. llama.cpp: **aborts the process**
    /// (`GGML_ASSERT(n_layer_all <= LLAMA_MAX_LAYERS)` in `load_hparams`), so the daemon's own
    /// validator must reject it before llama.cpp sees it; not in [`REJECTED_BY_LLAMA`].
    pub fn huge_block_count(path: &Path) -> io::Result<()> {
        let mut builder = base();
        builder.set("llama.block_count", 1_000_000_000u32);
        builder.write(path)
    }

    /// A well-formed file claiming 4 layers but holding the tensors of none (and no vocab).
    /// llama.cpp: load error (missing tensors / vocab).
    pub fn block_count_mismatch(path: &Path) -> io::Result<()> {
        let mut builder = base();
        builder.set("llama.block_count", 4u32);
        builder.set("tokenizer.ggml.model", "gpt2");
        builder.set(
            "tokenizer.ggml.tokens",
            Value::Array(ValueType::String, vec![]),
        );
        builder.write(path)
    }

    /// A file that passes every check of the daemon's validator but one, and whose one bad value
    /// makes the vendored llama.cpp (`llama-cpp-sys-2` 0.1.161) abort the whole process (a
    /// `GGML_ASSERT`, a `GGML_ABORT` or a division by zero) as it loads the model or makes its
    /// first generation or embeddings context, instead of failing with an error. Never hand one
    /// to llama.cpp in the test process: `tests/fixtures.rs` loads each in a child process and
    /// checks that it dies.
    #[derive(Debug, Clone, Copy)]
    pub struct LlamaAssert {
        pub name: &'static str,
        pub write: Writer,
        /// The metadata key (or tensor) that the validator's error names.
        pub field: &'static str,
        /// Where llama.cpp dies: file (under `llama.cpp/src/`, or `ggml/src/`) and line.
        pub at: &'static str,
        /// What llama.cpp prints on stderr as it dies (`GGML_ASSERT(<this>) failed`); empty for
        /// a division by zero, which dies by SIGFPE without a word.
        pub message: &'static str,
    }

    const fn assert(
        name: &'static str,
        write: Writer,
        field: &'static str,
        at: &'static str,
        message: &'static str,
    ) -> LlamaAssert {
        LlamaAssert {
            name,
            write,
            field,
            at,
            message,
        }
    }

    /// One file per value that llama.cpp asserts on, for every architecture and the ones whale
    /// targets; each is a fixture of [`crate::fixtures`] with one value changed (`gemma3` is the
    /// `llama` fixture with Gemma 3's extra norms). Those whose `at` is under `ggml-cpu/` die
    /// at the first decode, `llama-graph.cpp`, `ggml.c:4014` and `models/qwen2.cpp` at the first
    /// context (`unknown_pooling` at the first embeddings context), the others while loading.
    pub const LLAMA_ASSERTS: &[LlamaAssert] = &[
        assert(
            "too_many_layers",
            too_many_layers,
            "deepseek2.block_count",
            "llama-model.cpp:1330",
            "hparams.n_layer_all > 0 && hparams.n_layer_all <= LLAMA_MAX_LAYERS",
        ),
        assert(
            "too_many_nextn_layers",
            too_many_nextn_layers,
            "deepseek2.nextn_predict_layers",
            "llama-model.cpp:1332",
            "hparams.n_layer_nextn <= hparams.n_layer_all",
        ),
        assert(
            "wavtokenizer_posnet_too_deep",
            wavtokenizer_posnet_too_deep,
            "wavtokenizer-dec.posnet.block_count",
            "llama-model.cpp:1356",
            "hparams.posnet.n_layer <= hparams.n_layer_all",
        ),
        assert(
            "too_many_experts",
            too_many_experts,
            "deepseek2.expert_count",
            "llama-model.cpp:1363",
            "hparams.n_expert <= LLAMA_MAX_EXPERTS",
        ),
        assert(
            "more_experts_used_than_exist",
            more_experts_used_than_exist,
            "deepseek2.expert_used_count",
            "llama-model.cpp:1364",
            "n_expert_used_max <= hparams.n_expert",
        ),
        assert(
            "experts_used_without_experts",
            experts_used_without_experts,
            "llama.expert_used_count",
            "llama-model.cpp:1364",
            "n_expert_used_max <= hparams.n_expert",
        ),
        assert(
            "no_experts_used",
            no_experts_used,
            "deepseek2.expert_used_count",
            "llama-model.cpp:1366",
            "n_expert_used_max > 0",
        ),
        assert(
            "too_many_expert_groups",
            too_many_expert_groups,
            "deepseek2.expert_group_count",
            "llama-model.cpp:1367",
            "hparams.n_expert_groups < hparams.n_expert",
        ),
        assert(
            "uneven_expert_groups",
            uneven_expert_groups,
            "deepseek2.expert_group_count",
            "llama-model.cpp:1369",
            "hparams.n_expert % hparams.n_expert_groups == 0",
        ),
        assert(
            "no_expert_groups_used",
            no_expert_groups_used,
            "deepseek2.expert_group_used_count",
            "llama-model.cpp:1370",
            "hparams.n_group_used > 0",
        ),
        assert(
            "all_expert_groups_used",
            all_expert_groups_used,
            "deepseek2.expert_group_used_count",
            "llama-model.cpp:1371",
            "hparams.n_group_used < hparams.n_expert_groups",
        ),
        assert(
            "expert_groups_without_experts",
            expert_groups_without_experts,
            "qwen2.expert_group_count",
            "llama-model.cpp:1375",
            "hparams.n_expert_groups == 0",
        ),
        assert(
            "unknown_rope_scaling",
            unknown_rope_scaling,
            "deepseek2.rope.scaling.type",
            "llama-model.cpp:1422",
            "hparams.rope_scaling_type_train != LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED",
        ),
        assert(
            "gemma3_without_heads",
            gemma3_without_heads,
            "gemma3.attention.head_count",
            "models/gemma3.cpp:30",
            "",
        ),
        assert(
            "duplicate_tokens",
            duplicate_tokens,
            "tokenizer.ggml.tokens",
            "llama-vocab.cpp:2578",
            "id_to_token.size() == token_to_id.size()",
        ),
        assert(
            "rope_covers_mla_key_head",
            rope_covers_mla_key_head,
            "deepseek2.rope.dimension_count",
            "models/deepseek2.cpp:77",
            "n_embd_head_qk_nope >= 1",
        ),
        assert(
            "rope_freqs_not_f32",
            rope_freqs_not_f32,
            "rope_freqs.weight",
            "ggml/src/ggml.c:4304",
            "c->type == GGML_TYPE_F32",
        ),
        assert(
            "key_head_not_value_head",
            key_head_not_value_head,
            "qwen2.attention.key_length",
            "models/qwen2.cpp:56",
            "n_embd_head == hparams.n_embd_head_k()",
        ),
        assert(
            "rope_not_whole_head",
            rope_not_whole_head,
            "qwen2.rope.dimension_count",
            "models/qwen2.cpp:57",
            "n_embd_head == n_rot",
        ),
        assert(
            "mla_key_not_cache_width",
            mla_key_not_cache_width,
            "deepseek2.attention.key_length",
            "ggml/src/ggml.c:4014",
            "a->ne[0] == b->ne[0]",
        ),
        assert(
            "rope_wider_than_head",
            rope_wider_than_head,
            "gemma3.rope.dimension_count",
            "ggml/src/ggml-cpu/ops.cpp:6354",
            "n_dims <= ne0",
        ),
        assert(
            "odd_rope_dimensions",
            odd_rope_dimensions,
            "gemma3.rope.dimension_count",
            "ggml/src/ggml-cpu/ops.cpp:6355",
            "n_dims % 2 == 0",
        ),
        assert(
            "unknown_expert_gating",
            unknown_expert_gating,
            "deepseek2.expert_gating_func",
            "llama-graph.cpp:2109",
            "fatal error",
        ),
        assert(
            "unknown_pooling",
            unknown_pooling,
            "qwen2.pooling_type",
            "llama-graph.cpp:3887",
            "unknown pooling type",
        ),
    ];

    /// A tiny fixture's builder, made once per process (a build parses the tokenizer and draws
    /// the weights).
    fn fixture(fixture: Fixture) -> io::Result<Builder> {
        static BUILT: Mutex<Vec<(Fixture, Builder)>> = Mutex::new(Vec::new());
        let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, builder)) = built.iter().find(|(kind, _)| *kind == fixture) {
            return Ok(builder.clone());
        }
        let builder = fixture.build().map_err(io::Error::other)?;
        built.push((fixture, builder.clone()));
        Ok(builder)
    }

    /// The `deepseek2` fixture with `key` (under `deepseek2.`) set to `value`.
    fn deepseek2_with(path: &Path, key: &str, value: impl Into<Value>) -> io::Result<()> {
        let mut builder = fixture(Fixture::DeepSeek2)?;
        builder.set(format!("deepseek2.{key}"), value);
        builder.write(path)
    }

    /// The `llama` fixture as architecture `arch`: every `llama.` key under `<arch>.` instead.
    fn llama_as(arch: &str) -> io::Result<Builder> {
        let mut builder = fixture(Fixture::Llama)?;
        builder.set("general.architecture", arch);
        for (key, _) in &mut builder.metadata {
            if let Some(rest) = key.strip_prefix("llama.") {
                *key = format!("{arch}.{rest}");
            }
        }
        Ok(builder)
    }

    /// The `llama` fixture as a `gemma3`: with the norms Gemma 3 adds around attention and the
    /// feed-forward, and on queries and keys (it loads and generates).
    fn gemma3() -> io::Result<Builder> {
        let mut builder = llama_as("gemma3")?;
        let (embd, head) = (64, 16);
        for layer in 0..2 {
            for (name, len) in [
                ("post_attention_norm", embd),
                ("attn_q_norm", head),
                ("attn_k_norm", head),
                ("post_ffw_norm", embd),
            ] {
                let ones = vec![1.0; len as usize];
                let name = format!("blk.{layer}.{name}.weight");
                builder.push_tensor(Tensor::new(name, &[len], TensorType::F32, &ones));
            }
        }
        Ok(builder)
    }

    /// 513 layers, one more than llama.cpp's `LLAMA_MAX_LAYERS`.
    pub fn too_many_layers(path: &Path) -> io::Result<()> {
        deepseek2_with(path, "block_count", 513u32)
    }

    /// More multi-token-prediction layers (5) than layers (4: three and the NextN block).
    pub fn too_many_nextn_layers(path: &Path) -> io::Result<()> {
        deepseek2_with(path, "nextn_predict_layers", 5u32)
    }

    /// A WavTokenizer decoder whose PosNet has more blocks (3) than the model has layers (2).
    pub fn wavtokenizer_posnet_too_deep(path: &Path) -> io::Result<()> {
        let arch = "wavtokenizer-dec";
        let mut builder = llama_as(arch)?;
        builder.set(format!("{arch}.features_length"), 64u32);
        builder.set(format!("{arch}.posnet.embedding_length"), 64u32);
        builder.set(format!("{arch}.posnet.block_count"), 3u32);
        builder.set(format!("{arch}.convnext.embedding_length"), 64u32);
        builder.set(format!("{arch}.convnext.block_count"), 2u32);
        builder.write(path)
    }

    /// 1025 experts, one more than llama.cpp's `LLAMA_MAX_EXPERTS`.
    pub fn too_many_experts(path: &Path) -> io::Result<()> {
        deepseek2_with(path, "expert_count", 1025u32)
    }

    /// 17 experts used per token of the 16 there are.
    pub fn more_experts_used_than_exist(path: &Path) -> io::Result<()> {
        let used = deepseek2_shape::EXPERTS as u32 + 1;
        deepseek2_with(path, "expert_used_count", used)
    }

    /// A dense model (no `expert_count`) that says it uses 2 experts per token.
    pub fn experts_used_without_experts(path: &Path) -> io::Result<()> {
        let mut builder = fixture(Fixture::Llama)?;
        builder.set("llama.expert_used_count", 2u32);
        builder.write(path)
    }

    /// 16 experts of which none is used.
    pub fn no_experts_used(path: &Path) -> io::Result<()> {
        deepseek2_with(path, "expert_used_count", 0u32)
    }

    /// As many expert groups as experts (16).
    pub fn too_many_expert_groups(path: &Path) -> io::Result<()> {
        deepseek2_with(path, "expert_group_count", deepseek2_shape::EXPERTS as u32)
    }

    /// 16 experts in 3 groups.
    pub fn uneven_expert_groups(path: &Path) -> io::Result<()> {
        deepseek2_with(path, "expert_group_count", 3u32)
    }

    /// 4 expert groups of which none is used.
    pub fn no_expert_groups_used(path: &Path) -> io::Result<()> {
        deepseek2_with(path, "expert_group_used_count", 0u32)
    }

    /// 4 expert groups of which all 4 are used (llama.cpp wants fewer).
    pub fn all_expert_groups_used(path: &Path) -> io::Result<()> {
        let groups = deepseek2_shape::EXPERT_GROUPS;
        deepseek2_with(path, "expert_group_used_count", groups)
    }

    /// A dense model with 2 expert groups.
    pub fn expert_groups_without_experts(path: &Path) -> io::Result<()> {
        let mut builder = fixture(Fixture::Qwen2)?;
        builder.set("qwen2.expert_group_count", 2u32);
        builder.write(path)
    }

    /// Rope scaling `dynamic` (Hugging Face's dynamic NTK), which llama.cpp does not know.
    pub fn unknown_rope_scaling(path: &Path) -> io::Result<()> {
        deepseek2_with(path, "rope.scaling.type", "dynamic")
    }

    /// A `gemma3` of 62 layers (which llama.cpp takes for the 27B) without attention heads:
    /// llama.cpp divides the embedding width by the head count (SIGFPE).
    pub fn gemma3_without_heads(path: &Path) -> io::Result<()> {
        let mut builder = gemma3()?;
        builder.set("gemma3.block_count", 62u32);
        builder.set("gemma3.attention.head_count", 0u32);
        builder.write(path)
    }

    /// The last padding token's text (`[PAD129279]`) also at the id before it.
    pub fn duplicate_tokens(path: &Path) -> io::Result<()> {
        let mut builder = fixture(Fixture::DeepSeek2)?;
        let last = DEEPSEEK_VOCAB_SIZE - 1;
        for (key, value) in &mut builder.metadata {
            if let (true, Value::Array(_, tokens)) = (key == "tokenizer.ggml.tokens", value) {
                tokens[last - 1] = tokens[last].clone();
            }
        }
        builder.write(path)
    }

    /// Rope over the whole MLA key head (24 of 24 dimensions): no part is left without rope.
    pub fn rope_covers_mla_key_head(path: &Path) -> io::Result<()> {
        let head = deepseek2_shape::QK_NOPE + deepseek2_shape::QK_ROPE;
        deepseek2_with(path, "rope.dimension_count", head as u32)
    }

    /// Llama 3's rope frequency factors (`rope_freqs.weight`, half a head) stored in f16.
    pub fn rope_freqs_not_f32(path: &Path) -> io::Result<()> {
        let mut builder = fixture(Fixture::Llama)?;
        builder.push_tensor(Tensor::new(
            "rope_freqs.weight",
            &[8],
            TensorType::F16,
            &[1.0; 8],
        ));
        builder.write(path)
    }

    /// Keys of 32 per head but values of 16 (64 wide, 4 heads).
    pub fn key_head_not_value_head(path: &Path) -> io::Result<()> {
        let mut builder = fixture(Fixture::Qwen2)?;
        builder.set("qwen2.attention.key_length", 32u32);
        builder.write(path)
    }

    /// Rope over 8 of the 16 dimensions of a head (partial rope, which `qwen2` does not do).
    pub fn rope_not_whole_head(path: &Path) -> io::Result<()> {
        let mut builder = fixture(Fixture::Qwen2)?;
        builder.set("qwen2.rope.dimension_count", 8u32);
        builder.write(path)
    }

    /// An MLA key cache row of 41 where a token's compressed KV and rope part take 40.
    pub fn mla_key_not_cache_width(path: &Path) -> io::Result<()> {
        let width = deepseek2_shape::KV_LORA_RANK + deepseek2_shape::QK_ROPE + 1;
        deepseek2_with(path, "attention.key_length", width as u32)
    }

    /// Rope over 24 dimensions of a 16-wide head.
    pub fn rope_wider_than_head(path: &Path) -> io::Result<()> {
        let mut builder = gemma3()?;
        builder.set("gemma3.rope.dimension_count", 24u32);
        builder.write(path)
    }

    /// Rope over 15 dimensions (rope turns pairs).
    pub fn odd_rope_dimensions(path: &Path) -> io::Result<()> {
        let mut builder = gemma3()?;
        builder.set("gemma3.rope.dimension_count", 15u32);
        builder.write(path)
    }

    /// Expert gating function 7 (llama.cpp knows 0 to 4); it dies building the first graph.
    pub fn unknown_expert_gating(path: &Path) -> io::Result<()> {
        deepseek2_with(path, "expert_gating_func", 7u32)
    }

    /// Pooling type 7 (llama.cpp knows 0 to 4); it dies building an embeddings graph.
    pub fn unknown_pooling(path: &Path) -> io::Result<()> {
        let mut builder = fixture(Fixture::Qwen2)?;
        builder.set("qwen2.pooling_type", 7u32);
        builder.write(path)
    }

    /// Position of the u64 offset field of the tensor info starting at `info`.
    fn tensor_offset_field(bytes: &[u8], info: usize) -> usize {
        let name_len =
            u64::from_le_bytes(bytes[info..info + 8].try_into().expect("8 bytes")) as usize;
        let n_dims_at = info + 8 + name_len;
        let n_dims =
            u32::from_le_bytes(bytes[n_dims_at..n_dims_at + 4].try_into().expect("4 bytes"))
                as usize;
        n_dims_at + 4 + n_dims * 8 + 4
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_alignment() {
        let builder = Builder::new()
            .meta("general.architecture", "llama")
            .meta("a.u8", 1u8)
            .meta("a.i64", -5i64)
            .meta("a.f64", 0.5f64)
            .meta("a.bool", true)
            .meta("a.strings", Value::strings(["x", "yz"]))
            .tensor(Tensor::new("t", &[3], TensorType::F32, &[1.0, 2.0, 3.0]))
            .tensor(Tensor::new("u", &[32], TensorType::Q8_0, &[0.5; 32]));
        let (bytes, layout) = builder.to_bytes_with_layout();
        assert_eq!(&bytes[..4], b"GGUF");
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), 2);
        assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), 6);
        assert_eq!(layout.data_at % 32, 0);
        // second tensor starts at the first aligned offset after 12 bytes
        assert_eq!(bytes.len(), layout.data_at + 32 + 34 + 30);
        assert_eq!(
            f32::from_le_bytes(
                bytes[layout.data_at + 4..layout.data_at + 8]
                    .try_into()
                    .unwrap()
            )
            .to_bits(),
            2.0f32.to_bits()
        );
    }
}
