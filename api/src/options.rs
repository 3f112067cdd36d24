//! Runtime and Modelfile parameters (`options` in requests, `PARAMETER` in a Modelfile).
//!
//! Every field is optional so that layers can be merged: built-in defaults < the model's
//! Modelfile parameters < the request's options.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::Error;

/// `options`: every documented runtime parameter, all optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Options {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_batch: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_gpu: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_gpu: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_thread: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_keep: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_num_predict: Option<i64>,
    /// Speculative decoding: `auto` (the default), `off`, `ngram`, `draft` or `mtp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speculative: Option<String>,
    /// Most tokens drafted ahead at one step (`draft_num_predict` is Ollama's name for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_max: Option<i64>,
    /// The model that drafts for this one (`speculative` `draft` or `auto`): a small model
    /// sharing its tokenizer, loaded beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typical_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_last_n: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Stop sequences; a single string is accepted on input.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "deserialize_stop"
    )]
    pub stop: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_mmap: Option<bool>,
    // Deprecated keys old clients still send: accepted, carried, ignored by the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub penalize_newline: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_vram: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f16_kv: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logits_all: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_mlock: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirostat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirostat_tau: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirostat_eta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tfs_z: Option<f64>,
}

/// Names of the parameters that are accepted but no longer have any effect.
pub const DEPRECATED_PARAMETERS: &[&str] = &[
    "penalize_newline",
    "numa",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mlock",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "tfs_z",
];

fn deserialize_stop<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stop {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Stop>::deserialize(d)? {
        None => None,
        Some(Stop::One(s)) => Some(vec![s]),
        Some(Stop::Many(v)) => Some(v),
    })
}

/// Which JSON type a parameter's value takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
    Bool,
    /// A string; repeated `stop` lines accumulate.
    Text,
    /// One word.
    Word,
}

fn kind_of(name: &str) -> Option<Kind> {
    Some(match name {
        "num_ctx" | "num_batch" | "num_gpu" | "main_gpu" | "num_thread" | "num_keep"
        | "draft_num_predict" | "draft_max" | "seed" | "num_predict" | "top_k"
        | "repeat_last_n" | "mirostat" => Kind::Int,
        "top_p" | "min_p" | "typical_p" | "temperature" | "repeat_penalty" | "presence_penalty"
        | "frequency_penalty" | "mirostat_tau" | "mirostat_eta" | "tfs_z" => Kind::Float,
        "use_mmap" | "penalize_newline" | "numa" | "low_vram" | "f16_kv" | "logits_all"
        | "vocab_only" | "use_mlock" => Kind::Bool,
        "stop" => Kind::Text,
        "speculative" | "draft_model" => Kind::Word,
        _ => return None,
    })
}

impl Options {
    /// Overlays `other` on `self`: every field set in `other` wins. Use it as
    /// `modelfile_params.merged(&request_options)`.
    #[must_use]
    pub fn merged(&self, other: &Options) -> Options {
        let mut base = serde_json::to_value(self).expect("options serialise");
        let top = serde_json::to_value(other).expect("options serialise");
        if let (Some(base), serde_json::Value::Object(top)) = (base.as_object_mut(), top) {
            base.extend(top);
        }
        serde_json::from_value(base).expect("merged options deserialise")
    }

    /// Sets one parameter from its Modelfile text form (`PARAMETER name value`). Repeated
    /// `stop` accumulates. Errors name the parameter and the value.
    pub fn set_parameter(&mut self, name: &str, value: &str) -> Result<(), Error> {
        let kind = kind_of(name).ok_or_else(|| Error::UnknownParameter {
            name: name.to_owned(),
        })?;
        let invalid = |expected: &'static str| Error::InvalidParameter {
            name: name.to_owned(),
            value: value.to_owned(),
            expected,
        };
        let json = match kind {
            Kind::Int => serde_json::Value::from(
                value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| invalid("an integer"))?,
            ),
            Kind::Float => serde_json::Value::from(
                value
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| invalid("a number"))?,
            ),
            Kind::Bool => serde_json::Value::from(
                value
                    .trim()
                    .parse::<bool>()
                    .map_err(|_| invalid("true or false"))?,
            ),
            Kind::Word => serde_json::Value::from(value.trim()),
            Kind::Text => {
                self.stop
                    .get_or_insert_with(Vec::new)
                    .push(value.to_owned());
                return Ok(());
            }
        };
        let mut map = serde_json::to_value(&*self).expect("options serialise");
        map.as_object_mut()
            .expect("options are an object")
            .insert(name.to_owned(), json);
        *self = serde_json::from_value(map).map_err(|_| invalid("a value of the right type"))?;
        Ok(())
    }

    /// Builds options from a `parameters` map as sent in `/api/create` (values are JSON).
    pub fn from_map(map: &BTreeMap<String, serde_json::Value>) -> Result<Self, Error> {
        for name in map.keys() {
            if kind_of(name).is_none() {
                return Err(Error::UnknownParameter { name: name.clone() });
            }
        }
        let object: serde_json::Map<_, _> =
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| {
            Error::InvalidParameter {
                name: String::from("parameters"),
                value: e.to_string(),
                expected: "values of the parameters' types",
            }
        })
    }

    /// The set parameters as a name → JSON value map (the `/api/create` `parameters` shape).
    pub fn to_map(&self) -> BTreeMap<String, serde_json::Value> {
        match serde_json::to_value(self).expect("options serialise") {
            serde_json::Value::Object(map) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        }
    }

    /// `(name, value text)` pairs as a Modelfile prints them: one line per stop sequence.
    pub fn to_parameter_lines(&self) -> Vec<(String, String)> {
        let mut lines = Vec::new();
        for (name, value) in self.to_map() {
            match value {
                serde_json::Value::Array(items) => {
                    for item in items {
                        let text = item
                            .as_str()
                            .map_or_else(|| item.to_string(), str::to_owned);
                        lines.push((name.clone(), text));
                    }
                }
                serde_json::Value::String(s) => lines.push((name, s)),
                other => lines.push((name, other.to_string())),
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_accepts_string_or_array() {
        let one: Options = serde_json::from_str(r#"{"stop":"</s>"}"#).unwrap();
        assert_eq!(one.stop, Some(vec!["</s>".to_owned()]));
        let many: Options =
            serde_json::from_str(r#"{"stop":["a","b"],"temperature":0.6}"#).unwrap();
        assert_eq!(many.stop.as_deref().map(<[String]>::len), Some(2));
        assert_eq!(
            serde_json::to_string(&many).unwrap(),
            r#"{"temperature":0.6,"stop":["a","b"]}"#
        );
        assert_eq!(serde_json::to_string(&Options::default()).unwrap(), "{}");
    }

    #[test]
    fn merge_request_over_modelfile() {
        let mut model = Options::default();
        model.set_parameter("temperature", "0.6").unwrap();
        model.set_parameter("num_ctx", "4096").unwrap();
        model
            .set_parameter("stop", "<｜end▁of▁sentence｜>")
            .unwrap();
        let request = Options {
            temperature: Some(1.0),
            ..Options::default()
        };
        let merged = model.merged(&request);
        assert_eq!(merged.temperature, Some(1.0));
        assert_eq!(merged.num_ctx, Some(4096));
        assert_eq!(merged.stop.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn parameter_errors_name_the_parameter() {
        let mut options = Options::default();
        for (name, value, fragment) in [
            ("num_ctx", "big", "num_ctx"),
            ("temperature", "hot", "temperature"),
            ("use_mmap", "maybe", "use_mmap"),
            ("bogus", "1", "bogus"),
        ] {
            let err = options.set_parameter(name, value).unwrap_err().to_string();
            assert!(err.contains(fragment), "{err}");
        }
        options.set_parameter("stop", "a").unwrap();
        options.set_parameter("stop", "b").unwrap();
        options.set_parameter("use_mmap", "true").unwrap();
        assert_eq!(options.stop, Some(vec!["a".into(), "b".into()]));
        assert_eq!(options.use_mmap, Some(true));
        assert_eq!(options.to_parameter_lines().len(), 3);
    }
}
