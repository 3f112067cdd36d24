//! A bounded soak: 1,000 requests, 64 at a time, against one whaled serving two models (the
//! tiny qwen2 and llama fixtures), mixing `/api/generate` and `/api/chat` with
//! `/v1/chat/completions` and `/v1/completions`, streamed and not; every third request is
//! cancelled midway (the client hangs up after the first chunk, or after 100 ms when it does
//! not stream). Counts answers by status (only 503s
//! from a full queue would be intended; none are expected at this queue size) and samples the
//! memory (RSS) and open file descriptors of whaled and its runners as the requests go by: both
//! should stay flat once the models are loaded.
//!
//! `cargo bench --workspace --bench soak`

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use whale_tests::bench::load_average;
use whale_tests::fixtures;
use whale_tests::whaled::Whaled;

const REQUESTS: usize = 1000;
const CONCURRENT: usize = 64;
const SAMPLE_EVERY: usize = 100;

/// Resident memory (KiB) and open file descriptors of `pid` and its children.
fn footprint(pid: u32) -> (u64, usize) {
    let mut pids = vec![pid];
    // Runners are spawned from whichever thread ran the load: ask every thread.
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    let mut rss = 0;
    let mut fds = 0;
    for pid in pids {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            rss += status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<u64>().ok())
                .unwrap_or(0);
        }
        fds += std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    }
    (rss, fds)
}

/// Request `index`: its route, body and whether it streams.
fn request(index: usize) -> (&'static str, Value, bool) {
    let model = if index.is_multiple_of(2) {
        "qwen"
    } else {
        "llama"
    };
    let stream = index % 4 < 2;
    let prompt = format!("Request {index}: tell me something");
    let tokens = 8 + (index % 5) * 6;
    match index % 4 {
        0 | 2 if index % 8 < 4 => (
            "/api/generate",
            json!({"model": model, "prompt": prompt, "stream": stream,
                   "options": {"num_predict": tokens, "temperature": 0.6}}),
            stream,
        ),
        0 | 2 => (
            "/v1/completions",
            json!({"model": model, "prompt": prompt, "stream": stream, "max_tokens": tokens}),
            stream,
        ),
        _ if index % 8 < 4 => (
            "/api/chat",
            json!({"model": model, "stream": stream,
                   "messages": [{"role": "user", "content": prompt}],
                   "options": {"num_predict": tokens}}),
            stream,
        ),
        _ => (
            "/v1/chat/completions",
            json!({"model": model, "stream": stream, "max_tokens": tokens,
                   "messages": [{"role": "user", "content": prompt}]}),
            stream,
        ),
    }
}

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Answered(u16),
    Cancelled,
    /// A streamed answer that ended with an error object.
    ErrorInStream,
    Transport,
}

fn run(client: &reqwest::blocking::Client, url: &str, index: usize) -> Outcome {
    let (path, body, stream) = request(index);
    let cancel = index.is_multiple_of(3);
    let mut builder = client.post(format!("{url}{path}")).json(&body);
    if cancel && !stream {
        // Hang up while the answer is being made.
        builder = builder.timeout(std::time::Duration::from_millis(100));
    }
    let response = match builder.send() {
        Ok(response) => response,
        Err(error) if cancel && error.is_timeout() => return Outcome::Cancelled,
        Err(_) => return Outcome::Transport,
    };
    let status = response.status().as_u16();
    if status != 200 {
        return Outcome::Answered(status);
    }
    let mut lines = BufReader::new(response).lines();
    if cancel {
        // The first chunk, then hang up.
        let _ = lines.next();
        return Outcome::Cancelled;
    }
    for line in lines {
        let Ok(line) = line else {
            return Outcome::Transport;
        };
        if line.contains("\"error\"") {
            return Outcome::ErrorInStream;
        }
    }
    Outcome::Answered(200)
}

fn main() {
    let daemon = Whaled::builder()
        .env("WHALE_NUM_PARALLEL", "4")
        .env("WHALE_KEEP_ALIVE", "-1")
        .env("WHALE_LOG", "warn")
        .start();
    daemon.create_from_gguf("qwen", &fixtures::qwen2());
    daemon.create_from_gguf("llama", &fixtures::llama());
    let client = Whaled::http();
    let url = daemon.url();
    // Load both models before the first sample (requests 1 and 2 are never cancelled).
    for _ in 0..4 {
        assert_eq!(run(&client, &url, 1), Outcome::Answered(200));
        assert_eq!(run(&client, &url, 2), Outcome::Answered(200));
    }
    let pid = daemon.pid();
    let next = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(BTreeMap::<Outcome, usize>::new()));
    let samples = Arc::new(Mutex::new(vec![(0usize, footprint(pid), 0.0f64)]));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..CONCURRENT {
            let (next, outcomes, samples) = (&next, &outcomes, &samples);
            let (client, url) = (&client, &url);
            scope.spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= REQUESTS {
                        break;
                    }
                    let outcome = run(client, url, index);
                    *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
                    if (index + 1) % SAMPLE_EVERY == 0 {
                        samples.lock().unwrap().push((
                            index + 1,
                            footprint(pid),
                            started.elapsed().as_secs_f64(),
                        ));
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    // Every cancelled generation has ended: nothing is left running.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let after = footprint(pid);
    let (status, ps) = daemon.get("/api/ps");
    assert_eq!(status, 200, "{ps}");
    assert_eq!(
        run(&client, &url, 1),
        Outcome::Answered(200),
        "still answering"
    );

    println!(
        "soak: {REQUESTS} requests, {CONCURRENT} at a time, two models, WHALE_NUM_PARALLEL=4, \
         {:.1} s ({:.1} requests/s; load average {})",
        elapsed.as_secs_f64(),
        REQUESTS as f64 / elapsed.as_secs_f64(),
        load_average()
    );
    println!("| outcome | requests |");
    println!("|---|---|");
    for (outcome, count) in outcomes.lock().unwrap().iter() {
        println!("| {outcome:?} | {count} |");
    }
    println!();
    println!("| requests done | seconds | RSS of whaled + runners (MiB) | open fds |");
    println!("|---|---|---|---|");
    let mut samples = samples.lock().unwrap().clone();
    samples.sort_by_key(|(done, _, _)| *done);
    for (done, (rss, fds), seconds) in &samples {
        println!(
            "| {done} | {seconds:.1} | {:.1} | {fds} |",
            *rss as f64 / 1024.0
        );
    }
    println!(
        "| after, idle | – | {:.1} | {} |",
        after.0 as f64 / 1024.0,
        after.1
    );
    let errors: usize = outcomes
        .lock()
        .unwrap()
        .iter()
        .filter(|(outcome, _)| {
            !matches!(outcome, Outcome::Answered(200 | 503) | Outcome::Cancelled)
        })
        .map(|(_, count)| *count)
        .sum();
    let first = samples[1].1.0 as f64;
    let last = samples[samples.len() - 1].1.0 as f64;
    println!(
        "errors other than 503: {errors}; RSS from the first sample to the last: {:+.1} %",
        100.0 * (last - first) / first
    );
}
