//! A model in the store as the daemon uses it: its manifest, the path of its weights, and the
//! text layers (template, system prompt, parameters, license, messages) an Ollama manifest
//! carries beside them.

use std::path::PathBuf;
use std::time::SystemTime;

use whale_registry::manifest::media_type;
use whale_registry::{Digest, Manifest, ModelRef, Store};

use crate::error::Error;

/// One message of a Modelfile's `MESSAGE` history (the messages layer's JSON shape).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct HistoryMessage {
    pub role: String,
    pub content: String,
}

/// A stored model, resolved from a name.
#[derive(Debug, Clone)]
pub struct LocalModel {
    /// The name as spelled on disk.
    pub reference: ModelRef,
    pub manifest: Manifest,
    pub manifest_digest: Digest,
    /// The GGUF weights.
    pub weights: Digest,
    pub weights_path: PathBuf,
    pub template: Option<String>,
    pub system: Option<String>,
    pub license: Vec<String>,
    /// The params layer: Modelfile `PARAMETER`s as a JSON object.
    pub params: serde_json::Map<String, serde_json::Value>,
    pub messages: Vec<HistoryMessage>,
    pub modified: SystemTime,
}

/// The DeepSeek API's model names, which whaled lets stand for local models so that scripts
/// written for api.deepseek.com run unchanged: each with the variable that sets its target.
const DEEPSEEK_ALIASES: [Alias; 3] = [
    Alias {
        name: "deepseek-chat",
        variable: crate::config::ENV_DEEPSEEK_CHAT,
        target: |config| &config.deepseek_chat,
    },
    Alias {
        name: "deepseek-reasoner",
        variable: crate::config::ENV_DEEPSEEK_REASONER,
        target: |config| &config.deepseek_reasoner,
    },
    Alias {
        name: "deepseek-r1-zero",
        variable: crate::config::ENV_DEEPSEEK_R1_ZERO,
        target: |config| &config.deepseek_r1_zero,
    },
];

/// A DeepSeek API name, the variable that sets what it stands for, and where the
/// configuration keeps that.
struct Alias {
    name: &'static str,
    variable: &'static str,
    target: fn(&crate::Config) -> &String,
}

/// The model a DeepSeek API name stands for under `config`, with the variable that sets it.
pub fn alias_target<'c>(config: &'c crate::Config, name: &str) -> Option<(&'c str, &'static str)> {
    let name = name.trim().to_ascii_lowercase();
    let name = name.strip_suffix(":latest").unwrap_or(&name);
    let alias = DEEPSEEK_ALIASES.iter().find(|alias| alias.name == name)?;
    Some(((alias.target)(config).as_str(), alias.variable))
}

/// The DeepSeek API names whose targets are stored, with the model each stands for.
pub fn aliases_present(store: &Store, config: &crate::Config) -> Vec<(&'static str, ModelRef)> {
    DEEPSEEK_ALIASES
        .iter()
        .filter(|alias| parse_name(alias.name).is_ok_and(|r| store.resolve(&r).is_none()))
        .filter_map(|alias| {
            let target = parse_name((alias.target)(config)).ok()?;
            Some((alias.name, store.resolve(&target)?))
        })
        .collect()
}

impl LocalModel {
    /// [`LocalModel::find`], where a DeepSeek API name (`deepseek-chat`, `deepseek-reasoner`)
    /// that no stored model bears stands for the model `config` names for it.
    pub async fn find_or_alias(
        store: &Store,
        config: &crate::Config,
        name: &str,
    ) -> Result<Self, Error> {
        match Self::find(store, name).await {
            Err(Error::ModelNotFound(missing)) => {
                let Some((target, variable)) = alias_target(config, name) else {
                    return Err(Error::ModelNotFound(missing));
                };
                Self::find(store, target).await.map_err(|error| match error {
                    Error::ModelNotFound(_) => Error::NotFound(format!(
                        "model '{name}' not found: it stands for '{target}' ({variable}), which \
                         is not here; pull it, or set {variable} to a model you have"
                    )),
                    other => other,
                })
            }
            other => other,
        }
    }

    /// Parses `name` and loads the model it names; 400 for a bad name, 404 when absent.
    pub async fn find(store: &Store, name: &str) -> Result<Self, Error> {
        let reference = parse_name(name)?;
        let Some(reference) = store.resolve(&reference) else {
            return Err(Error::ModelNotFound(name.to_owned()));
        };
        let bytes = store.read_manifest_bytes(&reference).await?;
        let manifest = Manifest::parse(&bytes)?;
        let manifest_digest = Digest::of_bytes(&bytes);
        let Some(weights_layer) = manifest.layer(media_type::MODEL) else {
            if let Some(upstream) = crate::remote::upstream_of(store, &manifest) {
                return Err(Error::BadRequest(format!(
                    "'{name}' is served by {}: it answers chat and generate requests, and \
                     nothing else runs it here",
                    upstream.base
                )));
            }
            return Err(Error::InvalidModel {
                name: name.to_owned(),
                message: "its manifest has no model layer".to_owned(),
            });
        };
        let weights = weights_layer.digest.clone();
        let weights_path = store.blob_path(&weights);
        // A downloaded blob cut short by a machine crash (see the store's durability notes)
        // must never reach llama.cpp.
        if !store.has_complete_blob(&weights, weights_layer.size) {
            return Err(Error::InvalidModel {
                name: name.to_owned(),
                message: format!(
                    "its weights {weights} are missing or incomplete; pull the model again"
                ),
            });
        }
        let text = |kind: &str| {
            manifest
                .layers
                .iter()
                .filter(|layer| layer.media_type == kind)
                .map(|layer| read_text(store, &layer.digest))
                .collect::<Result<Vec<String>, Error>>()
        };
        let template = text(media_type::TEMPLATE)?.pop();
        let system = text(media_type::SYSTEM)?.pop();
        let license = text(media_type::LICENSE)?;
        let params = match text(media_type::PARAMS)?.pop() {
            Some(json) => serde_json::from_str(&json).map_err(|error| Error::InvalidModel {
                name: name.to_owned(),
                message: format!("its params layer is not a JSON object: {error}"),
            })?,
            None => serde_json::Map::new(),
        };
        let messages = match text(media_type::MESSAGES)?.pop() {
            Some(json) => serde_json::from_str(&json).map_err(|error| Error::InvalidModel {
                name: name.to_owned(),
                message: format!("its messages layer is not a list of messages: {error}"),
            })?,
            None => Vec::new(),
        };
        let modified = std::fs::metadata(store.root().join(reference.manifest_path()))
            .and_then(|meta| meta.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Self {
            reference,
            manifest,
            manifest_digest,
            weights,
            weights_path,
            template,
            system,
            license,
            params,
            messages,
            modified,
        })
    }

    /// The short name Ollama shows (`deepseek-r1:14b`, `user/model:tag`, `host/ns/model:tag`).
    pub fn name(&self) -> String {
        self.reference.short()
    }

    /// whale's chat template for the catalogue entry of the same name, if it has one.
    pub fn catalogue_template(&self) -> Option<&'static str> {
        crate::catalogue::find(&self.name()).and_then(crate::catalogue::Entry::chat_template)
    }

    /// The parameters it runs with by default: its own, over those of the catalogue entry of
    /// the same name (the model card's recommended settings, and the entry's draft model) for
    /// what it does not set itself.
    pub fn run_params(&self) -> std::borrow::Cow<'_, serde_json::Map<String, serde_json::Value>> {
        use std::borrow::Cow;
        let catalogue = crate::catalogue::find(&self.name())
            .and_then(|entry| serde_json::to_value(&entry.modelfile.parameters).ok());
        let Some(serde_json::Value::Object(mut params)) = catalogue else {
            return Cow::Borrowed(&self.params);
        };
        for (key, value) in &self.params {
            params.insert(key.clone(), value.clone());
        }
        Cow::Owned(params)
    }
}

/// Parses a model name, mapping a bad one to 400 with the reason.
pub fn parse_name(name: &str) -> Result<ModelRef, Error> {
    ModelRef::parse(name).map_err(|error| Error::BadRequest(error.to_string()))
}

/// Text layers are small; a large one is refused rather than read into memory.
const MAX_TEXT_LAYER: u64 = 1 << 20;

fn read_text(store: &Store, digest: &Digest) -> Result<String, Error> {
    let path = store.blob_path(digest);
    let size = std::fs::metadata(&path).map_or(0, |meta| meta.len());
    if size > MAX_TEXT_LAYER {
        return Err(Error::Internal(format!(
            "layer {digest} is {size} bytes, too large for a text layer"
        )));
    }
    std::fs::read_to_string(&path)
        .map_err(|error| Error::Internal(format!("cannot read layer {digest}: {error}")))
}
