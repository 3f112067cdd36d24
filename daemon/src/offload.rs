//! GPU offload planning: which of a model's layers go to GPU memory before llama.cpp loads it.
//!
//! llama.cpp places layers by one number, `n_gpu_layers`: the *last* `n` repeating layers go to
//! the GPU, and the output layer too when `n > n_layer` (`src/llama-model.cpp`, `load_tensors`:
//! `i_gpu_start = n_layer - n_gpu_layers`). A layer's KV cache lives where the layer does. On top
//! of that, buffer-type overrides can keep chosen tensors in RAM; `--n-cpu-moe N` keeps the routed
//! experts (`ffn_{up,down,gate}_exps`) of the first `N` layers there, so that a MoE model whose
//! attention fits on the GPU runs its attention there and only the experts that do not fit on the
//! CPU. That is how `DeepSeek` V3/R1 (≈ 377 GiB at `Q4_K_M`, of which ≈ 360 GiB experts) runs on
//! one GPU.
//!
//! The plan, in order of preference:
//! 1. everything on the GPU (`n_layer + 1` layers) when weights, KV cache and compute fit;
//! 2. for MoE models, every layer on the GPU but the experts of the first `m` layers, with the
//!    smallest `m` that fits;
//! 3. otherwise the largest number of whole layers that fits.
//!
//! `num_gpu` (Ollama's option) overrides the count; the plan then only reports what it costs.

use crate::gguf::GgufFile;

/// Left free for the driver, other processes and estimation error: taken once from the free
/// memory summed over the GPUs (llama.cpp's own fitting keeps 1 GiB per device).
pub const GPU_MARGIN: u64 = 1 << 30;

/// Where a model's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    /// llama.cpp's `n_gpu_layers`: the last `gpu_layers` repeating layers are offloaded, and the
    /// output layer when this is `n_layer + 1`.
    pub gpu_layers: u32,
    /// Layers `0..cpu_moe_layers` keep their routed experts in RAM (`--n-cpu-moe`).
    pub cpu_moe_layers: u32,
    /// Bytes placed in GPU memory: offloaded weights, their KV cache and the compute buffer.
    pub vram: u64,
}

/// Per-layer byte counts of a model, as the planner needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSizes {
    /// All weights of `blk.<i>.*`.
    pub weights: Vec<u64>,
    /// The routed experts of `blk.<i>` (a part of `weights`).
    pub experts: Vec<u64>,
    /// KV cache of each layer for the planned context.
    pub kv: Vec<u64>,
    /// The output layer: `output.weight` (or the tied token embedding) and `output_norm`.
    pub output: u64,
    /// Compute buffer, placed on the GPU as soon as one layer is.
    pub compute: u64,
}

impl LayerSizes {
    /// Sizes from a GGUF header, with per-layer KV bytes and compute bytes from the memory
    /// estimate.
    pub fn new(gguf: &GgufFile, kv: Vec<u64>, compute: u64) -> Self {
        let n_layer = kv.len();
        let mut weights = vec![0u64; n_layer];
        let mut experts = vec![0u64; n_layer];
        let mut output = 0u64;
        let mut tied_embedding = 0u64;
        let mut has_output = false;
        for tensor in &gguf.tensors {
            if let Some((layer, rest)) = tensor
                .name
                .strip_prefix("blk.")
                .and_then(|name| name.split_once('.'))
                .and_then(|(layer, rest)| Some((layer.parse::<usize>().ok()?, rest)))
            {
                if layer < n_layer {
                    weights[layer] += tensor.size_bytes;
                    if is_routed_expert(rest) {
                        experts[layer] += tensor.size_bytes;
                    }
                }
            } else if tensor.name.starts_with("output") {
                has_output |= tensor.name == "output.weight";
                output += tensor.size_bytes;
            } else if tensor.name == "token_embd.weight" {
                tied_embedding = tensor.size_bytes;
            }
        }
        if !has_output {
            output += tied_embedding;
        }
        Self {
            weights,
            experts,
            kv,
            output,
            compute,
        }
    }

    pub fn n_layer(&self) -> u32 {
        self.weights.len() as u32
    }

    /// Bytes that leave this machine when llama.cpp offloads `offloaded` of the `n_layer + 1`
    /// layers to other devices: the output layer first, then repeating layers from the last
    /// (llama.cpp's `n_gpu_layers` rule), each with its KV cache.
    pub fn offloaded_bytes(&self, offloaded: u32) -> u64 {
        if offloaded == 0 {
            return 0;
        }
        let n_layer = self.n_layer();
        let first = (n_layer + 1).saturating_sub(offloaded) as usize;
        let layers: u64 = (first..n_layer as usize)
            .map(|i| self.weights[i] + self.kv[i])
            .sum();
        layers + self.output
    }

    /// GPU bytes of `gpu_layers` offloaded layers with the experts of layers
    /// `0..cpu_moe_layers` kept in RAM.
    pub fn vram(&self, gpu_layers: u32, cpu_moe_layers: u32) -> u64 {
        if gpu_layers == 0 {
            return 0;
        }
        let n_layer = self.n_layer();
        let first = n_layer.saturating_sub(gpu_layers) as usize;
        let layers: u64 = (first..n_layer as usize)
            .map(|i| {
                let experts = if (i as u32) < cpu_moe_layers {
                    self.experts[i]
                } else {
                    0
                };
                self.weights[i] - experts + self.kv[i]
            })
            .sum();
        let output = if gpu_layers > n_layer { self.output } else { 0 };
        layers + output + self.compute
    }

    /// Plans the placement for `free` bytes of GPU memory (`None`: no GPU in this build or on
    /// this machine). `num_gpu` ≥ 0 fixes the layer count; negative or `None` means automatic.
    pub fn place(&self, free: Option<u64>, num_gpu: Option<i32>) -> Placement {
        let Some(free) = free else {
            return Placement::default();
        };
        let n_layer = self.n_layer();
        let all = n_layer + 1;
        if let Some(fixed) = num_gpu.and_then(|n| u32::try_from(n).ok()) {
            let gpu_layers = fixed.min(all);
            return Placement {
                gpu_layers,
                cpu_moe_layers: 0,
                vram: self.vram(gpu_layers, 0),
            };
        }
        let budget = free.saturating_sub(GPU_MARGIN);
        let fits = |gpu_layers, cpu_moe_layers| self.vram(gpu_layers, cpu_moe_layers) <= budget;
        let placement = |gpu_layers, cpu_moe_layers| Placement {
            gpu_layers,
            cpu_moe_layers,
            vram: self.vram(gpu_layers, cpu_moe_layers),
        };
        if fits(all, 0) {
            return placement(all, 0);
        }
        let has_experts = self.experts.iter().any(|&bytes| bytes > 0);
        if has_experts && fits(all, n_layer) {
            // More layers with experts in RAM only ever lowers the GPU bytes: the smallest
            // count that fits is found by bisection.
            let (mut low, mut high) = (0, n_layer);
            while low < high {
                let mid = low + (high - low) / 2;
                if fits(all, mid) {
                    high = mid;
                } else {
                    low = mid + 1;
                }
            }
            return placement(all, low);
        }
        let gpu_layers = (0..=n_layer).rev().find(|&k| fits(k, 0)).unwrap_or(0);
        placement(gpu_layers, 0)
    }
}

/// Whether the part of a tensor name after `blk.<i>.` is a routed-expert tensor, as llama.cpp's
/// `--n-cpu-moe` pattern `ffn_(up|down|gate|gate_up)_(ch|)exps` matches it.
fn is_routed_expert(rest: &str) -> bool {
    let Some(base) = rest.split('.').next() else {
        return false;
    };
    let Some(kind) = base.strip_prefix("ffn_").and_then(|s| {
        s.strip_suffix("_exps")
            .or_else(|| s.strip_suffix("_chexps"))
    }) else {
        return false;
    };
    matches!(kind, "up" | "down" | "gate" | "gate_up")
}

/// The buffer-type override pattern keeping the experts of layers `0..layers` in RAM, in the
/// form llama.cpp's `--n-cpu-moe` builds (one regex for all layers).
pub fn cpu_moe_pattern(layers: u32) -> Option<String> {
    (layers > 0).then(|| {
        let list: Vec<String> = (0..layers).map(|i| i.to_string()).collect();
        format!(
            r"^blk\.({})\.ffn_(up|down|gate|gate_up)_(ch|)exps",
            list.join("|")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// A model of `n` layers, each with `attention` bytes outside the experts, `experts` bytes
    /// of routed experts and `kv` bytes of cache.
    fn sizes(n: usize, attention: u64, experts: u64, kv: u64) -> LayerSizes {
        LayerSizes {
            weights: vec![attention + experts; n],
            experts: vec![experts; n],
            kv: vec![kv; n],
            output: GIB / 2,
            compute: GIB / 4,
        }
    }

    #[test]
    fn offloading_takes_the_output_layer_first() {
        let model = sizes(4, GIB, 0, GIB / 8);
        assert_eq!(model.offloaded_bytes(0), 0);
        assert_eq!(model.offloaded_bytes(1), GIB / 2);
        assert_eq!(model.offloaded_bytes(3), GIB / 2 + 2 * (GIB + GIB / 8));
        assert_eq!(model.offloaded_bytes(5), GIB / 2 + 4 * (GIB + GIB / 8));
        assert_eq!(model.offloaded_bytes(99), model.offloaded_bytes(5));
    }

    #[test]
    fn no_gpu_means_all_on_cpu() {
        assert_eq!(sizes(8, GIB, 0, 0).place(None, None), Placement::default());
        // num_gpu cannot conjure a GPU.
        assert_eq!(
            sizes(8, GIB, 0, 0).place(None, Some(99)),
            Placement::default()
        );
    }

    #[test]
    fn everything_fits() {
        let model = sizes(28, GIB / 4, 0, GIB / 64);
        let placement = model.place(Some(80 * GIB), None);
        assert_eq!(placement.gpu_layers, 29);
        assert_eq!(placement.cpu_moe_layers, 0);
        assert_eq!(
            placement.vram,
            28 * (GIB / 4 + GIB / 64) + GIB / 2 + GIB / 4
        );
    }

    #[test]
    fn dense_model_splits_by_whole_layers() {
        // 80 layers of 0.5 GiB + 16 MiB KV; 24 GiB free, 1 GiB margin, 0.25 GiB compute.
        let model = sizes(80, GIB / 2, 0, GIB / 64);
        let placement = model.place(Some(24 * GIB), None);
        let per_layer = GIB / 2 + GIB / 64;
        let expected = ((23 * GIB - GIB / 4) / per_layer) as u32;
        assert_eq!(placement.gpu_layers, expected);
        assert!(placement.vram <= 23 * GIB);
        assert!(model.vram(expected + 1, 0) > 23 * GIB);
        // The output layer stays on the CPU unless every layer is offloaded.
        assert_eq!(placement.vram, u64::from(expected) * per_layer + GIB / 4);
    }

    #[test]
    fn moe_keeps_the_fewest_expert_layers_in_ram() {
        // 60 layers: 0.2 GiB attention, 6 GiB experts each.
        let model = sizes(60, GIB / 5, 6 * GIB, GIB / 200);
        let placement = model.place(Some(140 * GIB), None);
        assert_eq!(
            placement.gpu_layers, 61,
            "every layer's attention on the GPU"
        );
        let m = placement.cpu_moe_layers;
        assert!(placement.vram <= 139 * GIB, "{placement:?}");
        assert!(model.vram(61, m - 1) > 139 * GIB, "minimal: {m}");
        // 139 GiB − attention of all layers − output − compute leaves room for 20 layers of
        // experts (6 GiB each): the other 40 stay in RAM.
        assert_eq!(m, 40);
    }

    #[test]
    fn moe_whose_attention_does_not_fit_splits_by_layers() {
        let model = sizes(60, GIB, 6 * GIB, 0);
        let placement = model.place(Some(20 * GIB), None);
        assert_eq!(placement.cpu_moe_layers, 0);
        assert_eq!(placement.gpu_layers, 2); // 2 × 7 GiB + 0.25 ≤ 19 GiB
    }

    #[test]
    fn num_gpu_overrides_without_a_fit_check() {
        let model = sizes(10, GIB, 0, 0);
        let placement = model.place(Some(GIB), Some(4));
        assert_eq!(placement.gpu_layers, 4);
        assert_eq!(placement.vram, 4 * GIB + GIB / 4);
        assert_eq!(model.place(Some(GIB), Some(0)), Placement::default());
        assert_eq!(model.place(Some(100 * GIB), Some(999)).gpu_layers, 11);
        // Negative is automatic.
        assert_eq!(model.place(Some(100 * GIB), Some(-1)).gpu_layers, 11);
    }

    #[test]
    fn too_little_gpu_memory_offloads_nothing() {
        let placement = sizes(10, GIB, 0, 0).place(Some(GIB / 2), None);
        assert_eq!(placement, Placement::default());
    }

    #[test]
    fn recognises_routed_experts_only() {
        for name in [
            "ffn_up_exps.weight",
            "ffn_down_exps.weight",
            "ffn_gate_exps.weight",
            "ffn_gate_up_exps.weight",
            "ffn_down_chexps.weight",
        ] {
            assert!(is_routed_expert(name), "{name}");
        }
        for name in [
            "ffn_up_shexp.weight",
            "ffn_gate_inp.weight",
            "ffn_up.weight",
            "attn_q_a.weight",
            "exp_probs_b.bias",
        ] {
            assert!(!is_routed_expert(name), "{name}");
        }
    }

    #[test]
    fn cpu_moe_pattern_lists_the_first_layers() {
        assert_eq!(cpu_moe_pattern(0), None);
        assert_eq!(
            cpu_moe_pattern(3).unwrap(),
            r"^blk\.(0|1|2)\.ffn_(up|down|gate|gate_up)_(ch|)exps"
        );
    }
}
