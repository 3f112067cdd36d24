//! `/api/create`: builds a model from an existing one or from uploaded blobs plus a template,
//! system prompt, parameters, license and messages, as Ollama's current create does. Every
//! layer is a blob in the store; the manifest is written last.

use serde_json::{Map, Value};
use whale_api as api;
use whale_registry::manifest::media_type;
use whale_registry::{Digest, Layer, Manifest, ModelRef, ProgressEvent, Reporter, Store};

use crate::chat::{ChatTemplate, SpecialTokens};
use crate::error::Error;
use crate::gguf::GgufFile;
use crate::model::{self, LocalModel};
use crate::remote::Upstream;

/// A validated create request.
pub struct CreatePlan {
    name: ModelRef,
    /// Layers taken as they are: the base model's, or the uploaded GGUF.
    base: Vec<Layer>,
    /// Text layers to write: (media type, content); they replace the base's of that type.
    text: Vec<(&'static str, String)>,
    kind: Kind,
}

/// What the new model runs: a GGUF here, or a model of another server.
enum Kind {
    Gguf {
        architecture: String,
        file_type: String,
        parameter_size: String,
    },
    Remote(Upstream),
}

/// Checks the request and everything it names, before anything is written.
pub async fn plan(store: &Store, request: api::CreateRequest) -> Result<CreatePlan, Error> {
    let name = model::parse_name(&request.model)?;
    if request.quantize.as_ref().is_some_and(|q| !q.is_empty()) {
        return Err(Error::BadRequest(
            "quantize is not supported: create from a GGUF that is already quantized".to_owned(),
        ));
    }
    let mut base: Vec<Layer> = Vec::new();
    let mut params: Map<String, Value> = Map::new();
    let mut weights: Option<Digest> = None;
    let upstream = request
        .from
        .as_deref()
        .and_then(Upstream::parse)
        .transpose()?;
    if let Some(upstream) = &upstream {
        if request
            .files
            .as_ref()
            .is_some_and(|files| !files.is_empty())
        {
            return Err(Error::BadRequest(
                "a model served by another server has no files: FROM names it alone".to_owned(),
            ));
        }
        if request.template.is_some() {
            return Err(Error::BadRequest(format!(
                "TEMPLATE does not apply to a model served by {}: its server renders the \
                 conversation with its own template",
                upstream.base
            )));
        }
    } else if let Some(files) = request.files.as_ref().filter(|files| !files.is_empty()) {
        for (file, digest) in files {
            let digest = Digest::parse(digest)?;
            if !store.has_blob(&digest) {
                return Err(Error::BadRequest(format!(
                    "file {file} ({digest}) has not been uploaded; POST it to /api/blobs/{digest} first"
                )));
            }
            if !file.to_ascii_lowercase().ends_with(".gguf") {
                return Err(Error::BadRequest(format!(
                    "file {file}: only GGUF files can be used to create a model"
                )));
            }
            if weights.is_some() {
                return Err(Error::BadRequest(
                    "more than one GGUF file given; split GGUFs are not supported".to_owned(),
                ));
            }
            let size = store.blob_size(&digest)?;
            base.push(Layer {
                media_type: media_type::MODEL.to_owned(),
                digest: digest.clone(),
                size,
                from: None,
                name: None,
            });
            weights = Some(digest);
        }
    } else if let Some(from) = request.from.as_deref().filter(|from| !from.is_empty()) {
        let source = LocalModel::find(store, from).await?;
        params.clone_from(&source.params);
        weights = Some(source.weights.clone());
        base.clone_from(&source.manifest.layers);
    } else {
        return Err(Error::BadRequest(
            "neither 'from' nor 'files' was given: name a model or upload a GGUF".to_owned(),
        ));
    }
    let kind = if let Some(upstream) = upstream {
        Kind::Remote(upstream)
    } else {
        let weights = weights.expect("set above");
        let path = store.blob_path(&weights);
        let gguf = tokio::task::spawn_blocking(move || GgufFile::open(&path))
            .await
            .map_err(|error| Error::Internal(error.to_string()))?
            .map_err(|error| Error::BadRequest(format!("invalid GGUF file: {error}")))?;
        Kind::Gguf {
            architecture: gguf.architecture().unwrap_or_default().to_owned(),
            file_type: gguf.file_type_name().unwrap_or_default().to_owned(),
            parameter_size: gguf.parameter_size_label(),
        }
    };

    let mut text: Vec<(&'static str, String)> = Vec::new();
    if let Some(template) = request.template.clone() {
        // As Ollama: a template that does not compile is refused now, not at every request.
        ChatTemplate::new(&template, SpecialTokens::default())
            .map_err(|error| Error::BadRequest(format!("template error: {error}")))?;
        text.push((media_type::TEMPLATE, template));
    }
    if let Some(system) = request.system.clone() {
        text.push((media_type::SYSTEM, system));
    }
    for license in request
        .license
        .clone()
        .map(api::License::into_vec)
        .unwrap_or_default()
    {
        text.push((media_type::LICENSE, license));
    }
    if let Some(parameters) = &request.parameters {
        // Typed check: an unknown or ill-typed parameter is refused here, not at run time.
        api::Options::from_map(parameters)
            .map_err(|error| Error::BadRequest(format!("invalid parameters: {error}")))?;
        for (key, value) in parameters {
            params.insert(key.clone(), value.clone());
        }
    }
    if request.parameters.is_some() {
        text.push((media_type::PARAMS, Value::Object(params).to_string()));
    }
    if let Some(messages) = &request.messages {
        text.push((
            media_type::MESSAGES,
            serde_json::to_string(messages).unwrap_or_default(),
        ));
    }
    Ok(CreatePlan {
        name,
        base,
        text,
        kind,
    })
}

/// Writes the new layers and the manifest, reporting Ollama's create progress lines.
pub async fn run(store: &Store, plan: CreatePlan, progress: &dyn Reporter) -> Result<(), Error> {
    if matches!(plan.kind, Kind::Gguf { .. }) {
        progress.report(ProgressEvent::status("parsing GGUF"));
    }
    let replaced: Vec<&str> = plan.text.iter().map(|(kind, _)| *kind).collect();
    let mut layers: Vec<Layer> = Vec::new();
    for layer in plan.base {
        if replaced.contains(&layer.media_type.as_str()) {
            continue;
        }
        progress.report(ProgressEvent::status(format!(
            "using existing layer {}",
            layer.digest
        )));
        layers.push(layer);
    }
    for (kind, content) in plan.text {
        let layer = write_text(store, kind, content.into_bytes()).await?;
        progress.report(ProgressEvent::status(format!(
            "creating new layer {}",
            layer.digest
        )));
        layers.push(layer);
    }
    let mut config = match plan.kind {
        Kind::Gguf {
            architecture,
            file_type,
            parameter_size,
        } => serde_json::json!({
            "model_format": "gguf",
            "model_family": architecture,
            "model_families": [architecture],
            "model_type": parameter_size,
            "file_type": file_type,
        }),
        Kind::Remote(upstream) => upstream.config(),
    };
    config["architecture"] = std::env::consts::ARCH.into();
    config["os"] = std::env::consts::OS.into();
    config["rootfs"] = serde_json::json!({
        "type": "layers",
        "diff_ids": layers.iter().map(|layer| layer.digest.to_string()).collect::<Vec<_>>(),
    });
    let config = write_text(
        store,
        media_type::DOCKER_CONFIG,
        serde_json::to_vec(&config).unwrap_or_default(),
    )
    .await?;
    progress.report(ProgressEvent::status("writing manifest"));
    store
        .write_manifest(&plan.name, &Manifest::new(config, layers))
        .await?;
    progress.report(ProgressEvent::status("success"));
    Ok(())
}

async fn write_text(store: &Store, kind: &str, bytes: Vec<u8>) -> Result<Layer, Error> {
    let digest = Digest::of_bytes(&bytes);
    let size = bytes.len() as u64;
    store
        .write_blob(&digest, std::io::Cursor::new(bytes))
        .await?;
    Ok(Layer {
        media_type: kind.to_owned(),
        digest,
        size,
        from: None,
        name: None,
    })
}
