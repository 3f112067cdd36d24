//! End-to-end: whaled killed with SIGKILL in the middle of a pull and of a generation, then
//! started again on the same store. The store verifies clean (`whale verify`), the pull resumes
//! from the parts it had, and the model answers.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use whale_tests::fixtures;
use whale_tests::whaled::{Whaled, sha256_file, signal};

/// A TCP proxy that passes answers on at about 2 MB/s per connection and counts their bytes.
struct Throttle {
    address: SocketAddr,
    sent: Arc<AtomicU64>,
}

impl Throttle {
    fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&sent);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (mut client_read, mut server_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_read, &mut server_write);
                });
                let counter = Arc::clone(&counter);
                let (mut server_read, mut client_write) = (server, client);
                std::thread::spawn(move || {
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        match server_read.read(&mut buffer) {
                            Ok(0) | Err(_) => break,
                            Ok(read) => {
                                if client_write.write_all(&buffer[..read]).is_err() {
                                    break;
                                }
                                counter.fetch_add(read as u64, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(30));
                            }
                        }
                    }
                    let _ = client_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Self { address, sent }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

/// `whale verify` against `daemon`: its exit status and its standard output.
fn verify(daemon: &Whaled) -> (bool, String) {
    let output = daemon.whale(["verify"]).output().expect("whale verify");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.success(), format!("{stdout}{stderr}"))
}

/// How many parts of the partial download of `digest` (`sha256:<hex>`) are done.
fn parts_done(store: &Path, digest: &str) -> usize {
    let hex = digest.trim_start_matches("sha256:");
    let state = store
        .join("blobs")
        .join(format!("sha256-{hex}-partial.json"));
    std::fs::read(state)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|state| state["done"].as_array().cloned())
        .map_or(0, |done| {
            done.iter().filter(|d| d.as_bool() == Some(true)).count()
        })
}

fn kill(mut daemon: Whaled) {
    signal(daemon.pid(), "KILL");
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn a_killed_pull_leaves_a_clean_store_and_resumes() {
    let source = Whaled::start();
    source.create_from_gguf("tiny", &fixtures::qwen2());
    let proxy = Throttle::start(source.url().trim_start_matches("http://").parse().unwrap());
    let weights = sha256_file(&fixtures::qwen2());
    let size = std::fs::metadata(fixtures::qwen2()).unwrap().len();
    let store = tempfile::tempdir().unwrap();
    let start = || {
        Whaled::builder()
            .models(store.path())
            .env("WHALE_REGISTRY_MIRROR", proxy.url())
            .start()
    };

    let daemon = start();
    let url = daemon.url();
    std::thread::spawn(move || {
        // Ends with an error when whaled is killed.
        let _ = Whaled::http()
            .post(format!("{url}/api/pull"))
            .json(&json!({"model": "tiny", "insecure": true}))
            .send()
            .and_then(reqwest::blocking::Response::text);
    });
    let deadline = Instant::now() + Duration::from_mins(2);
    while parts_done(store.path(), &weights) == 0 {
        assert!(Instant::now() < deadline, "the pull made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(daemon);

    let daemon = start();
    let (clean, report) = verify(&daemon);
    assert!(clean, "{report}");
    assert!(
        report.contains("-partial"),
        "the partial download is kept: {report}"
    );
    let (status, tags) = daemon.get("/api/tags");
    assert_eq!(status, 200);
    assert_eq!(
        tags["models"],
        json!([]),
        "no model before its blobs are whole"
    );

    proxy.sent.store(0, Ordering::Relaxed);
    let lines = daemon.stream("/api/pull", &json!({"model": "tiny", "insecure": true}));
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    let fetched = proxy.sent.load(Ordering::Relaxed);
    assert!(
        fetched < size,
        "the second pull fetched {fetched} bytes of a {size}-byte model: it did not resume"
    );
    let (clean, report) = verify(&daemon);
    assert!(clean, "{report}");
    let (status, answer) = daemon.post(
        "/api/generate",
        &json!({"model": "tiny", "prompt": "Hello", "stream": false,
                "options": {"temperature": 0, "num_predict": 4}}),
    );
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn a_killed_generation_leaves_a_clean_store() {
    let store = tempfile::tempdir().unwrap();
    let start = || Whaled::builder().models(store.path()).start();
    let daemon = start();
    daemon.create_from_gguf("tiny", &fixtures::deepseek2());
    let url = daemon.url();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let response = Whaled::http()
            .post(format!("{url}/api/generate"))
            .json(&json!({"model": "tiny", "prompt": "Once", "raw": true,
                          "options": {"temperature": 0, "num_predict": 100_000, "num_ctx": 4096}}))
            .send()
            .unwrap();
        let mut reader = std::io::BufReader::new(response);
        let mut line = String::new();
        // The first token has arrived: the generation is under way.
        let _ = std::io::BufRead::read_line(&mut reader, &mut line);
        let _ = sender.send(line);
        let _ = reader.read_to_end(&mut Vec::new());
    });
    let first = receiver
        .recv_timeout(Duration::from_mins(2))
        .expect("a first token");
    assert!(first.contains("response"), "{first}");
    kill(daemon);

    let daemon = start();
    let (clean, report) = verify(&daemon);
    assert!(clean, "{report}");
    assert!(report.contains("every model is whole"), "{report}");
    let (status, answer) = daemon.post(
        "/api/generate",
        &json!({"model": "tiny", "prompt": "Once", "raw": true, "stream": false,
                "options": {"temperature": 0, "num_predict": 4}}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["eval_count"], 4, "{answer}");
}

#[test]
fn verify_names_damage_and_repair_lets_a_pull_mend_it() {
    let source = Whaled::start();
    source.create_from_gguf("tiny", &fixtures::qwen2());
    let daemon = Whaled::builder()
        .env("WHALE_REGISTRY_MIRROR", source.url())
        .start();
    let lines = daemon.stream("/api/pull", &json!({"model": "tiny", "insecure": true}));
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    let weights = sha256_file(&fixtures::qwen2());
    let blob = daemon
        .models
        .join("blobs")
        .join(weights.replace("sha256:", "sha256-"));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[1000] ^= 0x55;
    std::fs::write(&blob, &bytes).unwrap();

    let (clean, report) = verify(&daemon);
    assert!(!clean, "{report}");
    assert!(report.contains(&format!("corrupt: {weights}")), "{report}");
    assert!(report.contains("missing: tiny:latest needs"), "{report}");
    assert!(report.contains("error: the store is damaged"), "{report}");
    assert!(
        report.contains("hint:") && report.contains("--repair"),
        "{report}"
    );

    let output = daemon
        .whale(["verify", "--repair", "--json"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["status"], "damaged");
    assert_eq!(answer["corrupt"], json!([weights]));
    assert!(!blob.exists(), "repair removed the corrupt blob");

    let lines = daemon.stream("/api/pull", &json!({"model": "tiny", "insecure": true}));
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    let (clean, report) = verify(&daemon);
    assert!(clean, "{report}");
}
