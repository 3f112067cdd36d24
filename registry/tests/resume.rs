//! Pulls in separate processes: one killed with SIGKILL mid-download and resumed (the server
//! counts bytes: only parts that were in flight are fetched twice), and two pulling the same
//! model into one store at once.
//!
//! The child processes are this test binary run again with `WHALE_TEST_CHILD` set: the test
//! `child_pull` then pulls as told by the environment and exits.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use futures::StreamExt;
use support::{Received, options, random_model, serve};
use whale_registry::progress::NoProgress;
use whale_registry::{ModelRef, PullOptions, Puller, Store, server};

const PART: u64 = 4 * 1024 * 1024;
const IN_FLIGHT: usize = 2;

fn child_options() -> PullOptions {
    PullOptions {
        part_size: Some(PART),
        parts_in_flight: IN_FLIGHT,
        stall_timeout: Duration::from_secs(10),
        ..options()
    }
}

/// Entry point of the child processes; does nothing unless `WHALE_TEST_CHILD` is set.
#[tokio::test]
async fn child_pull() {
    let Ok(root) = std::env::var("WHALE_TEST_CHILD") else {
        return;
    };
    let name = ModelRef::parse(&std::env::var("WHALE_TEST_CHILD_NAME").unwrap()).unwrap();
    let store = Store::open(root).unwrap();
    Puller::new(child_options())
        .pull(&store, &name, &NoProgress)
        .await
        .unwrap();
}

fn spawn_child(root: &Path, name: &ModelRef) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_pull", "--nocapture", "--test-threads=1"])
        .env("WHALE_TEST_CHILD", root)
        .env("WHALE_TEST_CHILD_NAME", name.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Counts body bytes sent, and slows them down while `throttle` is set.
#[derive(Clone, Default)]
struct Meter {
    sent: Arc<AtomicU64>,
    throttle: Arc<AtomicBool>,
}

async fn metered(State(meter): State<Meter>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().then(move |chunk| {
        let meter = meter.clone();
        async move {
            if let Ok(chunk) = &chunk {
                if meter.throttle.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(60)).await;
                }
                meter.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            chunk
        }
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The counter's value once it has stopped moving for a while.
async fn settled(counter: &AtomicU64) -> u64 {
    let mut last = counter.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = counter.load(Ordering::Relaxed);
        if now == last {
            return now;
        }
        last = now;
    }
}

fn done_parts(state: &Path) -> Vec<bool> {
    std::fs::read(state)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| serde_json::from_value(v["done"].clone()).ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pull_resumes_and_refetches_only_parts_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(dir.path().join("source")).unwrap();
    let model = random_model(64 * 1024 * 1024);
    let size = model.manifest.layers[0].size;
    model.put(&source, &ModelRef::parse("big:1").unwrap()).await;
    let meter = Meter::default();
    meter.throttle.store(true, Ordering::Relaxed);
    let router =
        server::router(source).layer(middleware::from_fn_with_state(meter.clone(), metered));
    let addr = serve(router).await;
    let name = ModelRef::parse(&format!("{addr}/library/big:1")).unwrap();

    let root: PathBuf = dir.path().join("target");
    let target = Store::open(&root).unwrap();
    let weights = &model.blobs[0].0;
    let state_path = root
        .join("blobs")
        .join(format!("{}-partial.json", weights.file_name()));
    let mut child = spawn_child(&root, &name);
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        let done = done_parts(&state_path).iter().filter(|d| **d).count();
        if done >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child finished before it was killed"
        );
        assert!(Instant::now() < deadline, "the child made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The server notices the closed connections only at its next write: let the
    // chunks already on their way be counted before the count starts again.
    let first_run = settled(&meter.sent).await;
    let done = done_parts(&state_path);
    let done_bytes: u64 = done
        .iter()
        .enumerate()
        .filter(|(_, d)| **d)
        .map(|(i, _)| PART.min(size - i as u64 * PART))
        .sum();
    assert!(done_bytes < size, "killed midway");
    assert!(!target.has_blob(weights));

    meter.throttle.store(false, Ordering::Relaxed);
    meter.sent.store(0, Ordering::Relaxed);
    let received = Received::default();
    Puller::new(child_options())
        .pull(&target, &name, &received)
        .await
        .unwrap();
    model.assert_in(&target, &name).await;
    // The puller reports as received exactly the blob bytes the server sent this time: not
    // the parts the killed run had already written.
    assert_eq!(
        received.bytes(),
        meter.sent.load(Ordering::Relaxed) - model.manifest_bytes.len() as u64
    );
    // Besides the missing parts, the second run fetches the manifest and the small blobs.
    let small: u64 = model.blobs[1..]
        .iter()
        .map(|(_, b)| b.len() as u64)
        .sum::<u64>()
        + model.manifest_bytes.len() as u64;
    let second_run = meter.sent.load(Ordering::Relaxed) - small;
    assert!(
        second_run <= size - done_bytes,
        "second run fetched {second_run} bytes; {} were missing",
        size - done_bytes
    );
    let wasted = (first_run + second_run).saturating_sub(size);
    assert!(
        wasted <= IN_FLIGHT as u64 * PART,
        "{wasted} bytes fetched twice; at most {IN_FLIGHT} parts of {PART} were in flight"
    );
    assert!(!state_path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_pull_the_same_model_into_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(dir.path().join("source")).unwrap();
    let model = random_model(24 * 1024 * 1024);
    model
        .put(&source, &ModelRef::parse("shared:1").unwrap())
        .await;
    let addr = serve(server::router(source)).await;
    let name = ModelRef::parse(&format!("{addr}/library/shared:1")).unwrap();
    let root = dir.path().join("target");
    Store::open(&root).unwrap();

    let mut children = [spawn_child(&root, &name), spawn_child(&root, &name)];
    // And a third puller in this process, concurrently.
    let store = Store::open(&root).unwrap();
    Puller::new(child_options())
        .pull(&store, &name, &NoProgress)
        .await
        .unwrap();
    for child in &mut children {
        let status = tokio::task::block_in_place(|| child.wait().unwrap());
        assert!(status.success(), "a concurrent pull failed: {status}");
    }
    model.assert_in(&store, &name).await;
    let junk: Vec<String> = support::files_under(&root.join("blobs"))
        .into_iter()
        .filter(|f| {
            Path::new(f).extension().is_none_or(|e| e != "lock")
                && !model.blobs.iter().any(|(d, _)| *f == d.file_name())
        })
        .collect();
    assert!(junk.is_empty(), "{junk:?}");
}

/// What whaled does at start: opening the store removes what a crash left (temp files, a
/// partial download that cannot resume) and keeps a partial download that can, however old;
/// the next pull fetches only the parts it lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_store_cleans_up_and_a_pull_resumes_from_the_partial_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(dir.path().join("source")).unwrap();
    let model = random_model(5 * PART as usize);
    let size = model.manifest.layers[0].size;
    model
        .put(&source, &ModelRef::parse("kept:1").unwrap())
        .await;
    let meter = Meter::default();
    let router =
        server::router(source).layer(middleware::from_fn_with_state(meter.clone(), metered));
    let addr = serve(router).await;
    let name = ModelRef::parse(&format!("{addr}/library/kept:1")).unwrap();

    let root = dir.path().join("target");
    Store::open(&root).unwrap();
    let blobs = root.join("blobs");
    // A download of the weights that got its first two parts before whaled died.
    let weights = &model.blobs[0].0;
    let done = 2 * PART as usize;
    let mut bytes = model.blob(weights)[..done].to_vec();
    bytes.resize(size as usize, 0);
    let partial = blobs.join(format!("{}-partial", weights.file_name()));
    let state = blobs.join(format!("{}-partial.json", weights.file_name()));
    std::fs::write(&partial, bytes).unwrap();
    let parts = size.div_ceil(PART) as usize;
    let marks: Vec<bool> = (0..parts).map(|part| part < 2).collect();
    let table = serde_json::json!({"size": size, "part_size": PART, "done": marks});
    std::fs::write(&state, table.to_string()).unwrap();
    // And what else a crash leaves: an upload's temp file, a manifest's, and the data of a
    // download whose state file never got written.
    let other = format!("sha256-{}", "ab".repeat(32));
    let leftovers = [
        blobs.join(format!("{other}-5f2a.tmp")),
        root.join("manifests/registry.ollama.ai/library/kept/.1.9c1d.tmp"),
        blobs.join(format!("{other}-partial")),
    ];
    for path in &leftovers {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"left behind").unwrap();
    }
    // All of it untouched for an hour.
    let hour_ago = std::time::SystemTime::now() - Duration::from_hours(1);
    for path in leftovers.iter().chain([&partial, &state]) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(hour_ago).unwrap();
    }

    let store = Store::open(&root).unwrap();
    for path in &leftovers {
        assert!(!path.exists(), "{} was kept", path.display());
    }
    assert!(
        partial.exists() && state.exists(),
        "the resumable download was removed"
    );

    Puller::new(child_options())
        .pull(&store, &name, &NoProgress)
        .await
        .unwrap();
    model.assert_in(&store, &name).await;
    let small: u64 = model.blobs[1..]
        .iter()
        .map(|(_, b)| b.len() as u64)
        .sum::<u64>()
        + model.manifest_bytes.len() as u64;
    let fetched = meter.sent.load(Ordering::Relaxed) - small;
    assert_eq!(
        fetched,
        size - done as u64,
        "only the missing parts are fetched"
    );
    assert!(!partial.exists() && !state.exists());
}
