//! The `think` request field: a boolean or a reasoning level.
//!
//! Ollama accepts `true`, `false` or `"low" | "medium" | "high" | "max"`; the daemon needs to
//! know both whether thinking is on and, for templates that take one, the level.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Value of `think` as a client sends it. Round-trips to the same JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Think {
    /// `true` / `false`.
    Enabled(bool),
    /// `"low"`, `"medium"`, `"high"` or `"max"`.
    Level(ThinkLevel),
}

/// A reasoning effort level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThinkLevel {
    Low,
    Medium,
    High,
    Max,
}

impl ThinkLevel {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Max => "max",
        }
    }
}

impl Think {
    /// Whether the model should think at all (`false` is the only "off").
    pub fn is_enabled(self) -> bool {
        !matches!(self, Self::Enabled(false))
    }

    /// Level for templates that need one; `true` means medium, as in Ollama.
    pub fn level(self) -> Option<ThinkLevel> {
        match self {
            Self::Enabled(false) => None,
            Self::Enabled(true) => Some(ThinkLevel::Medium),
            Self::Level(level) => Some(level),
        }
    }
}

impl Serialize for Think {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Enabled(on) => serializer.serialize_bool(*on),
            Self::Level(level) => serializer.serialize_str(level.as_str()),
        }
    }
}

impl<'de> Deserialize<'de> for Think {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Bool(on) => Ok(Self::Enabled(on)),
            serde_json::Value::String(s) => match s.as_str() {
                "low" => Ok(Self::Level(ThinkLevel::Low)),
                "medium" => Ok(Self::Level(ThinkLevel::Medium)),
                "high" => Ok(Self::Level(ThinkLevel::High)),
                "max" => Ok(Self::Level(ThinkLevel::Max)),
                // Ollama's CLI sends these spellings too.
                "true" => Ok(Self::Enabled(true)),
                "false" => Ok(Self::Enabled(false)),
                other => Err(serde::de::Error::custom(format!(
                    "invalid think value: {other:?} (expected true, false, \"low\", \"medium\", \"high\" or \"max\")"
                ))),
            },
            other => Err(serde::de::Error::custom(format!(
                "invalid think value: {other} (expected a boolean or a level string)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_round_trips() {
        for (json, want) in [
            ("true", Think::Enabled(true)),
            ("false", Think::Enabled(false)),
            ("\"low\"", Think::Level(ThinkLevel::Low)),
            ("\"medium\"", Think::Level(ThinkLevel::Medium)),
            ("\"high\"", Think::Level(ThinkLevel::High)),
            ("\"max\"", Think::Level(ThinkLevel::Max)),
        ] {
            let got: Think = serde_json::from_str(json).unwrap();
            assert_eq!(got, want, "{json}");
            assert_eq!(serde_json::to_string(&got).unwrap(), json);
        }
        assert!(serde_json::from_str::<Think>("\"extreme\"").is_err());
        assert!(serde_json::from_str::<Think>("1").is_err());
        assert!(!Think::Enabled(false).is_enabled());
        assert_eq!(Think::Enabled(true).level(), Some(ThinkLevel::Medium));
    }
}
