//! One model across machines with llama.cpp's RPC backend (ggml-rpc).
//!
//! A worker (`whale worker`, [`worker`]) serves its machine's devices; whaled (`--workers`)
//! gives the runners their addresses, and a runner loading a model adds each worker as a
//! llama.cpp device through a [`link::Connector`], then splits the model's layers between this
//! machine and the workers in proportion to their free memory ([`split`]). The link is guarded
//! ([`link`]): ggml's protocol itself has no authentication.

pub mod ggml;
pub mod link;
pub mod worker;

use serde::{Deserialize, Serialize};

pub use link::Token;

/// A worker as a runner is given it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerLink {
    /// `host:port` of its front, as configured.
    pub address: String,
    /// The shared token, if one is configured.
    pub token: Option<String>,
    /// With TLS: the PEM file of the certificates to trust.
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
}

/// Where some of a model's layers live: `local`, or a worker's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    #[serde(rename = "where")]
    pub place: String,
    pub layers: u32,
}

/// How many of `n_layer + 1` layers (the repeating ones and the output layer) go to devices
/// with `remote` free bytes in all when this machine has `local` free: in proportion, at least
/// one per remote device while layers last.
pub fn remote_layers(n_layer: u32, local: u64, remote: &[u64]) -> u32 {
    let total_layers = u64::from(n_layer) + 1;
    let remote_free: u64 = remote.iter().sum();
    let all = local.saturating_add(remote_free).max(1);
    let share = (u128::from(total_layers) * u128::from(remote_free) + u128::from(all) / 2)
        / u128::from(all);
    (share as u32).clamp((remote.len() as u32).min(n_layer + 1), n_layer + 1)
}

/// The layers each device gets when llama.cpp offloads `offloaded` of `n_layer + 1` layers to
/// devices with the given free memory (its split by free memory, `llama-model.cpp`,
/// `load_tensors`): the last `offloaded` layers, each to the device whose cumulative share of
/// free memory first exceeds the layer's position. The first entry is what stays local.
pub fn split(n_layer: u32, offloaded: u32, free: &[u64]) -> Vec<u32> {
    let mut counts = vec![0u32; free.len() + 1];
    let all = n_layer + 1;
    let offloaded = offloaded.min(all);
    counts[0] = all - offloaded;
    if free.is_empty() || offloaded == 0 {
        counts[0] = all;
        return counts;
    }
    let sum: f64 = free.iter().map(|&bytes| bytes as f64).sum::<f64>().max(1.0);
    let mut running = 0.0;
    let points: Vec<f32> = free
        .iter()
        .map(|&bytes| {
            running += bytes as f64;
            (running / sum) as f32
        })
        .collect();
    for position in 0..offloaded {
        let at = position as f32 / offloaded as f32;
        let device = points
            .partition_point(|&point| point <= at)
            .min(free.len() - 1);
        counts[device + 1] += 1;
    }
    counts
}

/// The memory of each worker that answers; those that do not are logged and left out.
pub async fn worker_memory(workers: &[WorkerLink]) -> Vec<link::Memory> {
    let mut answers = Vec::new();
    for worker in workers {
        let peer = match link::Peer::new(worker) {
            Ok(peer) => peer,
            Err(error) => {
                tracing::warn!(%error, worker = worker.address, "worker settings");
                continue;
            }
        };
        match link::memory(&peer).await {
            Ok(memory) => answers.push(memory),
            Err(error) => tracing::warn!(%error, "worker memory"),
        }
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_split_by_free_memory() {
        // Three machines with the same free memory: a third each (5 layers + output = 6).
        assert_eq!(remote_layers(5, 100, &[100, 100]), 4);
        assert_eq!(split(5, 4, &[100, 100]), [2, 2, 2]);
        // Everything remote.
        assert_eq!(split(3, 4, &[1, 3]), [0, 1, 3]);
        // Nothing remote.
        assert_eq!(split(3, 0, &[1, 3]), [4, 0, 0]);
        // Each worker gets a layer even when this machine has far more memory.
        assert_eq!(remote_layers(10, 1 << 40, &[1, 1]), 2);
        assert_eq!(remote_layers(10, 0, &[1, 1]), 11);
    }
}
