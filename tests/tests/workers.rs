//! One model across machines: `whale worker`s (llama.cpp's RPC backend behind whale's guarded
//! link) take a share of a model's layers. Everything runs on loopback: two workers and whaled,
//! each a process of its own, split the tiny deepseek2 fixture three ways.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};
use whale_tests::fixtures;
use whale_tests::whaled::{Whaled, Worker, binary, self_signed_certificate};

/// A greedy completion long enough to cross every layer many times.
fn greedy(model: &str) -> Value {
    json!({"model": model, "prompt": "The quick brown fox", "raw": true, "stream": false,
           "options": {"temperature": 0, "num_predict": 24, "seed": 7}})
}

fn split_daemon(workers: &[&Worker], token: Option<&str>) -> Whaled {
    split_daemon_with(workers, token, &[])
}

fn split_daemon_with(workers: &[&Worker], token: Option<&str>, env: &[(&str, &str)]) -> Whaled {
    let addresses: Vec<String> = workers.iter().map(|w| w.address.to_string()).collect();
    let mut builder = Whaled::builder().env("WHALE_WORKERS", addresses.join(","));
    if let Some(token) = token {
        builder = builder.env("WHALE_WORKER_TOKEN", token);
    }
    for (key, value) in env {
        builder = builder.env(key, *value);
    }
    let daemon = builder.start();
    daemon.create_from_gguf("ds", &fixtures::deepseek2());
    daemon
}

/// The greedy answer of the fixture on this machine alone.
fn single_machine_answer() -> String {
    let daemon = Whaled::start();
    daemon.create_from_gguf("ds", &fixtures::deepseek2());
    let (status, body) = daemon.post("/api/generate", &greedy("ds"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eval_count"], 24, "{body}");
    body["response"].as_str().unwrap().to_owned()
}

#[test]
fn a_model_split_over_two_workers_answers_as_on_one_machine() {
    let alone = single_machine_answer();
    let first = Worker::start("127.0.0.1:0", None);
    let second = Worker::start("127.0.0.1:0", None);
    let daemon = split_daemon(&[&first, &second], None);

    let (status, body) = daemon.post("/api/generate", &greedy("ds"));
    assert_eq!(status, 200, "{body}\n{}", daemon.log());
    assert_eq!(body["response"], alone.as_str(), "split vs one machine");

    // Every machine holds some of the layers (3, then the NextN block) and the output layer.
    let (_, ps) = daemon.get("/api/ps");
    let layers = &ps["models"][0]["layers"];
    let shares: Vec<(String, u64)> = layers
        .as_array()
        .unwrap_or_else(|| panic!("no layers in {ps}"))
        .iter()
        .map(|share| {
            (
                share["where"].as_str().unwrap().to_owned(),
                share["layers"].as_u64().unwrap(),
            )
        })
        .collect();
    let places: Vec<&str> = shares.iter().map(|(place, _)| place.as_str()).collect();
    assert_eq!(
        places,
        [
            "local".to_owned(),
            first.address.to_string(),
            second.address.to_string()
        ],
        "{ps}"
    );
    assert!(shares.iter().all(|(_, layers)| *layers >= 1), "{ps}");
    let blocks = fixtures::deepseek2_shape::BLOCK_COUNT + fixtures::deepseek2_shape::NEXTN_LAYERS;
    assert_eq!(
        shares.iter().map(|(_, layers)| layers).sum::<u64>(),
        blocks + 1,
        "{ps}"
    );
    for worker in [&first, &second] {
        assert!(worker.log().contains("client linked"), "{}", worker.log());
    }

    // `whale ps` says where they are.
    let output = daemon.whale(["ps"]).output().expect("whale ps");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("local") && text.contains(&format!("on {}", first.address)),
        "{text}"
    );

    // Chat goes the same way, and a second request reuses the loaded split model.
    let (status, body) = daemon.post(
        "/api/chat",
        &json!({"model": "ds", "stream": false, "messages": [{"role": "user", "content": "Hi"}],
                "options": {"temperature": 0, "num_predict": 8}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(daemon.loaded_runner_pids("ds", 1).len(), 1);
}

#[test]
fn a_lost_worker_fails_its_model_clearly_and_its_return_brings_it_back() {
    let alone = single_machine_answer();
    let first = Worker::start("127.0.0.1:0", None);
    let mut second = Worker::start("127.0.0.1:0", None);
    let address = second.address;
    let daemon = split_daemon(&[&first, &second], None);
    let (status, body) = daemon.post("/api/generate", &greedy("ds"));
    assert_eq!(status, 200, "{body}");

    // Killed in the middle of a long generation: the stream ends with an error.
    let url = format!("{}/api/generate", daemon.url());
    let request = json!({"model": "ds", "prompt": "Once", "raw": true,
                         "options": {"temperature": 0, "num_predict": 100_000, "num_ctx": 256}});
    let generation = std::thread::spawn(move || {
        let response = Whaled::http()
            .post(url)
            .json(&request)
            .send()
            .expect("request");
        let lines: Vec<Value> = BufReader::new(response)
            .lines()
            .map_while(Result::ok)
            .filter(|line| !line.trim().is_empty())
            .map(|line| serde_json::from_str(&line).expect("NDJSON"))
            .collect();
        lines
    });
    std::thread::sleep(Duration::from_secs(2));
    second.kill();
    let lines = generation.join().expect("generation");
    let last = lines.last().expect("some lines");
    let error = last["error"].as_str().unwrap_or_else(|| panic!("{last}"));
    assert!(error.contains("runner"), "{error}");

    // whaled goes on; while the worker is away, loading says which worker is missing.
    let (status, _) = daemon.get("/api/version");
    assert_eq!(status, 200);
    let (status, body) = daemon.post("/api/generate", &greedy("ds"));
    assert_eq!(status, 500, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains(&format!("worker {address} is unreachable")),
        "{message}"
    );

    // Back on the same address: the next request loads the model again and answers as before.
    let _back = Worker::start(&address.to_string(), None);
    let (status, body) = daemon.post("/api/generate", &greedy("ds"));
    assert_eq!(status, 200, "{body}\n{}", daemon.log());
    assert_eq!(body["response"], alone.as_str());
}

#[test]
fn workers_memory_counts_before_a_pull() {
    // A cap on this machine's memory below what the fixture needs (see fit.rs): refused alone,
    // pulled when a worker lends its memory.
    let fixture = fixtures::deepseek2();
    let cap = std::fs::metadata(&fixture).unwrap().len() * 2;
    let source = Whaled::start();
    source.create_from_gguf("tiny-ds", &fixture);
    let pull = json!({"model": "tiny-ds", "from": source.url(), "stream": false});

    let alone = Whaled::builder()
        .env("WHALE_MAX_MEMORY", cap.to_string())
        .start();
    let (status, body) = alone.post("/api/pull", &pull);
    assert_eq!(status, 507, "{body}");

    let worker = Worker::start("127.0.0.1:0", None);
    let daemon = Whaled::builder()
        .env("WHALE_MAX_MEMORY", cap.to_string())
        .env("WHALE_WORKERS", worker.address.to_string())
        .start();
    let (status, body) = daemon.post("/api/pull", &pull);
    assert_eq!(status, 200, "{body}");
    let (_, tags) = daemon.get("/api/tags");
    assert_eq!(tags["models"][0]["name"], "tiny-ds:latest", "{tags}");
}

/// What a worker answers to `sent`, read until it closes.
fn exchange(worker: &Worker, sent: &[u8]) -> String {
    let mut stream = TcpStream::connect(worker.address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(sent).expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn a_worker_with_a_token_admits_only_clients_that_present_it() {
    let worker = Worker::start("127.0.0.1:0", Some("s3cret-token"));
    let served = || worker.log().matches("Accepted client connection").count();
    // The worker made sure its RPC server was up by connecting once; that line comes first.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while served() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = served();
    assert_eq!(before, 1, "{}", worker.log());

    // llama.cpp's own client opens with its HELLO command: dropped, nothing forwarded.
    let hello = [0u8; 9];
    let mut sent = hello.to_vec();
    sent.push(b'\n');
    let answer = exchange(&worker, &sent);
    assert!(answer.starts_with("DENIED "), "{answer:?}");
    let answer = exchange(&worker, b"WHALE-RPC/1 rpc wrong-token\n");
    assert!(
        answer.starts_with("DENIED wrong or missing token"),
        "{answer:?}"
    );
    let answer = exchange(&worker, b"WHALE-RPC/1 rpc -\n");
    assert!(
        answer.starts_with("DENIED wrong or missing token"),
        "{answer:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(served(), before, "{}", worker.log());

    // With the token, the memory question is answered.
    let answer = exchange(&worker, b"WHALE-RPC/1 memory s3cret-token\n");
    let numbers: Vec<u64> = answer
        .trim()
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("{answer:?}"))
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(numbers[0] > 0 && numbers[0] <= numbers[1], "{answer:?}");

    // whaled without the token: the load fails and says why.
    let daemon = split_daemon(&[&worker], None);
    let (status, body) = daemon.post("/api/generate", &greedy("ds"));
    assert_eq!(status, 500, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("refused the link: wrong or missing token"),
        "{message}"
    );
    drop(daemon);

    // With it, the model runs there.
    let daemon = split_daemon(&[&worker], Some("s3cret-token"));
    let (status, body) = daemon.post("/api/generate", &greedy("ds"));
    assert_eq!(status, 200, "{body}\n{}", daemon.log());
    assert!(served() > before);
}

#[test]
fn a_tls_worker_serves_only_a_whaled_that_trusts_its_certificate() {
    let alone = single_machine_answer();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_certificate(dir.path(), "worker");
    let (other, _) = self_signed_certificate(dir.path(), "other");
    let token = "s3cret-token";
    let worker = Worker::start_with(
        "127.0.0.1:0",
        Some(token),
        &["--tls-cert", &cert, "--tls-key", &key],
    );

    // In plain text, even with the token, a client is only told to speak TLS.
    let answer = exchange(&worker, format!("WHALE-RPC/1 memory {token}\n").as_bytes());
    assert!(
        answer.starts_with("DENIED this worker takes TLS clients only"),
        "{answer:?}"
    );

    // whaled without TLS: the load fails and says so.
    let daemon = split_daemon(&[&worker], Some(token));
    let (status, body) = daemon.post("/api/generate", &greedy("ds"));
    assert_eq!(status, 500, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("takes TLS clients only"), "{message}");
    drop(daemon);

    // whaled trusting another certificate: TLS fails, with the reason.
    let daemon = split_daemon_with(&[&worker], Some(token), &[("WHALE_WORKER_CA", &other)]);
    let (status, body) = daemon.post("/api/generate", &greedy("ds"));
    assert_eq!(status, 500, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("TLS with worker"), "{message}");
    drop(daemon);

    // Trusting the worker's certificate: the split model answers as on one machine.
    let daemon = split_daemon_with(&[&worker], Some(token), &[("WHALE_WORKER_CA", &cert)]);
    let (status, body) = daemon.post("/api/generate", &greedy("ds"));
    assert_eq!(status, 200, "{body}\n{}", daemon.log());
    assert_eq!(body["response"], alone.as_str());
    assert!(worker.log().contains("client linked"), "{}", worker.log());
}

#[test]
fn a_worker_beyond_loopback_needs_a_token() {
    let output = std::process::Command::new(binary("whaled"))
        .args(["worker", "--listen", "0.0.0.0:0", "--no-cache"])
        .env_remove("WHALE_WORKER_TOKEN")
        .output()
        .expect("run whaled worker");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error:") && stderr.contains("hint: set WHALE_WORKER_TOKEN"),
        "{stderr}"
    );
}
