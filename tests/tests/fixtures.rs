//! The fixtures themselves, checked through llama.cpp (llama-cpp-2) directly: each tiny
//! architecture loads, tokenizes DeepSeek's chat markers as single tokens and generates
//! deterministically; the `deepseek2` fixture carries the metadata keys of a real V3 GGUF; Gemma
//! really continues a count; the broken files are refused by llama.cpp with an error; and each of
//! `broken::LLAMA_ASSERTS` kills llama.cpp (in a child process, which is started as this same
//! test binary running `child_loads_a_gguf`).

// DeepSeek, MoE, Q4_K_M are names in prose here, not code to put in backticks
#![allow(clippy::doc_markdown)]

use std::num::NonZeroU32;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use whale_tests::fixtures::{self, DeepSeekTokenizer, Fixture};
use whale_tests::gguf::broken;

/// Metadata keys of a real DeepSeek-V3 (and R1) Q4_K_M GGUF as produced by llama.cpp's
/// `convert_hf_to_gguf.py` (DeepseekV2Model, split `attn_k_b`/`attn_v_b` era) and
/// `llama-quantize`, by the key names of `llama-arch.cpp`. Kept in step with tests/README.md.
const DEEPSEEK_V3_KEYS: &[&str] = &[
    "general.architecture",
    "general.type",
    "general.name",
    "general.size_label",
    "general.license",
    "general.file_type",
    "general.quantization_version",
    "deepseek2.block_count",
    "deepseek2.context_length",
    "deepseek2.embedding_length",
    "deepseek2.feed_forward_length",
    "deepseek2.attention.head_count",
    "deepseek2.attention.head_count_kv",
    "deepseek2.rope.freq_base",
    "deepseek2.attention.layer_norm_rms_epsilon",
    "deepseek2.expert_used_count",
    "deepseek2.expert_group_count",
    "deepseek2.expert_group_used_count",
    "deepseek2.leading_dense_block_count",
    "deepseek2.vocab_size",
    "deepseek2.attention.q_lora_rank",
    "deepseek2.attention.kv_lora_rank",
    "deepseek2.attention.key_length",
    "deepseek2.attention.value_length",
    "deepseek2.attention.key_length_mla",
    "deepseek2.attention.value_length_mla",
    "deepseek2.expert_feed_forward_length",
    "deepseek2.expert_count",
    "deepseek2.expert_shared_count",
    "deepseek2.expert_weights_scale",
    "deepseek2.expert_weights_norm",
    "deepseek2.expert_gating_func",
    "deepseek2.rope.dimension_count",
    "deepseek2.rope.scaling.type",
    "deepseek2.rope.scaling.factor",
    "deepseek2.rope.scaling.original_context_length",
    "deepseek2.rope.scaling.yarn_log_multiplier",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.chat_template",
];

fn backend() -> &'static LlamaBackend {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let mut backend = LlamaBackend::init().expect("llama backend");
        if std::env::var_os("WHALE_TEST_LLAMA_LOGS").is_none() {
            backend.void_logs();
        }
        backend
    })
}

fn load(path: &Path) -> LlamaModel {
    LlamaModel::load_from_file(backend(), path, &LlamaModelParams::default())
        .unwrap_or_else(|e| panic!("load {}: {e}", path.display()))
}

fn context(model: &LlamaModel) -> LlamaContext<'_> {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(256))
        .with_n_batch(256)
        .with_n_threads(2)
        .with_n_threads_batch(2);
    model.new_context(backend(), params).expect("context")
}

/// Greedy: prefill `prompt` from position 0, then `count` tokens one at a time.
fn generate(ctx: &mut LlamaContext<'_>, prompt: &[LlamaToken], count: usize) -> Vec<LlamaToken> {
    let mut batch = LlamaBatch::new(256, 1);
    let last = prompt.len() - 1;
    for (pos, token) in prompt.iter().enumerate() {
        batch
            .add(*token, pos as i32, &[0], pos == last)
            .expect("batch add");
    }
    ctx.decode(&mut batch).expect("decode prompt");
    let mut sampler = LlamaSampler::greedy();
    let mut out = Vec::with_capacity(count);
    for pos in prompt.len()..prompt.len() + count {
        let token = sampler.sample(ctx, batch.n_tokens() - 1);
        sampler.accept(token);
        out.push(token);
        batch.clear();
        batch.add(token, pos as i32, &[0], true).expect("batch add");
        ctx.decode(&mut batch).expect("decode token");
    }
    out
}

fn tokenizer() -> &'static DeepSeekTokenizer {
    static TOKENIZER: OnceLock<DeepSeekTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| DeepSeekTokenizer::load().expect("DeepSeek V3 tokenizer"))
}

/// Loads a fixture, checks the chat markers tokenize as single tokens with tokenizer.json's ids,
/// and that greedy generation repeats itself after the KV cache is cleared.
fn check_architecture(fixture: Fixture) {
    let model = load(&fixture.path());
    assert_eq!(
        model.meta_val_str("general.architecture").unwrap(),
        fixture.architecture()
    );
    let vocab = model.vocab();
    assert_eq!(vocab.n_tokens() as usize, fixtures::DEEPSEEK_VOCAB_SIZE);

    let ids = &tokenizer().ids;
    let id = |text: &str| LlamaToken(ids[text] as i32);
    let (bos, user, assistant) = (
        id("<｜begin▁of▁sentence｜>"),
        id("<｜User｜>"),
        id("<｜Assistant｜>"),
    );
    assert_eq!((bos.0, user.0, assistant.0), (0, 128_803, 128_804));
    assert_eq!(vocab.bos(), bos);
    assert_eq!(vocab.eos(), id("<｜end▁of▁sentence｜>"));
    assert!(vocab.should_add_bos());
    assert!(!vocab.should_add_eos());

    let prompt = "<｜begin▁of▁sentence｜>You are terse.<｜User｜>Hi<｜Assistant｜>";
    let tokens = vocab.tokenize(prompt.as_bytes(), false, true);
    assert_eq!(tokens.first(), Some(&bos), "{tokens:?}");
    assert_eq!(
        tokens.iter().filter(|t| **t == user).count(),
        1,
        "{tokens:?}"
    );
    assert_eq!(tokens.last(), Some(&assistant), "{tokens:?}");
    let hi = vocab.tokenize(b"Hi", false, false);
    let user_at = tokens.iter().position(|t| *t == user).unwrap();
    assert_eq!(
        &tokens[user_at + 1..tokens.len() - 1],
        &hi[..],
        "{tokens:?}"
    );

    let mut ctx = context(&model);
    let first = generate(&mut ctx, &tokens, 16);
    ctx.clear_kv_cache();
    let second = generate(&mut ctx, &tokens, 16);
    assert_eq!(first.len(), 16);
    assert_eq!(
        first, second,
        "greedy generation differs after clearing the KV cache"
    );
}

#[test]
fn deepseek2_loads_tokenizes_and_generates_deterministically() {
    check_architecture(Fixture::DeepSeek2);
}

#[test]
fn deepseek32_loads_tokenizes_and_generates_deterministically() {
    // 16 generated tokens after the prompt pass the indexer's top-k of 16: attention is sparse
    // by the end.
    check_architecture(Fixture::DeepSeek32);
}

#[test]
fn deepseek4_loads_tokenizes_and_generates_deterministically() {
    // 16 generated tokens pass the sliding window (16) and the indexer's top-k (8).
    check_architecture(Fixture::DeepSeek4);
}

#[test]
fn qwen2_loads_tokenizes_and_generates_deterministically() {
    check_architecture(Fixture::Qwen2);
}

#[test]
fn llama_loads_tokenizes_and_generates_deterministically() {
    check_architecture(Fixture::Llama);
}

#[test]
fn deepseek2_carries_the_metadata_keys_of_a_real_v3_gguf() {
    // read back through llama.cpp, so this checks what its parser sees in the file; its
    // metadata API leaves out arrays (tokens, token types, merges), so those are found in the
    // header as GGUF writes keys: u64 length then the bytes
    let model = load(&fixtures::deepseek2());
    let keys: Vec<String> = (0..model.meta_count())
        .map(|i| model.meta_key_by_index(i).expect("key"))
        .collect();
    let header = read_prefix(&fixtures::deepseek2(), 8 << 20);
    let in_header = |key: &str| {
        let mut encoded = (key.len() as u64).to_le_bytes().to_vec();
        encoded.extend_from_slice(key.as_bytes());
        contains(&header, &encoded)
    };
    let missing: Vec<_> = DEEPSEEK_V3_KEYS
        .iter()
        .filter(|key| !keys.iter().any(|k| k == *key) && !in_header(key))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?}; has {keys:?}");
    for array in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
    ] {
        assert!(in_header(array), "{array}");
    }
    let value = |key: &str| model.meta_val_str(key).expect(key);
    assert_eq!(value("deepseek2.expert_gating_func"), "2");
    assert_eq!(value("deepseek2.rope.scaling.type"), "yarn");
    assert_eq!(value("deepseek2.attention.head_count_kv"), "1");
    assert_eq!(value("tokenizer.ggml.pre"), "deepseek-v3");
    assert_eq!(value("tokenizer.ggml.model"), "gpt2");
    assert!(value("tokenizer.chat_template").contains("<｜Assistant｜>"));
    // tensor infos sit in the header, before the data: the V3 selection bias (what tells V3
    // from V2) and absorbed MLA's split k_b / v_b
    for name in [
        "blk.1.exp_probs_b.bias",
        "blk.0.attn_k_b.weight",
        "blk.0.attn_v_b.weight",
        "blk.2.ffn_gate_shexp.weight",
    ] {
        assert!(contains(&header, name.as_bytes()), "no tensor {name}");
    }
}

fn read_prefix(path: &Path, len: u64) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .take(len)
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn fixtures_are_small_and_reproducible() {
    for fixture in Fixture::ALL {
        let size = std::fs::metadata(fixture.path()).unwrap().len();
        assert!(size < 30 << 20, "{fixture:?} is {size} bytes");
    }
    // same seed, same bytes: the file on disk equals a fresh build
    let fresh = Fixture::Qwen2.build().unwrap().to_bytes();
    assert_eq!(std::fs::read(fixtures::qwen2()).unwrap(), fresh);
}

#[test]
fn gemma_continues_a_count() {
    let model = load(&fixtures::gemma());
    let vocab = model.vocab();
    let tokens = vocab.tokenize(b"1, 2, 3, 4, 5,", vocab.should_add_bos(), false);
    let mut ctx = context(&model);
    let generated = generate(&mut ctx, &tokens, 12);
    let text: String = generated
        .iter()
        .map(|t| String::from_utf8_lossy(&vocab.token_to_piece(*t, false, None)).into_owned())
        .collect();
    assert!(text.starts_with(" 6, 7, 8"), "continuation was {text:?}");
}

#[test]
fn broken_files_fail_to_load_with_an_error() {
    let dir = std::env::temp_dir().join(format!("whale-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, write) in broken::ALL {
        let path = dir.join(format!("{name}.gguf"));
        write(&path).unwrap();
        if !broken::REJECTED_BY_LLAMA.contains(name) {
            continue; // would abort the process inside llama.cpp: the daemon must reject it first
        }
        let result = LlamaModel::load_from_file(backend(), &path, &LlamaModelParams::default());
        assert!(result.is_err(), "{name}: llama.cpp loaded a broken file");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Set for the child processes of `each_llama_assert_kills_llama_cpp`: the GGUF to load.
const CHILD_LOADS: &str = "WHALE_TEST_CHILD_LOADS";

/// The body of the child processes of `each_llama_assert_kills_llama_cpp`, and a no-op as a
/// test of its own. Uses the GGUF named by `CHILD_LOADS` as whaled does: loads the model, makes
/// a generation context (which builds its graphs once) and decodes a prompt, then makes an
/// embeddings context.
#[test]
fn child_loads_a_gguf() {
    let Some(path) = std::env::var_os(CHILD_LOADS) else {
        return;
    };
    let model =
        LlamaModel::load_from_file(backend(), Path::new(&path), &LlamaModelParams::default())
            .unwrap_or_else(|e| panic!("llama.cpp refused it with an error: {e}"));
    let mut ctx = context(&model);
    let prompt = model.vocab().tokenize(b"Hello there", true, false);
    generate(&mut ctx, &prompt, 1);
    drop(ctx);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(256))
        .with_n_batch(256)
        .with_n_ubatch(256)
        .with_n_threads(2)
        .with_n_threads_batch(2)
        .with_embeddings(true);
    model
        .new_context(backend(), params)
        .expect("embeddings context");
}

/// Each file of `broken::LLAMA_ASSERTS`, loaded by llama.cpp directly (no validator), kills the
/// process at the line its entry names. Children run without core dumps, and without ggml's
/// backtrace (which would attach gdb).
#[cfg(unix)]
#[test]
fn each_llama_assert_kills_llama_cpp() {
    use std::os::unix::process::ExitStatusExt;
    const SIGABRT: i32 = 6;
    const SIGFPE: i32 = 8;

    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    for case in broken::LLAMA_ASSERTS {
        let path = dir.path().join(format!("{}.gguf", case.name));
        (case.write)(&path).unwrap();
        let output = Command::new("sh")
            .args(["-c", "ulimit -c 0 && exec \"$0\" \"$@\""])
            .arg(&exe)
            .args(["--exact", "child_loads_a_gguf", "--nocapture"])
            .env(CHILD_LOADS, &path)
            .env("GGML_NO_BACKTRACE", "1")
            .output()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = if case.message.is_empty() {
            SIGFPE
        } else {
            SIGABRT
        };
        assert_eq!(
            output.status.signal(),
            Some(expected),
            "{}: llama.cpp did not die by signal {expected} ({}):\n{stderr}",
            case.name,
            output.status
        );
        if !case.message.is_empty() {
            let at = format!("{}: ", case.at);
            assert!(
                stderr.contains(&at) && stderr.contains(case.message),
                "{}: llama.cpp did not die at {} on {:?}:\n{stderr}",
                case.name,
                case.at,
                case.message
            );
        }
    }
}
