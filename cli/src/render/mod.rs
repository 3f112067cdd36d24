//! Everything `whale` draws: progress of pulls, pushes and creates (indicatif bars on a
//! terminal, plain lines otherwise), streamed answers with their reasoning, `--verbose`
//! timings, tables, and human units.
//!
//! The rule, after uv and ripgrep: data goes to stdout, everything else (progress, notes,
//! timings, errors) to stderr; no colour and no bars when stdout is not a terminal or
//! `NO_COLOR` is set.

pub mod progress;
pub mod stats;
pub mod table;
pub mod text;
pub mod units;

use std::io::IsTerminal as _;

/// How fancy the output may be, decided once per process from the terminal and `NO_COLOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// ANSI styling (dimmed reasoning) on stdout.
    pub color: bool,
    /// Animated progress bars and spinners on stderr.
    pub bars: bool,
    /// Whether stdout is a terminal: a person reads along, so reasoning is shown by default.
    pub terminal: bool,
}

impl Style {
    /// Looks at stdout, stderr and `NO_COLOR` (set and non-empty, per no-color.org).
    pub fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        Self::decide(
            std::io::stdout().is_terminal(),
            std::io::stderr().is_terminal(),
            no_color,
        )
    }

    /// The decision itself, apart from the process's environment so it can be tested.
    pub fn decide(stdout_tty: bool, stderr_tty: bool, no_color: bool) -> Self {
        let fancy = stdout_tty && !no_color;
        Self {
            color: fancy,
            bars: fancy && stderr_tty,
            terminal: stdout_tty,
        }
    }

    /// No styling at all: what pipes and tests get.
    pub const PLAIN: Self = Self {
        color: false,
        bars: false,
        terminal: false,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_and_no_color_turn_everything_off() {
        let all = Style {
            color: true,
            bars: true,
            terminal: true,
        };
        assert_eq!(Style::decide(true, true, false), all);
        assert_eq!(Style::decide(false, true, false), Style::PLAIN);
        assert_eq!(
            Style::decide(true, true, true),
            Style {
                terminal: true,
                ..Style::PLAIN
            }
        );
        assert_eq!(
            Style::decide(true, false, false),
            Style { bars: false, ..all }
        );
    }
}
