//! Pulls between whales: `whale pull --from ADDRESS MODEL` fetches a model from another
//! whaled's `/v2/` routes (a machine on the same network), digest-verified like any registry
//! pull, and leaves the other store as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::json;
use whale_tests::fixtures;
use whale_tests::whaled::Whaled;

/// Every file of a store with its size and modification time.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read store dir") {
            let entry = entry.expect("dir entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                files.insert(entry.path(), (meta.len(), meta.modified().expect("mtime")));
            }
        }
    }
    files
}

/// The digest `/api/tags` gives for `name`.
fn digest_of(daemon: &Whaled, name: &str) -> Option<String> {
    let (status, tags) = daemon.get("/api/tags");
    assert_eq!(status, 200, "{tags}");
    tags["models"]
        .as_array()?
        .iter()
        .find(|model| model["name"] == name)
        .map(|model| model["digest"].as_str().expect("digest").to_owned())
}

#[test]
fn pull_from_another_whale_copies_the_model_and_leaves_its_store_alone() {
    let source = Whaled::start();
    source.create_from_gguf("tiny", &fixtures::qwen2());
    let source_digest = digest_of(&source, "tiny:latest").expect("tiny is in the source");
    let before = snapshot(&source.models);

    let daemon = Whaled::start();
    let output = daemon
        .whale(["pull", "--from", &source.url(), "tiny"])
        .output()
        .expect("run whale pull");
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        digest_of(&daemon, "tiny:latest").as_deref(),
        Some(source_digest.as_str()),
        "the copy's manifest differs"
    );
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "tiny", "prompt": "Hello", "stream": false,
                "options": {"num_predict": 4}}),
    );
    assert_eq!(status, 200, "the copy does not run: {body}");
    assert_eq!(
        snapshot(&source.models),
        before,
        "the source's store changed"
    );

    // Names the source lacks, and addresses that are not a whale's, fail with the reason.
    let output = daemon
        .whale(["pull", "--from", &source.url(), "absent"])
        .output()
        .expect("run whale pull");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error:") && stderr.contains("not found"),
        "{stderr}"
    );
    let (status, body) = daemon.post(
        "/api/pull",
        &json!({"model": "tiny", "from": "ftp://example", "stream": false}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.contains("from must be the address of another whale")),
        "{body}"
    );
    assert_eq!(
        digest_of(&daemon, "tiny:latest").as_deref(),
        Some(source_digest.as_str())
    );
}
