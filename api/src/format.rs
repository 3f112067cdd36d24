//! The `format` request field: `"json"` or a JSON-schema object for constrained output.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Requested output format.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// `"json"`: any JSON value.
    Json,
    /// A JSON schema the output must satisfy.
    Schema(serde_json::Value),
}

impl Serialize for Format {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Json => serializer.serialize_str("json"),
            Self::Schema(schema) => schema.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) if s == "json" => Ok(Self::Json),
            schema @ serde_json::Value::Object(_) => Ok(Self::Schema(schema)),
            other => Err(serde::de::Error::custom(format!(
                "invalid format: {other} (expected \"json\" or a JSON schema object)"
            ))),
        }
    }
}

/// Deserialises `format`, treating `""` and `null` as absent as Ollama does.
pub(crate) fn deserialize_optional<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Format>, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) if s.is_empty() => Ok(None),
        value => Format::deserialize(value)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_round_trips() {
        let json: Format = serde_json::from_str("\"json\"").unwrap();
        assert_eq!(json, Format::Json);
        assert_eq!(serde_json::to_string(&json).unwrap(), "\"json\"");
        let schema =
            r#"{"type":"object","properties":{"age":{"type":"integer"}},"required":["age"]}"#;
        let got: Format = serde_json::from_str(schema).unwrap();
        assert!(matches!(got, Format::Schema(_)));
        assert_eq!(
            serde_json::to_value(&got).unwrap(),
            serde_json::from_str::<serde_json::Value>(schema).unwrap()
        );
        assert!(serde_json::from_str::<Format>("\"xml\"").is_err());
    }
}
