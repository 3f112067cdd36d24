//! Full disks and a daemon killed while creating: the store is on a small tmpfs (so these tests
//! mount one, and need root or `CAP_SYS_ADMIN`, as CI has), and whatever fills it, a pull or a
//! create ends with "no space left" (507), keeps no partial blob and no manifest, and whaled
//! keeps serving; once there is room the same pull or create works.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use whale_tests::fixtures;
use whale_tests::whaled::{Whaled, sha256_file, signal};

/// `mount`/`umount` as root: directly when this is root, else through `sudo -n`.
fn as_root(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    if root {
        Command::new(program)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", program]);
        sudo
    }
}

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let output = as_root("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "these tests need to mount a small tmpfs (root or CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let status = as_root("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot resize the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = as_root("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Every file under `root`, relative to it.
fn files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    found.sort();
    found
}

/// Files of the store that are not whole blobs: partial downloads, temp files, manifests.
fn leftovers(root: &Path) -> Vec<PathBuf> {
    files(root)
        .into_iter()
        .filter(|path| {
            let name = path.to_string_lossy();
            name.starts_with("manifests") || name.contains("partial") || name.ends_with(".tmp")
        })
        .collect()
}

/// A CLI command that ran into the full disk: it failed saying so, and left nothing behind.
fn assert_no_space(output: &std::process::Output, store: &Path) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no space left"), "{stderr}");
    assert_eq!(leftovers(store), Vec::<PathBuf>::new());
}

fn assert_clean(daemon: &Whaled) {
    let output = daemon.whale(["verify"]).output().expect("whale verify");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, tags) = daemon.get("/api/tags");
    assert_eq!(status, 200, "{tags}");
    assert_eq!(tags["models"], json!([]), "{tags}");
}

#[test]
fn a_pull_that_fills_the_disk_keeps_nothing_and_says_so() {
    let source = Whaled::start();
    source.create_from_gguf("tiny", &fixtures::qwen2());
    let disk = Tmpfs::mount("8m");
    let daemon = Whaled::builder().models(disk.path()).start();

    // Asked first, the pull is refused before it downloads: the disk is too small.
    let (status, body) = daemon.post(
        "/api/pull",
        &json!({"model": "tiny", "from": source.url(), "stream": false}),
    );
    assert_eq!(status, 507, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("of disk to download"),
        "{body}"
    );

    // Forced, it runs into the full disk, and removes what it wrote.
    let (status, body) = daemon.post(
        "/api/pull",
        &json!({"model": "tiny", "from": source.url(), "stream": false, "force": true}),
    );
    assert_eq!(status, 507, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no space left"),
        "{body}"
    );
    assert_eq!(leftovers(disk.path()), Vec::<PathBuf>::new());
    assert_clean(&daemon);

    // The CLI says it with a hint, streaming.
    let output = daemon
        .whale(["pull", "--force", "--from", &source.url(), "tiny"])
        .output()
        .unwrap();
    assert_no_space(&output, disk.path());

    // With room, the same pull works.
    disk.resize("64m");
    let (status, body) = daemon.post(
        "/api/pull",
        &json!({"model": "tiny", "from": source.url(), "stream": false}),
    );
    assert_eq!(status, 200, "{body}");
    let (_, tags) = daemon.get("/api/tags");
    assert_eq!(tags["models"][0]["name"], "tiny:latest", "{tags}");
}

#[test]
fn a_create_that_fills_the_disk_keeps_nothing_and_says_so() {
    let disk = Tmpfs::mount("8m");
    let daemon = Whaled::builder().models(disk.path()).start();
    let gguf = fixtures::qwen2();
    let work = tempfile::tempdir().unwrap();
    std::fs::copy(&gguf, work.path().join("tiny.gguf")).unwrap();
    std::fs::write(
        work.path().join("Modelfile"),
        "FROM ./tiny.gguf\nPARAMETER temperature 0\n",
    )
    .unwrap();

    let create = || {
        daemon
            .whale(["create", "tiny", "-f"])
            .arg(work.path().join("Modelfile"))
            .current_dir(work.path())
            .output()
            .unwrap()
    };
    assert_no_space(&create(), disk.path());
    assert!(
        files(&disk.path().join("blobs")).is_empty(),
        "{:?}",
        files(disk.path())
    );
    assert_clean(&daemon);

    disk.resize("64m");
    let output = create();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An upload body that sends `file` in 256 KiB pieces, pausing between them, counting bytes.
struct SlowFile {
    file: std::fs::File,
    sent: Arc<AtomicU64>,
}

impl Read for SlowFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(20));
        let len = buf.len().min(256 << 10);
        let n = self.file.read(&mut buf[..len])?;
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn whaled_killed_during_a_create_leaves_a_clean_store_and_the_create_works_after() {
    let store = tempfile::tempdir().unwrap();
    let start = || Whaled::builder().models(store.path()).start();
    let gguf = fixtures::qwen2();
    let digest = sha256_file(&gguf);
    let size = std::fs::metadata(&gguf).unwrap().len();

    let mut daemon = start();
    let sent = Arc::new(AtomicU64::new(0));
    let upload = {
        let url = format!("{}/api/blobs/{digest}", daemon.url());
        let body = SlowFile {
            file: std::fs::File::open(&gguf).unwrap(),
            sent: Arc::clone(&sent),
        };
        std::thread::spawn(move || {
            Whaled::http()
                .post(url)
                .body(reqwest::blocking::Body::sized(body, size))
                .send()
        })
    };
    while sent.load(Ordering::Relaxed) < size / 3 {
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(daemon.pid(), "KILL");
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
    assert!(
        upload.join().unwrap().is_err() || sent.load(Ordering::Relaxed) < size,
        "the upload finished before whaled was killed"
    );

    let daemon = start();
    assert_clean(&daemon);
    let hex = digest.trim_start_matches("sha256:");
    assert!(
        !store.path().join(format!("blobs/sha256-{hex}")).exists(),
        "a blob cut short is in the store"
    );
    daemon.create_from_gguf("tiny", &gguf);
    let (status, answer) = daemon.post(
        "/api/generate",
        &json!({"model": "tiny", "prompt": "Hello", "stream": false,
                "options": {"num_predict": 4}}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_clean_but(&daemon, "tiny:latest");
}

/// `whale verify` passes and `tiny` is the only model.
fn assert_clean_but(daemon: &Whaled, name: &str) {
    let output = daemon.whale(["verify"]).output().expect("whale verify");
    assert!(output.status.success());
    let (_, tags) = daemon.get("/api/tags");
    assert_eq!(tags["models"].as_array().map(Vec::len), Some(1), "{tags}");
    assert_eq!(tags["models"][0]["name"], name, "{tags}");
}
