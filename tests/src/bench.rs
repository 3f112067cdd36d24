//! What the benchmarks share besides the raw decode loop: their statistics, the machine's load,
//! and a timed streamed generation through whaled.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::whaled::Whaled;

/// The middle value (the upper one of the two middles for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them, printed beside results
/// so that a reader can tell a quiet run from a busy one.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

/// What one streamed `/api/generate` gave.
pub struct Streamed {
    /// `eval_count` of the final object.
    pub eval_count: u64,
    /// `eval_duration` of the final object.
    pub eval_duration: Duration,
    /// When the first chunk with text arrived.
    pub first_text: Instant,
    /// When the final object arrived.
    pub done: Instant,
}

impl Streamed {
    /// Tokens per second by the daemon's own clock.
    pub fn eval_rate(&self) -> f64 {
        self.eval_count as f64 / self.eval_duration.as_secs_f64()
    }

    /// Tokens per second by the client's clock, first text chunk to the final object: the
    /// `eval_count - 1` tokens after the first.
    pub fn wall_rate(&self) -> f64 {
        (self.eval_count - 1) as f64 / (self.done - self.first_text).as_secs_f64()
    }
}

/// Streams one raw generation of `prompt` with `options` (the model stays loaded:
/// `keep_alive: -1`) and timestamps its chunks.
pub fn generate(
    client: &reqwest::blocking::Client,
    daemon: &Whaled,
    model: &str,
    prompt: &str,
    options: &Value,
) -> Streamed {
    let body = json!({
        "model": model,
        "prompt": prompt,
        "raw": true,
        "keep_alive": -1,
        "options": options,
    });
    let response = client
        .post(format!("{}/api/generate", daemon.url()))
        .json(&body)
        .send()
        .expect("request");
    assert!(
        response.status().is_success(),
        "generate answered {}",
        response.status()
    );
    let mut reader = BufReader::new(response);
    let mut line = String::new();
    let mut first_text = None;
    loop {
        line.clear();
        let read = reader.read_line(&mut line).expect("read the stream");
        assert!(read > 0, "the stream ended without a final object");
        let now = Instant::now();
        let chunk: Value = serde_json::from_str(&line).expect("an NDJSON line");
        assert!(chunk.get("error").is_none(), "{chunk}");
        if first_text.is_none() && chunk["response"].as_str().is_some_and(|t| !t.is_empty()) {
            first_text = Some(now);
        }
        if chunk["done"] == true {
            return Streamed {
                eval_count: chunk["eval_count"].as_u64().expect("eval_count"),
                eval_duration: Duration::from_nanos(
                    chunk["eval_duration"].as_u64().expect("eval_duration"),
                ),
                first_text: first_text.unwrap_or(now),
                done: now,
            };
        }
    }
}
