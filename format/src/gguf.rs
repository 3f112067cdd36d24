//! GGUF header reader and validator.
//!
//! Reads the header, metadata and tensor infos of a GGUF v2/v3 file — never the tensor data — and
//! checks everything llama.cpp would later trust: counts and lengths against the bytes the file
//! really has, known value and tensor types, shapes that cannot overflow, tensor ranges that are
//! aligned, inside the file and disjoint, and architecture hyper-parameters in sane ranges.
//! This is the guard in front of llama.cpp: a file that passes here is safe to hand to the engine
//! (a native crash on a malformed file would take the whole daemon down).
//!
//! The checks follow llama.cpp's own reader (`ggml/src/gguf.cpp`, `gguf_init_from_file_impl`) and
//! go further where it relies on later allocation failures (hard caps on element counts so that a
//! hostile header cannot make *us* allocate gigabytes).
//!
//! llama.cpp turns most bad values into a load error, but trusts some: it `GGML_ASSERT`s on them
//! (which aborts the process) or divides by them, while it loads the model or on its first
//! context or decode. `GgufFile::check_llama` refuses those, each rule naming the line of the
//! vendored llama.cpp (`llama-cpp-sys-2` 0.1.161) it stands for; the test fixtures in
//! `whale_tests::gguf::broken::LLAMA_ASSERTS` prove that each one aborts llama.cpp.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// `GGUF` read as little-endian bytes.
const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent (gguf.h `GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Tensor names are stored in a fixed `char[64]` by ggml (`GGML_MAX_NAME`), NUL included.
const MAX_TENSOR_NAME: u64 = 63;
/// ggml tensors have at most four dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;
/// Hard caps that bound our own memory use whatever the file size. Real models are far below:
/// `DeepSeek` V3's header is ~5 MB with ~390k array elements and ~1k tensors.
const MAX_HEADER_BYTES: u64 = 512 << 20;
const MAX_KV_COUNT: u64 = 1 << 20;
const MAX_TENSOR_COUNT: u64 = 1 << 20;
const MAX_STRING_BYTES: u64 = 64 << 20;
const MAX_ARRAY_ELEMENTS_TOTAL: u64 = 1 << 23;
/// Nested arrays are legal in GGUF but no model uses more than one level; cap recursion.
const MAX_ARRAY_DEPTH: u32 = 2;
/// Arrays up to this length are always kept: per-layer hyper-parameters (at most as many as
/// layers, see [`LLAMA_MAX_LAYERS`]). Longer ones (a tokenizer's tokens and merges) are read
/// and checked but kept only by [`GgufFile::open_full`]: 129k token strings would cost ~10 MB
/// per parse, which the allocator keeps long after they are freed.
pub const KEPT_ARRAY_LEN: u64 = 10_000;
/// The most layers llama.cpp can hold (`LLAMA_MAX_LAYERS` of `llama-hparams.h`).
pub const LLAMA_MAX_LAYERS: u64 = 512;
/// The most experts llama.cpp can route between (`LLAMA_MAX_EXPERTS` of `llama-hparams.h`).
pub const LLAMA_MAX_EXPERTS: u64 = 1024;
/// The `{arch}.rope.scaling.type` values llama.cpp knows (`LLAMA_ROPE_SCALING_TYPES`).
const ROPE_SCALING_TYPES: [&str; 4] = ["none", "linear", "yarn", "longrope"];
/// The largest `{arch}.expert_gating_func` llama.cpp knows (`llama_expert_gating_func_type`:
/// 0 none (the architecture's default), softmax, sigmoid, softmax of the weights, sqrt softplus).
const MAX_EXPERT_GATING_FUNC: u64 = 4;
/// The largest `{arch}.pooling_type` llama.cpp knows (`llama_pooling_type`: none, mean, cls,
/// last, rank); `u32::MAX` is -1, unspecified.
const MAX_POOLING_TYPE: u64 = 4;
/// The architectures whale targets, whose head and rope sizes are checked (see
/// [`GgufFile::check_heads`]).
const TARGET_ARCHITECTURES: [&str; 9] = [
    "llama",
    "deepseek",
    "deepseek2",
    "deepseek32",
    "qwen2",
    "qwen3",
    "qwen2moe",
    "qwen3moe",
    "gemma3",
];
/// The key of the token list, whose texts llama.cpp maps back to ids.
const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
/// Tensors that llama.cpp applies as rope frequency factors (`GGML_OP_ROPE` in
/// `llama-arch.cpp`'s tensor infos).
const ROPE_FACTOR_TENSORS: [&str; 3] = [
    "rope_freqs.weight",
    "rope_factors_long.weight",
    "rope_factors_short.weight",
];

/// Everything that can be wrong with a GGUF file; each variant says what and where.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read GGUF file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read error at byte {offset} while reading {what}: {source}")]
    Read {
        what: String,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("not a GGUF file: magic is {found:?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    #[error(
        "file truncated: {what} at byte {offset} needs {needed} bytes but only {remaining} remain"
    )]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        remaining: u64,
    },
    #[error("{what} is {value}, above the limit of {limit}")]
    TooLarge {
        what: String,
        value: u64,
        limit: u64,
    },
    #[error("key '{key}' has unknown value type {value_type}")]
    UnknownValueType { key: String, value_type: u32 },
    #[error("key '{key}' must be {expected}")]
    WrongKeyType { key: String, expected: &'static str },
    #[error("empty key for metadata entry {index}")]
    EmptyKey { index: u64 },
    #[error("duplicate metadata key '{0}'")]
    DuplicateKey(String),
    #[error("tensor {index} has an empty name")]
    EmptyTensorName { index: u64 },
    #[error("duplicate tensor name '{0}'")]
    DuplicateTensor(String),
    #[error("tensor '{tensor}' has {n_dims} dimensions; must be 1 to {MAX_DIMS}")]
    BadDimCount { tensor: String, n_dims: u32 },
    #[error("tensor '{tensor}' has a zero-length dimension {dim}")]
    ZeroDim { tensor: String, dim: usize },
    #[error("tensor '{tensor}' shape {dims:?} overflows")]
    ShapeOverflow { tensor: String, dims: Vec<u64> },
    #[error("tensor '{tensor}' has unknown ggml type {ggml_type}")]
    UnknownTensorType { tensor: String, ggml_type: u32 },
    #[error(
        "tensor '{tensor}' rows of {row} elements are not a multiple of the {type_name} block size {block}"
    )]
    RowNotBlockAligned {
        tensor: String,
        row: u64,
        type_name: &'static str,
        block: u64,
    },
    #[error("general.alignment {0} is not a power of two")]
    BadAlignment(u64),
    #[error(
        "tensor '{tensor}' data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    UnalignedOffset {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor '{tensor}' ends at byte {end} but the file has {file_size} bytes")]
    TensorPastEnd {
        tensor: String,
        end: u64,
        file_size: u64,
    },
    #[error("tensors '{first}' and '{second}' overlap in the data section")]
    TensorOverlap { first: String, second: String },
    #[error("hyper-parameter '{key}' is {value}, outside the sane range {min}..={max}")]
    Hparam {
        key: String,
        value: u64,
        min: u64,
        max: u64,
    },
    /// A value that llama.cpp asserts on or divides by while loading the model or on its first
    /// context or decode: it would abort the whole process instead of failing with an error.
    /// `rule` says what llama.cpp needs.
    #[error("{key} is {value}; llama.cpp {rule}")]
    Unsupported {
        key: String,
        value: String,
        rule: String,
    },
    #[error(
        "{TOKENS_KEY} lists the same token at ids {first} and {second}; llama.cpp needs each token once"
    )]
    DuplicateToken { first: u64, second: u64 },
}

/// A metadata value. Arrays keep their elements, except that arrays longer than
/// [`KEPT_ARRAY_LEN`] are [`MetaValue::LongArray`] unless the file was opened with
/// [`GgufFile::open_full`]. Use [`MetaValue::summary`] for display.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    /// An array longer than [`KEPT_ARRAY_LEN`], read and checked but not kept: its length.
    LongArray(u64),
}

impl MetaValue {
    /// Any non-negative integer as `u64` (GGUF writers differ in which int width they use).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number of elements of an array, kept or not.
    pub fn array_len(&self) -> Option<u64> {
        match self {
            Self::Array(items) => Some(items.len() as u64),
            Self::LongArray(len) => Some(*len),
            _ => None,
        }
    }

    /// Short display form: arrays show their length and first elements only.
    pub fn summary(&self) -> String {
        match self {
            Self::LongArray(len) => format!("[…] ({len} items)"),
            Self::Array(items) => {
                let head: Vec<String> = items.iter().take(3).map(Self::summary).collect();
                let more = if items.len() > 3 { ", …" } else { "" };
                format!("[{}{more}] ({} items)", head.join(", "), items.len())
            }
            Self::String(s) if s.chars().count() > 60 => {
                format!("{:?}…", s.chars().take(60).collect::<String>())
            }
            Self::String(s) => format!("{s:?}"),
            Self::Bool(b) => b.to_string(),
            Self::F32(v) => v.to_string(),
            Self::F64(v) => v.to_string(),
            other => other.as_u64().map_or_else(
                || match other {
                    Self::I8(v) => v.to_string(),
                    Self::I16(v) => v.to_string(),
                    Self::I32(v) => v.to_string(),
                    Self::I64(v) => v.to_string(),
                    _ => String::new(),
                },
                |v| v.to_string(),
            ),
        }
    }

    /// JSON form, as Ollama's `/api/show` prints metadata.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Self::U8(v) => (*v).into(),
            Self::I8(v) => (*v).into(),
            Self::U16(v) => (*v).into(),
            Self::I16(v) => (*v).into(),
            Self::U32(v) => (*v).into(),
            Self::I32(v) => (*v).into(),
            Self::U64(v) => (*v).into(),
            Self::I64(v) => (*v).into(),
            Self::F32(v) => {
                serde_json::Number::from_f64(f64::from(*v)).map_or(Value::Null, Value::Number)
            }
            Self::F64(v) => serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number),
            Self::Bool(v) => (*v).into(),
            Self::String(s) => s.clone().into(),
            Self::Array(items) => Value::Array(items.iter().map(Self::to_json).collect()),
            Self::LongArray(_) => Value::Array(Vec::new()),
        }
    }
}

/// One tensor's header entry. `offset` is relative to [`GgufFile::data_offset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub offset: u64,
    pub size_bytes: u64,
}

impl TensorInfo {
    pub fn element_count(&self) -> u64 {
        // Validated at parse time not to overflow.
        self.dims.iter().product()
    }

    pub fn type_name(&self) -> &'static str {
        GgmlType::from_id(self.ggml_type).map_or("unknown", |t| t.name)
    }
}

/// Storage of one ggml tensor type: `block` elements take `bytes` bytes.
/// Values from `ggml_type_traits` in `ggml/src/ggml.c` with block structs of `ggml-common.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType {
    pub id: u32,
    pub name: &'static str,
    pub block: u64,
    pub bytes: u64,
}

const fn ty(id: u32, name: &'static str, block: u64, bytes: u64) -> GgmlType {
    GgmlType {
        id,
        name,
        block,
        bytes,
    }
}

/// Every tensor type a current GGUF may contain (ids 4, 5, 31–33, 36–38 were removed upstream).
pub const GGML_TYPES: &[GgmlType] = &[
    ty(0, "F32", 1, 4),
    ty(1, "F16", 1, 2),
    ty(2, "Q4_0", 32, 18),
    ty(3, "Q4_1", 32, 20),
    ty(6, "Q5_0", 32, 22),
    ty(7, "Q5_1", 32, 24),
    ty(8, "Q8_0", 32, 34),
    ty(9, "Q8_1", 32, 36),
    ty(10, "Q2_K", 256, 84),
    ty(11, "Q3_K", 256, 110),
    ty(12, "Q4_K", 256, 144),
    ty(13, "Q5_K", 256, 176),
    ty(14, "Q6_K", 256, 210),
    ty(15, "Q8_K", 256, 292),
    ty(16, "IQ2_XXS", 256, 66),
    ty(17, "IQ2_XS", 256, 74),
    ty(18, "IQ3_XXS", 256, 98),
    ty(19, "IQ1_S", 256, 50),
    ty(20, "IQ4_NL", 32, 18),
    ty(21, "IQ3_S", 256, 110),
    ty(22, "IQ2_S", 256, 82),
    ty(23, "IQ4_XS", 256, 136),
    ty(24, "I8", 1, 1),
    ty(25, "I16", 1, 2),
    ty(26, "I32", 1, 4),
    ty(27, "I64", 1, 8),
    ty(28, "F64", 1, 8),
    ty(29, "IQ1_M", 256, 56),
    ty(30, "BF16", 1, 2),
    ty(34, "TQ1_0", 256, 54),
    ty(35, "TQ2_0", 256, 66),
    ty(39, "MXFP4", 32, 17),
    ty(40, "NVFP4", 64, 36),
    ty(41, "Q1_0", 128, 18),
    ty(42, "Q2_0", 64, 18),
];

impl GgmlType {
    pub fn from_id(id: u32) -> Option<Self> {
        GGML_TYPES.iter().copied().find(|t| t.id == id)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        GGML_TYPES
            .iter()
            .copied()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }

    /// Bytes for `elements` values; `None` if not a whole number of blocks or on overflow.
    pub fn size_of(self, elements: u64) -> Option<u64> {
        if !elements.is_multiple_of(self.block) {
            return None;
        }
        (elements / self.block).checked_mul(self.bytes)
    }
}

/// `general.file_type` (llama.h `enum llama_ftype`) to the names Ollama prints as
/// `quantization_level`.
fn file_type_name(file_type: u64) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4",
        39 => "NVFP4",
        40 => "Q1_0",
        41 => "Q2_0",
        _ => return None,
    })
}

/// A parsed and validated GGUF header.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute byte offset of the (aligned) tensor data section.
    pub data_offset: u64,
    pub file_size: u64,
}

impl GgufFile {
    /// Reads and validates the header of the file at `path`; reads nothing past the header,
    /// so a 400 GB model costs a few MB of reads. Arrays longer than [`KEPT_ARRAY_LEN`] are
    /// checked but kept as their length only.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        Self::open_with(path, false)
    }

    /// [`GgufFile::open`], keeping every array (for `/api/show` with `verbose`).
    pub fn open_full(path: &Path) -> Result<Self, GgufError> {
        Self::open_with(path, true)
    }

    fn open_with(path: &Path, keep_long_arrays: bool) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let file_size = file.metadata().map_err(io)?.len();
        let reader = BufReader::with_capacity(1 << 20, file);
        Self::parse_with(reader, file_size, keep_long_arrays)
    }

    /// Parses from any reader positioned at the start of a GGUF file of `file_size` bytes, as
    /// [`GgufFile::open`] does.
    pub fn parse<R: Read>(reader: R, file_size: u64) -> Result<Self, GgufError> {
        Self::parse_with(reader, file_size, false)
    }

    /// [`GgufFile::parse`], keeping every array, as [`GgufFile::open_full`] does.
    pub fn parse_full<R: Read>(reader: R, file_size: u64) -> Result<Self, GgufError> {
        Self::parse_with(reader, file_size, true)
    }

    fn parse_with<R: Read>(
        reader: R,
        file_size: u64,
        keep_long_arrays: bool,
    ) -> Result<Self, GgufError> {
        let mut r = HeaderReader {
            inner: reader,
            pos: 0,
            file_size,
            array_elements: 0,
            keep_long_arrays,
            tokens: None,
        };
        let magic: [u8; 4] = r.array("magic")?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let tensor_count = r.u64("tensor count")?;
        let kv_count = r.u64("metadata count")?;
        // Each tensor info takes at least 32 bytes, each key/value at least 13.
        r.check_count("tensor count", tensor_count, 32, MAX_TENSOR_COUNT)?;
        r.check_count("metadata count", kv_count, 13, MAX_KV_COUNT)?;

        let mut metadata = BTreeMap::new();
        for index in 0..kv_count {
            let key = r.string("metadata key")?;
            if key.is_empty() {
                return Err(GgufError::EmptyKey { index });
            }
            let value_type = r.u32("value type")?;
            let value = if key == TOKENS_KEY {
                r.token_list(&key, value_type)?
            } else {
                r.value(&key, value_type, 0)?
            };
            if metadata.insert(key.clone(), value).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(MetaValue::U32(a)) => u64::from(*a),
            Some(_) => {
                return Err(GgufError::WrongKeyType {
                    key: "general.alignment".into(),
                    expected: "a u32",
                });
            }
        };
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(GgufError::BadAlignment(alignment));
        }

        let mut tensors = Vec::with_capacity(tensor_count as usize);
        let mut names = HashSet::with_capacity(tensor_count as usize);
        for index in 0..tensor_count {
            let tensor = r.tensor_info(index)?;
            if !names.insert(tensor.name.clone()) {
                return Err(GgufError::DuplicateTensor(tensor.name));
            }
            tensors.push(tensor);
        }

        let data_offset = r.pos.next_multiple_of(alignment);
        let gguf = Self {
            version,
            metadata,
            tensors,
            data_offset,
            file_size,
        };
        gguf.check_tensor_ranges(alignment)?;
        gguf.check_hparams()?;
        gguf.check_llama()?;
        Ok(gguf)
    }

    /// Tensor data must be aligned, inside the file and disjoint.
    fn check_tensor_ranges(&self, alignment: u64) -> Result<(), GgufError> {
        let mut ranges: Vec<(u64, u64, &str)> = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            if t.offset % alignment != 0 {
                return Err(GgufError::UnalignedOffset {
                    tensor: t.name.clone(),
                    offset: t.offset,
                    alignment,
                });
            }
            let end = self
                .data_offset
                .checked_add(t.offset)
                .and_then(|start| start.checked_add(t.size_bytes));
            match end {
                Some(end) if end <= self.file_size => {
                    ranges.push((t.offset, t.offset + t.size_bytes, &t.name));
                }
                _ => {
                    return Err(GgufError::TensorPastEnd {
                        tensor: t.name.clone(),
                        end: end.unwrap_or(u64::MAX),
                        file_size: self.file_size,
                    });
                }
            }
        }
        ranges.sort_unstable();
        for pair in ranges.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(GgufError::TensorOverlap {
                    first: pair[0].2.to_owned(),
                    second: pair[1].2.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Architecture hyper-parameters that size llama.cpp allocations must be in sane ranges,
    /// so that a hostile file cannot ask llama.cpp for a 2^40-token context. The layer and
    /// expert counts have llama.cpp's own, tighter limits: see [`GgufFile::check_llama`].
    fn check_hparams(&self) -> Result<(), GgufError> {
        const LIMITS: &[(&str, u64, u64)] = &[
            ("context_length", 1, 1 << 24),
            ("embedding_length", 1, 1 << 20),
            ("feed_forward_length", 0, 1 << 22),
            ("expert_feed_forward_length", 0, 1 << 22),
            ("attention.head_count", 0, 1 << 16),
            ("attention.head_count_kv", 0, 1 << 16),
            ("attention.key_length", 0, 1 << 16),
            ("attention.value_length", 0, 1 << 16),
            ("attention.key_length_mla", 0, 1 << 16),
            ("attention.value_length_mla", 0, 1 << 16),
            ("attention.kv_lora_rank", 0, 1 << 16),
            ("attention.q_lora_rank", 0, 1 << 16),
            ("attention.sliding_window", 0, 1 << 24),
            ("rope.dimension_count", 0, 1 << 16),
            ("expert_shared_count", 0, 1 << 16),
            ("leading_dense_block_count", 0, 10_000),
            ("vocab_size", 0, 1 << 24),
        ];
        let Some(arch) = self.architecture() else {
            return Ok(());
        };
        for &(suffix, min, max) in LIMITS {
            let key = format!("{arch}.{suffix}");
            for n in self.arch_values(suffix)? {
                if n < min || n > max {
                    return Err(GgufError::Hparam {
                        key,
                        value: n,
                        min,
                        max,
                    });
                }
            }
        }
        Ok(())
    }

    /// Refuses what the vendored llama.cpp asserts on (`GGML_ASSERT`, which aborts the
    /// process) or divides by while it loads a model, makes its first context and decodes its
    /// first batch: on every architecture's path, and on the paths of the ones whale targets
    /// ([`TARGET_ARCHITECTURES`]; other architectures' own code is not covered). Values it
    /// merely refuses (a wrong type, an array of the wrong length, a tensor of the wrong shape)
    /// are left to its load error.
    fn check_llama(&self) -> Result<(), GgufError> {
        self.check_rope_factor_types()?;
        let Some(arch) = self.architecture() else {
            return Ok(());
        };
        self.check_layers(arch)?;
        self.check_experts(arch)?;
        self.check_rope_scaling(arch)?;
        self.check_heads(arch)?;
        self.check_graph_choices(arch)
    }

    /// `llama_model_base::load_hparams` (`llama-model.cpp`).
    fn check_layers(&self, arch: &str) -> Result<(), GgufError> {
        // Required: without it llama.cpp fails the load.
        let Some(layers) = self.arch_u64("block_count") else {
            return Ok(());
        };
        // :1330 GGML_ASSERT(hparams.n_layer_all > 0 && hparams.n_layer_all <= LLAMA_MAX_LAYERS)
        if !(1..=LLAMA_MAX_LAYERS).contains(&layers) {
            return Err(unsupported(
                format!("{arch}.block_count"),
                layers,
                format!("supports 1 to {LLAMA_MAX_LAYERS} layers"),
            ));
        }
        // :1332 GGML_ASSERT(hparams.n_layer_nextn <= hparams.n_layer_all), and for WavTokenizer
        // :1356-1357 GGML_ASSERT(hparams.posnet.n_layer <= hparams.n_layer_all) (convnext alike)
        let mut parts = vec!["nextn_predict_layers"];
        if arch == "wavtokenizer-dec" {
            parts.extend(["posnet.block_count", "convnext.block_count"]);
        }
        for part in parts {
            if let Some(n) = self.arch_u64(part).filter(|&n| n > layers) {
                return Err(unsupported(
                    format!("{arch}.{part}"),
                    n,
                    format!("needs at most {arch}.block_count ({layers})"),
                ));
            }
        }
        Ok(())
    }

    /// The expert counts, `llama_model_base::load_hparams` (`llama-model.cpp:1363-1376`).
    fn check_experts(&self, arch: &str) -> Result<(), GgufError> {
        let key = |suffix: &str| format!("{arch}.{suffix}");
        let mut experts = self.arch_u64("expert_count").unwrap_or(0);
        // A scalar for every layer or one value per layer; llama.cpp checks the largest.
        let mut used = self.arch_values("expert_used_count")?.max().unwrap_or(0);
        let groups = self.arch_u64("expert_group_count").unwrap_or(0);
        let groups_used = self.arch_u64("expert_group_used_count").unwrap_or(0);
        // :1339 these two architectures read one expert as none
        if matches!(arch, "hunyuan-dense" | "hunyuan_vl") && experts <= 1 {
            (experts, used) = (0, 0);
        }
        // :1363 GGML_ASSERT(hparams.n_expert <= LLAMA_MAX_EXPERTS)
        if experts > LLAMA_MAX_EXPERTS {
            return Err(unsupported(
                key("expert_count"),
                experts,
                format!("supports at most {LLAMA_MAX_EXPERTS} experts"),
            ));
        }
        // :1364 GGML_ASSERT(n_expert_used_max <= hparams.n_expert) (an absent count is 0)
        if used > experts {
            return Err(unsupported(
                key("expert_used_count"),
                used,
                format!("needs at most {} ({experts})", key("expert_count")),
            ));
        }
        if experts == 0 {
            // :1375 GGML_ASSERT(hparams.n_expert_groups == 0)
            if groups > 0 {
                return Err(unsupported(
                    key("expert_group_count"),
                    groups,
                    format!("needs 0 without experts ({} is 0)", key("expert_count")),
                ));
            }
            return Ok(());
        }
        // :1366 GGML_ASSERT(n_expert_used_max > 0)
        if used == 0 {
            return Err(unsupported(
                key("expert_used_count"),
                0,
                format!("needs at least 1 with {experts} experts"),
            ));
        }
        // :1367 GGML_ASSERT(hparams.n_expert_groups < hparams.n_expert)
        if groups >= experts {
            return Err(unsupported(
                key("expert_group_count"),
                groups,
                format!("needs fewer groups than experts ({experts})"),
            ));
        }
        if groups > 1 {
            // :1369 GGML_ASSERT(hparams.n_expert % hparams.n_expert_groups == 0)
            if !experts.is_multiple_of(groups) {
                return Err(unsupported(
                    key("expert_group_count"),
                    groups,
                    format!("needs it to divide {} ({experts})", key("expert_count")),
                ));
            }
            // :1370-1371 GGML_ASSERT(hparams.n_group_used > 0),
            // GGML_ASSERT(hparams.n_group_used < hparams.n_expert_groups)
            if groups_used == 0 || groups_used >= groups {
                return Err(unsupported(
                    key("expert_group_used_count"),
                    groups_used,
                    format!("needs 1 to {} of the {groups} expert groups", groups - 1),
                ));
            }
        }
        Ok(())
    }

    /// `llama-model.cpp:1422` `GGML_ASSERT(hparams.rope_scaling_type_train !=
    /// LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED)`: an unknown name (another type is a load error).
    fn check_rope_scaling(&self, arch: &str) -> Result<(), GgufError> {
        match self.arch_value("rope.scaling.type") {
            Some(MetaValue::String(name)) if !ROPE_SCALING_TYPES.contains(&name.as_str()) => {
                Err(unsupported(
                    format!("{arch}.rope.scaling.type"),
                    format!("{name:?}"),
                    format!("knows {}", ROPE_SCALING_TYPES.join(", ")),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Head and rope sizes, for the architectures whale targets. llama.cpp derives them from
    /// the first layer's head count and builds every layer's graph on them.
    fn check_heads(&self, arch: &str) -> Result<(), GgufError> {
        if !TARGET_ARCHITECTURES.contains(&arch) {
            return Ok(());
        }
        let key = |suffix: &str| format!("{arch}.{suffix}");
        let heads = self.head_sizes(arch)?;
        if heads.count == 0 {
            // models/gemma3.cpp:30 `hparams.n_embd / hparams.n_head(0)` for 62 layers (27B):
            // a division by zero (SIGFPE); models/deepseek2.cpp:77 asserts on the head split.
            // (The others fail to load: their attention tensors would be 0 wide.)
            return match arch {
                "gemma3" => Err(unsupported(
                    key("attention.head_count"),
                    0,
                    format!("divides {} by it", key("embedding_length")),
                )),
                "deepseek2" | "deepseek32" => Err(unsupported(
                    key("attention.head_count"),
                    0,
                    "needs at least 1 head to split into rope and non-rope parts".to_owned(),
                )),
                _ => Ok(()),
            };
        }
        match arch {
            "deepseek2" => self.check_mla(arch, &heads)?,
            "deepseek32" => {
                self.check_mla(arch, &heads)?;
                self.check_indexer(arch, &heads)?;
            }
            "gemma3" => {
                // ggml-cpu/ops.cpp:6354 GGML_ASSERT(n_dims <= ne0), at the first decode
                check_rope_in_head(&heads.rope, &heads.key)?;
                if self.arch_u64("attention.sliding_window").unwrap_or(0) > 0 {
                    check_rope_in_head(&heads.rope_swa, &heads.key_swa)?;
                    check_even_rope(&heads.rope_swa)?;
                }
            }
            // models/<arch>.cpp GGML_ASSERT(n_embd_head == hparams.n_embd_head_k()) and
            // GGML_ASSERT(n_embd_head == n_rot) (n_embd_head is the value head), at the first
            // context: one head size for keys, values and rope.
            _ => {
                if heads.key.value != heads.value.value {
                    return Err(unsupported(
                        heads.key.source.clone(),
                        heads.key.value,
                        format!(
                            "needs the value head size ({}, {})",
                            heads.value.value, heads.value.source
                        ),
                    ));
                }
                check_rope_in_head(&heads.rope, &heads.key)?;
                if heads.rope.value != heads.key.value {
                    return Err(unsupported(
                        heads.rope.source.clone(),
                        heads.rope.value,
                        format!(
                            "needs the whole head ({}, {})",
                            heads.key.value, heads.key.source
                        ),
                    ));
                }
            }
        }
        // ggml-cpu/ops.cpp:6355 GGML_ASSERT(n_dims % 2 == 0), at the first decode
        check_even_rope(&heads.rope)
    }

    /// The sizes `llama_model_base::load_hparams` derives for layer 0.
    fn head_sizes(&self, arch: &str) -> Result<HeadSizes, GgufError> {
        let key = |suffix: &str| format!("{arch}.{suffix}");
        let count = self
            .arch_values("attention.head_count")?
            .next()
            .unwrap_or(0);
        let embd = self.arch_u64("embedding_length").unwrap_or(0);
        let size = |suffix: &str, default: &Size| match self.arch_u64(suffix) {
            Some(value) => Size {
                value,
                source: key(suffix),
            },
            None => default.clone(),
        };
        let head = Size {
            value: embd.checked_div(count).unwrap_or(0),
            source: format!(
                "{} / {}",
                key("embedding_length"),
                key("attention.head_count")
            ),
        };
        let key_size = size("attention.key_length", &head);
        let rope = size("rope.dimension_count", &key_size);
        let key_swa = size("attention.key_length_swa", &key_size);
        Ok(HeadSizes {
            count,
            value: size("attention.value_length", &head),
            rope_swa: size("rope.dimension_count_swa", &rope),
            key: key_size,
            rope,
            key_swa,
        })
    }

    /// `deepseek2` splits each key head into a part without rope and one with, and caches one
    /// row per token: the compressed KV and the rope part (MLA), or every head (without MLA).
    /// `DeepSeek` V3.2's lightning indexer: its heads hold the rope part first
    /// (`models/deepseek32.cpp:180` `GGML_ASSERT(n_rot <= n_embd_indexer_head)`), and llama.cpp
    /// rotates them with a Hadamard matrix 64 wide or a power-of-two multiple
    /// (`llama-kv-cache.cpp:341`; another size fails `ggml_can_mul_mat` at the first decode).
    fn check_indexer(&self, arch: &str, heads: &HeadSizes) -> Result<(), GgufError> {
        let key = format!("{arch}.attention.indexer.key_length");
        let size = self.get_u64(&key).unwrap_or(0);
        if size < heads.rope.value {
            return Err(unsupported(
                key,
                size,
                format!(
                    "needs room for the rope part {} ({})",
                    heads.rope.source, heads.rope.value
                ),
            ));
        }
        if size == 0 || !size.is_multiple_of(64) {
            return Err(unsupported(
                key,
                size,
                "needs a multiple of 64 (llama.cpp rotates indexer keys 64 at a time)".to_owned(),
            ));
        }
        Ok(())
    }

    fn check_mla(&self, arch: &str, heads: &HeadSizes) -> Result<(), GgufError> {
        let key = |suffix: &str| format!("{arch}.{suffix}");
        let mla = self.arch_u64("attention.key_length_mla").unwrap_or(0);
        let is_mla = mla != 0 && self.arch_u64("attention.value_length_mla").unwrap_or(0) != 0;
        let head = if is_mla {
            Size {
                value: mla,
                source: key("attention.key_length_mla"),
            }
        } else {
            heads.key.clone()
        };
        // models/deepseek2.cpp:77 GGML_ASSERT(n_embd_head_qk_nope >= 1), before any tensor
        if heads.rope.value >= head.value {
            return Err(unsupported(
                heads.rope.source.clone(),
                heads.rope.value,
                format!(
                    "needs it below the key head size {} ({})",
                    head.source, head.value
                ),
            ));
        }
        // ggml.c:4014 GGML_ASSERT(a->ne[0] == b->ne[0]) in `ggml_set_rows`, at the first
        // context: a token's keys are stored in a cache row of `key_length` × `head_count_kv`
        let lora = self.arch_u64("attention.kv_lora_rank").unwrap_or(0);
        let head_counts: Vec<u64> = self.arch_values("attention.head_count")?.collect();
        let mut kv_heads: Vec<u64> = self.arch_values("attention.head_count_kv")?.collect();
        if kv_heads.is_empty() {
            kv_heads.clone_from(&head_counts);
        }
        for (layer, &kv) in kv_heads.iter().enumerate() {
            if is_mla {
                // one row: the compressed KV and the rope part
                let stored = lora + heads.rope.value;
                if heads.key.value * kv != stored {
                    return Err(unsupported(
                        heads.key.source.clone(),
                        heads.key.value,
                        format!(
                            "caches it × {} ({kv}) per token but stores {} + {} ({stored})",
                            key("attention.head_count_kv"),
                            key("attention.kv_lora_rank"),
                            heads.rope.source,
                        ),
                    ));
                }
            } else {
                // every head
                let count = head_counts.get(layer).copied().unwrap_or(heads.count);
                if kv != count {
                    return Err(unsupported(
                        key("attention.head_count_kv"),
                        kv,
                        format!(
                            "needs {} ({count}) without MLA",
                            key("attention.head_count")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Values llama.cpp reads at load but switches on only when it builds a graph, which its
    /// first context does (`default: GGML_ABORT` in `llama-graph.cpp`).
    fn check_graph_choices(&self, arch: &str) -> Result<(), GgufError> {
        // :2109 `build_moe_ffn`, every MoE architecture that reads it (0: its default)
        if let Some(n) = self
            .arch_u64("expert_gating_func")
            .filter(|&n| n > MAX_EXPERT_GATING_FUNC)
        {
            return Err(unsupported(
                format!("{arch}.expert_gating_func"),
                n,
                format!("knows 0 to {MAX_EXPERT_GATING_FUNC}"),
            ));
        }
        // :3887 `build_pooling`, for an embeddings context
        if let Some(n) = self
            .arch_u64("pooling_type")
            .filter(|&n| n > MAX_POOLING_TYPE && n != u64::from(u32::MAX))
        {
            return Err(unsupported(
                format!("{arch}.pooling_type"),
                n,
                format!("knows 0 to {MAX_POOLING_TYPE}"),
            ));
        }
        Ok(())
    }

    /// Rope frequency factors are checked against a rope op when llama.cpp picks their buffer
    /// (`llama-model-loader.cpp:996` `weight_buft_supported`), and `ggml.c:4304`
    /// `GGML_ASSERT(c->type == GGML_TYPE_F32)` holds them to f32.
    fn check_rope_factor_types(&self) -> Result<(), GgufError> {
        let f32 = GgmlType::from_name("F32").map(|t| t.id);
        match self
            .tensors
            .iter()
            .find(|t| ROPE_FACTOR_TENSORS.contains(&t.name.as_str()) && Some(t.ggml_type) != f32)
        {
            Some(t) => Err(unsupported(
                format!("tensor '{}'", t.name),
                t.type_name(),
                "needs rope frequency factors in F32".to_owned(),
            )),
            None => Ok(()),
        }
    }

    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// Any integer-typed value as `u64`.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.metadata.get(key)?.as_u64()
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.metadata.get(key)?.as_f64()
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key)?.as_str()
    }

    /// `{arch}.{suffix}` as an integer, e.g. `arch_u64("block_count")`.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        self.get_u64(&format!("{}.{suffix}", self.architecture()?))
    }

    /// `{arch}.{suffix}`, raw (for keys that may be per-layer arrays).
    pub fn arch_value(&self, suffix: &str) -> Option<&MetaValue> {
        self.metadata
            .get(&format!("{}.{suffix}", self.architecture()?))
    }

    /// `{arch}.{suffix}` as integers: none if absent, one for a scalar, one per layer for an
    /// array (`head_count_kv`, `feed_forward_length`, … may be either).
    fn arch_values(&self, suffix: &str) -> Result<impl Iterator<Item = u64>, GgufError> {
        let key = format!("{}.{suffix}", self.architecture().unwrap_or_default());
        let values = match self.metadata.get(&key) {
            None => Vec::new(),
            Some(MetaValue::Array(items)) if items.len() as u64 > KEPT_ARRAY_LEN => {
                return Err(too_long_per_layer(&key, items.len() as u64));
            }
            Some(MetaValue::LongArray(len)) => return Err(too_long_per_layer(&key, *len)),
            Some(MetaValue::Array(items)) => items.iter().collect(),
            Some(other) => vec![other],
        };
        let ints = values
            .into_iter()
            .map(|value| {
                value.as_u64().ok_or_else(|| GgufError::WrongKeyType {
                    key: key.clone(),
                    expected: "a non-negative integer",
                })
            })
            .collect::<Result<Vec<u64>, _>>()?;
        Ok(ints.into_iter())
    }

    /// Bytes of all tensor data (what loading the weights costs).
    pub fn weights_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.size_bytes).sum()
    }

    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::element_count).sum()
    }

    /// The quantization name (`Q4_K_M`, …) from `general.file_type`.
    pub fn file_type_name(&self) -> Option<&'static str> {
        file_type_name(self.get_u64("general.file_type")?)
    }

    /// Parameter count as Ollama prints it: `1.5B`, `671B`, `268.10M`.
    pub fn parameter_size_label(&self) -> String {
        human_number(self.parameter_count())
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.get_str("tokenizer.chat_template")
    }

    /// Metadata in the shape of Ollama's `/api/show` `model_info`: every key, plus
    /// `general.parameter_count`; unless `verbose`, arrays longer than 5 become `[]`
    /// (so the tokenizer's token list is not sent).
    pub fn model_info_json(&self, verbose: bool) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        for (key, value) in &self.metadata {
            let json = match value {
                MetaValue::Array(items) if !verbose && items.len() > 5 => {
                    serde_json::Value::Array(Vec::new())
                }
                other => other.to_json(),
            };
            map.insert(key.clone(), json);
        }
        map.insert(
            "general.parameter_count".into(),
            self.parameter_count().into(),
        );
        map
    }
}

/// A value llama.cpp would abort on; see [`GgufError::Unsupported`].
fn unsupported(key: String, value: impl std::fmt::Display, rule: String) -> GgufError {
    GgufError::Unsupported {
        key,
        value: value.to_string(),
        rule,
    }
}

/// A size llama.cpp uses and the key it comes from (or how it is derived).
#[derive(Debug, Clone)]
struct Size {
    value: u64,
    source: String,
}

/// Head and rope sizes of layer 0 (see [`GgufFile::head_sizes`]).
struct HeadSizes {
    count: u64,
    key: Size,
    value: Size,
    rope: Size,
    key_swa: Size,
    rope_swa: Size,
}

/// `ggml-cpu/ops.cpp:6354` `GGML_ASSERT(n_dims <= ne0)`: rope turns at most a whole head.
fn check_rope_in_head(rope: &Size, head: &Size) -> Result<(), GgufError> {
    if rope.value > head.value {
        return Err(unsupported(
            rope.source.clone(),
            rope.value,
            format!(
                "needs at most the head size ({}, {})",
                head.value, head.source
            ),
        ));
    }
    Ok(())
}

/// `ggml-cpu/ops.cpp:6355` `GGML_ASSERT(n_dims % 2 == 0)`: rope turns pairs of dimensions.
fn check_even_rope(rope: &Size) -> Result<(), GgufError> {
    if !rope.value.is_multiple_of(2) {
        return Err(unsupported(
            rope.source.clone(),
            rope.value,
            "needs an even number of rope dimensions".to_owned(),
        ));
    }
    Ok(())
}

/// A per-layer hyper-parameter array longer than any model's layer count.
fn too_long_per_layer(key: &str, len: u64) -> GgufError {
    GgufError::TooLarge {
        what: format!("per-layer array '{key}' length"),
        value: len,
        limit: KEPT_ARRAY_LEN,
    }
}

/// Ollama's `format.HumanNumber`: whole numbers without decimals, else one decimal for
/// billions and two for millions.
pub fn human_number(n: u64) -> String {
    const THOUSAND: u64 = 1_000;
    const MILLION: u64 = 1_000_000;
    const BILLION: u64 = 1_000_000_000;
    if n >= BILLION {
        let v = n as f64 / BILLION as f64;
        if n.is_multiple_of(BILLION) {
            format!("{v:.0}B")
        } else {
            format!("{v:.1}B")
        }
    } else if n >= MILLION {
        let v = n as f64 / MILLION as f64;
        if n.is_multiple_of(MILLION) {
            format!("{v:.0}M")
        } else {
            format!("{v:.2}M")
        }
    } else if n >= THOUSAND {
        format!("{:.0}K", n as f64 / THOUSAND as f64)
    } else {
        n.to_string()
    }
}

/// Sequential little-endian reader that knows how many bytes the file still has, so every
/// length is checked before anything is allocated.
struct HeaderReader<R> {
    inner: R,
    pos: u64,
    file_size: u64,
    array_elements: u64,
    /// Keep arrays longer than [`KEPT_ARRAY_LEN`] (else only their length).
    keep_long_arrays: bool,
    /// While the token list is read: each string read, kept or skipped, as a fingerprint.
    tokens: Option<TokenFingerprints>,
}

impl<R: Read> HeaderReader<R> {
    fn remaining(&self) -> u64 {
        self.file_size.saturating_sub(self.pos)
    }

    fn need(&self, what: &str, needed: u64) -> Result<(), GgufError> {
        if needed > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_owned(),
                offset: self.pos,
                needed,
                remaining: self.remaining(),
            });
        }
        if self.pos + needed > MAX_HEADER_BYTES {
            return Err(GgufError::TooLarge {
                what: "GGUF header".into(),
                value: self.pos + needed,
                limit: MAX_HEADER_BYTES,
            });
        }
        Ok(())
    }

    /// `count` items of at least `min_item_bytes` each must fit in the rest of the file.
    fn check_count(
        &self,
        what: &str,
        count: u64,
        min_item_bytes: u64,
        limit: u64,
    ) -> Result<(), GgufError> {
        if count > limit {
            return Err(GgufError::TooLarge {
                what: what.to_owned(),
                value: count,
                limit,
            });
        }
        self.need(what, count.saturating_mul(min_item_bytes))
    }

    fn fill(&mut self, what: &str, buf: &mut [u8]) -> Result<(), GgufError> {
        self.need(what, buf.len() as u64)?;
        self.inner.read_exact(buf).map_err(|source| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                GgufError::Truncated {
                    what: what.to_owned(),
                    offset: self.pos,
                    needed: buf.len() as u64,
                    remaining: 0,
                }
            } else {
                GgufError::Read {
                    what: what.to_owned(),
                    offset: self.pos,
                    source,
                }
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut buf = [0; N];
        self.fill(what, &mut buf)?;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A string's length, checked against the limit and the rest of the file.
    fn string_len(&mut self, what: &str) -> Result<u64, GgufError> {
        let len = self.u64(what)?;
        if len > MAX_STRING_BYTES {
            return Err(GgufError::TooLarge {
                what: format!("{what} length"),
                value: len,
                limit: MAX_STRING_BYTES,
            });
        }
        self.need(what, len)?;
        Ok(len)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.string_len(what)?;
        let mut buf = vec![0; len as usize];
        self.fill(what, &mut buf)?;
        if let Some(tokens) = &mut self.tokens {
            tokens.add(&buf);
        }
        Ok(match String::from_utf8(buf) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Reads past a string without keeping it (a token is still fingerprinted).
    fn skip_string(&mut self, what: &str) -> Result<(), GgufError> {
        if self.tokens.is_some() {
            self.string(what)?;
            return Ok(());
        }
        let len = self.string_len(what)?;
        let skipped = std::io::copy(&mut (&mut self.inner).take(len), &mut std::io::sink())
            .map_err(|source| GgufError::Read {
                what: what.to_owned(),
                offset: self.pos,
                source,
            })?;
        if skipped < len {
            return Err(GgufError::Truncated {
                what: what.to_owned(),
                offset: self.pos,
                needed: len,
                remaining: skipped,
            });
        }
        self.pos += len;
        Ok(())
    }

    /// The token list, whose texts must differ: llama.cpp maps each text back to its id and
    /// `llama-vocab.cpp:2578` `GGML_ASSERT(id_to_token.size() == token_to_id.size())`.
    fn token_list(&mut self, key: &str, value_type: u32) -> Result<MetaValue, GgufError> {
        self.tokens = Some(TokenFingerprints::default());
        let value = self.value(key, value_type, 0);
        let tokens = self.tokens.take().expect("set above");
        let value = value?;
        if let Some((first, second)) = tokens.duplicate() {
            return Err(GgufError::DuplicateToken { first, second });
        }
        Ok(value)
    }

    fn value(&mut self, key: &str, value_type: u32, depth: u32) -> Result<MetaValue, GgufError> {
        Ok(match value_type {
            0 => MetaValue::U8(u8::from_le_bytes(self.array(key)?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(key)?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.array(key)?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => {
                let [b] = self.array(key)?;
                if b > 1 {
                    return Err(GgufError::WrongKeyType {
                        key: key.to_owned(),
                        expected: "a bool of 0 or 1",
                    });
                }
                MetaValue::Bool(b == 1)
            }
            8 => MetaValue::String(self.string(key)?),
            9 if depth < MAX_ARRAY_DEPTH => {
                let item_type = self.u32(key)?;
                let len = self.u64(key)?;
                let item_bytes = match item_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    _ => {
                        return Err(GgufError::UnknownValueType {
                            key: key.to_owned(),
                            value_type: item_type,
                        });
                    }
                };
                let total = self.array_elements.saturating_add(len);
                if total > MAX_ARRAY_ELEMENTS_TOTAL {
                    return Err(GgufError::TooLarge {
                        what: format!("array '{key}' length"),
                        value: len,
                        limit: MAX_ARRAY_ELEMENTS_TOTAL - self.array_elements,
                    });
                }
                self.need(&format!("array '{key}'"), len.saturating_mul(item_bytes))?;
                self.array_elements = total;
                if let Some(tokens) = &mut self.tokens {
                    tokens.reserve(len);
                }
                if len > KEPT_ARRAY_LEN && !self.keep_long_arrays {
                    for _ in 0..len {
                        if item_type == 8 {
                            self.skip_string(key)?;
                        } else {
                            self.value(key, item_type, depth + 1)?;
                        }
                    }
                    MetaValue::LongArray(len)
                } else {
                    let mut items = Vec::with_capacity(len as usize);
                    for _ in 0..len {
                        items.push(self.value(key, item_type, depth + 1)?);
                    }
                    MetaValue::Array(items)
                }
            }
            10 => MetaValue::U64(u64::from_le_bytes(self.array(key)?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(key)?)),
            _ => {
                return Err(GgufError::UnknownValueType {
                    key: key.to_owned(),
                    value_type,
                });
            }
        })
    }

    fn tensor_info(&mut self, index: u64) -> Result<TensorInfo, GgufError> {
        let name_len_pos = self.pos;
        let name = self.string("tensor name")?;
        if name.is_empty() {
            return Err(GgufError::EmptyTensorName { index });
        }
        if name.len() as u64 > MAX_TENSOR_NAME {
            return Err(GgufError::TooLarge {
                what: format!("tensor {index} name length (at byte {name_len_pos})"),
                value: name.len() as u64,
                limit: MAX_TENSOR_NAME,
            });
        }
        let n_dims = self.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::BadDimCount {
                tensor: name,
                n_dims,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64("tensor dimension")?);
        }
        if let Some(dim) = dims.iter().position(|&d| d == 0) {
            return Err(GgufError::ZeroDim { tensor: name, dim });
        }
        // ggml stores shapes as int64_t: the element count must fit in i64.
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| i64::try_from(n).is_ok());
        let Some(elements) = elements else {
            return Err(GgufError::ShapeOverflow { tensor: name, dims });
        };
        let ggml_type = self.u32("tensor type")?;
        let Some(kind) = GgmlType::from_id(ggml_type) else {
            return Err(GgufError::UnknownTensorType {
                tensor: name,
                ggml_type,
            });
        };
        if dims[0] % kind.block != 0 {
            return Err(GgufError::RowNotBlockAligned {
                tensor: name,
                row: dims[0],
                type_name: kind.name,
                block: kind.block,
            });
        }
        let Some(size_bytes) = kind.size_of(elements) else {
            return Err(GgufError::ShapeOverflow { tensor: name, dims });
        };
        let offset = self.u64("tensor offset")?;
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            size_bytes,
        })
    }
}

/// Fingerprints of a token list's texts, to find a text listed twice without keeping the texts
/// (262k token strings would cost ~10 MB): each is 96 bits of hash above the 32-bit token id
/// (array lengths are capped far below 2^32), so that sorting brings equal texts together.
#[derive(Default)]
struct TokenFingerprints(Vec<u128>);

impl TokenFingerprints {
    fn reserve(&mut self, len: u64) {
        self.0.reserve_exact(usize::try_from(len).unwrap_or(0));
    }

    /// Adds the next token's text; llama.cpp names an empty one `[EMPTY_<id>]`.
    fn add(&mut self, text: &[u8]) {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let id = self.0.len() as u64;
        let empty;
        let text = if text.is_empty() {
            empty = format!("[EMPTY_{id}]");
            empty.as_bytes()
        } else {
            text
        };
        let hash = |seed: u8| {
            let mut hasher = DefaultHasher::new();
            seed.hash(&mut hasher);
            text.hash(&mut hasher);
            u128::from(hasher.finish())
        };
        let fingerprint = ((hash(0) << 64) | hash(1)) & !u128::from(u32::MAX);
        self.0.push(fingerprint | u128::from(id as u32));
    }

    /// The ids of two tokens with the same text, if any.
    fn duplicate(mut self) -> Option<(u64, u64)> {
        self.0.sort_unstable();
        let id = |fingerprint: u128| u64::from(fingerprint as u32);
        self.0
            .windows(2)
            .find(|pair| pair[0] >> 32 == pair[1] >> 32)
            .map(|pair| (id(pair[0]), id(pair[1])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_numbers_match_ollama() {
        assert_eq!(human_number(1_543_714_304), "1.5B");
        assert_eq!(human_number(671_000_000_000), "671B");
        assert_eq!(human_number(671_026_419_200), "671.0B");
        assert_eq!(human_number(268_098_176), "268.10M");
        assert_eq!(human_number(7_000_000), "7M");
        assert_eq!(human_number(1_500), "2K");
        assert_eq!(human_number(999), "999");
    }

    #[test]
    fn type_table_sizes() {
        let q4k = GgmlType::from_name("q4_k").unwrap();
        assert_eq!(q4k.size_of(256 * 10), Some(1440));
        assert_eq!(q4k.size_of(100), None);
        assert_eq!(GgmlType::from_id(30).unwrap().name, "BF16");
        assert!(GgmlType::from_id(4).is_none());
        assert_eq!(file_type_name(15), Some("Q4_K_M"));
    }

    #[test]
    fn summary_is_short_for_big_arrays() {
        let v = MetaValue::Array((0..100_000).map(MetaValue::U32).collect());
        assert_eq!(v.summary(), "[0, 1, 2, …] (100000 items)");
    }
}
