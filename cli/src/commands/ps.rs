//! `whale ps`: loaded models as `NAME  ID  SIZE  PROCESSOR  CONTEXT  UNTIL`, or `--json`.

use crate::commands::Context;
use crate::commands::list::{short_id, timestamp};
use crate::error::Error;
use crate::output;
use crate::render::{table, units};

pub async fn run(json: bool, context: &Context) -> Result<(), Error> {
    let client = context.client().await?;
    let running = client.ps().await?;
    if json {
        return output::json(&running);
    }
    let now = jiff::Timestamp::now();
    let rows: Vec<Vec<String>> = running
        .models
        .iter()
        .map(|model| {
            vec![
                model.name.clone(),
                short_id(&model.digest),
                units::bytes(model.size),
                if model.layers.is_empty() {
                    with_gpus(units::processor(model.size, model.size_vram), &model.gpus)
                } else {
                    layers(&model.layers)
                },
                model.context_length.to_string(),
                until(timestamp(&model.expires_at), now),
            ]
        })
        .collect();
    output::data(&table::render(
        &["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"],
        &rows,
    ))
}

/// The PROCESSOR column of a model split over workers: `3 local, 2 on host:port, …` layers.
fn layers(shares: &[whale_api::LayerShare]) -> String {
    let parts: Vec<String> = shares
        .iter()
        .map(|share| {
            if share.place == "local" {
                format!("{} local", share.layers)
            } else {
                format!("{} on {}", share.layers, share.place)
            }
        })
        .collect();
    format!("layers: {}", parts.join(", "))
}

/// The PROCESSOR column naming the GPUs the model was loaded on: `100% GPU (NVIDIA H200)`.
fn with_gpus(processor: String, gpus: &[whale_api::ProcessGpu]) -> String {
    if gpus.is_empty() {
        return processor;
    }
    let names: Vec<&str> = gpus
        .iter()
        .map(|gpu| {
            if gpu.description.is_empty() {
                gpu.name.as_str()
            } else {
                gpu.description.as_str()
            }
        })
        .collect();
    format!("{processor} ({})", names.join(", "))
}

/// The UNTIL column: `4 minutes from now`, `Forever`, `Stopping...` once past, empty while
/// the model is still loading (no expiry yet).
pub fn until(expires_at: Option<jiff::Timestamp>, now: jiff::Timestamp) -> String {
    match expires_at {
        None => String::new(),
        Some(at) if at < now => "Stopping...".into(),
        Some(at) => units::relative(at, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_column() {
        let now: jiff::Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let at = |text: &str| Some(text.parse::<jiff::Timestamp>().unwrap());
        assert_eq!(until(at("2026-11-28T12:04:59Z"), now), "4 minutes from now");
        assert_eq!(until(at("2026-11-28T11:59:00Z"), now), "Stopping...");
        assert_eq!(until(at("2318-08-02T00:00:00Z"), now), "Forever");
        assert_eq!(until(None, now), "");
    }

    #[test]
    fn processor_column_names_the_gpus() {
        let gpu = |name: &str, description: &str| whale_api::ProcessGpu {
            name: name.into(),
            description: description.into(),
            size_vram: 1 << 30,
        };
        assert_eq!(with_gpus("100% CPU".into(), &[]), "100% CPU");
        assert_eq!(
            with_gpus("100% GPU".into(), &[gpu("CUDA0", "NVIDIA H200")]),
            "100% GPU (NVIDIA H200)"
        );
        assert_eq!(
            with_gpus(
                "12%/88% CPU/GPU".into(),
                &[gpu("CUDA0", "NVIDIA H200"), gpu("Vulkan1", "")]
            ),
            "12%/88% CPU/GPU (NVIDIA H200, Vulkan1)"
        );
    }
}
