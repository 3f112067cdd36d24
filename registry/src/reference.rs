//! `ModelRef`: a model name as Ollama spells it — `[host[:port]/][namespace/]model[:tag][@digest]`
//! — parsed once into its parts with Ollama's defaults, character rules and length limits.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The registry a bare name like `deepseek-r1:14b` comes from.
pub const DEFAULT_HOST: &str = "registry.ollama.ai";
/// The namespace of a name without one.
pub const DEFAULT_NAMESPACE: &str = "library";
/// The tag of a name without one.
pub const DEFAULT_TAG: &str = "latest";

/// A fully qualified model name. Fields keep the spelling they were given; comparisons that
/// should ignore case (Ollama's names are case-insensitive) go through [`ModelRef::key`] or
/// [`ModelRef::eq_fold`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelRef {
    host: String,
    namespace: String,
    model: String,
    tag: String,
    digest: Option<Digest>,
}

/// What one part of a name may contain besides ASCII letters and digits.
struct PartRule {
    what: &'static str,
    extra: &'static [u8],
    max_len: usize,
}

const HOST: PartRule = PartRule {
    what: "host",
    extra: b"_-.:",
    max_len: 350,
};
const NAMESPACE: PartRule = PartRule {
    what: "namespace",
    extra: b"_-",
    max_len: 80,
};
const MODEL: PartRule = PartRule {
    what: "model",
    extra: b"_-.",
    max_len: 80,
};
const TAG: PartRule = PartRule {
    what: "tag",
    extra: b"_-.",
    max_len: 80,
};

impl PartRule {
    /// Checks one part; the error says which part and why.
    fn check(&self, part: &str) -> Result<(), String> {
        if part.is_empty() {
            return Err(format!("{} is empty", self.what));
        }
        if part.len() > self.max_len {
            return Err(format!(
                "{} is {} characters long, the limit is {}",
                self.what,
                part.len(),
                self.max_len
            ));
        }
        let first = part.as_bytes()[0];
        if !(first.is_ascii_alphanumeric() || first == b'_') {
            return Err(format!(
                "{} {part:?} must start with a letter, digit or '_'",
                self.what
            ));
        }
        if let Some(bad) = part.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || (c.is_ascii() && self.extra.contains(&(*c as u8))))
        }) {
            let allowed: String = self.extra.iter().map(|b| *b as char).collect();
            return Err(format!(
                "{} {part:?} contains {bad:?}; allowed are letters, digits and {allowed:?}",
                self.what
            ));
        }
        Ok(())
    }
}

impl ModelRef {
    /// Parses a name, filling in Ollama's defaults (`registry.ollama.ai`, `library`, `latest`).
    pub fn parse(name: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidName {
            name: name.chars().take(500).collect(),
            reason,
        };
        if name.contains("://") {
            return Err(invalid(
                "a scheme is not part of a model name; use the insecure option for plain http"
                    .into(),
            ));
        }
        let (rest, digest) = match name.rsplit_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(Digest::parse(digest).map_err(|e| invalid(e.to_string()))?),
            ),
            None => (name, None),
        };
        // The tag follows the last ':' only when that ':' comes after the last '/', so that
        // `host:5000/ns/model` keeps its port.
        let last_slash = rest.rfind('/');
        let (path, tag) = match rest.rfind(':') {
            Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (host, namespace, model) = match parts.as_slice() {
            [model] => (DEFAULT_HOST, DEFAULT_NAMESPACE, *model),
            [namespace, model] => (DEFAULT_HOST, *namespace, *model),
            [host, namespace, model] => (*host, *namespace, *model),
            _ => {
                return Err(invalid(format!(
                    "{} '/'-separated parts; expected at most host/namespace/model",
                    parts.len()
                )));
            }
        };
        let tag = tag.unwrap_or(DEFAULT_TAG);
        HOST.check(host).map_err(invalid)?;
        NAMESPACE.check(namespace).map_err(invalid)?;
        MODEL.check(model).map_err(invalid)?;
        TAG.check(tag).map_err(invalid)?;
        Ok(ModelRef {
            host: host.to_owned(),
            namespace: namespace.to_owned(),
            model: model.to_owned(),
            tag: tag.to_owned(),
            digest,
        })
    }

    /// Builds a name from its parts, checking each as [`ModelRef::parse`] does.
    pub fn from_parts(host: &str, namespace: &str, model: &str, tag: &str) -> Result<Self> {
        ModelRef::parse(&format!("{host}/{namespace}/{model}:{tag}"))
    }

    /// Registry host, with port if any (`registry.ollama.ai`, `hf.co`, `127.0.0.1:5000`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Namespace (`library`, a user name, a Hugging Face user).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Model (repository) name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Tag (`latest`, `14b`, a quantisation like `Q4_K_M`).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The manifest digest pinned with `@sha256:...`, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same name with another tag (and no pinned digest).
    pub fn with_tag(&self, tag: &str) -> Result<Self> {
        ModelRef::from_parts(&self.host, &self.namespace, &self.model, tag)
    }

    /// `<namespace>/<model>`: the repository path in `/v2/<repository>/...` URLs.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.namespace, self.model)
    }

    /// Whether the name lives on Ollama's public registry.
    pub fn is_default_host(&self) -> bool {
        self.host.eq_ignore_ascii_case(DEFAULT_HOST)
    }

    /// A lowercase `host/namespace/model:tag`: names that differ only in case share one key.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}:{}",
            self.host, self.namespace, self.model, self.tag
        )
        .to_ascii_lowercase()
    }

    /// Case-insensitive equality of host, namespace, model and tag (the pinned digest is not
    /// part of a model's identity in the store).
    pub fn eq_fold(&self, other: &ModelRef) -> bool {
        self.host.eq_ignore_ascii_case(&other.host)
            && self.namespace.eq_ignore_ascii_case(&other.namespace)
            && self.model.eq_ignore_ascii_case(&other.model)
            && self.tag.eq_ignore_ascii_case(&other.tag)
    }

    /// The name as `ollama list` prints it: without the default host, without `library/` when
    /// the host is the default, always with the tag (`deepseek-r1:14b`, `hf.co/u/r:Q4_K_M`).
    pub fn short(&self) -> String {
        if self.is_default_host() {
            if self.namespace.eq_ignore_ascii_case(DEFAULT_NAMESPACE) {
                format!("{}:{}", self.model, self.tag)
            } else {
                format!("{}/{}:{}", self.namespace, self.model, self.tag)
            }
        } else {
            format!(
                "{}/{}/{}:{}",
                self.host, self.namespace, self.model, self.tag
            )
        }
    }

    /// The manifest's path relative to the store root: `manifests/<host>/<ns>/<model>/<tag>`.
    pub fn manifest_path(&self) -> PathBuf {
        [
            "manifests",
            &self.host,
            &self.namespace,
            &self.model,
            &self.tag,
        ]
        .iter()
        .collect()
    }
}

impl fmt::Display for ModelRef {
    /// The full name, `host/namespace/model:tag[@sha256:...]`; parsing it gives back `self`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}:{}",
            self.host, self.namespace, self.model, self.tag
        )?;
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ModelRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ModelRef::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "6e4c38e1172f42fdbff13edf9a7a017679fb82b0fde415a3e8b3c31c6ed4a4e4";

    #[test]
    fn parses_valid_names() {
        let cases = [
            (
                "llama3.2",
                "registry.ollama.ai/library/llama3.2:latest",
                "llama3.2:latest",
            ),
            (
                "deepseek-r1:14b",
                "registry.ollama.ai/library/deepseek-r1:14b",
                "deepseek-r1:14b",
            ),
            (
                "mattw/pygmalion",
                "registry.ollama.ai/mattw/pygmalion:latest",
                "mattw/pygmalion:latest",
            ),
            (
                "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0",
                "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0",
                "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0",
            ),
            (
                "localhost:5000/ns/m",
                "localhost:5000/ns/m:latest",
                "localhost:5000/ns/m:latest",
            ),
            (
                "127.0.0.1:5000/ns/m:v1.2",
                "127.0.0.1:5000/ns/m:v1.2",
                "127.0.0.1:5000/ns/m:v1.2",
            ),
            (
                "registry.ollama.ai/library/qwen:7b",
                "registry.ollama.ai/library/qwen:7b",
                "qwen:7b",
            ),
            ("_x/_y:_z", "registry.ollama.ai/_x/_y:_z", "_x/_y:_z"),
        ];
        for (input, full, short) in cases {
            let name = ModelRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(name.to_string(), full, "{input}");
            assert_eq!(name.short(), short, "{input}");
            assert_eq!(
                ModelRef::parse(&name.to_string()).unwrap(),
                name,
                "round trip {input}"
            );
        }
    }

    #[test]
    fn parses_a_pinned_digest() {
        let name = ModelRef::parse(&format!("deepseek-r1:7b@sha256:{HEX}")).unwrap();
        assert_eq!(name.tag(), "7b");
        assert_eq!(name.digest().unwrap().hex(), HEX);
        assert_eq!(
            name.to_string(),
            format!("registry.ollama.ai/library/deepseek-r1:7b@sha256:{HEX}")
        );
        assert_eq!(ModelRef::parse(&name.to_string()).unwrap(), name);
    }

    #[test]
    fn rejects_invalid_names_saying_why() {
        let long = "m".repeat(81);
        let cases = [
            ("", "model is empty"),
            ("a//b", "namespace is empty"),
            ("m:", "tag is empty"),
            ("/m", "namespace is empty"),
            ("a/b/c/d", "4 '/'-separated parts"),
            ("ns.x/m", "namespace \"ns.x\" contains '.'"),
            ("-m", "must start with"),
            ("m:.t", "must start with"),
            ("m:t/x", "contains ':'"),
            ("m o", "contains ' '"),
            ("../etc/passwd", "must start with"),
            ("../../etc/passwd", "4 '/'-separated parts"),
            ("m@sha256:123", "invalid digest"),
            ("http://host/ns/m", "scheme"),
            (long.as_str(), "81 characters long, the limit is 80"),
        ];
        for (input, want) in cases {
            let err = ModelRef::parse(input).expect_err(input).to_string();
            assert!(
                err.contains(want),
                "{input:?}: {err:?} should mention {want:?}"
            );
        }
    }

    #[test]
    fn comparisons_ignore_case() {
        let a = ModelRef::parse("DeepSeek-R1:14B").unwrap();
        let b = ModelRef::parse("registry.ollama.ai/library/deepseek-r1:14b").unwrap();
        assert!(a.eq_fold(&b));
        assert_eq!(a.key(), b.key());
        assert_ne!(a, b, "spelling is kept");
        assert_eq!(a.short(), "DeepSeek-R1:14B");
    }

    #[test]
    fn maps_to_the_manifest_path() {
        let name = ModelRef::parse("hf.co/user/repo:Q4_K_M").unwrap();
        assert_eq!(
            name.manifest_path(),
            PathBuf::from("manifests/hf.co/user/repo/Q4_K_M")
        );
        assert_eq!(name.repository(), "user/repo");
    }
}
