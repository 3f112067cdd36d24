//! Lexer and parser for the Go `text/template` subset Ollama templates use, into a small tree.
//!
//! Whitespace trim markers (`{{- ` and ` -}}`) are applied here, while lexing, exactly as Go
//! does: the text before `{{-` loses all its trailing spaces, tabs and newlines, the text after
//! `-}}` all its leading ones. Comments (`{{/* … */}}`) vanish, keeping their trims. The tree
//! mirrors Go's `text/template/parse`: `else if` is an `if` nested in the `else` list.

use std::collections::BTreeSet;

use crate::chat::limits;

/// A parse error with the 1-based line it was found on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ParseError {
    pub line: usize,
    pub message: String,
}

type Result<T> = std::result::Result<T, ParseError>;

/// One node of a template body.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Text(String),
    /// `{{ pipeline }}`: prints the value, unless the pipeline declares or assigns a variable.
    Action(Pipeline),
    /// `{{ if }}`, `{{ with }}` and `{{ range }}`; `otherwise` is the `{{ else }}` list.
    Control {
        kind: ControlKind,
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Break,
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ControlKind {
    If,
    With,
    Range,
}

impl ControlKind {
    fn keyword(self) -> &'static str {
        match self {
            Self::If => "if",
            Self::With => "with",
            Self::Range => "range",
        }
    }
}

/// `[$x :=] command | command …`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Pipeline {
    pub line: usize,
    /// Declared or assigned variables, with their `$`; two only in `range $i, $e := …`.
    pub variables: Vec<String>,
    /// `=` (assign to existing variables) rather than `:=` (declare new ones).
    pub assign: bool,
    pub commands: Vec<Command>,
}

/// Space-separated operands; a function call when the first is a function name.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Command {
    pub operands: Vec<Operand>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Operand {
    /// `.`
    Dot,
    Nil,
    Bool(bool),
    String(String),
    Int(i64),
    Float(f64),
    /// `.A.B` on the dot.
    Field(Vec<String>),
    /// `$x.A.B`; the name keeps its `$` (`$` alone is the root data).
    Variable {
        name: String,
        fields: Vec<String>,
    },
    /// A function name: called, with the following operands as arguments.
    Function(String),
    /// `(pipeline).A.B`
    Chain {
        pipe: Box<Pipeline>,
        fields: Vec<String>,
    },
}

/// Parses a whole template.
pub(super) fn parse(source: &str) -> Result<Vec<Node>> {
    let pieces = lex(source)?;
    let mut parser = Parser {
        pieces,
        position: 0,
        range_depth: 0,
        depth: 0,
    };
    let (nodes, end) = parser.list()?;
    match end {
        None => Ok(nodes),
        Some(End { line, word }) => Err(ParseError {
            line,
            message: format!("unexpected {{{{{word}}}}}"),
        }),
    }
}

/// The field and variable names a template mentions, lower-cased: Ollama's `Template.Vars`,
/// which decides between the `.Messages` and the legacy `.Prompt`/`.Response` rendering and
/// detects capabilities (`tools`, `think`…).
pub(super) fn identifiers(nodes: &[Node]) -> BTreeSet<String> {
    fn pipeline(pipe: &Pipeline, out: &mut BTreeSet<String>) {
        for variable in &pipe.variables {
            out.insert(variable.to_lowercase());
        }
        for operand in pipe.commands.iter().flat_map(|c| &c.operands) {
            match operand {
                Operand::Field(fields) => out.extend(fields.iter().map(|f| f.to_lowercase())),
                Operand::Variable { name, fields } => {
                    out.insert(name.to_lowercase());
                    out.extend(fields.iter().map(|f| f.to_lowercase()));
                }
                Operand::Chain { pipe, fields } => {
                    pipeline(pipe, out);
                    out.extend(fields.iter().map(|f| f.to_lowercase()));
                }
                _ => {}
            }
        }
    }
    fn walk(nodes: &[Node], out: &mut BTreeSet<String>) {
        for node in nodes {
            match node {
                Node::Action(pipe) => pipeline(pipe, out),
                Node::Control {
                    pipe,
                    body,
                    otherwise,
                    ..
                } => {
                    pipeline(pipe, out);
                    walk(body, out);
                    walk(otherwise, out);
                }
                Node::Text(_) | Node::Break | Node::Continue => {}
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(nodes, &mut out);
    out
}

/// The template Ollama executes for the last (unanswered) exchange of a legacy template:
/// everything after the first action that prints `.Response` is removed, so the prompt ends
/// where the model's answer begins. Conditions (`{{ if .Response }}`) do not count, as in
/// Ollama's `deleteNode`.
pub(super) fn cut_after_response(nodes: &[Node]) -> Vec<Node> {
    fn prints_response(pipe: &Pipeline) -> bool {
        pipe.commands
            .iter()
            .flat_map(|c| &c.operands)
            .any(|operand| match operand {
                Operand::Field(fields) => fields.iter().any(|f| f == "Response"),
                Operand::Chain { pipe, .. } => prints_response(pipe),
                _ => false,
            })
    }
    fn walk(nodes: &[Node], cut: &mut bool) -> Vec<Node> {
        let mut kept = Vec::new();
        for node in nodes {
            if *cut {
                break;
            }
            match node {
                Node::Action(pipe) => {
                    *cut = prints_response(pipe);
                    kept.push(node.clone());
                }
                Node::Control {
                    kind,
                    pipe,
                    body,
                    otherwise,
                } => {
                    let body = walk(body, cut);
                    let otherwise = walk(otherwise, cut);
                    kept.push(Node::Control {
                        kind: *kind,
                        pipe: pipe.clone(),
                        body,
                        otherwise,
                    });
                }
                Node::Text(_) | Node::Break | Node::Continue => kept.push(node.clone()),
            }
        }
        kept
    }
    walk(nodes, &mut false)
}

/// Ollama appends `{{ .Response }}` to templates that mention neither `.Messages` nor
/// `.Response` (a bare `{{ .Prompt }}` template answers after the prompt).
pub(super) fn response_action() -> Node {
    Node::Action(Pipeline {
        line: 0,
        variables: Vec::new(),
        assign: false,
        commands: vec![Command {
            operands: vec![Operand::Field(vec!["Response".to_owned()])],
        }],
    })
}

// ---------------------------------------------------------------------------------------------
// Lexer

/// Text between actions (already trimmed) or the tokens of one action.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Action { line: usize, tokens: Vec<Token> },
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    kind: TokenKind,
    /// Whitespace came before it: `.A.B` is one field chain, `.A .B` two operands.
    spaced: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Dot,
    Field(String),
    Variable(String),
    Identifier(String),
    String(String),
    Int(i64),
    Float(f64),
    LeftParen,
    RightParen,
    Pipe,
    Comma,
    Declare,
    Assign,
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alphanumeric(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn lex(source: &str) -> Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut rest = 0;
    let mut trim_next = false;
    // Lines are counted as the lexer moves on, so that a long template costs linear time.
    let mut line = 1;
    let mut counted = 0;
    while rest < source.len() {
        let Some(found) = source[rest..].find("{{") else {
            push_text(&mut pieces, &source[rest..], trim_next, false);
            break;
        };
        let open = rest + found;
        let mut inside = open + 2;
        let trim_left = has_left_trim(&source[inside..]);
        if trim_left {
            inside += 2;
        }
        push_text(&mut pieces, &source[rest..open], trim_next, trim_left);
        line += source[counted..open].matches('\n').count();
        counted = open;
        if source[inside..].starts_with("/*") {
            let Some(close) = source[inside + 2..].find("*/") else {
                return Err(ParseError {
                    line,
                    message: "unclosed comment".to_owned(),
                });
            };
            let after = inside + 2 + close + 2;
            let (end, trim_right) = if source[after..].starts_with(" -}}") {
                (after + 4, true)
            } else if source[after..].starts_with("}}") {
                (after + 2, false)
            } else {
                return Err(ParseError {
                    line,
                    message: "comment ends before closing delimiter".to_owned(),
                });
            };
            trim_next = trim_right;
            rest = end;
            continue;
        }
        let (tokens, end, trim_right) = lex_action(source, inside, line)?;
        pieces.push(Piece::Action { line, tokens });
        trim_next = trim_right;
        rest = end;
    }
    Ok(pieces)
}

fn has_left_trim(after_delimiter: &str) -> bool {
    let mut chars = after_delimiter.chars();
    chars.next() == Some('-') && chars.next().is_some_and(is_space)
}

fn push_text(pieces: &mut Vec<Piece>, text: &str, trim_start: bool, trim_end: bool) {
    let mut text = text;
    if trim_start {
        text = text.trim_start_matches(is_space);
    }
    if trim_end {
        text = text.trim_end_matches(is_space);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text.to_owned()));
    }
}

/// Lexes an action from `start` (after `{{` and any trim marker); returns its tokens, the
/// offset after `}}`, and whether it ended with a trim marker.
fn lex_action(source: &str, start: usize, line: usize) -> Result<(Vec<Token>, usize, bool)> {
    let error = |message: String| ParseError { line, message };
    let mut tokens = Vec::new();
    let mut at = start;
    let mut spaced = true;
    loop {
        let rest = &source[at..];
        if rest.is_empty() {
            return Err(error("unclosed action".to_owned()));
        }
        if rest.starts_with("}}") {
            return Ok((tokens, at + 2, false));
        }
        let c = rest.chars().next().expect("rest is not empty");
        if is_space(c) {
            let run = rest.len() - rest.trim_start_matches(is_space).len();
            if rest[run..].starts_with("-}}") {
                return Ok((tokens, at + run + 3, true));
            }
            at += run;
            spaced = true;
            continue;
        }
        let (kind, length) = match c {
            '(' => (TokenKind::LeftParen, 1),
            ')' => (TokenKind::RightParen, 1),
            '|' => (TokenKind::Pipe, 1),
            ',' => (TokenKind::Comma, 1),
            '=' => (TokenKind::Assign, 1),
            ':' if rest.starts_with(":=") => (TokenKind::Declare, 2),
            '"' | '`' => lex_string(rest).map_err(error)?,
            '\'' => lex_char(rest).map_err(error)?,
            '.' if rest[1..].starts_with(|d: char| d.is_ascii_digit()) => {
                lex_number(rest).map_err(error)?
            }
            '+' | '-' | '0'..='9' => lex_number(rest).map_err(error)?,
            '.' | '$' => {
                let name_length = rest[1..]
                    .find(|ch: char| !is_alphanumeric(ch))
                    .unwrap_or(rest.len() - 1);
                let name = &rest[1..=name_length];
                let kind = match (c, name.is_empty()) {
                    ('.', true) => TokenKind::Dot,
                    ('.', false) => TokenKind::Field(name.to_owned()),
                    _ => TokenKind::Variable(format!("${name}")),
                };
                (kind, 1 + name_length)
            }
            c if is_alphanumeric(c) => {
                let length = rest
                    .find(|ch: char| !is_alphanumeric(ch))
                    .unwrap_or(rest.len());
                (TokenKind::Identifier(rest[..length].to_owned()), length)
            }
            other => return Err(error(format!("unexpected {other:?} in action"))),
        };
        tokens.push(Token { kind, spaced });
        spaced = false;
        at += length;
    }
}

/// A `"interpreted"` or `` `raw` `` string; returns the token and its length in the source.
fn lex_string(rest: &str) -> std::result::Result<(TokenKind, usize), String> {
    if let Some(raw) = rest.strip_prefix('`') {
        let end = raw.find('`').ok_or("unterminated raw quoted string")?;
        return Ok((TokenKind::String(raw[..end].replace('\r', "")), end + 2));
    }
    let mut value = String::new();
    let mut chars = rest.char_indices().skip(1);
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Ok((TokenKind::String(value), index + 1)),
            '\n' => break,
            '\\' => {
                let (_, escape) = chars.next().ok_or("unterminated quoted string")?;
                let simple = match escape {
                    'a' => Some('\u{7}'),
                    'b' => Some('\u{8}'),
                    'f' => Some('\u{c}'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    'v' => Some('\u{b}'),
                    '\\' => Some('\\'),
                    '"' => Some('"'),
                    _ => None,
                };
                if let Some(simple) = simple {
                    value.push(simple);
                    continue;
                }
                let digits = match escape {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => return Err(format!("unknown escape sequence \\{escape} in string")),
                };
                let hex: String = (0..digits)
                    .filter_map(|_| chars.next().map(|(_, d)| d))
                    .collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == digits)
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("invalid escape \\{escape}{hex} in string"))?;
                value.push(code);
            }
            c => value.push(c),
        }
    }
    Err("unterminated quoted string".to_owned())
}

/// A character constant (`'a'`): an integer in Go.
fn lex_char(rest: &str) -> std::result::Result<(TokenKind, usize), String> {
    let mut chars = rest.char_indices().skip(1);
    match (chars.next(), chars.next()) {
        (Some((_, c)), Some((end, '\''))) if c != '\\' && c != '\'' => {
            Ok((TokenKind::Int(i64::from(u32::from(c))), end + 1))
        }
        _ => Err("unsupported character constant".to_owned()),
    }
}

/// A number: decimal, hexadecimal (`0x`), octal (`0o`, leading `0`), binary (`0b`) or float,
/// with `_` separators and an optional sign.
fn lex_number(rest: &str) -> std::result::Result<(TokenKind, usize), String> {
    let length = rest
        .char_indices()
        .find(|&(index, c)| {
            let exponent_sign = (c == '+' || c == '-')
                && index > 0
                && matches!(rest.as_bytes()[index - 1], b'e' | b'E' | b'p' | b'P')
                && !rest.starts_with("0x")
                && !rest.starts_with("0X");
            !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || exponent_sign || index == 0)
        })
        .map_or(rest.len(), |(index, _)| index);
    let text = &rest[..length];
    let cleaned = text.replace('_', "");
    let (negative, digits) = match cleaned.as_bytes().first() {
        Some(b'-') => (true, &cleaned[1..]),
        Some(b'+') => (false, &cleaned[1..]),
        _ => (false, cleaned.as_str()),
    };
    let radix = match digits.get(..2) {
        Some("0x" | "0X") => Some((16, &digits[2..])),
        Some("0o" | "0O") => Some((8, &digits[2..])),
        Some("0b" | "0B") => Some((2, &digits[2..])),
        _ if digits.len() > 1
            && digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some((8, &digits[1..]))
        }
        _ if digits.bytes().all(|b| b.is_ascii_digit()) => Some((10, digits)),
        _ => None,
    };
    if let Some((radix, body)) = radix
        && let Ok(value) = i64::from_str_radix(body, radix)
    {
        return Ok((
            TokenKind::Int(if negative { -value } else { value }),
            length,
        ));
    }
    match digits.parse::<f64>() {
        Ok(value) if !digits.is_empty() => Ok((
            TokenKind::Float(if negative { -value } else { value }),
            length,
        )),
        _ => Err(format!("bad number syntax: {text:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

/// An `{{ end }}` or `{{ else … }}` that closed a list.
#[derive(Debug)]
struct End {
    line: usize,
    /// `end`, `else`, `else if`, `else with`.
    word: String,
}

/// What closed a list, with the tokens of an `else if`/`else with` condition.
struct Close {
    end: End,
    tokens: Vec<Token>,
}

struct Parser {
    pieces: Vec<Piece>,
    position: usize,
    range_depth: usize,
    /// Blocks open around the current position, `else if` included: at most
    /// [`limits::MAX_NESTING`], as everything after the parser recurses on them.
    depth: usize,
}

impl Parser {
    /// Nodes up to an `{{ end }}` / `{{ else }}` (returned) or the end of the template (`None`).
    fn list(&mut self) -> Result<(Vec<Node>, Option<End>)> {
        let (nodes, close) = self.list_with_close()?;
        Ok((nodes, close.map(|close| close.end)))
    }

    fn list_with_close(&mut self) -> Result<(Vec<Node>, Option<Close>)> {
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.get(self.position).cloned() {
            self.position += 1;
            let (line, tokens) = match piece {
                Piece::Text(text) => {
                    nodes.push(Node::Text(text));
                    continue;
                }
                Piece::Action { line, tokens } => (line, tokens),
            };
            let error = |message: String| ParseError { line, message };
            let keyword = match tokens.first().map(|t| &t.kind) {
                Some(TokenKind::Identifier(word)) => word.as_str(),
                None => return Err(error("missing value for command".to_owned())),
                _ => "",
            };
            match keyword {
                "end" | "else" => {
                    let mut word = keyword.to_owned();
                    let mut rest = tokens[1..].to_vec();
                    if keyword == "else"
                        && let Some(TokenKind::Identifier(next)) = rest.first().map(|t| &t.kind)
                        && (next == "if" || next == "with")
                    {
                        word = format!("else {next}");
                        rest.remove(0);
                    } else if !rest.is_empty() {
                        return Err(error(format!("unexpected tokens after {{{{{keyword}}}}}")));
                    }
                    return Ok((
                        nodes,
                        Some(Close {
                            end: End { line, word },
                            tokens: rest,
                        }),
                    ));
                }
                "if" => nodes.push(self.control(ControlKind::If, line, &tokens[1..])?),
                "with" => nodes.push(self.control(ControlKind::With, line, &tokens[1..])?),
                "range" => nodes.push(self.control(ControlKind::Range, line, &tokens[1..])?),
                "break" | "continue" => {
                    if tokens.len() > 1 {
                        return Err(error(format!("unexpected tokens after {{{{{keyword}}}}}")));
                    }
                    if self.range_depth == 0 {
                        return Err(error(format!("{{{{{keyword}}}}} outside {{{{range}}}}")));
                    }
                    nodes.push(if keyword == "break" {
                        Node::Break
                    } else {
                        Node::Continue
                    });
                }
                "define" | "template" | "block" => {
                    return Err(error(format!(
                        "{{{{{keyword}}}}} (named templates) is not supported; inline the template text instead"
                    )));
                }
                _ => {
                    let pipe = pipeline(&tokens, line, false)?;
                    if pipe.commands.is_empty() {
                        return Err(error("missing value for command".to_owned()));
                    }
                    nodes.push(Node::Action(pipe));
                }
            }
        }
        Ok((nodes, None))
    }

    /// `if`/`with`/`range` after its keyword: pipeline, body, optional else, end.
    fn control(&mut self, kind: ControlKind, line: usize, tokens: &[Token]) -> Result<Node> {
        if self.depth >= limits::MAX_NESTING {
            return Err(ParseError {
                line,
                message: format!(
                    "blocks are nested deeper than {} levels, the limit",
                    limits::MAX_NESTING
                ),
            });
        }
        self.depth += 1;
        let node = self.control_body(kind, line, tokens);
        self.depth -= 1;
        node
    }

    fn control_body(&mut self, kind: ControlKind, line: usize, tokens: &[Token]) -> Result<Node> {
        let pipe = pipeline(tokens, line, kind == ControlKind::Range)?;
        if pipe.commands.is_empty() {
            return Err(ParseError {
                line,
                message: format!("missing value for {}", kind.keyword()),
            });
        }
        // `break` and `continue` belong to the range body, not to its `else` list.
        let in_range = kind == ControlKind::Range;
        self.range_depth += usize::from(in_range);
        let listed = self.list_with_close();
        self.range_depth -= usize::from(in_range);
        let (body, close) = listed?;
        let unclosed = || ParseError {
            line,
            message: format!(
                "unexpected EOF: {{{{{}}}}} has no {{{{end}}}}",
                kind.keyword()
            ),
        };
        let close = close.ok_or_else(unclosed)?;
        let otherwise = match close.end.word.as_str() {
            "end" => Vec::new(),
            "else" => {
                let (otherwise, end) = self.list()?;
                match end {
                    Some(End { word, .. }) if word == "end" => otherwise,
                    Some(End { line, word }) => {
                        return Err(ParseError {
                            line,
                            message: format!("expected {{{{end}}}}, found {{{{{word}}}}}"),
                        });
                    }
                    None => return Err(unclosed()),
                }
            }
            chained => {
                // `{{ else if c }}` is `{{ else }}{{ if c }}…{{ end }}` sharing the outer `end`.
                let nested = if chained == "else if" {
                    ControlKind::If
                } else {
                    ControlKind::With
                };
                if kind == ControlKind::Range
                    || (nested == ControlKind::With) != (kind == ControlKind::With)
                {
                    return Err(ParseError {
                        line: close.end.line,
                        message: format!(
                            "{{{{{chained}}}}} is not supported inside {{{{{}}}}}",
                            kind.keyword()
                        ),
                    });
                }
                vec![self.control(nested, close.end.line, &close.tokens)?]
            }
        };
        Ok(Node::Control {
            kind,
            pipe,
            body,
            otherwise,
        })
    }
}

/// Parses the tokens of one pipeline (the whole action, or what follows a keyword).
fn pipeline(tokens: &[Token], line: usize, in_range: bool) -> Result<Pipeline> {
    let mut stream = Stream {
        tokens,
        position: 0,
        line,
        depth: 0,
    };
    let pipe = stream.pipeline(in_range)?;
    if let Some(token) = stream.peek() {
        return Err(stream.error(format!("unexpected {} in command", describe(&token.kind))));
    }
    Ok(pipe)
}

struct Stream<'a> {
    tokens: &'a [Token],
    position: usize,
    line: usize,
    /// Open parentheses: at most [`limits::MAX_NESTING`].
    depth: usize,
}

impl Stream<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn peek_kind(&self, offset: usize) -> Option<&TokenKind> {
        self.tokens.get(self.position + offset).map(|t| &t.kind)
    }

    fn error(&self, message: String) -> ParseError {
        ParseError {
            line: self.line,
            message,
        }
    }

    fn pipeline(&mut self, in_range: bool) -> Result<Pipeline> {
        let mut variables = Vec::new();
        let mut assign = false;
        if let Some(TokenKind::Variable(first)) = self.peek_kind(0) {
            match self.peek_kind(1) {
                Some(TokenKind::Declare | TokenKind::Assign) => {
                    assign = self.peek_kind(1) == Some(&TokenKind::Assign);
                    variables.push(first.clone());
                    self.position += 2;
                }
                Some(TokenKind::Comma) if in_range => {
                    let Some(TokenKind::Variable(second)) = self.peek_kind(2) else {
                        return Err(self.error("range can only initialize variables".to_owned()));
                    };
                    match self.peek_kind(3) {
                        Some(TokenKind::Declare | TokenKind::Assign) => {
                            assign = self.peek_kind(3) == Some(&TokenKind::Assign);
                        }
                        _ => {
                            return Err(
                                self.error("range can only initialize variables".to_owned())
                            );
                        }
                    }
                    variables.push(first.clone());
                    variables.push(second.clone());
                    self.position += 4;
                }
                Some(TokenKind::Comma) => {
                    return Err(self.error("too many declarations".to_owned()));
                }
                _ => {}
            }
        }
        let mut commands = Vec::new();
        loop {
            match self.peek_kind(0) {
                None | Some(TokenKind::RightParen) => break,
                _ => {}
            }
            commands.push(self.command()?);
            match self.peek_kind(0) {
                Some(TokenKind::Pipe) => {
                    self.position += 1;
                    if matches!(self.peek_kind(0), None | Some(TokenKind::RightParen)) {
                        return Err(self.error("missing command after |".to_owned()));
                    }
                }
                _ => break,
            }
        }
        if !variables.is_empty() && commands.is_empty() {
            return Err(self.error("missing value for declaration".to_owned()));
        }
        Ok(Pipeline {
            line: self.line,
            variables,
            assign,
            commands,
        })
    }

    fn command(&mut self) -> Result<Command> {
        let mut operands = Vec::new();
        while let Some(token) = self.peek() {
            if matches!(token.kind, TokenKind::Pipe | TokenKind::RightParen) {
                break;
            }
            if !operands.is_empty() && !token.spaced {
                return Err(self.error(format!("unexpected {} in operand", describe(&token.kind))));
            }
            operands.push(self.operand()?);
        }
        if operands.is_empty() {
            return Err(self.error("empty command".to_owned()));
        }
        Ok(Command { operands })
    }

    /// A term and the fields chained to it without spaces (`$m.Role`, `(index .L 0).Name`).
    fn operand(&mut self) -> Result<Operand> {
        let token = self.peek().expect("command checked for a token").clone();
        self.position += 1;
        let term = match token.kind {
            TokenKind::Dot => Operand::Dot,
            TokenKind::Field(name) => Operand::Field(vec![name]),
            TokenKind::Variable(name) => Operand::Variable {
                name,
                fields: Vec::new(),
            },
            TokenKind::String(value) => Operand::String(value),
            TokenKind::Int(value) => Operand::Int(value),
            TokenKind::Float(value) => Operand::Float(value),
            TokenKind::Identifier(word) => match word.as_str() {
                "true" => Operand::Bool(true),
                "false" => Operand::Bool(false),
                "nil" => Operand::Nil,
                "if" | "else" | "end" | "range" | "with" | "define" | "template" | "block"
                | "break" | "continue" => {
                    return Err(self.error(format!("unexpected keyword {word:?} in operand")));
                }
                _ => Operand::Function(word),
            },
            TokenKind::LeftParen => {
                if self.depth >= limits::MAX_NESTING {
                    return Err(self.error(format!(
                        "parentheses are nested deeper than {} levels, the limit",
                        limits::MAX_NESTING
                    )));
                }
                self.depth += 1;
                let pipe = self.pipeline(false)?;
                self.depth -= 1;
                if self.peek_kind(0) != Some(&TokenKind::RightParen) {
                    return Err(self.error("unclosed left paren".to_owned()));
                }
                self.position += 1;
                Operand::Chain {
                    pipe: Box::new(pipe),
                    fields: Vec::new(),
                }
            }
            other => return Err(self.error(format!("unexpected {} in operand", describe(&other)))),
        };
        let mut chained = Vec::new();
        while let Some(Token {
            kind: TokenKind::Field(name),
            spaced: false,
        }) = self.peek()
        {
            chained.push(name.clone());
            self.position += 1;
        }
        if chained.is_empty() {
            return Ok(term);
        }
        match term {
            Operand::Field(mut fields) => {
                fields.extend(chained);
                Ok(Operand::Field(fields))
            }
            Operand::Variable { name, mut fields } => {
                fields.extend(chained);
                Ok(Operand::Variable { name, fields })
            }
            Operand::Chain { pipe, mut fields } => {
                fields.extend(chained);
                Ok(Operand::Chain { pipe, fields })
            }
            _ => Err(self.error(format!("unexpected .{} after term", chained[0]))),
        }
    }
}

fn describe(kind: &TokenKind) -> String {
    match kind {
        TokenKind::Dot => "\".\"".to_owned(),
        TokenKind::Field(name) => format!("<.{name}>"),
        TokenKind::Variable(name) | TokenKind::Identifier(name) => format!("<{name}>"),
        TokenKind::String(value) => format!("{value:?}"),
        TokenKind::Int(value) => value.to_string(),
        TokenKind::Float(value) => value.to_string(),
        TokenKind::LeftParen => "\"(\"".to_owned(),
        TokenKind::RightParen => "\")\"".to_owned(),
        TokenKind::Pipe => "\"|\"".to_owned(),
        TokenKind::Comma => "\",\"".to_owned(),
        TokenKind::Declare => "\":=\"".to_owned(),
        TokenKind::Assign => "\"=\"".to_owned(),
    }
}
