//! `whale list` (`ls`): local models as a table `NAME  ID  SIZE  MODIFIED`, or `--json`.

use crate::cli::ListArgs;
use crate::commands::Context;
use crate::error::Error;
use crate::output;
use crate::render::{table, units};

pub async fn run(args: &ListArgs, context: &Context) -> Result<(), Error> {
    let client = context.client().await?;
    let mut list = client.list().await?;
    if let Some(prefix) = &args.filter {
        list.models
            .retain(|model| model.name.starts_with(prefix.as_str()));
    }
    if args.json {
        return output::json(&list);
    }
    let now = jiff::Timestamp::now();
    let rows: Vec<Vec<String>> = list
        .models
        .iter()
        .map(|model| {
            vec![
                model.name.clone(),
                short_id(&model.digest),
                units::bytes(model.size),
                timestamp(&model.modified_at)
                    .map_or_else(String::new, |at| units::relative(at, now)),
            ]
        })
        .collect();
    output::data(&table::render(&["NAME", "ID", "SIZE", "MODIFIED"], &rows))
}

/// The ID column: the first 12 hex digits of the manifest digest (with or without `sha256:`).
pub fn short_id(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// An RFC 3339 time from the wire; Go's zero time and unparsable text are no time.
pub fn timestamp(text: &str) -> Option<jiff::Timestamp> {
    let at: jiff::Timestamp = text.parse().ok()?;
    (at.as_second() > 0).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_twelve_hex_digits() {
        let hex = "0a8c266910232fd3291e71e5ba1e058cc5af9d411192cf88b6d30e92b6e73163";
        assert_eq!(short_id(hex), "0a8c26691023");
        assert_eq!(short_id(&format!("sha256:{hex}")), "0a8c26691023");
    }

    #[test]
    fn timestamps() {
        assert!(timestamp("2026-11-28T10:00:00.123456789-07:00").is_some());
        assert!(timestamp("0001-01-01T00:00:00Z").is_none());
        assert!(timestamp("").is_none());
    }
}
