//! `whale show MODEL`: a summary (architecture, size, context, quantization, capabilities,
//! parameters, license), one part with `--modelfile`/`--parameters`/`--template`/`--system`/
//! `--license`, or the server's whole answer with `--json`.

use std::fmt::Write as _;

use serde_json::Value;

use crate::cli::ShowArgs;
use crate::commands::Context;
use crate::error::{Error, not_found};
use crate::output;

pub async fn run(args: ShowArgs, context: &Context) -> Result<(), Error> {
    let client = context.client().await?;
    let request = whale_api::ShowRequest {
        model: args.model.clone(),
        verbose: args.verbose.then_some(true),
    };
    let response = client
        .show(&request)
        .await
        .map_err(|error| not_found(error, &args.model))?;
    if args.json {
        return output::json(&response);
    }
    // Read the answer by its wire names, which Ollama fixed, rather than by Rust field shapes.
    let show = serde_json::to_value(&response).map_err(std::io::Error::other)?;
    let part = [
        (args.license, "license"),
        (args.modelfile, "modelfile"),
        (args.parameters, "parameters"),
        (args.template, "template"),
        (args.system, "system"),
    ]
    .into_iter()
    .find_map(|(wanted, field)| wanted.then_some(field));
    let text = match part {
        Some(field) => with_newline(text_field(&show, field)),
        None => summary(&show),
    };
    output::data(&text)
}

/// The default `whale show` text.
pub fn summary(show: &Value) -> String {
    let info = &show["model_info"];
    let details = &show["details"];
    let architecture = info["general.architecture"]
        .as_str()
        .or_else(|| details["family"].as_str());
    let mut rows: Vec<(&str, String)> = Vec::new();
    if let Some(architecture) = architecture {
        rows.push(("architecture", architecture.to_owned()));
    }
    match info["general.parameter_count"].as_u64() {
        Some(count) => rows.push(("parameters", parameter_count(count))),
        None => {
            if let Some(size) = details["parameter_size"].as_str().filter(|s| !s.is_empty()) {
                rows.push(("parameters", size.to_owned()));
            }
        }
    }
    if let Some(architecture) = architecture {
        for (key, label) in [
            ("context_length", "context length"),
            ("embedding_length", "embedding length"),
        ] {
            if let Some(value) = info[format!("{architecture}.{key}")].as_u64() {
                rows.push((label, value.to_string()));
            }
        }
    }
    if let Some(quantization) = details["quantization_level"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        rows.push(("quantization", quantization.to_owned()));
    }

    let mut out = String::new();
    section(
        &mut out,
        "Model",
        rows.iter()
            .map(|(label, value)| format!("{label:<20}{value}")),
    );
    let capabilities = show["capabilities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    section(&mut out, "Capabilities", capabilities.map(str::to_owned));
    section(
        &mut out,
        "Parameters",
        text_field(show, "parameters").lines().map(str::to_owned),
    );
    section(
        &mut out,
        "System",
        text_field(show, "system")
            .lines()
            .take(2)
            .map(str::to_owned),
    );
    let license = text_field(show, "license");
    section(
        &mut out,
        "License",
        license
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(2)
            .map(str::to_owned),
    );
    out
}

/// A section: a title and indented lines, left out when it has no line.
fn section(out: &mut String, title: &str, lines: impl Iterator<Item = String>) {
    let mut lines = lines.peekable();
    if lines.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "  {title}");
    for line in lines {
        let _ = writeln!(out, "    {}", line.trim_end());
    }
    out.push('\n');
}

/// A text field of the answer; `license` may be a string or a list of them.
fn text_field(show: &Value, field: &str) -> String {
    match &show[field] {
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn with_newline(mut text: String) -> String {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// A parameter count as Ollama shows it: `7.6B`, `671B`, `494.0M`.
pub fn parameter_count(count: u64) -> String {
    let (value, unit) = match count {
        n if n >= 1_000_000_000_000 => (n as f64 / 1e12, "T"),
        n if n >= 1_000_000_000 => (n as f64 / 1e9, "B"),
        n if n >= 1_000_000 => (n as f64 / 1e6, "M"),
        n if n >= 1_000 => (n as f64 / 1e3, "K"),
        n => return n.to_string(),
    };
    if value >= 100.0 {
        format!("{}{unit}", value.round() as u64)
    } else {
        format!("{value:.1}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts() {
        assert_eq!(parameter_count(7_615_616_512), "7.6B");
        assert_eq!(parameter_count(1_777_088_000), "1.8B");
        assert_eq!(parameter_count(671_026_419_856), "671B");
        assert_eq!(parameter_count(494_032_768), "494M");
        assert_eq!(parameter_count(268_000_000), "268M");
        assert_eq!(parameter_count(999), "999");
    }

    #[test]
    fn summary_of_a_reasoning_model() {
        let show = serde_json::json!({
            "license": "MIT License\n\nCopyright (c) 2023 DeepSeek\n\nPermission is hereby granted",
            "parameters": "stop                           \"<｜begin▁of▁sentence｜>\"\ntemperature                    0.6",
            "template": "{{ .Prompt }}",
            "details": {"family": "qwen2", "parameter_size": "1.8B", "quantization_level": "Q4_K_M"},
            "model_info": {
                "general.architecture": "qwen2",
                "general.parameter_count": 1_777_088_000_u64,
                "qwen2.context_length": 131_072,
                "qwen2.embedding_length": 1536
            },
            "capabilities": ["completion", "thinking"]
        });
        let want = "  Model
    architecture        qwen2
    parameters          1.8B
    context length      131072
    embedding length    1536
    quantization        Q4_K_M

  Capabilities
    completion
    thinking

  Parameters
    stop                           \"<｜begin▁of▁sentence｜>\"
    temperature                    0.6

  License
    MIT License
    Copyright (c) 2023 DeepSeek

";
        assert_eq!(summary(&show), want);
    }

    #[test]
    fn license_lists_are_joined() {
        let show = serde_json::json!({"license": ["A", "B"]});
        assert_eq!(text_field(&show, "license"), "A\nB");
        assert_eq!(text_field(&show, "system"), "");
    }
}
