//! Runtime options: the model's Modelfile `PARAMETER`s overlaid by a request's `options`,
//! validated into what the scheduler (load options) and the engine (sampling) take.
//!
//! Precedence, as Ollama's: built-in defaults < the model's params layer < request options.
//! Every bound names the field, its limit and the value given.
//!
//! The built-in defaults are current Ollama's: `temperature` 0.8, `top_k` 40, `top_p` 0.9,
//! `min_p` 0, `typical_p` 1, `repeat_penalty` 1.0 (Ollama's was 1.1 before 0.17.5),
//! `repeat_last_n` 64, `presence_penalty` and `frequency_penalty` 0, `num_batch` 512,
//! `num_predict` -1 (no limit but the context), `num_ctx` whaled's `--context-length`.

use serde_json::{Map, Value};
use whale_api::Options;

use crate::engine::{Sampling, Speculation, SpeculationMode};
use crate::error::Error;

/// Largest `num_ctx` accepted (16 Mi tokens; far beyond any DeepSeek model's training).
pub const MAX_NUM_CTX: u32 = 1 << 24;
/// Largest `num_batch` accepted.
pub const MAX_NUM_BATCH: u32 = 1 << 16;
/// Most stop sequences a request may carry.
pub const MAX_STOP: usize = 16;

/// Options resolved for one request.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub num_ctx: u32,
    pub num_batch: u32,
    pub num_gpu: Option<i32>,
    pub num_thread: Option<u32>,
    pub use_mmap: bool,
    pub num_predict: i32,
    pub stop: Vec<String>,
    pub sampling: Sampling,
    pub speculation: Speculation,
    /// The model that drafts for this one, loaded beside it (a load option).
    pub draft_model: Option<String>,
}

/// Overlays `request` on the model's params layer and validates the result.
pub fn resolve(
    model: &Map<String, Value>,
    request: Option<&Options>,
    default_num_ctx: u32,
) -> Result<RunOptions, Error> {
    let params: std::collections::BTreeMap<String, Value> = model
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let base = Options::from_map(&params)
        .map_err(|error| Error::Internal(format!("the model's parameters are invalid: {error}")))?;
    let options = match request {
        Some(request) => base.merged(request),
        None => base,
    };
    validate(&options, default_num_ctx)
}

fn validate(options: &Options, default_num_ctx: u32) -> Result<RunOptions, Error> {
    let num_ctx = bounded("num_ctx", options.num_ctx, 1, i64::from(MAX_NUM_CTX))?
        .map_or(default_num_ctx, |n| n as u32);
    let num_batch = bounded("num_batch", options.num_batch, 1, i64::from(MAX_NUM_BATCH))?
        .map_or(512, |n| n as u32);
    let num_predict = bounded("num_predict", options.num_predict, -2, i64::from(i32::MAX))?
        .map_or(-1, |n| n as i32);
    let num_thread = bounded("num_thread", options.num_thread, 0, 1024)?
        .and_then(|n| (n > 0).then_some(n as u32));
    let num_gpu = bounded("num_gpu", options.num_gpu, -1, 100_000)?
        .and_then(|n| (n >= 0).then_some(n as i32));
    let stop = options.stop.clone().unwrap_or_default();
    if stop.len() > MAX_STOP {
        return Err(Error::BadRequest(format!(
            "stop: at most {MAX_STOP} sequences, got {}",
            stop.len()
        )));
    }
    if stop.iter().any(String::is_empty) {
        return Err(Error::BadRequest(
            "stop: sequences must not be empty".to_owned(),
        ));
    }
    let sampling = Sampling {
        temperature: float("temperature", options.temperature, 0.0, 100.0)?.unwrap_or(0.8),
        top_k: bounded("top_k", options.top_k, 0, 1_000_000)?.map_or(40, |n| n as i32),
        top_p: float("top_p", options.top_p, 0.0, 1.0)?.unwrap_or(0.9),
        min_p: float("min_p", options.min_p, 0.0, 1.0)?.unwrap_or(0.0),
        typical_p: float("typical_p", options.typical_p, 0.0, 1.0)?.unwrap_or(1.0),
        repeat_penalty: float("repeat_penalty", options.repeat_penalty, 0.0, 100.0)?.unwrap_or(1.0),
        repeat_last_n: bounded(
            "repeat_last_n",
            options.repeat_last_n,
            -1,
            i64::from(MAX_NUM_CTX),
        )?
        .map_or(64, |n| n as i32),
        presence_penalty: float("presence_penalty", options.presence_penalty, -100.0, 100.0)?
            .unwrap_or(0.0),
        frequency_penalty: float(
            "frequency_penalty",
            options.frequency_penalty,
            -100.0,
            100.0,
        )?
        .unwrap_or(0.0),
        // Ollama's -1 (and any negative) means a random seed.
        seed: options.seed.and_then(|seed| u32::try_from(seed).ok()),
    };
    let speculation = speculation(options)?;
    let draft_model = options
        .draft_model
        .as_deref()
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    if speculation.mode == SpeculationMode::Draft && draft_model.is_none() {
        return Err(Error::BadRequest(
            "speculative: \"draft\" needs draft_model, the name of a small model that shares \
             this model's tokenizer (e.g. deepseek-r1:1.5b for the Qwen-based R1 distills)"
                .to_owned(),
        ));
    }
    Ok(RunOptions {
        num_ctx,
        num_batch,
        num_gpu,
        num_thread,
        use_mmap: options.use_mmap.unwrap_or(true),
        num_predict,
        stop,
        sampling,
        speculation,
        draft_model,
    })
}

/// `speculative` and `draft_max` (or Ollama's `draft_num_predict`; 0 drafts nothing).
fn speculation(options: &Options) -> Result<Speculation, Error> {
    let limit = i64::from(Speculation::DRAFT_MAX_LIMIT);
    let draft_max = match bounded("draft_max", options.draft_max, 0, limit)? {
        Some(n) => Some(n),
        None => bounded("draft_num_predict", options.draft_num_predict, 0, limit)?,
    };
    let mode = match options.speculative.as_deref().map(str::trim) {
        None | Some("auto") => SpeculationMode::Auto,
        Some("off") => SpeculationMode::Off,
        Some("ngram") => SpeculationMode::Ngram,
        Some("draft") => SpeculationMode::Draft,
        Some("mtp") => SpeculationMode::Mtp,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "speculative must be one of auto, off, ngram, draft, mtp, got \"{other}\""
            )));
        }
    };
    Ok(match draft_max {
        Some(0) => Speculation::off(),
        Some(n) => Speculation {
            mode,
            draft_max: n as u32,
        },
        None => Speculation {
            mode,
            draft_max: Speculation::DRAFT_MAX,
        },
    })
}

fn bounded(name: &str, value: Option<i64>, min: i64, max: i64) -> Result<Option<i64>, Error> {
    match value {
        Some(n) if n < min || n > max => Err(Error::BadRequest(format!(
            "{name} must be between {min} and {max}, got {n}"
        ))),
        other => Ok(other),
    }
}

fn float(name: &str, value: Option<f64>, min: f64, max: f64) -> Result<Option<f32>, Error> {
    match value {
        Some(x) if !x.is_finite() || x < min || x > max => Err(Error::BadRequest(format!(
            "{name} must be between {min} and {max}, got {x}"
        ))),
        other => Ok(other.map(|x| x as f32)),
    }
}
