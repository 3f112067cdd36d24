//! JSON-schema `format`s become GBNF grammars through llama.cpp's own converter, so
//! structured output matches what llama-server accepts.

use super::EngineError;

/// The GBNF grammar for a JSON schema (`format: {...}` in a request).
pub fn grammar_from_json_schema(schema: &serde_json::Value) -> Result<String, EngineError> {
    let text = serde_json::to_string(schema)
        .map_err(|error| EngineError::InvalidInput(format!("format schema: {error}")))?;
    llama_cpp_2::json_schema_to_grammar(&text)
        .map_err(|error| EngineError::InvalidInput(format!("format schema: {error}")))
}

/// A tool the answer may call: its name and the JSON schema of its arguments.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolSchema {
    pub name: String,
    /// `function.parameters`; `None` (or a schema the converter refuses) allows any object.
    pub parameters: Option<serde_json::Value>,
}

/// Rules for any JSON object, under `any-object`: arguments of a tool without a usable schema.
const ANY_OBJECT: &str = r#"any-object ::= "{" any-ws (any-pair (any-ws "," any-ws any-pair)*)? any-ws "}"
any-pair ::= any-string any-ws ":" any-ws any-value
any-value ::= any-object | any-array | any-string | any-number | "true" | "false" | "null"
any-array ::= "[" any-ws (any-value (any-ws "," any-ws any-value)*)? any-ws "]"
any-string ::= "\"" any-char* "\""
any-char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
any-number ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,4})?
any-ws ::= [ \t\n]{0,8}
"#;

/// A GBNF grammar whose every sentence is a DeepSeek tool-call block of one to `most` calls,
/// each of one of `tools` with arguments its schema allows (llama.cpp's converter, each tool's
/// rules renamed apart), in R1/V3's shape (`function<｜tool▁sep｜>NAME`, the arguments in a
/// json fence) or V3.1's (`NAME<｜tool▁sep｜>ARGS`), whichever the model writes. The markers
/// are matched as text, so a model without them as single tokens can still spell them.
pub fn tool_calls_grammar(tools: &[ToolSchema], most: usize) -> String {
    let mut rules = String::new();
    let mut calls = Vec::new();
    let mut any = false;
    for (index, tool) in tools.iter().enumerate() {
        let prefix = format!("t{index}-");
        let converted = tool
            .parameters
            .as_ref()
            .and_then(|schema| grammar_from_json_schema(schema).ok());
        let arguments = if let Some(gbnf) = converted {
            rules.push_str(&rename_rules(&gbnf, &prefix));
            rules.push('\n');
            format!("{prefix}root")
        } else {
            any = true;
            "any-object".to_owned()
        };
        let name = gbnf_literal(&tool.name);
        calls.push(format!(
            "{prefix}call ::= \"function<｜tool▁sep｜>\" {name} \"\\n```json\\n\" {arguments} \"\\n```\" | {name} \"<｜tool▁sep｜>\" {arguments}"
        ));
    }
    if any {
        rules.push_str(ANY_OBJECT);
    }
    let alternatives: Vec<String> = (0..tools.len()).map(|i| format!("t{i}-call")).collect();
    format!(
        "root ::= \"<｜tool▁calls▁begin｜>\" call (\"\\n\"? call){{0,{more}}} \"<｜tool▁calls▁end｜>\"\n\
         call ::= \"<｜tool▁call▁begin｜>\" ({alternatives}) \"<｜tool▁call▁end｜>\"\n\
         {calls}\n{rules}",
        more = most.max(1) - 1,
        alternatives = alternatives.join(" | "),
        calls = calls.join("\n"),
    )
}

/// `text` as a GBNF string literal.
fn gbnf_literal(text: &str) -> String {
    let mut literal = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => literal.push_str("\\\""),
            '\\' => literal.push_str("\\\\"),
            '\n' => literal.push_str("\\n"),
            c => literal.push(c),
        }
    }
    literal.push('"');
    literal
}

/// Prefixes every rule name in `gbnf` (definitions and references) with `prefix`, leaving
/// string literals, character classes, repetition counts, `<token>`s and comments alone.
fn rename_rules(gbnf: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(gbnf.len() + 64);
    let mut chars = gbnf.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '[' | '{' | '<' => {
                let close = match c {
                    '"' => '"',
                    '[' => ']',
                    '{' => '}',
                    _ => '>',
                };
                out.push(c);
                while let Some(inner) = chars.next() {
                    out.push(inner);
                    if inner == '\\' {
                        if let Some(escaped) = chars.next() {
                            out.push(escaped);
                        }
                    } else if inner == close {
                        break;
                    }
                }
            }
            '#' => {
                out.push(c);
                for inner in chars.by_ref() {
                    out.push(inner);
                    if inner == '\n' {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphabetic() => {
                out.push_str(prefix);
                out.push(c);
                while let Some(&next) = chars.peek() {
                    if next.is_ascii_alphanumeric() || next == '-' || next == '_' {
                        out.push(next);
                        chars.next();
                    } else {
                        break;
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_renamed_and_literals_left_alone() {
        let gbnf = "root ::= \"{\" space city-kv \"}\" space\ncity-kv ::= \"\\\"city\\\"\" space \":\" space string\nchar ::= [^\"\\\\a-z] | \"\\\\\" [0-9]{4}\nspace ::= | \" \" # a comment with words\n";
        let renamed = rename_rules(gbnf, "t0-");
        assert_eq!(
            renamed,
            "t0-root ::= \"{\" t0-space t0-city-kv \"}\" t0-space\nt0-city-kv ::= \"\\\"city\\\"\" t0-space \":\" t0-space t0-string\nt0-char ::= [^\"\\\\a-z] | \"\\\\\" [0-9]{4}\nt0-space ::= | \" \" # a comment with words\n"
        );
        assert_eq!(gbnf_literal("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
