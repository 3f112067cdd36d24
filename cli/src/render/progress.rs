//! Progress of `pull`, `push` and `create` as the daemon streams it (NDJSON `status`,
//! `digest`, `total`, `completed`): one indicatif bar per layer (`pulling <12hex>:` with
//! percent, bytes, speed and time left) and spinners for status-only lines on a terminal; plain
//! lines on stderr otherwise — one per status change and one per finished layer, never one
//! per chunk, so logs stay short.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::Style;
use super::units;

/// One progress message, borrowed from whatever wire type carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update<'a> {
    pub status: &'a str,
    pub digest: Option<&'a str>,
    pub total: Option<u64>,
    pub completed: Option<u64>,
}

/// Draws a stream of [`Update`]s; finish it with [`Progress::finish`].
pub struct Progress {
    kind: Kind,
}

enum Kind {
    Bars(Bars),
    Plain(Plain),
}

impl Progress {
    /// Bars when `style.bars`, plain lines otherwise.
    pub fn new(style: Style) -> Self {
        let kind = if style.bars {
            Kind::Bars(Bars::new(ProgressDrawTarget::stderr()))
        } else {
            Kind::Plain(Plain::default())
        };
        Self { kind }
    }

    /// Shows one message.
    pub fn update(&mut self, update: Update<'_>) {
        match &mut self.kind {
            Kind::Bars(bars) => bars.update(update),
            Kind::Plain(plain) => {
                if let Some(line) = plain.line(update) {
                    // Progress is best effort: a closed stderr must not fail the pull.
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
            }
        }
    }

    /// Leaves the finished bars on screen and stops the spinners.
    pub fn finish(self) {
        if let Kind::Bars(bars) = self.kind {
            bars.finish();
        }
    }
}

/// The plain-line mode's memory: what it already printed.
#[derive(Debug, Default)]
pub struct Plain {
    last_status: Option<String>,
    /// Layers seen unfinished: finishing one of them is "done", not "already complete".
    started: HashSet<String>,
    finished: HashSet<String>,
}

impl Plain {
    /// The line to print for `update`, if it says something new.
    pub fn line(&mut self, update: Update<'_>) -> Option<String> {
        if let (Some(digest), Some(total)) = (update.digest, update.total.filter(|t| *t > 0)) {
            if self.finished.contains(digest) {
                return None;
            }
            let completed = update.completed.unwrap_or(0);
            if completed < total {
                self.started.insert(digest.to_owned());
                return None;
            }
            self.finished.insert(digest.to_owned());
            let size = units::bytes(total);
            return Some(if self.started.contains(digest) {
                format!("{}: 100% {size}", update.status)
            } else {
                format!("{}: {size} (already complete)", update.status)
            });
        }
        if self.last_status.as_deref() == Some(update.status) {
            return None;
        }
        self.last_status = Some(update.status.to_owned());
        Some(update.status.to_owned())
    }
}

/// The terminal mode: bars keyed by digest, one live spinner for the current status.
struct Bars {
    multi: MultiProgress,
    layers: HashMap<String, ProgressBar>,
    spinner: Option<(String, ProgressBar)>,
}

impl Bars {
    fn new(target: ProgressDrawTarget) -> Self {
        Self {
            multi: MultiProgress::with_draw_target(target),
            layers: HashMap::new(),
            spinner: None,
        }
    }

    fn update(&mut self, update: Update<'_>) {
        let (Some(digest), Some(total)) = (update.digest, update.total.filter(|t| *t > 0)) else {
            self.status(update.status);
            return;
        };
        let completed = update.completed.unwrap_or(0).min(total);
        if let Some(bar) = self.layers.get(digest) {
            if !bar.is_finished() {
                bar.set_length(total);
                bar.set_position(completed);
                if completed == total {
                    bar.set_style(finished_style());
                    bar.finish();
                }
            }
            return;
        }
        self.end_spinner();
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_message(format!("{}:", update.status));
        bar.set_position(completed);
        if completed == total {
            bar.set_style(finished_style());
            bar.finish();
        } else {
            bar.set_style(running_style());
            bar.reset_eta();
        }
        self.layers.insert(digest.to_owned(), bar);
    }

    fn status(&mut self, status: &str) {
        if self
            .spinner
            .as_ref()
            .is_some_and(|(current, _)| current == status)
        {
            return;
        }
        self.end_spinner();
        let spinner = self.multi.add(ProgressBar::new_spinner());
        spinner.set_style(
            ProgressStyle::with_template("{msg} {spinner}").expect("valid spinner template"),
        );
        spinner.set_message(status.to_owned());
        spinner.enable_steady_tick(Duration::from_millis(100));
        self.spinner = Some((status.to_owned(), spinner));
    }

    fn end_spinner(&mut self) {
        if let Some((_, spinner)) = self.spinner.take() {
            spinner.set_style(ProgressStyle::with_template("{msg}").expect("valid template"));
            spinner.finish();
        }
    }

    fn finish(mut self) {
        self.end_spinner();
        for bar in self.layers.values().filter(|bar| !bar.is_finished()) {
            bar.abandon();
        }
    }
}

/// A spinner with `message` on stderr while something without progress runs (loading a
/// model); nothing when bars are off. Clear it with `finish_and_clear`.
pub fn spinner(style: Style, message: &str) -> Option<ProgressBar> {
    if !style.bars {
        return None;
    }
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg}").expect("valid spinner template"),
    );
    spinner.set_message(message.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(100));
    Some(spinner)
}

fn running_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg} {percent:>3}% ▕{wide_bar}▏ {current:>7}/{total:<7} {speed:>10} {left:>6}",
    )
    .expect("valid bar template")
    .progress_chars("██ ")
    .with_key(
        "current",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&units::bytes(state.pos()));
        },
    )
    .with_key(
        "total",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&units::bytes(state.len().unwrap_or(0)));
        },
    )
    .with_key(
        "speed",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}/s", units::bytes(state.per_sec() as u64));
        },
    )
    .with_key(
        "left",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&units::eta(state.eta()));
        },
    )
}

fn finished_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} 100% ▕{wide_bar}▏ {total:>7}")
        .expect("valid bar template")
        .progress_chars("██ ")
        .with_key(
            "total",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&units::bytes(state.len().unwrap_or(0)));
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: &str) -> Update<'_> {
        Update {
            status,
            digest: None,
            total: None,
            completed: None,
        }
    }

    fn layer<'a>(status: &'a str, digest: &'a str, completed: u64) -> Update<'a> {
        Update {
            status,
            digest: Some(digest),
            total: Some(1_100_000_000),
            completed: Some(completed),
        }
    }

    #[test]
    fn plain_mode_prints_changes_and_finished_layers_only() {
        let mut plain = Plain::default();
        let stream = [
            status("pulling manifest"),
            status("pulling manifest"),
            layer("pulling aaaaaaaaaaaa", "sha256:aaaa", 0),
            layer("pulling aaaaaaaaaaaa", "sha256:aaaa", 500),
            layer("pulling bbbbbbbbbbbb", "sha256:bbbb", 1_100_000_000),
            layer("pulling aaaaaaaaaaaa", "sha256:aaaa", 1_100_000_000),
            layer("pulling aaaaaaaaaaaa", "sha256:aaaa", 1_100_000_000),
            status("verifying sha256 digest"),
            status("writing manifest"),
            status("success"),
        ];
        let lines: Vec<String> = stream.into_iter().filter_map(|u| plain.line(u)).collect();
        assert_eq!(
            lines,
            [
                "pulling manifest",
                "pulling bbbbbbbbbbbb: 1.1 GB (already complete)",
                "pulling aaaaaaaaaaaa: 100% 1.1 GB",
                "verifying sha256 digest",
                "writing manifest",
                "success",
            ]
        );
    }

    #[test]
    fn bars_accept_a_whole_pull_without_a_terminal() {
        let mut bars = Bars::new(ProgressDrawTarget::hidden());
        bars.update(status("pulling manifest"));
        bars.update(layer("pulling aaaaaaaaaaaa", "sha256:aaaa", 0));
        bars.update(layer("pulling aaaaaaaaaaaa", "sha256:aaaa", 1_100_000_000));
        bars.update(layer("pulling bbbbbbbbbbbb", "sha256:bbbb", 1_100_000_000));
        bars.update(status("success"));
        assert!(bars.layers.values().all(ProgressBar::is_finished));
        assert_eq!(bars.layers.len(), 2);
        bars.finish();
    }
}
