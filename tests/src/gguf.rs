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
}

impl TensorType {
    /// Encoded size of `elements` values.
    pub fn byte_size(self, elements: u64) -> u64 {
        match self {
            TensorType::F32 => elements * 4,
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
pub mod broken {
    use std::io;
    use std::path::Path;

    use super::{Builder, Tensor, TensorType, Value, ValueType};

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
