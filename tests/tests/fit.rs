//! "Will it fit?" before downloading: a pull compares what the model needs (from its manifest,
//! and its GGUF header when the weights alone do not decide) with this machine's memory and
//! disk, and refuses with the numbers before fetching the model; `--force` goes ahead.
//!
//! The model pulled is served by another whaled's `/v2/` (`--from`): a manifest written into
//! its store by hand names DeepSeek R1 671B's real layer size, so nothing of that size exists.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest as _, Sha256};
use whale_tests::fixtures;
use whale_tests::whaled::Whaled;

/// `deepseek-r1:671b` (`Q4_K_M`) as the Ollama registry lists it: 404 GB of weights.
const R1_671B_BYTES: u64 = 404_430_188_519;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes a manifest for `library/<model>:<tag>` into the store at `root`, with a real config
/// blob and a model layer of `size` bytes whose blob is not there.
fn write_manifest_without_weights(root: &Path, model: &str, tag: &str, size: u64) -> String {
    let config = serde_json::to_vec(&json!({
        "model_format": "gguf", "model_family": "deepseek2", "model_type": "671B",
        "file_type": "Q4_K_M", "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap();
    let config_hex = sha256_hex(&config);
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::fs::write(root.join(format!("blobs/sha256-{config_hex}")), &config).unwrap();
    let weights_hex = sha256_hex(format!("{model}:{tag} weights").as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": format!("sha256:{config_hex}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.ollama.image.model",
                    "digest": format!("sha256:{weights_hex}"), "size": size}]
    });
    let dir = root.join(format!("manifests/registry.ollama.ai/library/{model}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(tag), serde_json::to_vec(&manifest).unwrap()).unwrap();
    weights_hex
}

/// Names of the files in a store's `blobs/` folder.
fn blob_files(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("blobs"))
        .map(|dir| {
            dir.map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Responses the source gave on its `/v2/` routes with this status, from its `/metrics`.
fn v2_responses(source: &Whaled, status: u16) -> f64 {
    let text = reqwest::blocking::get(format!("{}/metrics", source.url()))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with("whale_http_requests_total"))
        .filter(|line| line.contains("/v2/") && line.contains(&format!("status=\"{status}\"")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn output_text(output: &std::process::Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_671b_pull_on_a_24_gb_machine_is_refused_before_any_blob_and_force_goes_ahead() {
    let source = Whaled::start();
    let weights =
        write_manifest_without_weights(&source.models, "deepseek-r1", "671b", R1_671B_BYTES);
    let daemon = Whaled::builder().env("WHALE_MAX_MEMORY", "24GiB").start();

    let started = Instant::now();
    let output = daemon
        .whale(["pull", "--from", &source.url(), "deepseek-r1:671b"])
        .output()
        .expect("run whale pull");
    let took = started.elapsed();
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(took < Duration::from_secs(2), "the refusal took {took:?}");
    for expected in [
        "will not fit on this machine",
        "at least 376.7 GiB of memory",
        "24.0 GiB RAM",
        "376.7 GiB of disk to download",
        "is free",
        "hint:",
        "--force",
    ] {
        assert!(text.contains(expected), "no {expected:?} in {text}");
    }
    assert!(
        v2_responses(&source, 404) < 0.5,
        "the blob was asked for: {text}"
    );
    assert!(
        blob_files(&daemon.models).is_empty(),
        "{:?}",
        blob_files(&daemon.models)
    );

    // The API says the same with 507, and nothing is listed.
    let (status, body) = daemon.post(
        "/api/pull",
        &json!({"model": "deepseek-r1:671b", "from": source.url(), "stream": false}),
    );
    assert_eq!(status, 507, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.contains("will not fit") && error.contains("free")),
        "{body}"
    );
    let (_, tags) = daemon.get("/api/tags");
    assert_eq!(tags["models"], json!([]), "{tags}");

    // --force skips the check: the pull asks for the weights, which this source lacks.
    let output = daemon
        .whale([
            "pull",
            "--force",
            "--from",
            &source.url(),
            "deepseek-r1:671b",
        ])
        .output()
        .expect("run whale pull --force");
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(!text.contains("will not fit"), "{text}");
    assert!(text.contains("not found"), "{text}");
    assert!(
        v2_responses(&source, 404) >= 1.0,
        "the blob was not asked for"
    );
    assert!(
        !blob_files(&daemon.models)
            .iter()
            .any(|name| name == &format!("sha256-{weights}")),
        "a blob that was never served is in the store"
    );
}

#[test]
fn the_gguf_header_decides_when_the_weights_alone_would_fit() {
    // The tiny deepseek2 fixture weighs a few MB, but with DeepSeek's 129k vocabulary its
    // compute buffers alone take hundreds of MB: a cap between the two is only crossed by the
    // planner's estimate, which needs the GGUF header.
    let fixture = fixtures::deepseek2();
    let size = std::fs::metadata(&fixture).unwrap().len();
    let source = Whaled::start();
    source.create_from_gguf("tiny-ds", &fixture);

    let cap = size * 2;
    let daemon = Whaled::builder()
        .env("WHALE_MAX_MEMORY", cap.to_string())
        .start();
    let (status, body) = daemon.post(
        "/api/pull",
        &json!({"model": "tiny-ds", "from": source.url(), "stream": false}),
    );
    assert_eq!(status, 507, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("will not fit") && error.contains("KV cache") && error.contains("compute"),
        "{body}"
    );
    assert!(
        blob_files(&daemon.models).is_empty(),
        "{:?}",
        blob_files(&daemon.models)
    );
    assert!(
        v2_responses(&source, 206) >= 1.0,
        "the header was not read with a Range request"
    );

    // Streaming, the refusal is the last line; with force the model comes and runs.
    let lines = daemon.stream(
        "/api/pull",
        &json!({"model": "tiny-ds", "from": source.url()}),
    );
    assert!(
        lines
            .last()
            .and_then(|line| line["error"].as_str())
            .is_some_and(|error| error.contains("will not fit")),
        "{lines:?}"
    );
    let (status, body) = daemon.post(
        "/api/pull",
        &json!({"model": "tiny-ds", "from": source.url(), "stream": false, "force": true}),
    );
    assert_eq!(status, 200, "{body}");
    let (_, tags) = daemon.get("/api/tags");
    assert_eq!(tags["models"][0]["name"], "tiny-ds:latest", "{tags}");
}
