//! Memory planning before a model is loaded.
//!
//! The scheduler asks "how many bytes will this model take with this context?" before handing a
//! file to llama.cpp, so that it can evict idle models or refuse with numbers
//! ("needs 9.1 GiB, 6.3 GiB available") instead of letting the kernel's OOM killer decide.
//!
//! The estimate follows what llama.cpp (the version vendored by `llama-cpp-sys-2` 0.1.161)
//! allocates:
//! - weights: the sum of tensor sizes from the GGUF header;
//! - KV cache: per layer, `kv_cells × (n_embd_k_gqa + n_embd_v_gqa)` elements of the cache type
//!   (`src/llama-kv-cache.cpp:209-234`), where `n_embd_k_gqa = head_count_kv × key_length`
//!   (`src/llama-hparams.cpp:156`), with per-layer `head_count_kv` arrays honoured;
//! - MLA (`deepseek2` with `attention.key_length_mla`/`value_length_mla`, written by converters
//!   since absorbed MLA): `hparams.is_mla()` (`src/llama-hparams.cpp:298`) makes the cache
//!   K-only (`has_v = !is_mla`, `src/llama-kv-cache.cpp:231`), and the K row is the compressed
//!   latent plus the rope part: `head_count_kv (1) × key_length (kv_lora_rank + rope = 576)`.
//!   Older deepseek2 GGUFs without the `_mla` keys store 128 heads × (192 K + 128 V): the
//!   standard formula covers them, and it is ~28× larger;
//! - sliding-window layers (gemma2/3, cohere2, gpt-oss, …) hold
//!   `min(n_ctx, n_swa × n_seq + n_ubatch)` cells padded to 256
//!   (`src/llama-kv-cache-iswa.cpp:73`), with the per-arch layer pattern of `load_swa_pattern`
//!   (`src/llama-model.cpp:3451`, `src/llama-hparams.cpp:8`);
//! - compute buffers: an approximation, see [`compute_bytes`]; twice that for a model whose
//!   NextN block whaled loads (`DeepSeek` V3/R1/V3.2 GGUFs that keep it): the block runs in a
//!   context of its own, whose graph ends in the same output head (see [`loads_nextn`]).
//!
//! Which of those bytes go to a GPU is planned in [`crate::offload`] and recorded here with
//! [`MemoryEstimate::place`].

use crate::gguf::{GgmlType, GgufFile, MetaValue};
use crate::offload::Placement;

/// Tokens per micro-batch llama.cpp reserves compute buffers for (`n_ubatch` default).
pub const DEFAULT_UBATCH: u64 = 512;

/// Element type of the KV cache (`OLLAMA_KV_CACHE_TYPE`-style: f16, `q8_0`, `q4_0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    #[default]
    F16,
    Q8_0,
    Q4_0,
}

impl KvType {
    fn ggml(self) -> GgmlType {
        let name = match self {
            Self::F16 => "F16",
            Self::Q8_0 => "Q8_0",
            Self::Q4_0 => "Q4_0",
        };
        GgmlType::from_name(name).expect("KV cache types are in the ggml type table")
    }

    /// Bytes for `elements` values, rounding partial blocks up (rows are whole blocks in ggml).
    fn bytes(self, elements: u64) -> u64 {
        let t = self.ggml();
        elements.div_ceil(t.block) * t.bytes
    }
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f16" | "" => Ok(Self::F16),
            "q8_0" => Ok(Self::Q8_0),
            "q4_0" => Ok(Self::Q4_0),
            other => Err(format!(
                "unknown KV cache type '{other}' (expected f16, q8_0 or q4_0)"
            )),
        }
    }
}

/// What loading a model will cost, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub kv_cache: u64,
    /// Approximate; see [`compute_bytes`].
    pub compute: u64,
    pub total: u64,
    /// Layers offloaded to a GPU (llama.cpp's `n_gpu_layers`); 0 on CPU.
    pub gpu_layers: u32,
    /// Layers whose routed experts stay in RAM although the layer is offloaded.
    pub cpu_moe_layers: u32,
    /// Bytes placed in GPU memory; 0 on CPU.
    pub vram: u64,
    /// Bytes placed on workers (`--workers`): the layers llama.cpp's RPC backend holds there.
    pub remote: u64,
    /// Context cells across all slots (`num_ctx × num_parallel`).
    pub kv_cells: u64,
    /// Whether the KV cache was sized as `DeepSeek`'s compressed MLA latent.
    pub mla: bool,
}

impl MemoryEstimate {
    /// Records where the bytes go.
    #[must_use]
    pub fn place(self, placement: Placement) -> Self {
        Self {
            gpu_layers: placement.gpu_layers,
            cpu_moe_layers: placement.cpu_moe_layers,
            vram: placement.vram.min(self.total),
            ..self
        }
    }

    /// Adds what a draft model loaded beside the model costs, on the GPU or in RAM.
    #[must_use]
    pub fn with_draft(self, draft: &MemoryEstimate, on_gpu: bool) -> Self {
        Self {
            weights: self.weights + draft.weights,
            kv_cache: self.kv_cache + draft.kv_cache,
            compute: self.compute + draft.compute,
            total: self.total + draft.total,
            vram: self.vram + if on_gpu { draft.total } else { 0 },
            ..self
        }
    }

    /// Records that `bytes` of it live on workers, none on this machine's GPUs (a model split
    /// over workers uses them in place of local GPUs).
    #[must_use]
    pub fn on_workers(self, bytes: u64) -> Self {
        Self {
            gpu_layers: 0,
            cpu_moe_layers: 0,
            vram: 0,
            remote: bytes.min(self.total),
            ..self
        }
    }

    /// Bytes that stay in this machine's RAM.
    pub fn ram(&self) -> u64 {
        self.total
            .saturating_sub(self.vram)
            .saturating_sub(self.remote)
    }

    /// `Ok` when the model fits in `available` bytes, else the error to show the user.
    pub fn check_fits(&self, available: u64) -> Result<(), InsufficientMemory> {
        if self.ram() <= available {
            Ok(())
        } else {
            Err(InsufficientMemory {
                estimate: *self,
                available,
            })
        }
    }
}

/// The refusal the scheduler returns instead of loading a model that cannot fit in RAM.
#[derive(Debug, Clone)]
pub struct InsufficientMemory {
    pub estimate: MemoryEstimate,
    pub available: u64,
}

impl std::fmt::Display for InsufficientMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let estimate = &self.estimate;
        write!(
            f,
            "model needs {} (weights {}, KV cache {}, compute {})",
            format_bytes(estimate.total),
            format_bytes(estimate.weights),
            format_bytes(estimate.kv_cache),
            format_bytes(estimate.compute),
        )?;
        if estimate.vram > 0 {
            write!(
                f,
                ", of which {} on the GPU and {} in RAM",
                format_bytes(estimate.vram),
                format_bytes(estimate.ram())
            )?;
        }
        write!(f, ", {} available", format_bytes(self.available))
    }
}

impl std::error::Error for InsufficientMemory {}

/// Estimates the bytes needed to load `gguf` with `num_ctx` tokens per slot and
/// `num_parallel` slots.
pub fn estimate(
    gguf: &GgufFile,
    num_ctx: u32,
    num_parallel: u32,
    kv_type: KvType,
) -> MemoryEstimate {
    let kv_cells = u64::from(num_ctx.max(1)) * u64::from(num_parallel.max(1));
    estimate_cells(gguf, kv_cells, num_parallel, kv_type)
}

/// [`estimate`] for `kv_cells` cells in all, shared by `num_parallel` slots (a KV pool).
pub fn estimate_cells(
    gguf: &GgufFile,
    kv_cells: u64,
    num_parallel: u32,
    kv_type: KvType,
) -> MemoryEstimate {
    let kv_cells = kv_cells.max(1);
    let (kv_cache, mla) = kv_cache_bytes(gguf, kv_cells, u64::from(num_parallel.max(1)), kv_type);
    let weights = gguf.weights_bytes();
    let mut compute = compute_bytes(gguf, kv_cells, u64::from(num_parallel.max(1)));
    if loads_nextn(gguf) {
        compute = compute.saturating_mul(2);
    }
    MemoryEstimate {
        weights,
        kv_cache,
        compute,
        total: weights.saturating_add(kv_cache).saturating_add(compute),
        gpu_layers: 0,
        cpu_moe_layers: 0,
        vram: 0,
        remote: 0,
        kv_cells,
        mla,
    }
}

/// Whether whaled loads the model's NextN (multi-token prediction) block, in a second context
/// with its own compute buffer: when the GGUF has one, except for `deepseek4`, whose KV cache
/// cannot drop rejected drafts (the engine skips the block there). Its KV cache is already in
/// the estimate: `block_count` counts the NextN layers.
pub fn loads_nextn(gguf: &GgufFile) -> bool {
    gguf.arch_u64("nextn_predict_layers").unwrap_or(0) > 0
        && gguf.architecture() != Some("deepseek4")
}

/// A per-layer value that may be a scalar or an array with one entry per layer.
fn per_layer(gguf: &GgufFile, suffix: &str, layer: usize) -> Option<u64> {
    match gguf.arch_value(suffix)? {
        MetaValue::Array(items) => items.get(layer)?.as_u64(),
        scalar => scalar.as_u64(),
    }
}

/// Which layers use a sliding window, mirroring llama.cpp's per-arch defaults.
fn is_swa_layer(gguf: &GgufFile, layer: usize) -> bool {
    if gguf.arch_u64("attention.sliding_window").unwrap_or(0) == 0 {
        return false;
    }
    if let Some(MetaValue::Array(pattern)) = gguf.arch_value("attention.sliding_window_pattern") {
        return matches!(pattern.get(layer), Some(MetaValue::Bool(true)));
    }
    let (default_pattern, dense_first) = match gguf.architecture().unwrap_or("") {
        "gemma2" | "gpt-oss" => (2, false),
        "gemma3" | "gemma-embedding" => (6, false),
        "cohere2" | "exaone4" | "llama4" | "olmo2" => (4, false),
        // Unknown placement: count every layer as full attention (over-estimates, never under).
        _ => return false,
    };
    let n = gguf
        .arch_u64("attention.sliding_window_pattern")
        .unwrap_or(default_pattern) as usize;
    if n == 0 {
        return true;
    }
    if dense_first {
        !layer.is_multiple_of(n)
    } else {
        layer % n < n - 1
    }
}

/// KV cache bytes for `kv_cells` cells, and whether the MLA layout was used.
fn kv_cache_bytes(gguf: &GgufFile, kv_cells: u64, n_seq: u64, kv_type: KvType) -> (u64, bool) {
    let (per_layer, mla) = kv_cache_layers(gguf, kv_cells, n_seq, kv_type);
    (
        per_layer.iter().fold(0, |sum, &b| sum.saturating_add(b)),
        mla,
    )
}

/// KV cache bytes of each layer for `kv_cells` cells in all, over `num_parallel` slots (what
/// the offload planner places layer by layer).
pub fn kv_cache_per_layer(
    gguf: &GgufFile,
    kv_cells: u64,
    num_parallel: u32,
    kv_type: KvType,
) -> Vec<u64> {
    let n_seq = u64::from(num_parallel.max(1));
    kv_cache_layers(gguf, kv_cells.max(1), n_seq, kv_type).0
}

fn kv_cache_layers(
    gguf: &GgufFile,
    kv_cells: u64,
    n_seq: u64,
    kv_type: KvType,
) -> (Vec<u64>, bool) {
    let n_layer = gguf.arch_u64("block_count").unwrap_or(0) as usize;
    let n_embd = gguf.arch_u64("embedding_length").unwrap_or(0);
    let mla = gguf.arch_u64("attention.key_length_mla").unwrap_or(0) != 0
        && gguf.arch_u64("attention.value_length_mla").unwrap_or(0) != 0;
    let n_swa = gguf.arch_u64("attention.sliding_window").unwrap_or(0);
    let swa_cells = (n_swa * n_seq + DEFAULT_UBATCH)
        .next_multiple_of(256)
        .min(kv_cells);

    let mut layers = vec![0u64; n_layer];
    for (layer, bytes) in layers.iter_mut().enumerate() {
        let n_head = per_layer(gguf, "attention.head_count", layer).unwrap_or(0);
        let n_head_kv = per_layer(gguf, "attention.head_count_kv", layer).unwrap_or(n_head);
        if n_head_kv == 0 {
            continue; // recurrent / attention-free layer: no KV cache
        }
        let head_dim = n_embd.checked_div(n_head).unwrap_or(0);
        let key_length = gguf.arch_u64("attention.key_length").unwrap_or(head_dim);
        let value_length = gguf.arch_u64("attention.value_length").unwrap_or(head_dim);
        // DeepSeek V3.2's sparse attention caches its lightning indexer's key beside the
        // latent (`llama-kv-cache-dsa.cpp`: a second K-only cache of `indexer.key_length`).
        let indexer = gguf.arch_u64("attention.indexer.key_length").unwrap_or(0);
        let k_row = n_head_kv * key_length + indexer;
        let v_row = if mla { 0 } else { n_head_kv * value_length };
        let cells = if is_swa_layer(gguf, layer) {
            swa_cells
        } else {
            kv_cells
        };
        *bytes = cells.saturating_mul(kv_type.bytes(k_row) + kv_type.bytes(v_row));
    }
    (layers, mla)
}

/// Approximate compute-buffer bytes. llama.cpp sizes these by building the worst-case graph
/// for one micro-batch; we approximate that graph's largest live tensors:
/// - logits: `n_vocab × n_ubatch` f32, plus the output buffer `n_vocab × n_seq` f32;
/// - activations: `n_ubatch × (4 × n_embd + 2 × n_ff)` f32 (residual, norms, FFN up/gate);
///   for `MoE`, the FFN term uses `expert_used_count × expert_ff` plus the shared experts;
/// - attention scores (no flash attention): `n_head × n_ubatch × kv_cells` f32 for one layer.
///
/// It is within a small factor of llama.cpp's logged `compute buffer size`; treat it as a
/// margin, not a measurement.
pub fn compute_bytes(gguf: &GgufFile, kv_cells: u64, n_seq: u64) -> u64 {
    let n_ubatch = DEFAULT_UBATCH.min(kv_cells);
    let n_embd = gguf.arch_u64("embedding_length").unwrap_or(0);
    let n_vocab = gguf.arch_u64("vocab_size").unwrap_or_else(|| {
        gguf.metadata
            .get("tokenizer.ggml.tokens")
            .and_then(MetaValue::array_len)
            .unwrap_or(0)
    });
    let n_head = per_layer(gguf, "attention.head_count", 0).unwrap_or(0);
    let dense_ff = per_layer(gguf, "feed_forward_length", 0).unwrap_or(4 * n_embd);
    let moe_ff = gguf.arch_u64("expert_feed_forward_length").unwrap_or(0)
        * (gguf.arch_u64("expert_used_count").unwrap_or(0)
            + gguf.arch_u64("expert_shared_count").unwrap_or(0));
    let n_ff = dense_ff.max(moe_ff);

    let logits = n_vocab * (n_ubatch + n_seq) * 4;
    let activations = n_ubatch * (4 * n_embd + 2 * n_ff) * 4;
    let attention = n_head * n_ubatch * kv_cells * 4;
    logits.saturating_add(activations).saturating_add(attention)
}

/// A field of `/proc/meminfo`, in bytes.
#[cfg(target_os = "linux")]
fn meminfo(name: &str) -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// A number from a cgroup v2 file; `None` for "max" (unlimited) or outside a cgroup.
#[cfg(target_os = "linux")]
fn cgroup(file: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/fs/cgroup/{file}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Bytes this process may still allocate: `MemAvailable` from `/proc/meminfo`, lowered to the
/// cgroup v2 limit's headroom (`memory.max − memory.current`) in containers.
#[cfg(target_os = "linux")]
pub fn available_memory() -> u64 {
    let host = meminfo("MemAvailable")
        .or_else(|| meminfo("MemFree"))
        .unwrap_or(0);
    match (cgroup("memory.max"), cgroup("memory.current")) {
        (Some(max), Some(current)) => host.min(max.saturating_sub(current)),
        _ => host,
    }
}

/// The machine's RAM (`MemTotal`), or the container's limit (`memory.max`) where lower.
#[cfg(target_os = "linux")]
pub fn total_memory() -> u64 {
    let host = meminfo("MemTotal").unwrap_or(0);
    cgroup("memory.max").map_or(host, |max| host.min(max))
}

/// The machine's RAM (`sysctl hw.memsize`).
#[cfg(not(target_os = "linux"))]
pub fn total_memory() -> u64 {
    available_memory()
}

/// Bytes this process may still allocate; on macOS and others the physical memory size
/// (`sysctl hw.memsize`), as the kernel pages out other apps' memory under pressure.
#[cfg(not(target_os = "linux"))]
pub fn available_memory() -> u64 {
    std::process::Command::new("sysctl")
        .args(["-n", "hw.memsize"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Binary units with one decimal, as people read memory: `9.1 GiB`, `512 B`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::gguf::{GgmlType, TensorInfo};

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    /// Builds an in-memory header (no file) with sequential aligned tensor offsets.
    fn synthetic(
        arch: &str,
        keys: &[(&str, MetaValue)],
        tensors: &[(String, Vec<u64>, &str)],
    ) -> GgufFile {
        let mut metadata = BTreeMap::new();
        metadata.insert(
            "general.architecture".to_owned(),
            MetaValue::String(arch.to_owned()),
        );
        for (k, v) in keys {
            metadata.insert(format!("{arch}.{k}"), v.clone());
        }
        let mut offset = 0;
        let tensors: Vec<TensorInfo> = tensors
            .iter()
            .map(|(name, dims, ty)| {
                let t = GgmlType::from_name(ty).unwrap();
                let size_bytes = t.size_of(dims.iter().product()).unwrap();
                let info = TensorInfo {
                    name: name.clone(),
                    dims: dims.clone(),
                    ggml_type: t.id,
                    offset,
                    size_bytes,
                };
                offset = (offset + size_bytes).next_multiple_of(32);
                info
            })
            .collect();
        GgufFile {
            version: 3,
            metadata,
            tensors,
            data_offset: 8 << 20,
            file_size: (8 << 20) + offset,
        }
    }

    /// `DeepSeek` V3/R1 671B (deepseek.md B.5/B.6) with a Q4_K_M-like type mix and the
    /// absorbed-MLA tensor split (`attn_k_b`/`attn_v_b`).
    fn deepseek_v3(mla_keys: bool) -> GgufFile {
        let (embd, vocab, heads) = (7168u64, 129_280u64, 128u64);
        let (n_layer, n_dense, n_expert, ff_dense, ff_exp) = (61u64, 3, 256, 18_432, 2048);
        let (q_lora, kv_lora, rope, nope, v_dim) = (1536u64, 512u64, 64u64, 128u64, 128u64);
        let mut t: Vec<(String, Vec<u64>, &str)> = vec![
            ("token_embd.weight".into(), vec![embd, vocab], "Q4_K"),
            ("output_norm.weight".into(), vec![embd], "F32"),
            ("output.weight".into(), vec![embd, vocab], "Q6_K"),
        ];
        for i in 0..n_layer {
            let b = |s: &str| format!("blk.{i}.{s}");
            // Q4_K_M gives more bits to ffn_down on some layers (llama-quant's use_more_bits).
            let more_bits = i < n_layer / 8 || i >= 7 * n_layer / 8 || (i - n_layer / 8) % 3 == 2;
            let down = if more_bits { "Q6_K" } else { "Q4_K" };
            t.extend([
                (b("attn_norm.weight"), vec![embd], "F32"),
                (b("attn_q_a_norm.weight"), vec![q_lora], "F32"),
                (b("attn_kv_a_norm.weight"), vec![kv_lora], "F32"),
                (b("attn_q_a.weight"), vec![embd, q_lora], "Q4_K"),
                (
                    b("attn_q_b.weight"),
                    vec![q_lora, heads * (nope + rope)],
                    "Q4_K",
                ),
                (
                    b("attn_kv_a_mqa.weight"),
                    vec![embd, kv_lora + rope],
                    "Q4_K",
                ),
                (b("attn_k_b.weight"), vec![nope, kv_lora, heads], "Q8_0"),
                (b("attn_v_b.weight"), vec![kv_lora, v_dim, heads], "Q8_0"),
                (b("attn_output.weight"), vec![heads * v_dim, embd], "Q4_K"),
                (b("ffn_norm.weight"), vec![embd], "F32"),
            ]);
            if i < n_dense {
                t.extend([
                    (b("ffn_gate.weight"), vec![embd, ff_dense], "Q4_K"),
                    (b("ffn_up.weight"), vec![embd, ff_dense], "Q4_K"),
                    (b("ffn_down.weight"), vec![ff_dense, embd], down),
                ]);
            } else {
                t.extend([
                    (b("ffn_gate_inp.weight"), vec![embd, n_expert], "F32"),
                    (b("exp_probs_b.bias"), vec![n_expert], "F32"),
                    (
                        b("ffn_gate_exps.weight"),
                        vec![embd, ff_exp, n_expert],
                        "Q4_K",
                    ),
                    (
                        b("ffn_up_exps.weight"),
                        vec![embd, ff_exp, n_expert],
                        "Q4_K",
                    ),
                    (
                        b("ffn_down_exps.weight"),
                        vec![ff_exp, embd, n_expert],
                        down,
                    ),
                    (b("ffn_gate_shexp.weight"), vec![embd, ff_exp], "Q4_K"),
                    (b("ffn_up_shexp.weight"), vec![embd, ff_exp], "Q4_K"),
                    (b("ffn_down_shexp.weight"), vec![ff_exp, embd], down),
                ]);
            }
        }
        let mut keys = vec![
            ("block_count", MetaValue::U32(61)),
            ("context_length", MetaValue::U32(163_840)),
            ("embedding_length", MetaValue::U32(7168)),
            ("feed_forward_length", MetaValue::U32(18_432)),
            ("attention.head_count", MetaValue::U32(128)),
            ("attention.q_lora_rank", MetaValue::U32(1536)),
            ("attention.kv_lora_rank", MetaValue::U32(512)),
            ("rope.dimension_count", MetaValue::U32(64)),
            ("expert_count", MetaValue::U32(256)),
            ("expert_used_count", MetaValue::U32(8)),
            ("expert_shared_count", MetaValue::U32(1)),
            ("expert_feed_forward_length", MetaValue::U32(2048)),
            ("leading_dense_block_count", MetaValue::U32(3)),
            ("vocab_size", MetaValue::U32(129_280)),
        ];
        if mla_keys {
            // Converter after absorbed MLA: one KV "head" holding the latent + rope part.
            keys.extend([
                ("attention.head_count_kv", MetaValue::U32(1)),
                ("attention.key_length", MetaValue::U32(576)),
                ("attention.value_length", MetaValue::U32(512)),
                ("attention.key_length_mla", MetaValue::U32(192)),
                ("attention.value_length_mla", MetaValue::U32(128)),
            ]);
        } else {
            // Older converter: decompressed heads.
            keys.extend([
                ("attention.head_count_kv", MetaValue::U32(128)),
                ("attention.key_length", MetaValue::U32(192)),
                ("attention.value_length", MetaValue::U32(128)),
            ]);
        }
        synthetic("deepseek2", &keys, &t)
    }

    #[test]
    fn deepseek_v3_q4_k_m_weights_and_mla_kv() {
        let gguf = deepseek_v3(true);
        let params = gguf.parameter_count();
        assert!(
            (660e9..680e9).contains(&(params as f64)),
            "parameters {params}"
        );
        assert!(gguf.parameter_size_label().ends_with('B'));
        let est = estimate(&gguf, 4096, 1, KvType::F16);
        // deepseek.md B.7: Q4_K_M is ≈ 404 GB (Ollama's decimal GB) = 377 GiB.
        assert!(
            (377e9..=410e9).contains(&(est.weights as f64)),
            "weights {} ({})",
            est.weights,
            format_bytes(est.weights)
        );
        // 61 layers × 4096 cells × (512 + 64) × 2 bytes, K-only.
        assert!(est.mla);
        assert_eq!(est.kv_cache, 61 * 4096 * 576 * 2);
        assert!(est.kv_cache < 300 * MIB);
        assert!(
            est.compute < 4 * GIB,
            "compute {}",
            format_bytes(est.compute)
        );
        assert_eq!(est.total, est.weights + est.kv_cache + est.compute);
    }

    #[test]
    fn deepseek_v3_on_one_h200_keeps_attention_on_the_gpu_and_some_experts_in_ram() {
        use crate::offload::LayerSizes;
        let gguf = deepseek_v3(true);
        let est = estimate(&gguf, 8192, 1, KvType::F16);
        let layers = LayerSizes::new(
            &gguf,
            kv_cache_per_layer(&gguf, 8192, 1, KvType::F16),
            est.compute,
        );
        assert_eq!(
            layers.weights.iter().sum::<u64>() + layers.output,
            est.weights - {
                // token_embd stays on the CPU and is not a layer.
                gguf.tensors
                    .iter()
                    .find(|t| t.name == "token_embd.weight")
                    .unwrap()
                    .size_bytes
            }
        );
        assert_eq!(layers.experts[..3], [0, 0, 0], "leading dense layers");
        assert!(
            layers.experts[3] > 5 * GIB,
            "{}",
            format_bytes(layers.experts[3])
        );
        // An H200 with 139 GiB free: every layer's attention, shared experts and KV on the GPU,
        // the routed experts of the first layers in RAM.
        let placed = est.place(layers.place(Some(139 * GIB), None));
        assert_eq!(placed.gpu_layers, 62);
        assert!((30..=45).contains(&placed.cpu_moe_layers), "{placed:?}");
        assert!(
            placed.vram <= 138 * GIB && placed.vram > 120 * GIB,
            "{placed:?}"
        );
        assert!(placed.ram() > 230 * GIB, "{}", format_bytes(placed.ram()));
        let refusal = placed.check_fits(64 * GIB).unwrap_err().to_string();
        assert!(refusal.contains("on the GPU"), "{refusal}");
        // Without a GPU everything stays in RAM.
        let cpu = est.place(layers.place(None, None));
        assert_eq!((cpu.gpu_layers, cpu.vram, cpu.ram()), (0, 0, est.total));
    }

    #[test]
    fn deepseek_v3_without_mla_keys_uses_full_heads() {
        let est = estimate(&deepseek_v3(false), 4096, 1, KvType::F16);
        assert!(!est.mla);
        assert_eq!(est.kv_cache, 61 * 4096 * 128 * (192 + 128) * 2);
        assert!(est.kv_cache > 19 * GIB);
    }

    fn qwen2_7b() -> GgufFile {
        let keys = [
            ("block_count", MetaValue::U32(28)),
            ("context_length", MetaValue::U32(131_072)),
            ("embedding_length", MetaValue::U32(3584)),
            ("feed_forward_length", MetaValue::U32(18_944)),
            ("attention.head_count", MetaValue::U32(28)),
            ("attention.head_count_kv", MetaValue::U32(4)),
        ];
        let tensors = vec![("token_embd.weight".into(), vec![3584, 152_064], "Q4_K")];
        synthetic("qwen2", &keys, &tensors)
    }

    #[test]
    fn qwen2_7b_gqa_kv() {
        let per_token = 28 * 4 * 128 * 2 * 2;
        let est = estimate(&qwen2_7b(), 4096, 1, KvType::F16);
        assert_eq!(est.kv_cache, 4096 * per_token);
        // Slots multiply the cells.
        let two = estimate(&qwen2_7b(), 4096, 2, KvType::F16);
        assert_eq!(two.kv_cache, 2 * 4096 * per_token);
        // q8_0 stores 32 values in 34 bytes.
        let q8 = estimate(&qwen2_7b(), 4096, 1, KvType::Q8_0);
        assert_eq!(q8.kv_cache, 4096 * 28 * 2 * (4 * 128 / 32 * 34));
    }

    #[test]
    fn gemma3_sliding_window_layers_are_bounded() {
        let keys = [
            ("block_count", MetaValue::U32(18)),
            ("embedding_length", MetaValue::U32(640)),
            ("attention.head_count", MetaValue::U32(4)),
            ("attention.head_count_kv", MetaValue::U32(1)),
            ("attention.key_length", MetaValue::U32(256)),
            ("attention.value_length", MetaValue::U32(256)),
            ("attention.sliding_window", MetaValue::U32(512)),
        ];
        let gguf = synthetic("gemma3", &keys, &[]);
        let est = estimate(&gguf, 32_768, 1, KvType::F16);
        let row = 256 * 2 * 2; // K + V, one head, f16
        // Layers 5, 11, 17 are global; the other 15 hold 512 + 512 cells.
        assert_eq!(est.kv_cache, 3 * 32_768 * row + 15 * 1024 * row);
    }

    #[test]
    fn a_nextn_block_adds_its_context_compute_buffer_except_on_v4() {
        let keys = [
            ("block_count", MetaValue::U32(2)),
            ("embedding_length", MetaValue::U32(64)),
            ("attention.head_count", MetaValue::U32(4)),
            ("vocab_size", MetaValue::U32(1000)),
        ];
        let with_nextn = |arch: &str, layers: u32| {
            let mut keys = keys.to_vec();
            keys.push(("nextn_predict_layers", MetaValue::U32(layers)));
            estimate(&synthetic(arch, &keys, &[]), 1024, 1, KvType::F16)
        };
        let plain = estimate(&synthetic("deepseek2", &keys, &[]), 1024, 1, KvType::F16);
        assert!(plain.compute > 0);
        assert_eq!(with_nextn("deepseek2", 0), plain);
        let nextn = with_nextn("deepseek2", 1);
        assert_eq!(nextn.compute, 2 * plain.compute);
        assert_eq!(nextn.total, plain.total + plain.compute);
        assert_eq!(nextn.kv_cache, plain.kv_cache);
        // V4's block is not loaded (its cache cannot drop rejected drafts).
        let v4 = with_nextn("deepseek4", 1);
        let v4_plain = estimate(&synthetic("deepseek4", &keys, &[]), 1024, 1, KvType::F16);
        assert_eq!(v4.compute, v4_plain.compute);
    }

    #[test]
    fn formats_and_refusal_message() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(9 * GIB + GIB / 10), "9.1 GiB");
        let est = MemoryEstimate {
            weights: 8 * GIB,
            kv_cache: 9 * GIB / 10,
            compute: GIB / 5,
            total: 8 * GIB + 9 * GIB / 10 + GIB / 5,
            ..MemoryEstimate::default()
        };
        let err = est.check_fits(63 * GIB / 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model needs 9.1 GiB (weights 8.0 GiB, KV cache 921.6 MiB, compute 204.8 MiB), 6.3 GiB available"
        );
        assert!(est.check_fits(10 * GIB).is_ok());
        assert_eq!("Q8_0".parse::<KvType>(), Ok(KvType::Q8_0));
        assert!("q3".parse::<KvType>().is_err());
    }

    #[test]
    fn available_memory_is_plausible() {
        let bytes = available_memory();
        assert!(bytes > 16 * MIB, "available {bytes}");
    }
}
