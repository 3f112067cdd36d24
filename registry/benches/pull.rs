//! Pull throughput against `curl` on loopback: a 250 MB blob served by the crate's own `/v2/`
//! server, pulled with `Puller` (parts, sha256 verification, rename) and fetched with
//! `curl -o`, 7 rounds each, alternating. Prints MB/s and the ratios, also against curl followed
//! by `sha256sum` of its file (the verification whale does while it pulls).
//!
//! Run: `cargo bench -p whale-registry --bench pull` (needs `curl` and `sha256sum` on PATH).

use std::process::Command;
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use whale_registry::manifest::media_type;
use whale_registry::progress::NoProgress;
use whale_registry::{Digest, Layer, Manifest, ModelRef, PullOptions, Puller, Store, server};

const SIZE: usize = 250 * 1000 * 1000;
const ROUNDS: usize = 7;

fn layer(media_type: &str, bytes: &[u8]) -> Layer {
    Layer {
        media_type: media_type.to_owned(),
        digest: Digest::of_bytes(bytes),
        size: bytes.len() as u64,
        from: None,
        name: None,
    }
}

fn mb_per_s(elapsed: Duration) -> f64 {
    SIZE as f64 / 1e6 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = Store::open(dir.path().join("source")).expect("source store");
    let mut blob = vec![0u8; SIZE];
    rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut blob);
    let config = br#"{"model_format":"gguf"}"#.to_vec();
    let manifest = Manifest::new(
        layer(media_type::DOCKER_CONFIG, &config),
        vec![layer(media_type::MODEL, &blob)],
    );
    let digest = manifest.layers[0].digest.clone();
    source
        .write_blob(&digest, &blob[..])
        .await
        .expect("write blob");
    source
        .write_blob(&manifest.config.digest, &config[..])
        .await
        .expect("write config");
    drop(blob);
    let name = ModelRef::parse("bench:latest").expect("name");
    source
        .write_manifest(&name, &manifest)
        .await
        .expect("write manifest");

    // The server gets a runtime of its own, as if it were another process: sharing the
    // puller's two worker threads would make whale's rounds (not curl's) compete with it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("server runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, server::router(source)).await
        })
    });
    let remote = ModelRef::parse(&format!("{addr}/library/bench:latest")).expect("name");
    let url = format!("http://{addr}/v2/library/bench/blobs/{digest}");
    let puller = Puller::new(PullOptions {
        insecure: true,
        ..PullOptions::default()
    });

    let mut whale = Vec::new();
    let mut curl = Vec::new();
    let mut curl_verified = Vec::new();
    for round in 0..ROUNDS {
        let target_dir = dir.path().join(format!("target-{round}"));
        let target = Store::open(&target_dir).expect("target store");
        let start = Instant::now();
        puller
            .pull(&target, &remote, &NoProgress)
            .await
            .expect("pull");
        whale.push(start.elapsed());
        std::fs::remove_dir_all(&target_dir).expect("clean up");

        let out = dir.path().join("curl.out");
        let start = Instant::now();
        let status = Command::new("curl")
            .args(["-s", "-f", "-o"])
            .arg(&out)
            .arg(&url)
            .status()
            .expect("run curl");
        curl.push(start.elapsed());
        assert!(status.success(), "curl failed: {status}");
        // What a careful script does to verify the download, as whale does while it pulls.
        let verified = Command::new("sha256sum")
            .arg(&out)
            .output()
            .expect("run sha256sum");
        curl_verified.push(start.elapsed());
        assert!(
            String::from_utf8_lossy(&verified.stdout).starts_with(digest.hex()),
            "curl's file does not match"
        );
        std::fs::remove_file(&out).expect("clean up");
    }

    println!(
        "pull of a {} MB blob over loopback, {ROUNDS} rounds",
        SIZE / 1_000_000
    );
    println!(
        "{:<6} {:>11} {:>10} {:>7} {:>17} {:>7}",
        "round", "whale MB/s", "curl MB/s", "ratio", "curl+sha256 MB/s", "ratio"
    );
    let row = |label: &str, w: Duration, c: Duration, s: Duration| {
        let (w, c, s) = (mb_per_s(w), mb_per_s(c), mb_per_s(s));
        println!(
            "{label:<6} {w:>11.0} {c:>10.0} {:>7.2} {s:>17.0} {:>7.2}",
            w / c,
            w / s
        );
    };
    for round in 0..ROUNDS {
        row(
            &(round + 1).to_string(),
            whale[round],
            curl[round],
            curl_verified[round],
        );
    }
    let best = |times: &[Duration]| times.iter().copied().min().expect("rounds");
    row("best", best(&whale), best(&curl), best(&curl_verified));
    let median = |times: &[Duration]| {
        let mut sorted = times.to_vec();
        sorted.sort();
        sorted[sorted.len() / 2]
    };
    row(
        "median",
        median(&whale),
        median(&curl),
        median(&curl_verified),
    );
    // Each round pairs a pull with the curl right after it: the median of the per-round ratios
    // is the least noisy number on a shared machine.
    let median_ratio = |baseline: &[Duration]| {
        let mut ratios: Vec<f64> = whale
            .iter()
            .zip(baseline)
            .map(|(w, b)| b.as_secs_f64() / w.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    println!(
        "median of the per-round ratios: {:.2} against curl, {:.2} against curl+sha256",
        median_ratio(&curl),
        median_ratio(&curl_verified)
    );
}
