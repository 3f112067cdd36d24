//! The timings `whale run --verbose` (and the REPL's `/set verbose`) prints after each answer,
//! laid out as Ollama lays them out, on stderr so they never mix with the answer.

use std::fmt::Write as _;
use std::time::Duration;

use super::units::go_duration;

/// The timing fields of a final chat or generate chunk (all optional on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    pub total_duration: Duration,
    pub load_duration: Duration,
    pub prompt_eval_count: u64,
    pub prompt_eval_duration: Duration,
    pub eval_count: u64,
    pub eval_duration: Duration,
    /// Tokens drafted ahead (speculative decoding) and accepted; 0 when none were drafted.
    pub draft_count: u64,
    pub draft_accepted_count: u64,
}

impl Metrics {
    /// The summary block; a line is left out when its value is zero, as the server omits it.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if !self.total_duration.is_zero() {
            let _ = writeln!(
                out,
                "total duration:       {}",
                go_duration(self.total_duration)
            );
        }
        if !self.load_duration.is_zero() {
            let _ = writeln!(
                out,
                "load duration:        {}",
                go_duration(self.load_duration)
            );
        }
        if self.prompt_eval_count > 0 {
            let _ = writeln!(
                out,
                "prompt eval count:    {} token(s)",
                self.prompt_eval_count
            );
        }
        if !self.prompt_eval_duration.is_zero() {
            let duration = self.prompt_eval_duration;
            let _ = writeln!(out, "prompt eval duration: {}", go_duration(duration));
            let rate = rate(self.prompt_eval_count, duration);
            let _ = writeln!(out, "prompt eval rate:     {rate:.2} tokens/s");
        }
        if self.eval_count > 0 {
            let _ = writeln!(out, "eval count:           {} token(s)", self.eval_count);
        }
        if !self.eval_duration.is_zero() {
            let _ = writeln!(
                out,
                "eval duration:        {}",
                go_duration(self.eval_duration)
            );
            let rate = rate(self.eval_count, self.eval_duration);
            let _ = writeln!(out, "eval rate:            {rate:.2} tokens/s");
        }
        if self.draft_count > 0 {
            let share = 100.0 * self.draft_accepted_count as f64 / self.draft_count as f64;
            let _ = writeln!(
                out,
                "draft tokens:         {} drafted, {} accepted ({share:.0}%)",
                self.draft_count, self.draft_accepted_count
            );
        }
        out
    }
}

fn rate(count: u64, duration: Duration) -> f64 {
    count as f64 / duration.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_ollama() {
        let metrics = Metrics {
            total_duration: Duration::from_nanos(5_043_500_667),
            load_duration: Duration::from_nanos(5_025_959),
            prompt_eval_count: 26,
            prompt_eval_duration: Duration::from_micros(325_953),
            eval_count: 290,
            eval_duration: Duration::from_micros(4_709_213),
            ..Metrics::default()
        };
        let want = "\
total duration:       5.043500667s
load duration:        5.025959ms
prompt eval count:    26 token(s)
prompt eval duration: 325.953ms
prompt eval rate:     79.77 tokens/s
eval count:           290 token(s)
eval duration:        4.709213s
eval rate:            61.58 tokens/s
";
        assert_eq!(metrics.summary(), want);
    }

    #[test]
    fn drafted_tokens_follow_the_eval_rate() {
        let metrics = Metrics {
            eval_count: 40,
            draft_count: 32,
            draft_accepted_count: 24,
            ..Metrics::default()
        };
        assert_eq!(
            metrics.summary(),
            "eval count:           40 token(s)\ndraft tokens:         32 drafted, 24 accepted (75%)\n"
        );
    }

    #[test]
    fn zero_values_are_left_out() {
        let metrics = Metrics {
            total_duration: Duration::from_millis(20),
            eval_count: 3,
            ..Metrics::default()
        };
        assert_eq!(
            metrics.summary(),
            "total duration:       20ms\neval count:           3 token(s)\n"
        );
    }
}
