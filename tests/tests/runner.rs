//! End-to-end: each loaded model runs in a runner process of its own. A runner that dies ends
//! only its own model's requests; whaled stops cleanly on SIGTERM; runners never outlive
//! whaled; unloading a model ends its process.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use whale_tests::fixtures;
use whale_tests::whaled::{Whaled, process_alive, signal, wait_gone};

const COUNT: &str = "1, 2, 3, 4, 5,";

/// A generate request on `model` that runs for a while: raw, greedy, `num_predict` tokens.
fn long_generation(model: &str, prompt: &str, num_predict: u32) -> Value {
    json!({
        "model": model,
        "prompt": prompt,
        "raw": true,
        "options": {"temperature": 0, "num_predict": num_predict, "num_ctx": 2048},
    })
}

/// What a streamed request gave, line by line, with when each line arrived.
struct Streamed {
    lines: Vec<(Instant, Value)>,
}

impl Streamed {
    fn last(&self) -> &Value {
        &self.lines.last().expect("at least one line").1
    }

    fn text(&self) -> String {
        self.lines
            .iter()
            .filter_map(|(_, line)| line["response"].as_str())
            .collect()
    }
}

/// Starts a streamed `POST path` on another thread. The first receiver says when the first
/// line came; the handle gives everything once the stream ends.
fn stream_in_background(
    daemon: &Whaled,
    path: &str,
    body: &Value,
) -> (mpsc::Receiver<()>, std::thread::JoinHandle<Streamed>) {
    let url = format!("{}{path}", daemon.url());
    let body = body.clone();
    let (first, started) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let response = Whaled::http()
            .post(url)
            .json(&body)
            .send()
            .expect("request");
        assert_eq!(response.status(), 200);
        let mut lines = Vec::new();
        for line in BufReader::new(response).lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&line).expect("NDJSON line");
            if lines.is_empty() {
                let _ = first.send(());
            }
            lines.push((Instant::now(), value));
        }
        Streamed { lines }
    });
    (started, handle)
}

fn gemma_and_tiny() -> Whaled {
    let daemon = Whaled::builder().env("WHALE_KEEP_ALIVE", "-1").start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    daemon.create_from_gguf("tiny", &fixtures::llama());
    daemon
}

#[test]
fn a_killed_runner_ends_its_streams_and_whaled_goes_on() {
    let daemon = gemma_and_tiny();
    // Both loaded, each in a process of its own.
    for model in ["gemma", "tiny"] {
        let (status, body) = daemon.post(
            "/api/generate",
            &json!({"model": model, "options": {"num_ctx": 2048}}),
        );
        assert_eq!(status, 200, "{body}");
    }
    let gemma = daemon.loaded_runner_pids("gemma", 1);
    let tiny = daemon.loaded_runner_pids("tiny", 1);
    assert_eq!((gemma.len(), tiny.len()), (1, 1), "{}", daemon.log());
    assert_ne!(gemma[0], tiny[0]);
    assert_ne!(gemma[0], daemon.pid());

    let (gemma_started, gemma_stream) = stream_in_background(
        &daemon,
        "/api/generate",
        &long_generation("gemma", COUNT, 2000),
    );
    let (tiny_started, tiny_stream) = stream_in_background(
        &daemon,
        "/api/generate",
        &long_generation("tiny", "Hi", 1500),
    );
    gemma_started
        .recv_timeout(Duration::from_mins(1))
        .expect("gemma streams");
    tiny_started
        .recv_timeout(Duration::from_mins(1))
        .expect("tiny streams");

    signal(gemma[0], "KILL");
    let killed = Instant::now();
    let started = Instant::now();
    let (status, version) = daemon.get("/api/version");
    assert_eq!(status, 200, "{version}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "version took {:?}",
        started.elapsed()
    );

    let gemma_result = gemma_stream.join().expect("gemma stream");
    let error = gemma_result.last()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("model runner crashed") && error.contains("signal 9"),
        "the stream ends with the crash: {:?}",
        gemma_result.last()
    );
    let tiny_result = tiny_stream.join().expect("tiny stream");
    assert_eq!(tiny_result.last()["done"], true, "{:?}", tiny_result.last());
    assert_eq!(
        tiny_result.last()["eval_count"],
        1500,
        "the other model was untouched"
    );
    assert!(
        tiny_result.lines.iter().any(|(at, _)| *at > killed),
        "the other model kept streaming after the kill"
    );

    // The killed model is out of `ps`, and the next request loads it again.
    let (_, ps) = daemon.get("/api/ps");
    let listed: Vec<&str> = ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["tiny"], "{ps}");
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "gemma", "prompt": COUNT, "raw": true, "stream": false,
                "options": {"temperature": 0, "num_predict": 8, "num_ctx": 2048}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"], " 6, 7, 8");
    let reloaded = daemon.loaded_runner_pids("gemma", 2);
    assert_eq!(reloaded.len(), 2, "{}", daemon.log());
    assert_ne!(reloaded[1], gemma[0]);
}

#[test]
fn sigterm_lets_a_generation_finish_then_exits_cleanly() {
    // Generous: other tests share this machine's cores.
    let mut daemon = Whaled::builder().env("WHALE_SHUTDOWN_GRACE", "5m").start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "gemma", "options": {"num_ctx": 2048}}),
    );
    assert_eq!(status, 200, "{body}");
    let runner = daemon.loaded_runner_pids("gemma", 1)[0];

    let (started, stream) = stream_in_background(
        &daemon,
        "/api/generate",
        &long_generation("gemma", COUNT, 40),
    );
    started
        .recv_timeout(Duration::from_mins(1))
        .expect("streams");
    daemon.terminate();
    let result = stream.join().expect("stream");
    assert_eq!(result.last()["done"], true, "{:?}", result.last());
    assert_eq!(result.last()["eval_count"], 40);
    assert!(result.text().starts_with(" 6, 7, 8"), "{}", result.text());
    let status = daemon
        .wait_exit(Duration::from_mins(5))
        .expect("whaled exits");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        daemon.log()
    );
    assert!(!process_alive(runner), "the runner is gone with whaled");
}

#[test]
fn past_the_grace_period_generations_are_cancelled_and_whaled_exits() {
    let mut daemon = Whaled::builder().env("WHALE_SHUTDOWN_GRACE", "1s").start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    let (started, stream) = stream_in_background(
        &daemon,
        "/api/generate",
        &long_generation("gemma", COUNT, 5000),
    );
    started
        .recv_timeout(Duration::from_mins(1))
        .expect("streams");
    let runner = daemon.loaded_runner_pids("gemma", 1)[0];
    let term = Instant::now();
    daemon.terminate();
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .expect("whaled exits");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        daemon.log()
    );
    assert!(
        term.elapsed() < Duration::from_secs(10),
        "took {:?}",
        term.elapsed()
    );
    let result = stream.join().expect("stream");
    assert_eq!(
        result.last()["error"],
        "whaled is shutting down",
        "cut short: {:?}",
        result.last()
    );
    assert!(wait_gone(runner, Duration::from_secs(5)));
}

#[test]
fn runners_never_outlive_whaled() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("tiny", &fixtures::llama());
    let (status, body) = daemon.post("/api/generate", &json!({"model": "tiny"}));
    assert_eq!(status, 200, "{body}");
    let runner = daemon.loaded_runner_pids("tiny", 1)[0];
    assert!(process_alive(runner));
    // SIGKILL: whaled gets no chance to stop its runners; they notice on their own.
    signal(daemon.pid(), "KILL");
    assert!(
        wait_gone(runner, Duration::from_secs(5)),
        "runner {runner} outlived whaled"
    );
}

/// The scheduling policy of each thread of `pid` (`/proc/<pid>/task/*/stat`, field 41):
/// 0 is `SCHED_OTHER`, 3 `SCHED_BATCH`.
fn thread_policies(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/<pid>/task");
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .map(|stat| {
            whale_tests::bench::stat_field(&stat, 41)
                .and_then(|policy| policy.parse().ok())
                .expect("a policy field")
        })
        .collect()
}

#[test]
fn whaled_yields_the_cores_to_its_runners() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("tiny", &fixtures::llama());
    let (status, body) = daemon.post(
        "/api/generate",
        &json!({"model": "tiny", "prompt": "hi", "stream": false,
                "options": {"num_predict": 4}}),
    );
    assert_eq!(status, 200, "{body}");
    let runner = daemon.loaded_runner_pids("tiny", 1)[0];
    // whaled's threads wait for a free core (SCHED_BATCH); the model's threads do not.
    let whaled = thread_policies(daemon.pid());
    assert!(
        whaled.len() > 1 && whaled.iter().all(|&policy| policy == 3),
        "{whaled:?}"
    );
    let model = thread_policies(runner);
    assert!(
        model.len() > 1 && model.iter().all(|&policy| policy == 0),
        "{model:?}"
    );
}

#[test]
fn unloading_ends_the_runner_and_embed_and_chat_share_one() {
    let daemon = Whaled::start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    let (status, copied) = daemon.post(
        "/api/copy",
        &json!({"source": "gemma", "destination": "gemma-copy"}),
    );
    assert_eq!(status, 200, "{copied}");

    // Chat, then embeddings, then chat again: one load.
    let generate = json!({"model": "gemma", "prompt": COUNT, "raw": true, "stream": false,
                          "options": {"temperature": 0, "num_predict": 6}});
    let (status, first) = daemon.post("/api/generate", &generate);
    assert_eq!(status, 200, "{first}");
    let (status, embedded) =
        daemon.post("/api/embed", &json!({"model": "gemma", "input": "hello"}));
    assert_eq!(status, 200, "{embedded}");
    assert_eq!(embedded["embeddings"][0].as_array().unwrap().len(), 640);
    let (status, again) = daemon.post("/api/generate", &generate);
    assert_eq!(status, 200, "{again}");
    assert_eq!(first["response"], again["response"]);
    let runners = daemon.loaded_runner_pids("gemma", 1);
    assert_eq!(runners.len(), 1, "loaded once: {}", daemon.log());

    // Deleting another name of the same weights leaves the model loaded.
    let request = reqwest::blocking::Client::new()
        .delete(format!("{}/api/delete", daemon.url()))
        .json(&json!({"model": "gemma-copy"}))
        .send()
        .expect("delete");
    assert_eq!(request.status(), 200);
    let (_, ps) = daemon.get("/api/ps");
    assert_eq!(ps["models"].as_array().unwrap().len(), 1, "{ps}");
    assert!(process_alive(runners[0]));

    // keep_alive 0 unloads: the process is gone.
    let (status, body) = daemon.post("/api/generate", &json!({"model": "gemma", "keep_alive": 0}));
    assert_eq!(status, 200, "{body}");
    assert!(
        wait_gone(runners[0], Duration::from_secs(10)),
        "unloading ends the runner"
    );
    let (_, ps) = daemon.get("/api/ps");
    assert!(ps["models"].as_array().unwrap().is_empty(), "{ps}");
}
