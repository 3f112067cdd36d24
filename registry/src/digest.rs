//! `Digest`: a validated sha256 content address. It is the only thing a blob path is built
//! from, so no string from the network ever reaches the file system unchecked.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// `sha256:` followed by 64 lowercase hex digits. Parsing also accepts `sha256-<hex>`, the form
/// Ollama uses in blob file names and in `/api/blobs/:digest`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<hex>` or `sha256-<hex>`.
    pub fn parse(value: &str) -> Result<Self> {
        let invalid = || Error::InvalidDigest {
            value: value.chars().take(100).collect(),
        };
        let hex = value
            .strip_prefix("sha256:")
            .or_else(|| value.strip_prefix("sha256-"))
            .ok_or_else(invalid)?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid());
        }
        Ok(Digest {
            hex: hex.to_owned(),
        })
    }

    /// The digest of a finished hash.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Digest {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// The digest of bytes in memory (manifests, small configs).
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Digest {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, as Ollama's progress lines show them (`pulling 6e4c38e1172f`).
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    /// The blob's file name in the store, `sha256-<hex>`.
    pub fn file_name(&self) -> String {
        format!("sha256-{}", self.hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.hex)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Digest::parse(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "6e4c38e1172f42fdbff13edf9a7a017679fb82b0fde415a3e8b3c31c6ed4a4e4";

    #[test]
    fn parses_both_forms_and_prints_the_colon_form() {
        let colon = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        let dash = Digest::parse(&format!("sha256-{HEX}")).unwrap();
        assert_eq!(colon, dash);
        assert_eq!(colon.to_string(), format!("sha256:{HEX}"));
        assert_eq!(colon.file_name(), format!("sha256-{HEX}"));
        assert_eq!(colon.short(), "6e4c38e1172f");
    }

    #[test]
    fn rejects_anything_else() {
        for bad in [
            "",
            HEX,
            "sha256:",
            "sha512:abc",
            &format!("sha256:{}", &HEX[1..]),
            &format!("sha256:{HEX}0"),
            &format!("sha256:{}", HEX.to_uppercase()),
            "sha256:../../../../etc/passwd",
            &format!("sha256:{}/x", &HEX[..62]),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn hashes_bytes() {
        assert_eq!(
            Digest::of_bytes(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn serde_validates() {
        let ok: Digest = serde_json::from_str(&format!("\"sha256:{HEX}\"")).unwrap();
        assert_eq!(ok.hex(), HEX);
        assert!(serde_json::from_str::<Digest>("\"sha256:../x\"").is_err());
    }
}
