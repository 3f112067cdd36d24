//! The `keep_alive` request field: how long a model stays loaded after a request.
//!
//! Accepts what Ollama accepts: a Go duration string (`"5m"`, `"1h30m"`, `"500ms"`, `"-1m"`,
//! `"0"`) or a number of seconds (integer or float). Anything negative means "keep forever".

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How long to keep a model loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Unload after this long idle; zero unloads right after the request.
    For(Duration),
    /// Never unload (a negative value on the wire).
    Forever,
}

impl KeepAlive {
    /// The daemon's default when a request sets none (Ollama's `OLLAMA_KEEP_ALIVE` default).
    pub const DEFAULT: Self = Self::For(Duration::from_mins(5));

    /// Whether the model should be unloaded as soon as the request finishes.
    pub fn is_zero(self) -> bool {
        self == Self::For(Duration::ZERO)
    }

    /// Parses a Go-style duration string (`"1h30m"`, `"1.5s"`, `"-1m"`, `"0"`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "0" {
            return Ok(Self::For(Duration::ZERO));
        }
        // A bare negative number ("-1") means forever, as the CLI sends it.
        if let Ok(number) = text.parse::<f64>() {
            return if number < 0.0 {
                Ok(Self::Forever)
            } else {
                Err(format!("missing unit in duration {text:?}"))
            };
        }
        let (negative, mut rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        if rest.is_empty() {
            return Err(format!("invalid duration {text:?}"));
        }
        let mut total = 0f64;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, after) = rest.split_at(number_len);
            let value: f64 = number
                .parse()
                .map_err(|_| format!("invalid duration {text:?}"))?;
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let seconds_per_unit = match unit {
                "ns" => 1e-9,
                "us" | "µs" | "μs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "" => return Err(format!("missing unit in duration {text:?}")),
                other => return Err(format!("unknown unit {other:?} in duration {text:?}")),
            };
            total += value * seconds_per_unit;
            rest = after;
        }
        if negative && total > 0.0 {
            return Ok(Self::Forever);
        }
        // A duration too long for `Duration` keeps the model forever.
        Ok(Duration::try_from_secs_f64(total).map_or(Self::Forever, Self::For))
    }

    /// From a number of seconds; negative means forever.
    pub fn from_seconds(seconds: f64) -> Self {
        // NaN, infinities and durations past what `Duration` holds mean "keep it".
        match Duration::try_from_secs_f64(seconds) {
            Ok(duration) => Self::For(duration),
            Err(_) => Self::Forever,
        }
    }
}

impl Default for KeepAlive {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Go's `time.Duration` spelling (`5m0s`, `1h30m0s`, `500ms`, `0s`); `-1` for forever.
impl fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let duration = match self {
            Self::Forever => return f.write_str("-1"),
            Self::For(duration) => *duration,
        };
        if duration.is_zero() {
            return f.write_str("0s");
        }
        if duration < Duration::from_secs(1) {
            let nanos = duration.as_nanos();
            return if nanos % 1_000_000 == 0 {
                write!(f, "{}ms", nanos / 1_000_000)
            } else if nanos % 1_000 == 0 {
                write!(f, "{}µs", nanos / 1_000)
            } else {
                write!(f, "{nanos}ns")
            };
        }
        let secs = duration.as_secs();
        let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if hours > 0 || minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        let nanos = duration.subsec_nanos();
        if nanos == 0 {
            write!(f, "{seconds}s")
        } else {
            let fraction = format!("{nanos:09}");
            write!(f, "{seconds}.{}s", fraction.trim_end_matches('0'))
        }
    }
}

impl Serialize for KeepAlive {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Forever => serializer.serialize_i64(-1),
            Self::For(_) => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for KeepAlive {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Number(n) => n
                .as_f64()
                .map(Self::from_seconds)
                .ok_or_else(|| serde::de::Error::custom("invalid keep_alive number")),
            serde_json::Value::String(s) => {
                Self::parse(&s).map_err(|e| serde::de::Error::custom(format!("keep_alive: {e}")))
            }
            other => Err(serde::de::Error::custom(format!(
                "invalid keep_alive: {other} (expected a duration string or seconds)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strings_and_numbers() {
        let m = |s| KeepAlive::For(Duration::from_secs(s));
        for (json, want, back) in [
            ("\"5m\"", m(300), "\"5m0s\""),
            ("\"1h30m\"", m(5400), "\"1h30m0s\""),
            ("\"0\"", m(0), "\"0s\""),
            ("\"-1\"", KeepAlive::Forever, "-1"),
            ("\"-1m\"", KeepAlive::Forever, "-1"),
            (
                "\"500ms\"",
                KeepAlive::For(Duration::from_millis(500)),
                "\"500ms\"",
            ),
            (
                "\"1.5s\"",
                KeepAlive::For(Duration::from_millis(1500)),
                "\"1.5s\"",
            ),
            ("\"24h\"", m(86400), "\"24h0m0s\""),
            ("0", m(0), "\"0s\""),
            ("3600", m(3600), "\"1h0m0s\""),
            (
                "2.5",
                KeepAlive::For(Duration::from_millis(2500)),
                "\"2.5s\"",
            ),
            ("-1", KeepAlive::Forever, "-1"),
            ("-0.5", KeepAlive::Forever, "-1"),
        ] {
            let got: KeepAlive = serde_json::from_str(json).unwrap();
            assert_eq!(got, want, "{json}");
            let printed = serde_json::to_string(&got).unwrap();
            assert_eq!(printed, back, "{json}");
            let again: KeepAlive = serde_json::from_str(&printed).unwrap();
            assert_eq!(again, got, "{json}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["\"5\"", "\"abc\"", "\"5d\"", "\"\"", "true"] {
            assert!(serde_json::from_str::<KeepAlive>(bad).is_err(), "{bad}");
        }
    }
}
