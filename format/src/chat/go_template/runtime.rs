//! What translated Go templates call at render time: Go's printing, truthiness-preserving
//! values, and the functions of `text/template` plus Ollama's (`json`, `currentDate`,
//! `yesterdayDate`, `toTypeScriptType`), registered on the minijinja environment.
//!
//! Values are minijinja values. Go structs (a message, a tool) are [`GoStruct`] objects: fields
//! by their Go names, always true, printed and JSON-encoded under their JSON names. Ollama's
//! list and map types that have a JSON `String` method (the tool list, tool-call arguments,
//! parameter properties) are [`JsonStringer`]s. Everything else is a plain minijinja value
//! printed the way Go's `fmt` prints `any`.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use minijinja::value::{Object, ObjectRepr, Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};
use serde_json::Value as Json;

use crate::chat::limits;

/// A Go struct: ordered fields with their Go and JSON names (read through `go_field`).
#[derive(Debug)]
pub(crate) struct GoStruct {
    /// The Go type name, for error messages and `toTypeScriptType`.
    pub type_name: &'static str,
    pub fields: Vec<Field>,
}

/// One field of a [`GoStruct`].
#[derive(Debug)]
pub(crate) struct Field {
    pub name: &'static str,
    /// The key in JSON (`encoding/json` tag name, or the Go name when the struct has no tags).
    pub json: &'static str,
    /// `omitempty`: left out of JSON when false, 0, "", nil or empty.
    pub omit_empty: bool,
    pub value: Value,
}

impl Field {
    pub fn new(name: &'static str, json: &'static str, value: impl Into<Value>) -> Self {
        Self {
            name,
            json,
            omit_empty: false,
            value: value.into(),
        }
    }

    /// A field tagged `omitempty`.
    pub fn optional(name: &'static str, json: &'static str, value: impl Into<Value>) -> Self {
        Self {
            omit_empty: true,
            ..Self::new(name, json, value)
        }
    }
}

impl GoStruct {
    pub fn value(type_name: &'static str, fields: Vec<Field>) -> Value {
        Value::from_object(Self { type_name, fields })
    }
}

impl Object for GoStruct {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    /// Go's `if` is true for any struct value.
    fn is_true(self: &Arc<Self>) -> bool {
        true
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&json(&Value::from_dyn_object(self.clone())))
    }
}

/// A Go list or map whose type prints as JSON (Ollama's `templateTools`, `templateArgs`,
/// `templateProperties`). Tests true like the value it wraps; the runtime functions (`range`,
/// `len`, `index`, fields) look through it.
#[derive(Debug)]
pub(crate) struct JsonStringer(pub Value);

impl JsonStringer {
    pub fn value(inner: Value) -> Value {
        Value::from_object(Self(inner))
    }
}

impl Object for JsonStringer {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn is_true(self: &Arc<Self>) -> bool {
        self.0.is_true()
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&json(&self.0))
    }
}

/// The value a [`JsonStringer`] wraps; any other value as it is.
fn unwrap(value: &Value) -> Value {
    match value.downcast_object_ref::<JsonStringer>() {
        Some(stringer) => stringer.0.clone(),
        None => value.clone(),
    }
}

/// A Go-ish type name for error messages.
fn type_name(value: &Value) -> String {
    if let Some(object) = value.downcast_object_ref::<GoStruct>() {
        return object.type_name.to_owned();
    }
    match unwrap(value).kind() {
        ValueKind::Undefined | ValueKind::None => "nil".to_owned(),
        ValueKind::Bool => "bool".to_owned(),
        ValueKind::Number if value.is_integer() => "int".to_owned(),
        ValueKind::Number => "float64".to_owned(),
        ValueKind::String => "string".to_owned(),
        ValueKind::Map => "map".to_owned(),
        _ => "slice".to_owned(),
    }
}

fn error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.into())
}

/// Registers the runtime on an environment made for translated Go templates.
pub(super) fn register(env: &mut Environment<'static>) {
    env.add_function("go_field", go_field);
    env.add_function("go_text", go_text);
    env.add_function("go_range", go_range);
    env.add_function("eq", eq);
    env.add_function("ne", ne);
    env.add_function("lt", |a: Value, b: Value| {
        compare(&a, &b, "lt").map(std::cmp::Ordering::is_lt)
    });
    env.add_function("le", |a: Value, b: Value| {
        compare(&a, &b, "le").map(std::cmp::Ordering::is_le)
    });
    env.add_function("gt", |a: Value, b: Value| {
        compare(&a, &b, "gt").map(std::cmp::Ordering::is_gt)
    });
    env.add_function("ge", |a: Value, b: Value| {
        compare(&a, &b, "ge").map(std::cmp::Ordering::is_ge)
    });
    env.add_function("len", len);
    env.add_function("index", index);
    env.add_function("slice", slice);
    env.add_function("print", print);
    env.add_function("println", println);
    env.add_function("printf", printf);
    env.add_function("json", |value: Value| json(&value));
    env.add_function("currentDate", |state: &State, _: Rest<Value>| {
        date(state, 0)
    });
    env.add_function("yesterdayDate", |state: &State, _: Rest<Value>| {
        date(state, 1)
    });
    env.add_function("toTypeScriptType", |value: Value| typescript_type(&value));
}

// ---------------------------------------------------------------------------------------------
// Fields

/// `.A.B` on a value, as Go's `evalField`: a struct's field (an error when it has none), a map's
/// key (nil when missing: Ollama parses with `missingkey=zero`); anything else is an error.
fn go_field(receiver: &Value, Rest(names): Rest<String>) -> Result<Value, Error> {
    let mut value = receiver.clone();
    for name in &names {
        let key = Value::from(name.as_str());
        value = if let Some(object) = value.downcast_object_ref::<GoStruct>() {
            object
                .fields
                .iter()
                .find(|field| field.name == name)
                .map(|field| field.value.clone())
                .ok_or_else(|| {
                    error(format!(
                        "can't evaluate field {name} in type {}",
                        object.type_name
                    ))
                })?
        } else {
            let inner = unwrap(&value);
            match inner.kind() {
                ValueKind::Map => inner
                    .get_item(&key)
                    .ok()
                    .filter(|item| !item.is_undefined())
                    .unwrap_or(Value::from(())),
                ValueKind::Undefined | ValueKind::None => {
                    return Err(error(format!("nil pointer evaluating .{name}")));
                }
                _ => {
                    return Err(error(format!(
                        "can't evaluate field {name} in type {}",
                        type_name(&value)
                    )));
                }
            }
        };
    }
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// Printing

/// `{{ pipeline }}` output: Go prints a nil or missing value as `<no value>`.
fn go_text(value: &Value) -> String {
    if value.is_undefined() || value.is_none() {
        return "<no value>".to_owned();
    }
    let mut out = String::new();
    format_value(value, &mut out);
    out
}

/// Go's `fmt` `%v` for the values a template sees.
fn format_value(value: &Value, out: &mut String) {
    if value.downcast_object_ref::<GoStruct>().is_some()
        || value.downcast_object_ref::<JsonStringer>().is_some()
    {
        out.push_str(&json(value));
        return;
    }
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("<nil>"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&format_number(value, FloatStyle::Print)),
        ValueKind::String => out.push_str(value.as_str().unwrap_or_default()),
        ValueKind::Map => {
            out.push_str("map[");
            for (index, (key, item)) in sorted_entries(value).iter().enumerate() {
                if index > 0 {
                    out.push(' ');
                }
                format_value(key, out);
                out.push(':');
                format_value(item, out);
            }
            out.push(']');
        }
        _ => {
            out.push('[');
            for (index, item) in value.try_iter().into_iter().flatten().enumerate() {
                if index > 0 {
                    out.push(' ');
                }
                format_value(&item, out);
            }
            out.push(']');
        }
    }
}

/// A map's entries in Go's order: sorted by key.
fn sorted_entries(map: &Value) -> Vec<(Value, Value)> {
    let mut keys: Vec<Value> = map.try_iter().into_iter().flatten().collect();
    keys.sort_by(|a, b| match (a.as_str(), b.as_str()) {
        (Some(a), Some(b)) => a.cmp(b),
        _ => a.cmp(b),
    });
    keys.into_iter()
        .map(|key| {
            let item = map.get_item(&key).unwrap_or_default();
            (key, item)
        })
        .collect()
}

#[derive(Clone, Copy)]
enum FloatStyle {
    /// `fmt`'s `%v`: shortest digits, exponent below 1e-4 or from 1e6 (`1e+06`).
    Print,
    /// `encoding/json`: shortest digits, exponent below 1e-6 or from 1e21 (`1e-07`).
    Json,
}

fn format_number(value: &Value, style: FloatStyle) -> String {
    match serde_json::to_value(value) {
        Ok(Json::Number(number)) => match number.as_f64().filter(|_| number.is_f64()) {
            Some(float) => format_float(float, style),
            None => number.to_string(),
        },
        _ => value.to_string(),
    }
}

/// Formats a float as Go does for `%v` or JSON.
fn format_float(float: f64, style: FloatStyle) -> String {
    if float.is_nan() {
        return "NaN".to_owned();
    }
    if float.is_infinite() {
        return if float > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if float == 0.0 {
        return "0".to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, as Go's `-1` precision does.
    let scientific = format!("{float:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} exponent is an integer");
    let use_exponent = match style {
        // strconv's shortest `%g`: an exponent below 1e-4 and from 1e+06.
        FloatStyle::Print => !(-4..6).contains(&exponent),
        FloatStyle::Json => float.abs() < 1e-6 || float.abs() >= 1e21,
    };
    if !use_exponent {
        return format!("{float}");
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    match style {
        FloatStyle::Print => format!("{mantissa}e{sign}{:02}", exponent.abs()),
        FloatStyle::Json => format!("{mantissa}e{sign}{}", exponent.abs()),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON (Ollama's `json` helper: Go's `json.Marshal`)

/// Encodes like Go's `encoding/json`: compact, map keys sorted, struct fields in order under
/// their JSON names, and `<`, `>`, `&` escaped as `\u003c`, `\u003e`, `\u0026`.
pub(super) fn json(value: &Value) -> String {
    let mut out = String::new();
    write_json(value, &mut out);
    out
}

fn write_json(value: &Value, out: &mut String) {
    if let Some(object) = value.downcast_object_ref::<GoStruct>() {
        out.push('{');
        let mut first = true;
        for field in &object.fields {
            if field.omit_empty && is_empty(&field.value) {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            write_json_string(field.json, out);
            out.push(':');
            write_json(&field.value, out);
        }
        out.push('}');
        return;
    }
    let value = unwrap(value);
    match value.kind() {
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&format_number(&value, FloatStyle::Json)),
        ValueKind::String => write_json_string(value.as_str().unwrap_or_default(), out),
        ValueKind::Map => {
            out.push('{');
            for (index, (key, item)) in sorted_entries(&value).iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                let key = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
                write_json_string(&key, out);
                out.push(':');
                write_json(item, out);
            }
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (index, item) in value.try_iter().into_iter().flatten().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_json(&item, out);
            }
            out.push(']');
        }
        // nil, undefined
        _ => out.push_str("null"),
    }
}

/// Go's `isEmptyValue`, for `omitempty`.
fn is_empty(value: &Value) -> bool {
    if value.downcast_object_ref::<GoStruct>().is_some() {
        return false;
    }
    let value = unwrap(value);
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => true,
        ValueKind::Bool | ValueKind::Number | ValueKind::String => !value.is_true(),
        _ => value.len() == Some(0),
    }
}

fn write_json_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\0'..='\u{1f}' => {
                write!(out, "\\u{:04x}", u32::from(c)).expect("writing to a String");
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------------
// Functions

/// `range` over a value: `[key, element]` pairs — indexes of a list, sorted keys of a map,
/// `0..n` for an integer (Go 1.22, at most [`limits::MAX_RANGE`]); nothing for nil.
fn go_range(value: &Value) -> Result<Value, Error> {
    let value = unwrap(value);
    if let Some(object) = value.downcast_object_ref::<GoStruct>() {
        return Err(error(format!(
            "range can't iterate over {}",
            object.type_name
        )));
    }
    let pairs: Vec<Value> = match value.kind() {
        ValueKind::Undefined | ValueKind::None => Vec::new(),
        ValueKind::Map => sorted_entries(&value)
            .into_iter()
            .map(|(key, item)| Value::from(vec![key, item]))
            .collect(),
        ValueKind::Seq | ValueKind::Iterable => value
            .try_iter()?
            .enumerate()
            .map(|(index, item)| Value::from(vec![Value::from(index), item]))
            .collect(),
        ValueKind::Number if value.is_integer() => {
            let count = i64::try_from(value.clone()).unwrap_or(i64::MAX).max(0);
            if count > limits::MAX_RANGE as i64 {
                return Err(error(format!(
                    "range over {count}: the limit is {} iterations",
                    limits::MAX_RANGE
                )));
            }
            (0..count)
                .map(|i| Value::from(vec![Value::from(i), Value::from(i)]))
                .collect()
        }
        _ => {
            return Err(error(format!(
                "range can't iterate over {}",
                go_text(&value)
            )));
        }
    };
    Ok(Value::from(pairs))
}

/// `eq a b c…`: whether `a` equals any of the others.
fn eq(first: &Value, Rest(others): Rest<Value>) -> Result<bool, Error> {
    if others.is_empty() {
        return Err(error("missing argument for comparison"));
    }
    Ok(others.iter().any(|other| equal(first, other)))
}

fn ne(a: &Value, b: &Value) -> bool {
    !equal(a, b)
}

fn equal(a: &Value, b: &Value) -> bool {
    // Go compares a nil value with nil as equal; minijinja's undefined is Go's missing value.
    let nil = |v: &Value| v.is_undefined() || v.is_none();
    if nil(a) || nil(b) {
        return nil(a) && nil(b);
    }
    unwrap(a) == unwrap(b)
}

/// `lt`, `le`, `gt`, `ge`: numbers with numbers, strings with strings.
fn compare(a: &Value, b: &Value, name: &str) -> Result<std::cmp::Ordering, Error> {
    match (a.kind(), b.kind()) {
        (ValueKind::Number, ValueKind::Number) | (ValueKind::String, ValueKind::String) => a
            .partial_cmp(b)
            .ok_or_else(|| error(format!("{name}: values cannot be ordered"))),
        _ => Err(error(format!(
            "{name}: incompatible types for comparison ({} and {})",
            type_name(a),
            type_name(b)
        ))),
    }
}

/// `len`: bytes of a string (as Go counts them), items of a list or map.
fn len(value: &Value) -> Result<usize, Error> {
    let inner = unwrap(value);
    match inner.kind() {
        ValueKind::String => Ok(inner.as_str().unwrap_or_default().len()),
        ValueKind::Undefined | ValueKind::None => Ok(0),
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
            if value.downcast_object_ref::<GoStruct>().is_none() =>
        {
            inner
                .len()
                .ok_or_else(|| error(format!("len of {}", type_name(value))))
        }
        _ => Err(error(format!("len of type {}", type_name(value)))),
    }
}

fn as_index(value: &Value, what: &str) -> Result<usize, Error> {
    i64::try_from(value.clone())
        .ok()
        .filter(|_| value.is_integer())
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| error(format!("{what}: invalid index {}", go_text(value))))
}

/// `index x k1 k2…`: `x[k1][k2]…`; a missing map key gives nil, as Go gives the zero value.
fn index(item: &Value, Rest(keys): Rest<Value>) -> Result<Value, Error> {
    let mut item = item.clone();
    for key in &keys {
        let inner = unwrap(&item);
        item = match inner.kind() {
            ValueKind::Map => inner
                .get_item(key)
                .ok()
                .filter(|item| !item.is_undefined())
                .unwrap_or(Value::from(())),
            ValueKind::Seq | ValueKind::Iterable => {
                let at = as_index(key, "index")?;
                let length = inner.len().unwrap_or(0);
                if at >= length {
                    return Err(error(format!("index out of range: {at}")));
                }
                inner.get_item(&Value::from(at))?
            }
            ValueKind::String => {
                let bytes = inner.as_str().unwrap_or_default().as_bytes();
                let at = as_index(key, "index")?;
                let byte = bytes
                    .get(at)
                    .ok_or_else(|| error(format!("index out of range: {at}")))?;
                Value::from(*byte)
            }
            ValueKind::Undefined | ValueKind::None => {
                return Err(error("index of untyped nil"));
            }
            _ => {
                return Err(error(format!(
                    "can't index item of type {}",
                    type_name(&item)
                )));
            }
        };
    }
    Ok(item)
}

/// `slice x i j`: `x[i:j]` of a list or (by bytes) a string.
fn slice(item: &Value, Rest(bounds): Rest<Value>) -> Result<Value, Error> {
    let inner = unwrap(item);
    if bounds.len() > 3 {
        return Err(error(format!("too many slice indexes: {}", bounds.len())));
    }
    let length = match inner.kind() {
        ValueKind::String => {
            if bounds.len() == 3 {
                return Err(error("cannot 3-index slice a string"));
            }
            inner.as_str().unwrap_or_default().len()
        }
        ValueKind::Seq | ValueKind::Iterable => inner.len().unwrap_or(0),
        ValueKind::Undefined | ValueKind::None => return Err(error("slice of untyped nil")),
        _ => {
            return Err(error(format!(
                "can't slice item of type {}",
                type_name(item)
            )));
        }
    };
    let start = bounds.first().map_or(Ok(0), |b| as_index(b, "slice"))?;
    let end = bounds.get(1).map_or(Ok(length), |b| as_index(b, "slice"))?;
    if start > end || end > length {
        return Err(error(format!(
            "slice index out of range: {start}:{end} of {length}"
        )));
    }
    if let Some(text) = inner.as_str() {
        return text
            .get(start..end)
            .map(Value::from)
            .ok_or_else(|| error("slice splits a UTF-8 character"));
    }
    let items: Vec<Value> = inner.try_iter()?.skip(start).take(end - start).collect();
    Ok(Value::from(items))
}

/// A string a function builds may not outgrow the prompt it would be printed into: checked
/// after each operand, so one call holds at most one operand beyond the limit.
fn check_length(function: &str, out: &str) -> Result<(), Error> {
    if out.len() > limits::MAX_PROMPT_BYTES {
        return Err(error(format!(
            "{function}: the result is larger than {}, the limit",
            limits::bytes(limits::MAX_PROMPT_BYTES)
        )));
    }
    Ok(())
}

/// `print`: operands joined, with a space between two operands when neither is a string.
fn print(Rest(values): Rest<Value>) -> Result<String, Error> {
    let mut out = String::new();
    let mut previous_string = true;
    for (position, value) in values.iter().enumerate() {
        let string = value.kind() == ValueKind::String;
        if position > 0 && !string && !previous_string {
            out.push(' ');
        }
        format_value(value, &mut out);
        check_length("print", &out)?;
        previous_string = string;
    }
    Ok(out)
}

/// `println`: operands joined by spaces, then a newline.
fn println(Rest(values): Rest<Value>) -> Result<String, Error> {
    let mut out = String::new();
    for (position, value) in values.iter().enumerate() {
        if position > 0 {
            out.push(' ');
        }
        format_value(value, &mut out);
        check_length("println", &out)?;
    }
    out.push('\n');
    Ok(out)
}

/// One `%` directive of a `printf` format: flags, width, precision.
#[derive(Default)]
struct Directive {
    /// `-`: pad on the right; `0`: pad numbers with zeros.
    padding: Padding,
    /// `+`: always a sign; ` `: a space for positive numbers.
    sign: Sign,
    width: Option<usize>,
    precision: Option<usize>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Padding {
    #[default]
    Left,
    Right,
    Zeros,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Sign {
    #[default]
    Negative,
    Always,
    Space,
}

impl Directive {
    fn pad(&self, text: String, numeric: bool) -> String {
        let width = self.width.unwrap_or(0);
        let length = text.chars().count();
        if length >= width {
            return text;
        }
        let fill = width - length;
        match self.padding {
            Padding::Right => format!("{text}{}", " ".repeat(fill)),
            Padding::Zeros if numeric => {
                let (sign, digits) = match text.strip_prefix(['-', '+', ' ']) {
                    Some(digits) => (&text[..1], digits),
                    None => ("", text.as_str()),
                };
                format!("{sign}{}{digits}", "0".repeat(fill))
            }
            _ => format!("{}{text}", " ".repeat(fill)),
        }
    }

    fn signed(&self, text: String) -> String {
        match self.sign {
            _ if text.starts_with('-') => text,
            Sign::Always => format!("+{text}"),
            Sign::Space => format!(" {text}"),
            Sign::Negative => text,
        }
    }
}

/// `printf`: Go's verbs `%v %s %d %q %t %f %e %g %x %X %c %%` with flags, width (at most
/// [`limits::MAX_WIDTH`]) and precision (at most [`limits::MAX_PRECISION`]). A missing operand,
/// an extra one, an unknown verb or a width over the limit is an error.
fn printf(format: &str, Rest(values): Rest<Value>) -> Result<String, Error> {
    let mut out = String::new();
    let mut operands = values.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut directive = Directive::default();
        while let Some(&flag) = chars.peek() {
            match flag {
                '-' => directive.padding = Padding::Right,
                '0' if directive.padding == Padding::Left => directive.padding = Padding::Zeros,
                '+' => directive.sign = Sign::Always,
                ' ' if directive.sign == Sign::Negative => directive.sign = Sign::Space,
                '0' | ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        // A width or precision is digits, or `*` for the next operand (an integer); either
        // is held to its limit before anything is padded.
        let mut number =
            |chars: &mut std::iter::Peekable<std::str::Chars>, what: &str, limit: usize| {
                let too_large = |text: &str| {
                    error(format!(
                        "printf: {what} {text} is over the limit of {limit}"
                    ))
                };
                if chars.peek() == Some(&'*') {
                    chars.next();
                    let operand = operands
                        .next()
                        .ok_or_else(|| error("printf: missing operand for *"))?;
                    let count = i64::try_from(operand.clone())
                        .ok()
                        .filter(|_| operand.is_integer())
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| error(format!("printf: bad {what} {}", go_text(operand))))?;
                    if count > limit {
                        return Err(too_large(&count.to_string()));
                    }
                    return Ok(Some(count));
                }
                let mut digits = String::new();
                while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(d);
                    chars.next();
                }
                if digits.is_empty() {
                    return Ok(None);
                }
                match digits.parse::<usize>() {
                    Ok(count) if count <= limit => Ok(Some(count)),
                    _ => Err(too_large(&digits)),
                }
            };
        directive.width = number(&mut chars, "width", limits::MAX_WIDTH)?;
        if chars.peek() == Some(&'.') {
            chars.next();
            directive.precision =
                Some(number(&mut chars, "precision", limits::MAX_PRECISION)?.unwrap_or(0));
        }
        let verb = chars
            .next()
            .ok_or_else(|| error("printf: format ends in the middle of a directive"))?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let value = operands
            .next()
            .ok_or_else(|| error(format!("printf: missing operand for %{verb}")))?;
        out.push_str(&format_directive(&directive, verb, value)?);
        check_length("printf", &out)?;
    }
    if operands.next().is_some() {
        return Err(error(format!("printf: too many operands for {format:?}")));
    }
    Ok(out)
}

fn format_directive(directive: &Directive, verb: char, value: &Value) -> Result<String, Error> {
    let mismatch = || {
        error(format!(
            "printf: %{verb} cannot format a {} ({})",
            type_name(value),
            go_text(value)
        ))
    };
    let float = || -> Option<f64> {
        (value.kind() == ValueKind::Number)
            .then(|| f64::try_from(value.clone()).ok())
            .flatten()
    };
    let integer = || -> Option<i64> {
        (value.kind() == ValueKind::Number)
            .then(|| i64::try_from(value.clone()).ok())
            .flatten()
            .filter(|i| float().is_some_and(|f| (*i as f64 - f).abs() < f64::EPSILON))
    };
    let text = match verb {
        'v' | 's' => {
            let mut text = String::new();
            format_value(value, &mut text);
            if let Some(precision) = directive.precision {
                text = text.chars().take(precision).collect();
            }
            return Ok(directive.pad(text, false));
        }
        'q' => {
            let text = value.as_str().ok_or_else(mismatch)?;
            return Ok(directive.pad(quote(text), false));
        }
        't' if value.kind() == ValueKind::Bool => {
            return Ok(directive.pad(value.is_true().to_string(), false));
        }
        'c' => {
            let code = integer()
                .and_then(|i| u32::try_from(i).ok())
                .and_then(char::from_u32)
                .ok_or_else(mismatch)?;
            return Ok(directive.pad(code.to_string(), false));
        }
        'd' => directive.signed(integer().ok_or_else(mismatch)?.to_string()),
        'x' | 'X' => {
            let text = match (integer(), value.as_str()) {
                (Some(i), _) if i < 0 => format!("-{:x}", i.unsigned_abs()),
                (Some(i), _) => format!("{i:x}"),
                (None, Some(text)) => text.bytes().fold(String::new(), |mut hex, b| {
                    write!(hex, "{b:02x}").expect("writing to a String");
                    hex
                }),
                (None, None) => return Err(mismatch()),
            };
            let text = if verb == 'X' {
                text.to_uppercase()
            } else {
                text
            };
            directive.signed(text)
        }
        'f' | 'F' => {
            let precision = directive.precision.unwrap_or(6);
            directive.signed(format!("{:.precision$}", float().ok_or_else(mismatch)?))
        }
        'e' => {
            let precision = directive.precision.unwrap_or(6);
            let scientific = format!("{:.precision$e}", float().ok_or_else(mismatch)?);
            let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
            let exponent: i32 = exponent.parse().expect("{:e} exponent is an integer");
            let sign = if exponent < 0 { '-' } else { '+' };
            directive.signed(format!("{mantissa}e{sign}{:02}", exponent.abs()))
        }
        'g' if directive.precision.is_none() => directive.signed(format_float(
            float().ok_or_else(mismatch)?,
            FloatStyle::Print,
        )),
        other => {
            return Err(error(format!(
                "printf: unsupported directive %{other} (supported: %v %s %d %q %t %f %e %g %x %X %c %%)"
            )));
        }
    };
    Ok(directive.pad(text, true))
}

/// Go's `strconv.Quote`.
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                write!(out, "\\x{:02x}", u32::from(c)).expect("writing to a String");
            }
            c if c.is_control() => {
                write!(out, "\\u{:04x}", u32::from(c)).expect("writing to a String");
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `currentDate` / `yesterdayDate`: `YYYY-MM-DD`, `days_ago` days before now (Ollama ignores
/// their format argument).
fn date(state: &State, days_ago: u8) -> Result<String, Error> {
    let now = f64::try_from(minijinja_contrib::globals::now())?;
    let then = now - f64::from(days_ago) * 86_400.0;
    let kwargs = minijinja::value::Kwargs::from_iter([("format", Value::from("%Y-%m-%d"))]);
    minijinja_contrib::filters::datetimeformat(state, Value::from(then), kwargs)
}

/// `toTypeScriptType`: a tool parameter's JSON-schema type as TypeScript (Ollama's
/// `ToolProperty.ToTypeScriptType`); `any` for anything that is not a parameter.
fn typescript_type(value: &Value) -> String {
    let Some(property) = value.downcast_object_ref::<GoStruct>() else {
        return "any".to_owned();
    };
    if property.type_name != "ToolProperty" {
        return "any".to_owned();
    }
    let field = |name: &str| {
        property
            .fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value.clone())
            .unwrap_or_default()
    };
    let any_of: Vec<Value> = field("AnyOf").try_iter().into_iter().flatten().collect();
    if !any_of.is_empty() {
        return any_of
            .iter()
            .map(typescript_type)
            .collect::<Vec<_>>()
            .join(" | ");
    }
    let kind = field("Type");
    let names: Vec<String> = match kind.as_str() {
        Some(single) => vec![single.to_owned()],
        None => kind
            .try_iter()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
    };
    if names.is_empty() {
        return "any".to_owned();
    }
    names
        .iter()
        .map(|name| match name.as_str() {
            "string" => "string",
            "number" | "integer" => "number",
            "boolean" => "boolean",
            "array" => "any[]",
            "object" => "Record<string, any>",
            "null" => "null",
            _ => "any",
        })
        .collect::<Vec<_>>()
        .join(" | ")
}
