//! Bounds on the work a chat template may make whaled do.
//!
//! Templates come from places whale does not control: a GGUF's `tokenizer.chat_template`, a
//! Modelfile or registry `TEMPLATE`, the `template` field of an `/api/generate` request. They
//! compile and render inside the daemon, so without bounds one `{{ printf "%999999999999d" 1 }}`,
//! one loop over a huge range or one value nested a million levels deep would exhaust memory,
//! time or stack and take every loaded model down with the process. Each bound is far above what
//! a real chat template needs; crossing one is a template error that names it (HTTP 400).
//!
//! What enforces what:
//! - the source: [`check_source`] ([`MAX_TEMPLATE_BYTES`], [`MAX_TAG_CODE`]) before minijinja
//!   compiles it, because minijinja's parser and compiler recurse on, and slow down with, long
//!   operator chains that its own nesting limit does not count; Go templates also have
//!   [`MAX_NESTING`] in their parser;
//! - the render: minijinja's fuel ([`FUEL`]) and recursion limit, and [`render`]'s cap on the
//!   prompt ([`MAX_PROMPT_BYTES`]);
//! - the functions whale adds (Go's `printf`, `print`, `range`; Jinja's `tojson` and
//!   `str.format`) check their sizes ([`MAX_WIDTH`], [`MAX_PRECISION`], [`MAX_RANGE`]) before they
//!   allocate, because minijinja charges fuel for what a function returns only once it exists;
//! - the stack: [`on_render_thread`] compiles and renders on a thread with [`RENDER_STACK`],
//!   deep enough for the deepest value [`FUEL`] lets a template build (minijinja drops and prints
//!   nested values recursively, and a stack overflow aborts the process).

use std::io;

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind, Template};

/// Widest field a template may ask for: a Go `printf` width (`%*d` included), a Jinja
/// `str.format` width and a `tojson` indent, in characters. Go's own `fmt` refuses widths above
/// 10^6; real templates pad to a few dozen columns.
pub const MAX_WIDTH: usize = 4096;

/// Largest Go `printf` or Jinja `str.format` precision. (Rust's formatter panics above 65535.)
pub const MAX_PRECISION: usize = 4096;

/// Largest prompt one render may produce, and largest string a Go template function may build,
/// in bytes. Requests are at most 32 MiB; the template adds turn markers around them.
pub const MAX_PROMPT_BYTES: usize = 64 << 20;

/// Work budget of one render (and of one compile's probe render), in minijinja fuel: about one
/// per instruction, or per 64 bytes of data made or written. A DeepSeek template renders a
/// thousand-message conversation with fifty tools for under 100 000; a runaway loop stops within
/// about a second (a few seconds for the costliest operations, such as copying long lists).
pub const FUEL: u64 = 4_000_000;

/// Largest template source, in bytes. Real chat templates are a few KiB; the largest GGUF ones,
/// with long tool instructions, stay under 100 KiB.
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;

/// Most code one tag (`{{ … }}`, `{% … %}`) may hold outside its string literals, in bytes. An
/// expression chaining thousands of `~`, `|`, `.` or `+` compiles into a tree that minijinja
/// walks recursively and, for `~`, in quadratic time; real tags hold a few hundred bytes.
pub const MAX_TAG_CODE: usize = 4096;

/// Most iterations of a Go `{{ range N }}` over an integer (minijinja's `range()` has the same
/// cap): the list of indexes is built before the loop runs.
pub const MAX_RANGE: usize = 100_000;

/// Deepest value Jinja's `tojson` writes (Python's `json` gives up near 1000 levels too).
pub const MAX_JSON_DEPTH: usize = 512;

/// Deepest nesting of Go template blocks (`if`, `with`, `range`, `else if`) and parentheses.
/// The parser and the translation recurse on it, and minijinja refuses more than 150 levels of
/// its own, so a Go template this deep still fits once translated.
pub const MAX_NESTING: usize = 100;

/// Stack of the thread templates compile and render on. [`FUEL`] lets a template nest a value
/// (`{% set ns.x = [ns.x] %}` in a loop) about 500 000 levels deep, which minijinja prints with
/// about 400 bytes of stack per level; the memory is reserved, and only what a render touches is
/// used.
pub const RENDER_STACK: usize = 512 << 20;

/// Sets the bounds minijinja enforces itself on an environment that renders chat templates.
pub(super) fn apply(env: &mut Environment<'static>) {
    env.set_fuel(Some(FUEL));
}

/// `64 MiB`, `4 KiB`, `100 bytes`: byte counts in limit messages.
pub(super) fn bytes(count: usize) -> String {
    if count >= 1 << 20 && count.is_multiple_of(1 << 20) {
        format!("{} MiB", count >> 20)
    } else if count >= 1 << 10 && count.is_multiple_of(1 << 10) {
        format!("{} KiB", count >> 10)
    } else {
        format!("{count} bytes")
    }
}

/// Checks a Jinja source against [`MAX_TEMPLATE_BYTES`] and [`MAX_TAG_CODE`]; the error names
/// the limit and the line. Tags are delimited as minijinja's lexer delimits them: strings and
/// brackets may hold the closing delimiter, comments and raw blocks are skipped.
pub(super) fn check_source(source: &str) -> Result<(), String> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(format!(
            "the template is {} bytes long; the limit is {}",
            source.len(),
            bytes(MAX_TEMPLATE_BYTES)
        ));
    }
    check_tags(source)
}

/// [`check_source`]'s check of each tag, alone: a Go template's translation is longer than the
/// source whose size was checked.
pub(super) fn check_tags(source: &str) -> Result<(), String> {
    let mut at = 0;
    while let Some(found) = source[at..].find('{') {
        let open = at + found;
        let inner = open + 2;
        at = match source.as_bytes().get(open + 1) {
            Some(b'#') => source[inner..]
                .find("#}")
                .map_or(source.len(), |end| inner + end + 2),
            Some(b'%') if let Some(length) = keyword_tag(&source[inner..], "raw") => {
                end_of_raw(source, inner + length)
            }
            Some(b'{' | b'%') => {
                let close = if source.as_bytes()[open + 1] == b'{' {
                    "}}"
                } else {
                    "%}"
                };
                let (end, code) = scan_tag(source, inner, close);
                if code > MAX_TAG_CODE {
                    let line = source[..open].matches('\n').count() + 1;
                    return Err(format!(
                        "line {line}: a tag holds {code} bytes of code outside its strings; the \
                         limit is {}",
                        bytes(MAX_TAG_CODE)
                    ));
                }
                end
            }
            _ => open + 1,
        };
    }
    Ok(())
}

/// The length of `{% word %}` after its `{%` (with `-`/`+` whitespace markers), if `after` holds
/// that tag.
fn keyword_tag(after: &str, word: &str) -> Option<usize> {
    let rest = after.strip_prefix(['-', '+']).unwrap_or(after).trim_start();
    let rest = rest.strip_prefix(word)?;
    if rest.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let rest = rest.trim_start();
    let rest = rest.strip_prefix(['-', '+']).unwrap_or(rest);
    let rest = rest.strip_prefix("%}")?;
    Some(after.len() - rest.len())
}

/// The offset after the `{% endraw %}` that closes a raw block whose text starts at `start`.
fn end_of_raw(source: &str, start: usize) -> usize {
    let mut at = start;
    while let Some(found) = source[at..].find("{%") {
        let inner = at + found + 2;
        if let Some(length) = keyword_tag(&source[inner..], "endraw") {
            return inner + length;
        }
        at = inner;
    }
    source.len()
}

/// Scans a tag from `start` (after its opening delimiter) to `close` at bracket depth zero,
/// skipping string literals. Returns the offset after the tag and the bytes of code outside
/// strings.
fn scan_tag(source: &str, start: usize, close: &str) -> (usize, usize) {
    let bytes = source.as_bytes();
    let mut at = start;
    let mut code = 0;
    let mut depth = 0i64;
    let mut quote: Option<u8> = None;
    while at < bytes.len() {
        let byte = bytes[at];
        match quote {
            Some(_) if byte == b'\\' => at += 1,
            Some(q) if byte == q => quote = None,
            Some(_) => {}
            None if depth == 0 && bytes[at..].starts_with(close.as_bytes()) => {
                return (at + close.len(), code);
            }
            None => {
                match byte {
                    b'"' | b'\'' => quote = Some(byte),
                    b'(' | b'[' | b'{' => depth += 1,
                    b')' | b']' | b'}' => depth -= 1,
                    _ => {}
                }
                code += 1;
            }
        }
        at += 1;
    }
    (bytes.len(), code)
}

/// Renders `template` into a prompt of at most [`MAX_PROMPT_BYTES`]. Running out of fuel or
/// room is an error that names the limit.
pub(super) fn render(template: &Template<'_, '_>, context: Value) -> Result<String, Error> {
    let mut out = Bounded::default();
    match template.render_captured_to(context, &mut out) {
        Ok(_) => Ok(String::from_utf8(out.text).expect("minijinja writes whole strings")),
        Err(_) if out.overflowed => {
            Err(Error::new(ErrorKind::InvalidOperation, prompt_too_large()))
        }
        Err(error) if error.kind() == ErrorKind::OutOfFuel => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "the template does more work than the limit of {FUEL} fuel (about one per step or per 64 bytes it makes) allows"
            ),
        )),
        Err(error) => Err(error),
    }
}

/// The message of a prompt over [`MAX_PROMPT_BYTES`].
pub(super) fn prompt_too_large() -> String {
    format!(
        "the rendered prompt is larger than {}, the limit",
        bytes(MAX_PROMPT_BYTES)
    )
}

/// Output that refuses to grow past [`MAX_PROMPT_BYTES`].
#[derive(Default)]
struct Bounded {
    text: Vec<u8>,
    overflowed: bool,
}

impl io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.text.len() + buf.len() > MAX_PROMPT_BYTES {
            self.overflowed = true;
            return Err(io::Error::other("the prompt is too large"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `work` (a compile or a render) on a thread with [`RENDER_STACK`] and waits for it. A
/// panic in `work` resumes on the caller's thread; a thread the system refuses is an error.
pub(super) fn on_render_thread<T: Send>(
    work: impl FnOnce() -> Result<T, String> + Send,
) -> Result<T, String> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("chat-template".to_owned())
            .stack_size(RENDER_STACK)
            .spawn_scoped(scope, work)
            .map_err(|error| format!("cannot start a thread to render the template: {error}"))?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_within_the_limits_pass() {
        for source in [
            "{{ messages[0]['content'] }}",
            "{% raw %}{{ 1 ~ 1 ~ 1 }}{% endraw %}",
            "{# a comment with {{ and %} #}{{ 'a string with }} and %} inside' }}",
            &format!("{{{{ '{}' }}}}", "long string ".repeat(10_000)),
            &format!(
                "{{% raw %}}{{{{ {} }}}}{{% endraw %}}",
                "1 ~ ".repeat(5_000)
            ),
        ] {
            assert_eq!(check_source(source), Ok(()), "{source:.80}");
        }
    }

    #[test]
    fn long_tags_and_sources_are_refused_with_the_limit() {
        let chain = format!("a\nb\n{{{{ 1{} }}}}", " ~ 1".repeat(2_000));
        let error = check_source(&chain).unwrap_err();
        assert!(
            error.contains("line 3") && error.contains("4 KiB"),
            "{error}"
        );
        let filters = format!("{{% if x{} %}}{{% endif %}}", "|list".repeat(1_000));
        assert!(check_source(&filters).unwrap_err().contains("4 KiB"));
        let huge = "x".repeat(MAX_TEMPLATE_BYTES + 1);
        assert!(check_source(&huge).unwrap_err().contains("1 MiB"));
        // An unclosed tag runs to the end of the source, and still counts.
        let unclosed = format!("{{{{ {}", "x.".repeat(3_000));
        assert!(check_source(&unclosed).is_err());
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(4096), "4 KiB");
        assert_eq!(bytes(100), "100 bytes");
    }
}
