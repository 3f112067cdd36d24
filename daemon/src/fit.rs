//! "Will it fit?": before a pull fetches any blob, what the model needs is compared with what
//! this machine has, so that a 400 GB download that could never load is refused in a second
//! instead of after a day.
//!
//! Two questions, asked of the manifest alone where it can answer them:
//! - memory: the model layer's size is its weights, a lower bound of what loading costs. If
//!   that already exceeds RAM (or `WHALE_MAX_MEMORY`) plus the GPUs' memory, the pull is refused
//!   without touching a blob. Otherwise the GGUF header (a few MB at the start of the blob, read
//!   with a `Range` request) gives the planner's full estimate — weights, KV cache (MLA-aware),
//!   compute — at the default context, as a load would plan it;
//! - disk: the layers the store lacks must fit in the free space of the store's filesystem.
//!
//! Totals are compared, not what is free now: models loaded today are evicted tomorrow.

use whale_registry::manifest::media_type;
use whale_registry::{Layer, Manifest, Puller, Resolved, Store};

use crate::engine::Gpu;
use crate::error::Error;
use crate::gguf::GgufFile;
use crate::memory::{self, KvType, MemoryEstimate, format_bytes};

/// How much of a blob is read for its GGUF header at first, and at most. `DeepSeek` V3's header
/// (a 129k-token vocabulary and its merges, 1,000+ tensors) is about 5 MB.
const HEADER_FIRST: u64 = 8 << 20;
const HEADER_MAX: u64 = 64 << 20;

/// What this machine offers a model.
#[derive(Debug, Clone)]
pub struct Machine {
    /// RAM the scheduler may fill (`WHALE_MAX_MEMORY`, or the machine's total).
    pub ram: u64,
    pub gpus: Vec<Gpu>,
    /// The total memory of each worker that answered (`--workers`): a model split over them
    /// holds part of its layers there.
    pub workers: Vec<u64>,
    /// Free bytes on the store's filesystem.
    pub disk_free: u64,
}

impl Machine {
    /// All the memory a model may be planned into.
    pub fn memory(&self) -> u64 {
        self.ram
            .saturating_add(self.gpus.iter().map(|gpu| gpu.total).sum::<u64>())
            .saturating_add(self.workers.iter().sum::<u64>())
    }

    fn describe_memory(&self) -> String {
        use std::fmt::Write as _;
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let mut text = format!("{} RAM", format_bytes(self.ram));
        if self.gpus.is_empty() {
            text.push_str(", no GPU");
        } else {
            let vram: u64 = self.gpus.iter().map(|gpu| gpu.total).sum();
            let count = self.gpus.len();
            let _ = write!(
                text,
                " + {} on {count} GPU{}",
                format_bytes(vram),
                plural(count)
            );
        }
        if !self.workers.is_empty() {
            let memory: u64 = self.workers.iter().sum();
            let count = self.workers.len();
            let _ = write!(
                text,
                " + {} on {count} worker{}",
                format_bytes(memory),
                plural(count)
            );
        }
        text
    }
}

/// How a load would plan the model: the same settings the scheduler uses.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub num_ctx: u32,
    pub num_parallel: u32,
}

/// What pulling and loading the model would take.
#[derive(Debug, Clone)]
pub struct Need {
    /// The planner's estimate when the GGUF header could be read; else weights alone.
    pub memory: MemoryEstimate,
    /// Whether `memory` is the full estimate or only the weights.
    pub estimated: bool,
    /// Bytes still to download (layers the store lacks).
    pub download: u64,
    /// The weights are in the store already (a pull that updates a model's other layers, or
    /// one forced earlier), or partly, from a pull that was checked (or forced) when it
    /// began: memory is not this pull's question.
    pub weights_present: bool,
}

/// Free bytes on the filesystem holding `store`.
pub fn disk_free(store: &Store) -> u64 {
    rustix::fs::statvfs(store.root())
        .map_or(u64::MAX, |stat| stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Works out what the model `resolved` names needs, reading its GGUF header only when the
/// weights alone do not already rule it out.
pub async fn need(
    puller: &Puller,
    resolved: &Resolved,
    store: &Store,
    machine: &Machine,
    plan: Plan,
) -> Need {
    let manifest = resolved.manifest();
    let download = manifest
        .blobs()
        .filter(|layer| !store.has_complete_blob(&layer.digest, layer.size))
        .map(|layer| layer.size)
        .sum();
    let weights = model_bytes(manifest);
    let model_layer = manifest.layer(media_type::MODEL);
    let weights_present = model_layer.is_some_and(|layer| {
        store.has_complete_blob(&layer.digest, layer.size) || store.has_partial_blob(&layer.digest)
    });
    let mut need = Need {
        memory: MemoryEstimate {
            weights,
            total: weights,
            ..MemoryEstimate::default()
        },
        estimated: false,
        download,
        weights_present,
    };
    if weights_present || weights > machine.memory() {
        return need;
    }
    if let Some(layer) = model_layer
        && let Some(gguf) = read_header(puller, resolved, layer).await
    {
        let num_ctx = crate::scheduler::clamp_context(plan.num_ctx, &gguf);
        need.memory = memory::estimate(&gguf, num_ctx, plan.num_parallel, KvType::F16);
        need.estimated = true;
    }
    need
}

/// The bytes of every weights layer: the model, and projectors or adapters loaded beside it.
fn model_bytes(manifest: &Manifest) -> u64 {
    manifest
        .layers
        .iter()
        .filter(|layer| {
            layer.media_type == media_type::MODEL
                || layer.media_type == media_type::ADAPTER
                || layer.media_type.ends_with(".projector")
        })
        .map(|layer| layer.size)
        .sum()
}

/// The GGUF header at the start of `layer`, or `None` when it cannot be read (a registry that
/// refuses, a header larger than [`HEADER_MAX`], not a GGUF): the check then falls back to the
/// weights alone, and the pull goes on.
async fn read_header(puller: &Puller, resolved: &Resolved, layer: &Layer) -> Option<GgufFile> {
    let mut len = HEADER_FIRST;
    loop {
        let bytes = match puller.read_prefix(resolved, layer, len).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::debug!(%error, "cannot read the GGUF header before pulling");
                return None;
            }
        };
        match GgufFile::parse(bytes.as_slice(), layer.size) {
            Ok(gguf) => return Some(gguf),
            // Ran off the end of what was read: the header is longer.
            Err(crate::gguf::GgufError::Read { .. })
                if (bytes.len() as u64) == len && len < HEADER_MAX =>
            {
                len = (len * 4).min(HEADER_MAX);
            }
            Err(error) => {
                tracing::debug!(%error, "cannot parse the GGUF header before pulling");
                return None;
            }
        }
    }
}

/// `Ok` when the model fits this machine, else the refusal, with the numbers and what would
/// make it fit.
pub fn check(name: &str, need: &Need, machine: &Machine) -> Result<(), Error> {
    let memory_short = !need.weights_present && need.memory.total > machine.memory();
    let disk_short = need.download > machine.disk_free;
    if !memory_short && !disk_short {
        return Ok(());
    }
    let memory = &need.memory;
    let needs = if need.estimated {
        format!(
            "{} of memory to load (weights {}, KV cache {}, compute {})",
            format_bytes(memory.total),
            format_bytes(memory.weights),
            format_bytes(memory.kv_cache),
            format_bytes(memory.compute)
        )
    } else {
        format!(
            "at least {} of memory to load (its weights)",
            format_bytes(memory.total)
        )
    };
    let mut message = format!(
        "{name} will not fit on this machine: it needs {needs}, and this machine has {}",
        machine.describe_memory()
    );
    let disk = format!(
        "; it needs {} of disk to download, and {} is free",
        format_bytes(need.download),
        format_bytes(machine.disk_free)
    );
    message.push_str(&disk);
    message.push_str(if memory_short {
        ". Pull a smaller tag or quantization (or add memory), or pull with --force \
         (\"force\": true) to download it anyway"
    } else {
        ". Free some disk (whale rm removes models), or pull with --force (\"force\": true) to \
         try anyway"
    });
    Err(Error::WontFit(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn need(weights: u64, download: u64) -> Need {
        Need {
            memory: MemoryEstimate {
                weights,
                total: weights,
                ..MemoryEstimate::default()
            },
            estimated: false,
            download,
            weights_present: false,
        }
    }

    fn machine(ram: u64, gpus: usize, disk_free: u64) -> Machine {
        let gpu = |i| Gpu {
            name: format!("CUDA{i}"),
            description: "NVIDIA H200".into(),
            total: 141 * GIB,
            free: 140 * GIB,
        };
        Machine {
            ram,
            gpus: (0..gpus).map(gpu).collect(),
            workers: Vec::new(),
            disk_free,
        }
    }

    #[test]
    fn a_671b_model_on_a_laptop_is_refused_with_both_numbers() {
        let error = check(
            "deepseek-r1:671b",
            &need(404_430_188_519, 404_430_188_519),
            &machine(24 * GIB, 0, 70 * GIB),
        )
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("deepseek-r1:671b will not fit on this machine"));
        assert!(error.contains("at least 376.7 GiB of memory"), "{error}");
        assert!(error.contains("24.0 GiB RAM, no GPU"), "{error}");
        assert!(error.contains("376.7 GiB of disk to download, and 70.0 GiB is free"));
        assert!(error.contains("smaller tag"), "{error}");
    }

    #[test]
    fn gpus_count_as_memory_and_disk_is_its_own_question() {
        let eight_gpus = machine(2048 * GIB, 8, 10_000 * GIB);
        assert!(check("r1", &need(404 * GIB, 404 * GIB), &eight_gpus).is_ok());
        let small_disk = machine(2048 * GIB, 8, 100 * GIB);
        let error = check("r1", &need(404 * GIB, 404 * GIB), &small_disk)
            .unwrap_err()
            .to_string();
        assert!(error.contains("2.0 TiB RAM + 1.1 TiB on 8 GPUs"), "{error}");
        assert!(error.contains("Free some disk"), "{error}");
    }

    #[test]
    fn workers_count_as_memory() {
        let mut laptop = machine(64 * GIB, 0, 1000 * GIB);
        assert!(check("v3", &need(240 * GIB, 240 * GIB), &laptop).is_err());
        laptop.workers = vec![128 * GIB, 128 * GIB];
        assert!(check("v3", &need(240 * GIB, 240 * GIB), &laptop).is_ok());
        let error = check("r1", &need(404 * GIB, 404 * GIB), &laptop)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("64.0 GiB RAM, no GPU + 256.0 GiB on 2 workers"),
            "{error}"
        );
    }

    #[test]
    fn weights_already_here_are_not_refused_for_memory() {
        let mut present = need(404 * GIB, 0);
        present.weights_present = true;
        assert!(check("r1", &present, &machine(24 * GIB, 0, GIB)).is_ok());
    }
}
