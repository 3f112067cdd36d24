//! Tool calls in model output: DeepSeek's special-token formats, Qwen's `<tool_call>` tags (the
//! R1 Qwen distills) and a plain JSON fallback, parsed while the text streams.
//!
//! Formats (deepseek.md B.2):
//! - R1 / V3 / V3-0324: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n`
//!   then the arguments in a ```` ```json ```` fence, `<｜tool▁call▁end｜>`, … `<｜tool▁calls▁end｜>`.
//! - R1-0528 / V3.1: `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{ARGS}<｜tool▁call▁end｜>`.
//! - Qwen: `<tool_call>{"name": …, "arguments": {…}}</tool_call>`.
//! - JSON: the whole answer is `{"name": …, "arguments": …}` or a list of such objects.
//!
//! Each DeepSeek call is read in whichever of its two shapes it has, so one parser serves every
//! version. The streaming parser releases answer text at once but holds back from the moment a
//! begin marker might be starting; a block that does not parse comes back as plain content,
//! never as an error or a panic.

use serde_json::Value as Json;

use super::reasoning::partial_suffix_start;
use super::template::ToolCall;

const CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const CALLS_END: &str = "<｜tool▁calls▁end｜>";
const CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const CALL_END: &str = "<｜tool▁call▁end｜>";
const SEP: &str = "<｜tool▁sep｜>";
const QWEN_BEGIN: &str = "<tool_call>";
const QWEN_END: &str = "</tool_call>";

/// Text and tool calls released by one step of the parser.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolOutput {
    pub content: String,
    pub calls: Vec<ToolCall>,
}

impl ToolOutput {
    fn absorb(&mut self, other: ToolOutput) {
        self.content.push_str(&other.content);
        self.calls.extend(other.calls);
    }
}

/// A tool-call block being collected: where it ends and how to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// `<｜tool▁calls▁begin｜>` … `<｜tool▁calls▁end｜>`.
    DeepSeekCalls,
    /// A bare `<｜tool▁call▁begin｜>` … `<｜tool▁call▁end｜>` (no outer wrapper).
    DeepSeekCall,
    /// `<tool_call>` … `</tool_call>`.
    Qwen,
}

impl Block {
    const ALL: [(Block, &'static str); 3] = [
        (Block::DeepSeekCalls, CALLS_BEGIN),
        (Block::DeepSeekCall, CALL_BEGIN),
        (Block::Qwen, QWEN_BEGIN),
    ];

    fn end(self) -> &'static str {
        match self {
            Block::DeepSeekCalls => CALLS_END,
            Block::DeepSeekCall => CALL_END,
            Block::Qwen => QWEN_END,
        }
    }

    /// Reads a complete block (begin marker through end marker, both included).
    fn parse(self, block: &str) -> Option<Vec<ToolCall>> {
        match self {
            Block::DeepSeekCalls | Block::DeepSeekCall => parse_deepseek(block),
            Block::Qwen => {
                let inner = block.strip_prefix(QWEN_BEGIN)?.strip_suffix(QWEN_END)?;
                parse_json_calls(inner)
            }
        }
    }
}

/// The streaming tool-call parser. Feed pieces with [`push`](Self::push), then call
/// [`finish`](Self::finish) once.
#[derive(Debug, Clone)]
pub struct ToolCallParser {
    /// Text not yet released: a possible begin marker, or an open block.
    held: String,
    block: Option<Block>,
    /// Try the whole answer as JSON tool calls (only when the request offered tools).
    json_fallback: bool,
    /// Set while the answer, so far, looks like a JSON tool call; everything is held then.
    holding_json: bool,
    /// Whether any answer text was released (JSON calls must be the whole answer).
    released: bool,
}

impl ToolCallParser {
    /// `json_fallback`: also read an answer that is entirely a JSON tool call (or a list of
    /// them); such an answer is held back until the end of the stream.
    pub fn new(json_fallback: bool) -> Self {
        Self {
            held: String::new(),
            block: None,
            json_fallback,
            holding_json: false,
            released: false,
        }
    }

    /// Takes the next piece of answer text and returns what can be released now: plain text, and
    /// each call as soon as its block closes.
    pub fn push(&mut self, piece: &str) -> ToolOutput {
        self.held.push_str(piece);
        let mut out = ToolOutput::default();
        loop {
            if self.holding_json {
                return out;
            }
            if let Some(block) = self.block {
                let Some(at) = self.held.find(block.end()) else {
                    return out;
                };
                let rest = self.held.split_off(at + block.end().len());
                let text = std::mem::replace(&mut self.held, rest);
                self.block = None;
                out.absorb(close_block(block, text));
            } else {
                if self.json_fallback && !self.released {
                    let trimmed = self.held.trim_start();
                    if trimmed.starts_with('{') || trimmed.starts_with('[') {
                        self.holding_json = true;
                        return out;
                    }
                    if trimmed.is_empty() {
                        return out;
                    }
                }
                let found = Block::ALL
                    .iter()
                    .filter_map(|&(block, marker)| self.held.find(marker).map(|at| (at, block)))
                    .min_by_key(|&(at, _)| at);
                if let Some((at, block)) = found {
                    let rest = self.held.split_off(at);
                    let before = std::mem::replace(&mut self.held, rest);
                    self.release(&mut out, &before);
                    self.released = true;
                    self.block = Some(block);
                    continue;
                }
                let keep_from = Block::ALL
                    .iter()
                    .map(|&(_, marker)| partial_suffix_start(&self.held, marker))
                    .min()
                    .unwrap_or(self.held.len());
                let rest = self.held.split_off(keep_from);
                let before = std::mem::replace(&mut self.held, rest);
                self.release(&mut out, &before);
                return out;
            }
        }
    }

    /// Ends the stream: an unfinished block is read as far as it goes (a model may stop right
    /// after its last `<｜tool▁call▁end｜>`); whatever does not parse is content.
    pub fn finish(&mut self) -> ToolOutput {
        let held = std::mem::take(&mut self.held);
        let mut out = ToolOutput::default();
        if self.holding_json {
            self.holding_json = false;
            match parse_json_calls(&held) {
                Some(calls) => out.calls = calls,
                None => out.content = held,
            }
            return out;
        }
        match self.block.take() {
            Some(block) => out.absorb(close_block(block, held)),
            None => out.content = held,
        }
        out
    }

    fn release(&mut self, out: &mut ToolOutput, text: &str) {
        if !text.is_empty() {
            self.released = true;
            out.content.push_str(text);
        }
    }
}

/// Parses a whole answer: its tool calls and the remaining content.
pub fn parse_complete(text: &str, json_fallback: bool) -> ToolOutput {
    let mut parser = ToolCallParser::new(json_fallback);
    let mut out = parser.push(text);
    out.absorb(parser.finish());
    out
}

/// Reads a block, or gives it back as content when it does not parse.
fn close_block(block: Block, text: String) -> ToolOutput {
    match block.parse(&text) {
        Some(calls) => ToolOutput {
            content: String::new(),
            calls,
        },
        None => ToolOutput {
            content: text,
            calls: Vec::new(),
        },
    }
}

/// Reads every `<｜tool▁call▁begin｜>…<｜tool▁call▁end｜>` in a DeepSeek block. Anything but
/// whitespace between calls, or an unfinished call, makes the block unreadable (`None`).
fn parse_deepseek(block: &str) -> Option<Vec<ToolCall>> {
    let mut rest = block.strip_prefix(CALLS_BEGIN).unwrap_or(block);
    rest = rest.strip_suffix(CALLS_END).unwrap_or(rest);
    let mut calls = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let body = rest.strip_prefix(CALL_BEGIN)?;
        let end = body.find(CALL_END)?;
        calls.push(parse_deepseek_call(&body[..end])?);
        rest = &body[end + CALL_END.len()..];
    }
    (!calls.is_empty()).then_some(calls)
}

/// One call body: `function<｜tool▁sep｜>NAME` + newline + a JSON fence with ARGS (R1/V3) or
/// `NAME<｜tool▁sep｜>ARGS` (V3.1).
fn parse_deepseek_call(body: &str) -> Option<ToolCall> {
    let (head, tail) = body.split_once(SEP)?;
    let head = head.trim();
    let (name, arguments) = match tail.split_once('\n') {
        Some((name, fenced)) if head == "function" || fenced.trim_start().starts_with("```") => {
            (name.trim(), unfence(fenced))
        }
        _ => (head, tail.trim()),
    };
    if name.is_empty() {
        return None;
    }
    Some(ToolCall {
        name: name.to_owned(),
        arguments: parse_arguments(arguments)?,
    })
}

/// The text inside a ```` ```json ```` fence (or the text itself when unfenced).
fn unfence(text: &str) -> &str {
    let text = text.trim();
    let Some(inner) = text.strip_prefix("```") else {
        return text;
    };
    let inner = inner.strip_prefix("json").unwrap_or(inner);
    inner.strip_suffix("```").unwrap_or(inner).trim()
}

/// Arguments must be a JSON object; empty text means no arguments.
fn parse_arguments(text: &str) -> Option<Json> {
    if text.trim().is_empty() {
        return Some(Json::Object(serde_json::Map::new()));
    }
    match serde_json::from_str(text).ok()? {
        object @ Json::Object(_) => Some(object),
        _ => None,
    }
}

/// `{"name": …, "arguments"|"parameters": …}` or a list of them; arguments given as a JSON
/// string (OpenAI style) are decoded.
fn parse_json_calls(text: &str) -> Option<Vec<ToolCall>> {
    let value: Json = serde_json::from_str(text.trim()).ok()?;
    let items = match value {
        Json::Array(items) => items,
        single => vec![single],
    };
    let calls: Option<Vec<ToolCall>> = items.into_iter().map(json_call).collect();
    calls.filter(|calls| !calls.is_empty())
}

fn json_call(item: Json) -> Option<ToolCall> {
    let Json::Object(mut object) = item else {
        return None;
    };
    if let Some(Json::Object(function)) = object.remove("function") {
        object = function;
    }
    let Some(Json::String(name)) = object.remove("name") else {
        return None;
    };
    let arguments = match object
        .remove("arguments")
        .or_else(|| object.remove("parameters"))
    {
        None => Json::Object(serde_json::Map::new()),
        Some(Json::String(text)) => parse_arguments(&text)?,
        Some(object @ Json::Object(_)) => object,
        Some(_) => return None,
    };
    Some(ToolCall { name, arguments })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn call(name: &str, arguments: Json) -> ToolCall {
        ToolCall {
            name: name.into(),
            arguments,
        }
    }

    fn streamed(pieces: &[&str], json_fallback: bool) -> ToolOutput {
        let mut parser = ToolCallParser::new(json_fallback);
        let mut out = ToolOutput::default();
        for piece in pieces {
            out.absorb(parser.push(piece));
        }
        out.absorb(parser.finish());
        out
    }

    /// Every split of `text` into two pieces, and into pieces of one char each.
    fn assert_any_split(text: &str, json_fallback: bool, expected: &ToolOutput) {
        let boundaries: Vec<usize> = text.char_indices().map(|(at, _)| at).collect();
        for &at in &boundaries {
            let out = streamed(&[&text[..at], &text[at..]], json_fallback);
            assert_eq!(&out, expected, "split at byte {at}");
        }
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(&streamed(&refs, json_fallback), expected, "char by char");
    }

    const R1: &str = "Let me check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Tokyo\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";

    #[test]
    fn r1_v3_format() {
        let expected = ToolOutput {
            content: "Let me check.".into(),
            calls: vec![
                call("get_weather", json!({"city": "Tokyo"})),
                call("get_time", json!({})),
            ],
        };
        assert_any_split(R1, false, &expected);
    }

    #[test]
    fn v31_format() {
        let text = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\", \"days\": 2}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"zone\": \"CET\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
        let expected = ToolOutput {
            content: String::new(),
            calls: vec![
                call("get_weather", json!({"city": "Paris", "days": 2})),
                call("get_time", json!({"zone": "CET"})),
            ],
        };
        assert_any_split(text, false, &expected);
    }

    #[test]
    fn stream_ends_without_the_outer_end_marker() {
        let text =
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>ping<｜tool▁sep｜>{}<｜tool▁call▁end｜>";
        assert_eq!(
            parse_complete(text, false).calls,
            vec![call("ping", json!({}))]
        );
    }

    #[test]
    fn calls_are_released_when_their_block_closes() {
        let mut parser = ToolCallParser::new(false);
        let out = parser.push("Hi <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>a<｜tool▁sep｜>{}");
        assert_eq!(
            out,
            ToolOutput {
                content: "Hi ".into(),
                calls: vec![]
            }
        );
        let out = parser.push("<｜tool▁call▁end｜><｜tool▁calls▁end｜> bye");
        assert_eq!(out.calls, vec![call("a", json!({}))]);
        assert_eq!(out.content, " bye");
        assert_eq!(parser.finish(), ToolOutput::default());
    }

    #[test]
    fn qwen_format() {
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"noop\", \"arguments\": \"{}\"}\n</tool_call>";
        let expected = ToolOutput {
            content: "\n".into(),
            calls: vec![
                call("get_weather", json!({"city": "Oslo"})),
                call("noop", json!({})),
            ],
        };
        assert_any_split(text, false, &expected);
    }

    #[test]
    fn json_fallback_reads_a_whole_json_answer() {
        let text = " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}";
        let expected = ToolOutput {
            content: String::new(),
            calls: vec![call("get_weather", json!({"city": "Rome"}))],
        };
        assert_any_split(text, true, &expected);
        let list = "[{\"name\": \"a\", \"arguments\": {}}, {\"function\": {\"name\": \"b\", \"arguments\": \"{\\\"x\\\": 1}\"}}]";
        assert_eq!(
            parse_complete(list, true).calls,
            vec![call("a", json!({})), call("b", json!({"x": 1}))]
        );
        // Without the fallback, or for JSON that is not a call, it is content.
        assert_eq!(parse_complete(text, false).content, text);
        let data = "{\"answer\": 42}";
        assert_eq!(
            parse_complete(data, true),
            ToolOutput {
                content: data.into(),
                calls: vec![]
            }
        );
    }

    #[test]
    fn malformed_blocks_come_back_as_content() {
        let cases = [
            // arguments are not JSON
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{oops<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            // no separator
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            // arguments not an object
            "<｜tool▁call▁begin｜>f<｜tool▁sep｜>[1, 2]<｜tool▁call▁end｜>",
            // garbage between calls
            "<｜tool▁calls▁begin｜>junk<｜tool▁call▁begin｜>f<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            // cut off inside a call
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{\"a\"",
            // Qwen tag with broken JSON
            "<tool_call>{\"name\": }</tool_call>",
            // a lone begin marker prefix at the end
            "text <｜tool▁ca",
        ];
        for text in cases {
            let expected = ToolOutput {
                content: text.into(),
                calls: vec![],
            };
            assert_any_split(text, false, &expected);
        }
    }

    #[test]
    fn plain_text_streams_through_at_once() {
        let mut parser = ToolCallParser::new(false);
        assert_eq!(parser.push("Hello <b>").content, "Hello <b>");
        assert_eq!(parser.push(" world <").content, " world ");
        assert_eq!(parser.push("3").content, "<3");
        assert_eq!(parser.finish(), ToolOutput::default());
    }
}

/// `value` as Python's `json.dumps` writes it (`{"city": "Paris", "days": [1, 2]}`), not
/// compact: DeepSeek's templates paste tool-call arguments into the prompt as a string, and the
/// reference rendering (and the model's own output) has a space after each `:` and `,`.
/// Non-ASCII text stays as it is (`ensure_ascii=False`).
pub fn arguments_text(value: &Json) -> String {
    use serde::Serialize as _;

    struct Spaced;

    impl serde_json::ser::Formatter for Spaced {
        fn begin_array_value<W: ?Sized + std::io::Write>(
            &mut self,
            writer: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first {
                Ok(())
            } else {
                writer.write_all(b", ")
            }
        }

        fn begin_object_key<W: ?Sized + std::io::Write>(
            &mut self,
            writer: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first {
                Ok(())
            } else {
                writer.write_all(b", ")
            }
        }

        fn begin_object_value<W: ?Sized + std::io::Write>(
            &mut self,
            writer: &mut W,
        ) -> std::io::Result<()> {
            writer.write_all(b": ")
        }
    }

    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, Spaced);
    value
        .serialize(&mut serializer)
        .expect("a JSON value always serializes");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

#[cfg(test)]
mod arguments_text_tests {
    use serde_json::json;

    use super::arguments_text;

    #[test]
    fn arguments_are_written_as_python_writes_them() {
        assert_eq!(
            arguments_text(&json!({"city": "Paris", "days": [1, 2], "opts": {}, "n": null})),
            r#"{"city": "Paris", "days": [1, 2], "opts": {}, "n": null}"#
        );
        assert_eq!(
            arguments_text(&json!({"q": "北京 \"x\""})),
            r#"{"q": "北京 \"x\""}"#
        );
        assert_eq!(arguments_text(&json!({})), "{}");
    }
}
