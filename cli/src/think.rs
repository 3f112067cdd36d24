//! The `--think` setting as the user spells it (`true`, `false`, `low`, `medium`, `high`,
//! `max`), shared by `whale run --think=…` and the REPL's `/set think [level]`, parsed into
//! whale-api's wire value.

pub use whale_api::{Think, ThinkLevel};

/// Parses the value of `--think=` or `/set think`; case-insensitive.
pub fn parse(value: &str) -> Result<Think, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(Think::Enabled(true)),
        "false" | "0" | "no" | "off" => Ok(Think::Enabled(false)),
        "low" => Ok(Think::Level(ThinkLevel::Low)),
        "medium" => Ok(Think::Level(ThinkLevel::Medium)),
        "high" => Ok(Think::Level(ThinkLevel::High)),
        "max" => Ok(Think::Level(ThinkLevel::Max)),
        other => Err(format!(
            "invalid think value '{other}': use true, false, low, medium, high or max"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        let table = [
            ("true", Think::Enabled(true)),
            ("TRUE", Think::Enabled(true)),
            ("false", Think::Enabled(false)),
            ("low", Think::Level(ThinkLevel::Low)),
            ("Medium", Think::Level(ThinkLevel::Medium)),
            ("high", Think::Level(ThinkLevel::High)),
            ("max", Think::Level(ThinkLevel::Max)),
        ];
        for (text, want) in table {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
        assert!(parse("loud").unwrap_err().contains("'loud'"));
    }

    #[test]
    fn wire_form() {
        assert_eq!(
            serde_json::to_value(Think::Enabled(false)).unwrap(),
            serde_json::json!(false)
        );
        assert_eq!(
            serde_json::to_value(Think::Level(ThinkLevel::High)).unwrap(),
            serde_json::json!("high")
        );
    }
}
