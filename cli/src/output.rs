//! Writing to the terminal by the rule of style 13: data (tables, JSON, answers) to stdout,
//! notes and warnings to stderr. Write errors on stdout surface as [`Error::Output`], which
//! `main` turns into a quiet exit for a broken pipe (`whale list | head -1`).

use std::io::Write as _;

use serde::Serialize;

use crate::error::Error;

/// Writes data to stdout and flushes it.
pub fn data(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Writes `value` as pretty JSON and a newline to stdout (`--json`).
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    data(&text)
}

/// A note for the person at the terminal, on stderr (never fails the command).
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}
