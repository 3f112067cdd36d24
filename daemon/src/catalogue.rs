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

use std::collections::BTreeMap;
use std::sync::OnceLock;

use whale_api::Modelfile;

/// `("<model>/<tag>", text)` of every catalogue file.
static FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/catalogue.rs"));

/// Prompt formats an entry may name.
const TEMPLATES: &[&str] = &[
    "r1",
    "r1-0528",
    "r1-distill",
    "v3",
    "v3.1",
    "v3.2",
    "v4",
    "coder-v2",
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
    if !TEMPLATES.contains(&template.as_str()) {
        return Err(format!(
            "unknown template {template} (one of {TEMPLATES:?})"
        ));
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
