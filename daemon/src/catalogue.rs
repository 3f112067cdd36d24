//! The catalogue: the DeepSeek models whale knows, one Modelfile each under `modelfiles/` at
//! the repository's root (`<model>/<tag>.Modelfile`), embedded at build time (`build.rs`).
//!
//! A catalogue Modelfile is an ordinary Modelfile (`FROM` names where a pull fetches the
//! model; `PARAMETER`s are the model card's recommended settings) whose leading comments are a
//! header of `# key: value` lines: `name`, `source`, `architecture`, `parameters`,
//! `quantization`, `size`, `context`, `license`, `template` (the prompt format: `r1`,
//! `r1-0528`, `r1-distill`, `v3`, `v3.1`, `v3.2`, `v4`, `coder-v2`). The first comment line is the
//! title. `PARAMETER draft_model` names a smaller entry sharing its tokenizer, which drafts for
//! it (speculative decoding, under `auto`) once it is pulled too.
//!
//! `modelfiles/templates/<kind>.jinja` is whale's own chat template for a prompt format, written
//! from the format each official template defines (and token-identical to it: the fidelity
//! tables in `tests/tests/fidelity.rs` check each against the official text). A model named as
//! an entry renders with it when its GGUF carries no template, or one that can do less (see
//! `whale_format::chat::ChatTemplate::select`).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use whale_api::Modelfile;

/// `("<model>/<tag>", text)` of every catalogue file.
static FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/catalogue.rs"));

/// `("<kind>", text)` of every `modelfiles/templates/<kind>.jinja`.
static TEMPLATE_FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// Prompt formats an entry may name, each with the template file that renders it where whale
/// has one. R1 and its distills share one template (DeepSeek ships the same text with each).
/// R1-0528's and Coder-V2's formats have none yet: their official templates are not among the
/// references the fidelity tables check against, and such a model renders with its GGUF's.
const TEMPLATES: &[(&str, Option<&str>)] = &[
    ("r1", Some("r1")),
    ("r1-0528", None),
    ("r1-distill", Some("r1")),
    ("v3", Some("v3")),
    ("v3.1", Some("v3.1")),
    ("v3.2", Some("v3.2")),
    ("v4", Some("v4")),
    ("coder-v2", None),
];

/// One catalogue entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub title: String,
    pub source: String,
    pub architecture: String,
    pub parameters: String,
    pub quantization: String,
    /// Bytes of the weights.
    pub size: u64,
    pub context: u32,
    pub license: String,
    pub template: String,
    pub draft: Option<String>,
    pub modelfile: Modelfile,
}

/// Every entry, by model and then by size (smallest first).
pub fn entries() -> &'static [Entry] {
    static ENTRIES: OnceLock<Vec<Entry>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        let mut entries: Vec<Entry> = FILES
            .iter()
            .map(|(path, text)| {
                parse(path, text).unwrap_or_else(|error| panic!("modelfiles/{path}: {error}"))
            })
            .collect();
        entries.sort_by(|a, b| {
            let model = |entry: &Entry| entry.name.split(':').next().unwrap_or_default().to_owned();
            (model(a), a.size, &a.name).cmp(&(model(b), b.size, &b.name))
        });
        entries
    })
}

/// The entry named `name` (`deepseek-r1:14b`; no tag means `latest`).
pub fn find(name: &str) -> Option<&'static Entry> {
    let name = if name.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    };
    entries().iter().find(|entry| entry.name == name)
}

impl Entry {
    /// whale's chat template for the entry's prompt format, if it has one.
    pub fn chat_template(&self) -> Option<&'static str> {
        chat_template(&self.template)
    }
}

/// whale's chat template for a prompt format (`v3`, `r1-distill`…), if it has one.
pub fn chat_template(kind: &str) -> Option<&'static str> {
    let file = TEMPLATES
        .iter()
        .find(|(name, _)| *name == kind)
        .and_then(|(_, file)| *file)?;
    TEMPLATE_FILES
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, text)| *text)
}

/// Parses one catalogue file found at `modelfiles/<path>.Modelfile`.
pub fn parse(path: &str, text: &str) -> Result<Entry, String> {
    let modelfile = whale_api::modelfile::parse(text).map_err(|error| error.to_string())?;
    let mut lines = text.lines().map_while(|line| line.strip_prefix('#'));
    let title = lines
        .next()
        .map(str::trim)
        .filter(|title| !title.is_empty() && !title.contains(": "))
        .ok_or("the first line is a comment with the model's title")?
        .to_owned();
    let mut header = BTreeMap::new();
    for line in lines {
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header line {line:?} is not `# key: value`"))?;
        let (key, value) = (key.trim(), value.trim());
        if header.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(format!("{key} appears twice"));
        }
    }
    let mut take = |key: &str| {
        header
            .remove(key)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| format!("the header lacks {key}"))
    };
    let name = take("name")?;
    let expected = path.replacen('/', ":", 1);
    if name != expected {
        return Err(format!(
            "name {name} does not match the file (expected {expected})"
        ));
    }
    let source = take("source")?;
    if modelfile.from != source {
        return Err(format!(
            "FROM {} differs from source {source}",
            modelfile.from
        ));
    }
    let template = take("template")?;
    if !TEMPLATES.iter().any(|(kind, _)| *kind == template) {
        let kinds: Vec<&str> = TEMPLATES.iter().map(|(kind, _)| *kind).collect();
        return Err(format!("unknown template {template} (one of {kinds:?})"));
    }
    let size = parse_size(&take("size")?)?;
    let context = take("context")?
        .parse()
        .map_err(|_| "context is a number of tokens".to_owned())?;
    let entry = Entry {
        name,
        title,
        source,
        architecture: take("architecture")?,
        parameters: take("parameters")?,
        quantization: take("quantization")?,
        size,
        context,
        license: take("license")?,
        template,
        draft: modelfile.parameters.draft_model.clone(),
        modelfile,
    };
    if let Some(key) = header.keys().next() {
        return Err(format!("unknown header key {key}"));
    }
    Ok(entry)
}

/// `9.0GB`, `404GB`, `1.1GB` (decimal, as registries list sizes) or `512MB`.
fn parse_size(text: &str) -> Result<u64, String> {
    let (number, scale) = if let Some(number) = text.strip_suffix("GB") {
        (number, 1e9)
    } else if let Some(number) = text.strip_suffix("MB") {
        (number, 1e6)
    } else {
        return Err(format!("size {text:?} is not like 9.0GB"));
    };
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("size {text:?} is not like 9.0GB"))?;
    Ok((number * scale) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_file_parses_and_is_consistent() {
        let entries = entries();
        assert!(entries.len() >= 15, "{} entries", entries.len());
        let names: std::collections::BTreeSet<&str> =
            entries.iter().map(|entry| entry.name.as_str()).collect();
        assert_eq!(names.len(), entries.len(), "a name appears twice");
        for entry in entries {
            assert!(entry.size > 0 && entry.context >= 4096, "{}", entry.name);
            if let Some(draft) = &entry.draft {
                let draft = find(draft).unwrap_or_else(|| panic!("{}: draft {draft}", entry.name));
                assert!(draft.size < entry.size, "{}", entry.name);
                assert_eq!(draft.architecture, entry.architecture, "{}", entry.name);
            }
            // R1's card: temperature 0.6, top_p 0.95.
            if entry.template.starts_with("r1") {
                assert_eq!(entry.modelfile.parameters.temperature, Some(0.6));
                assert_eq!(entry.modelfile.parameters.top_p, Some(0.95));
            }
        }
        for name in [
            "deepseek-r1:1.5b",
            "deepseek-r1:7b",
            "deepseek-r1:8b",
            "deepseek-r1:14b",
            "deepseek-r1:32b",
            "deepseek-r1:70b",
            "deepseek-r1:671b",
            "deepseek-r1:latest",
            "deepseek-r1-zero:671b",
            "deepseek-v3:671b",
            "deepseek-v3.1:671b",
            "deepseek-v3.2:671b",
            "deepseek-v4-flash:284b",
            "deepseek-coder-v2:16b",
        ] {
            assert!(names.contains(name), "{name} missing");
        }
        assert_eq!(find("deepseek-r1").unwrap().name, "deepseek-r1:latest");
        assert_eq!(find("deepseek-r1:671b").unwrap().size, 404_000_000_000);
    }

    #[test]
    fn every_template_file_compiles_and_renders_its_format() {
        use whale_format::chat::{ChatMessage, ChatTemplate, RenderInput, SpecialTokens};
        let named: std::collections::BTreeSet<&str> =
            TEMPLATES.iter().filter_map(|(_, file)| *file).collect();
        let files: std::collections::BTreeSet<&str> =
            TEMPLATE_FILES.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            named, files,
            "a template file without a format, or the reverse"
        );
        let special = SpecialTokens {
            bos: Some("<｜begin▁of▁sentence｜>".to_owned()),
            eos: Some("<｜end▁of▁sentence｜>".to_owned()),
        };
        for (name, text) in TEMPLATE_FILES {
            let template = ChatTemplate::new(text, special.clone())
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            let messages = [ChatMessage::new("user", "Hi")];
            let rendered = template
                .render(&RenderInput {
                    messages: &messages,
                    tools: None,
                    add_generation_prompt: true,
                    think: None,
                    think_level: None,
                })
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            assert!(
                rendered.starts_with("<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>"),
                "{name}: {rendered}"
            );
        }
        for entry in entries() {
            let expected = !matches!(entry.template.as_str(), "r1-0528" | "coder-v2");
            assert_eq!(entry.chat_template().is_some(), expected, "{}", entry.name);
        }
    }

    #[test]
    fn bad_headers_are_refused_with_the_reason() {
        let good = "# T\n# name: m:t\n# source: m:t\n# architecture: llama\n# parameters: 8B\n# quantization: Q4_K_M\n# size: 4.9GB\n# context: 8192\n# license: MIT\n# template: r1\nFROM m:t\n";
        assert!(parse("m/t", good).is_ok());
        for (bad, why) in [
            (good.replace("# name: m:t", "# name: m:u"), "does not match"),
            (
                good.replace("FROM m:t", "FROM other"),
                "differs from source",
            ),
            (good.replace("4.9GB", "lots"), "size"),
            (
                good.replace("# template: r1", "# template: r9"),
                "unknown template",
            ),
            (good.replace("# license: MIT\n", ""), "lacks license"),
            (good.replace("# T\n", ""), "title"),
            (
                good.replace("# context", "# colour: blue\n# context"),
                "unknown header key",
            ),
        ] {
            let error = parse("m/t", &bad).unwrap_err();
            assert!(error.contains(why), "{error} for {bad}");
        }
    }
}
