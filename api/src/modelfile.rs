//! The Modelfile format: `parse` text into a [`Modelfile`], print it back with `Display`
//! (Ollama's generated style), and turn it into an `/api/create` request.
//!
//! Syntax: one `INSTRUCTION arguments` per line, keywords case-insensitive, `#` comments,
//! values bare (trimmed), `"quoted"` on one line, or `"""multi-line"""`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::{CreateRequest, Error, License, Message, Options};

/// A parsed Modelfile. Parse → print → parse gives the same value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Modelfile {
    /// `FROM`: a model name or a local path (GGUF file or directory).
    pub from: String,
    /// `ADAPTER` paths (LoRA).
    pub adapters: Vec<String>,
    pub template: Option<String>,
    pub system: Option<String>,
    /// `PARAMETER` lines, typed; repeated `stop` accumulates.
    pub parameters: Options,
    /// `LICENSE` texts, in order (the instruction may repeat).
    pub license: Vec<String>,
    /// `MESSAGE role content` few-shot history.
    pub messages: Vec<Message>,
    /// `REQUIRES <version>`.
    pub requires: Option<String>,
    /// `RENDERER <name>` / `PARSER <name>`.
    pub renderer: Option<String>,
    pub parser: Option<String>,
}

const INSTRUCTIONS: &str = r#"command must be one of "from", "license", "template", "system", "adapter", "renderer", "parser", "parameter", "message", or "requires""#;

/// Cursor over the text that knows its line number.
struct Cursor<'a> {
    rest: &'a str,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, message: impl Into<String>) -> Error {
        Error::Modelfile {
            line: self.line,
            message: message.into(),
        }
    }

    fn advance(&mut self, n: usize) -> &'a str {
        let (taken, rest) = self.rest.split_at(n);
        self.line += taken.matches('\n').count();
        self.rest = rest;
        taken
    }

    /// Skips spaces and tabs on the current line.
    fn skip_blanks(&mut self) {
        let n = self.rest.len() - self.rest.trim_start_matches([' ', '\t']).len();
        self.advance(n);
    }

    /// Takes the rest of the current line (without the newline) and consumes the newline.
    fn rest_of_line(&mut self) -> &'a str {
        let end = self.rest.find('\n').unwrap_or(self.rest.len());
        let text = self.advance(end);
        if !self.rest.is_empty() {
            self.advance(1);
        }
        text.trim_end_matches('\r')
    }

    /// Takes one whitespace-delimited word on the current line.
    fn word(&mut self) -> &'a str {
        self.skip_blanks();
        let end = self
            .rest
            .find(char::is_whitespace)
            .unwrap_or(self.rest.len());
        self.advance(end)
    }

    /// Takes a value: `"""…"""`, `"…"` or bare text to the end of the line.
    fn value(&mut self) -> Result<String, Error> {
        self.skip_blanks();
        let start_line = self.line;
        let value = if let Some(body) = self.rest.strip_prefix(r#"""""#) {
            let end = body.find(r#"""""#).ok_or_else(|| Error::Modelfile {
                line: start_line,
                message: "unterminated \"\"\" block".into(),
            })?;
            self.advance(3);
            let text = self.advance(end).to_owned();
            self.advance(3);
            text
        } else if let Some(body) = self.rest.strip_prefix('"') {
            let mut text = String::new();
            let mut chars = body.char_indices();
            let mut closed = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, escaped @ ('"' | '\\'))) => text.push(escaped),
                        Some((_, other)) => {
                            text.push('\\');
                            text.push(other);
                        }
                        None => text.push('\\'),
                    },
                    '"' => {
                        closed = Some(i);
                        break;
                    }
                    '\n' => break,
                    c => text.push(c),
                }
            }
            let end = closed.ok_or_else(|| self.error("unterminated quoted string"))?;
            self.advance(1 + end + 1);
            text
        } else {
            let text = self.rest_of_line().trim().to_owned();
            return Ok(text);
        };
        let trailing = self.rest_of_line();
        if !trailing.trim().is_empty() {
            return Err(Error::Modelfile {
                line: self.line.saturating_sub(1).max(start_line),
                message: format!("unexpected text after closing quote: {:?}", trailing.trim()),
            });
        }
        Ok(value)
    }
}

/// Parses Modelfile text. Errors carry the line number and what was wrong.
pub fn parse(text: &str) -> Result<Modelfile, Error> {
    let mut cursor = Cursor {
        rest: text.strip_prefix('\u{feff}').unwrap_or(text),
        line: 1,
    };
    let mut modelfile = Modelfile::default();
    let mut saw_from = false;
    loop {
        let n = cursor.rest.len() - cursor.rest.trim_start().len();
        cursor.advance(n);
        if cursor.rest.is_empty() {
            break;
        }
        if cursor.rest.starts_with('#') {
            cursor.rest_of_line();
            continue;
        }
        let line = cursor.line;
        let keyword = cursor.word().to_ascii_lowercase();
        match keyword.as_str() {
            "from" => {
                let value = cursor.value()?;
                if saw_from {
                    return Err(Error::Modelfile {
                        line,
                        message: "FROM given more than once".into(),
                    });
                }
                if value.is_empty() {
                    return Err(Error::Modelfile {
                        line,
                        message: "FROM needs a model name or path".into(),
                    });
                }
                saw_from = true;
                modelfile.from = value;
            }
            "adapter" => modelfile.adapters.push(cursor.value()?),
            "template" => modelfile.template = Some(cursor.value()?),
            "system" => modelfile.system = Some(cursor.value()?),
            "license" => modelfile.license.push(cursor.value()?),
            "requires" => modelfile.requires = Some(cursor.value()?),
            "renderer" => modelfile.renderer = Some(cursor.value()?),
            "parser" => modelfile.parser = Some(cursor.value()?),
            "parameter" => {
                let name = cursor.word().to_owned();
                if name.is_empty() {
                    return Err(Error::Modelfile {
                        line,
                        message: "PARAMETER needs a name and a value".into(),
                    });
                }
                let value = cursor.value()?;
                modelfile
                    .parameters
                    .set_parameter(&name, &value)
                    .map_err(|e| Error::Modelfile {
                        line,
                        message: e.to_string(),
                    })?;
            }
            "message" => {
                let role = cursor.word().to_ascii_lowercase();
                if !matches!(role.as_str(), "system" | "user" | "assistant") {
                    return Err(Error::Modelfile {
                        line,
                        message: format!(
                            "invalid MESSAGE role {role:?}: must be \"system\", \"user\" or \"assistant\""
                        ),
                    });
                }
                let content = cursor.value()?;
                modelfile.messages.push(Message::new(role, content));
            }
            other => {
                return Err(Error::Modelfile {
                    line,
                    message: format!("unknown instruction {other:?}: {INSTRUCTIONS}"),
                });
            }
        }
    }
    if !saw_from {
        return Err(Error::Modelfile {
            line: cursor.line,
            message: "no FROM line".into(),
        });
    }
    Ok(modelfile)
}

impl std::str::FromStr for Modelfile {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        parse(text)
    }
}

impl Modelfile {
    /// Reads and parses a Modelfile; errors name the path.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        parse(&text).map_err(|e| match e {
            Error::Modelfile { line, message } => Error::Modelfile {
                line,
                message: format!("{}: {message}", path.display()),
            },
            other => other,
        })
    }

    /// Builds the `/api/create` body for model `name`. `files` maps each local path named by
    /// FROM / ADAPTER (as written in the Modelfile) to the digest of the blob already
    /// uploaded; a FROM not in `files` is a model name.
    pub fn to_create_request(&self, name: &str, files: &BTreeMap<String, String>) -> CreateRequest {
        let file_name = |path: &str| {
            Path::new(path)
                .file_name()
                .map_or_else(|| path.to_owned(), |n| n.to_string_lossy().into_owned())
        };
        let mut request = CreateRequest {
            model: name.to_owned(),
            template: self.template.clone(),
            system: self.system.clone(),
            ..CreateRequest::default()
        };
        match files.get(&self.from) {
            Some(digest) => {
                request.files = Some(BTreeMap::from([(file_name(&self.from), digest.clone())]));
            }
            None => request.from = Some(self.from.clone()),
        }
        let adapters: BTreeMap<_, _> = self
            .adapters
            .iter()
            .filter_map(|path| files.get(path).map(|d| (file_name(path), d.clone())))
            .collect();
        if !adapters.is_empty() {
            request.adapters = Some(adapters);
        }
        if !self.license.is_empty() {
            request.license = Some(License::Many(self.license.clone()));
        }
        let parameters = self.parameters.to_map();
        if !parameters.is_empty() {
            request.parameters = Some(parameters);
        }
        if !self.messages.is_empty() {
            request.messages = Some(self.messages.clone());
        }
        request
    }
}

/// Quotes a value the way Ollama's generated Modelfiles do: `"""…"""` when it has a newline,
/// a `"` or outer whitespace; `"…"` when empty; bare otherwise. A value that `"""…"""` cannot
/// hold (it contains `"""` or ends with `"`) is written `"…"` with escapes instead, so that it
/// reads back the same; with a newline as well it cannot be written at all, but no parsed
/// Modelfile has such a value.
fn quote(value: &str) -> String {
    if value.is_empty() {
        return r#""""#.to_owned();
    }
    if !value.contains(['\n', '"']) && value.trim() == value {
        return value.to_owned();
    }
    let fits_triple = !value.contains(r#"""""#) && !value.ends_with('"');
    if fits_triple || value.contains('\n') {
        return format!(r#""""{value}""""#);
    }
    let escaped = value.replace('\\', r"\\").replace('"', r#"\""#);
    format!(r#""{escaped}""#)
}

impl fmt::Display for Modelfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "FROM {}", quote(&self.from))?;
        for adapter in &self.adapters {
            writeln!(f, "ADAPTER {}", quote(adapter))?;
        }
        if let Some(template) = &self.template {
            writeln!(f, "TEMPLATE {}", quote(template))?;
        }
        if let Some(system) = &self.system {
            writeln!(f, "SYSTEM {}", quote(system))?;
        }
        if let Some(renderer) = &self.renderer {
            writeln!(f, "RENDERER {}", quote(renderer))?;
        }
        if let Some(parser) = &self.parser {
            writeln!(f, "PARSER {}", quote(parser))?;
        }
        for (name, value) in self.parameters.to_parameter_lines() {
            writeln!(f, "PARAMETER {name} {}", quote(&value))?;
        }
        for license in &self.license {
            writeln!(f, "LICENSE {}", quote(license))?;
        }
        for message in &self.messages {
            writeln!(f, "MESSAGE {} {}", message.role, quote(&message.content))?;
        }
        if let Some(requires) = &self.requires {
            writeln!(f, "REQUIRES {}", quote(requires))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R1: &str = r#"# DeepSeek-R1 distill
FROM deepseek-r1:14b
template """{{- if .System }}{{ .System }}{{ end }}
{{- range $i, $_ := .Messages }}<｜User｜>{{ .Content }}{{ end }}<｜Assistant｜>"""
PARAMETER stop "<｜begin▁of▁sentence｜>"
PARAMETER stop <｜end▁of▁sentence｜>
PARAMETER temperature 0.6
parameter num_ctx 8192
SYSTEM You are a helpful assistant.
LICENSE """MIT License

Copyright (c) 2023 DeepSeek"""
license Apache-2.0
MESSAGE user "Is \"this\" quoted?"
MESSAGE Assistant yes
ADAPTER ./lora.gguf
"#;

    #[test]
    fn parses_every_instruction() {
        let m = parse(R1).unwrap();
        assert_eq!(m.from, "deepseek-r1:14b");
        assert!(m.template.as_ref().unwrap().contains('\n'));
        assert_eq!(m.parameters.stop.as_ref().unwrap().len(), 2);
        assert_eq!(m.parameters.temperature, Some(0.6));
        assert_eq!(m.parameters.num_ctx, Some(8192));
        assert_eq!(m.system.as_deref(), Some("You are a helpful assistant."));
        assert_eq!(m.license.len(), 2);
        assert_eq!(m.messages[0].content, r#"Is "this" quoted?"#);
        assert_eq!(m.messages[1].role, "assistant");
        assert_eq!(m.adapters, vec!["./lora.gguf".to_owned()]);
    }

    #[test]
    fn parse_print_parse_is_identity() {
        for text in [
            R1,
            "FROM x\n",
            "FROM ./model.gguf\nSYSTEM \"  padded  \"\nPARAMETER stop \"\"\"\n\n\"\"\"\n",
            "FROM x\nMESSAGE system \"\"\nPARAMETER use_mmap false\nREQUIRES 0.5.0\n",
        ] {
            let first = parse(text).unwrap();
            let printed = first.to_string();
            let second = parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
            assert_eq!(first, second, "{printed}");
            assert_eq!(printed, second.to_string());
        }
    }

    #[test]
    fn errors_carry_line_and_cause() {
        for (text, line, fragment) in [
            ("FROM x\nBOGUS y\n", 2, "unknown instruction"),
            ("# only a comment\nSYSTEM hi\n", 3, "no FROM"),
            ("FROM x\n\nMESSAGE tool hi\n", 3, "invalid MESSAGE role"),
            ("FROM x\nPARAMETER num_ctx lots\n", 2, "num_ctx"),
            ("FROM x\nPARAMETER nope 1\n", 2, "unknown parameter 'nope'"),
            ("FROM x\nSYSTEM \"\"\"never closed\n", 2, "unterminated"),
            ("FROM x\nSYSTEM \"open\n", 2, "unterminated"),
            ("FROM x\nFROM y\n", 2, "more than once"),
        ] {
            match parse(text) {
                Err(Error::Modelfile { line: got, message }) => {
                    assert_eq!(got, line, "{text:?}: {message}");
                    assert!(message.contains(fragment), "{text:?}: {message}");
                }
                other => panic!("{text:?}: expected a Modelfile error, got {other:?}"),
            }
        }
    }

    #[test]
    fn from_path_and_create_request() {
        let dir = std::env::temp_dir().join(format!("whale-api-modelfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("Modelfile");
        std::fs::write(
            &path,
            "FROM ./w.gguf\nPARAMETER temperature 0.6\nLICENSE MIT\n",
        )
        .unwrap();
        let m = Modelfile::from_path(&path).unwrap();
        let files = BTreeMap::from([("./w.gguf".to_owned(), "sha256:ab".to_owned())]);
        let request = m.to_create_request("mine", &files);
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"model":"mine","files":{"w.gguf":"sha256:ab"},"license":["MIT"],"parameters":{"temperature":0.6}}"#
        );
        let by_name = parse("FROM deepseek-r1\n")
            .unwrap()
            .to_create_request("m", &BTreeMap::new());
        assert_eq!(by_name.from.as_deref(), Some("deepseek-r1"));
        let missing = Modelfile::from_path(dir.join("absent")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Found by the `modelfile` fuzz target: a value holding `"""` (or ending in `"`) was
    /// written inside `"""…"""`, which ends at its first `"""`, so the written Modelfile did
    /// not parse.
    #[test]
    fn fuzz_modelfile_triple_quote_in_value_round_trips() {
        let text = r#"FROM x
ADAPTER "./a\"\"\" b\\c"
SYSTEM "ends with a quote\""
MESSAGE user " say \"\"\"hi\"\"\" "
"#;
        let first = parse(text).unwrap();
        assert_eq!(first.adapters, [r#"./a""" b\c"#]);
        assert_eq!(first.system.as_deref(), Some(r#"ends with a quote""#));
        assert_eq!(first.messages[0].content, r#" say """hi""" "#);
        let printed = first.to_string();
        let second = parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
        assert_eq!(first, second, "{printed}");
    }
}
