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

/// The median of each column of `rows`.
pub fn column_medians<const N: usize>(rows: &[[f64; N]]) -> Vec<f64> {
    (0..N)
        .map(|column| median(&rows.iter().map(|row| row[column]).collect::<Vec<_>>()))
        .collect()
}

/// Context switches so far (voluntary and involuntary) of every thread of process `pid` and of
/// its child processes (a daemon's runners). Read before and after a run, per generated token,
/// they count the wake-ups that a daemon costs besides the model's own work; 0 where `/proc`
/// cannot be read.
pub fn context_switches(pid: u32) -> u64 {
    let children = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent(child) == Some(pid));
    std::iter::once(pid)
        .chain(children)
        .map(thread_switches)
        .sum()
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_field(&stat, 4)?.parse().ok()
}

/// Field `number` (from 1, as proc(5) counts them: 4 is the parent, 41 the scheduling policy)
/// of a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from its closing parenthesis.
pub fn stat_field(stat: &str, number: usize) -> Option<&str> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(number.checked_sub(3)?)
}

fn thread_switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten();
    tasks
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
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
    /// `draft_count` and `draft_accepted_count` of the final object (0 when absent).
    pub draft_count: u64,
    pub draft_accepted_count: u64,
    /// The generated text.
    pub text: String,
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
    let mut text = String::new();
    loop {
        line.clear();
        let read = reader.read_line(&mut line).expect("read the stream");
        assert!(read > 0, "the stream ended without a final object");
        let now = Instant::now();
        let chunk: Value = serde_json::from_str(&line).expect("an NDJSON line");
        assert!(chunk.get("error").is_none(), "{chunk}");
        if let Some(piece) = chunk["response"].as_str().filter(|t| !t.is_empty()) {
            first_text.get_or_insert(now);
            text.push_str(piece);
        }
        if chunk["done"] == true {
            return Streamed {
                eval_count: chunk["eval_count"].as_u64().expect("eval_count"),
                eval_duration: Duration::from_nanos(
                    chunk["eval_duration"].as_u64().expect("eval_duration"),
                ),
                first_text: first_text.unwrap_or(now),
                done: now,
                draft_count: chunk["draft_count"].as_u64().unwrap_or(0),
                draft_accepted_count: chunk["draft_accepted_count"].as_u64().unwrap_or(0),
                text,
            };
        }
    }
}

/// A code-editing prompt for a base model: a function, then the start of the same function
/// with one change. The model goes on copying it, which prompt lookup drafts well.
pub const CODE_EDIT_PROMPT: &str = r#"# inventory.py, before the change:

def restock(items, threshold, supplier):
    """Orders more of every item that runs low."""
    orders = []
    for item in items:
        if item.quantity < threshold:
            amount = threshold * 2 - item.quantity
            orders.append(supplier.order(item.sku, amount))
            item.pending += amount
    return orders

# inventory.py, after renaming `supplier` to `vendor` (the rest unchanged):

def restock(items, threshold, vendor):
    """Orders more of every item that runs low."""
"#;

/// A prompt with nothing to copy: the model writes new prose.
pub const FREE_TEXT_PROMPT: &str = "Once upon a time, in a small village by the sea, there lived";
