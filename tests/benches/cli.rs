//! Latency of `whale list` against a running whaled, and whaled's memory while idle.
//!
//! Two whaleds with temporary stores are started: one stays empty, three tiny models are
//! created in the other. Then, in one run and alternating so that all share the machine's
//! noise, each [`RUNS`] times, timed from spawn to exit with output read from a pipe:
//! - `whale list` (the CLI: process start, `/api/version` check, `/api/tags`, table) against
//!   each daemon,
//! - `curl -s <daemon>/api/tags` against each (the same listing from a small C client: the
//!   baseline of each row),
//! - `true` (what starting any process costs).
//!
//! The loaded daemon's `VmRSS` is read from `/proc/<pid>/status` after start, once idle after
//! the creates, and once idle after the list runs; no model is ever loaded. Targets: `whale
//! list` < 20 ms (median), whaled idle RSS < 30 MB.
//!
//! `cargo bench --workspace --bench cli`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use whale_tests::bench::load_average;
use whale_tests::fixtures;
use whale_tests::whaled::Whaled;

/// Timed runs of each command.
const RUNS: usize = 50;
/// Untimed runs first, so page cache and connection set-up do not count.
const WARM_UP: usize = 3;
/// How long whaled is left alone before its idle memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// Wall time of one run of `command`, which must succeed.
fn time(command: &mut Command) -> Duration {
    let started = Instant::now();
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run the command");
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

/// Min, median and 90th percentile, in milliseconds.
fn summary(samples: &mut [Duration]) -> [f64; 3] {
    samples.sort();
    let at = |fraction: f64| {
        let index = ((samples.len() - 1) as f64 * fraction).round() as usize;
        samples[index].as_secs_f64() * 1e3
    };
    [at(0.0), at(0.5), at(0.9)]
}

/// A line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, `Threads`, …), value only.
fn status(pid: u32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .map_or_else(|| "?".to_owned(), |value| value.trim().to_owned())
}

fn memory(pid: u32, when: &str) {
    println!(
        "| {when} | {} | {} | {} |",
        status(pid, "VmRSS"),
        status(pid, "VmHWM"),
        status(pid, "Threads")
    );
}

fn main() {
    let empty = Whaled::start();
    let daemon = Whaled::start();
    let pid = daemon.pid();
    println!(
        "whaled pid {pid}, {RUNS} runs each, load average {}",
        load_average()
    );
    println!();
    println!("| whaled | VmRSS | VmHWM | threads |");
    println!("|---|---|---|---|");
    memory(pid, "after start");
    for (name, path) in [
        ("deepseek-tiny", fixtures::deepseek2()),
        ("qwen-tiny", fixtures::qwen2()),
        ("llama-tiny", fixtures::llama()),
    ] {
        daemon.create_from_gguf(name, &path);
    }
    std::thread::sleep(SETTLE);
    memory(pid, "3 models created, idle");

    let listed = daemon.whale(["list"]).output().expect("whale list");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(
        listed.lines().count(),
        4,
        "three models and a header:\n{listed}"
    );

    let curl_works = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(curl_works, "the baseline needs curl");
    let curl = |daemon: &Whaled| {
        let mut command = Command::new("curl");
        command.args([
            "-s",
            "--noproxy",
            "*",
            &format!("{}/api/tags", daemon.url()),
        ]);
        command
    };
    // Each `whale list` row is followed by its baseline.
    let mut commands: Vec<(&str, Command)> = vec![
        ("whale list (3 models)", daemon.whale(["list"])),
        ("curl -s /api/tags (3 models)", curl(&daemon)),
        ("whale list (empty store)", empty.whale(["list"])),
        ("curl -s /api/tags (empty store)", curl(&empty)),
        ("true", Command::new("true")),
    ];

    for (_, command) in &mut commands {
        for _ in 0..WARM_UP {
            time(command);
        }
    }
    let mut samples = vec![Vec::with_capacity(RUNS); commands.len()];
    for _ in 0..RUNS {
        for ((_, command), samples) in commands.iter_mut().zip(&mut samples) {
            samples.push(time(command));
        }
    }
    std::thread::sleep(SETTLE);
    memory(
        pid,
        &format!("after {} listings, idle", (RUNS + WARM_UP) * 2 + 1),
    );

    println!();
    println!("| command | min ms | median ms | p90 ms | median / curl |");
    println!("|---|---|---|---|---|");
    let summaries: Vec<[f64; 3]> = samples.iter_mut().map(|s| summary(s)).collect();
    for (index, ((name, _), [min, median, p90])) in commands.iter().zip(&summaries).enumerate() {
        let ratio = if name.starts_with("whale") {
            format!("{:.2}", median / summaries[index + 1][1])
        } else {
            String::new()
        };
        println!("| `{name}` | {min:.2} | {median:.2} | {p90:.2} | {ratio} |");
    }
}
