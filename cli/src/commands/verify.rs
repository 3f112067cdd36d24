//! `whale verify [--repair]`: whaled re-hashes every blob of its store and checks that every
//! model has its blobs; this prints what it found and fails when the store is damaged.

use std::fmt::Write as _;

use crate::cli::VerifyArgs;
use crate::commands::Context;
use crate::error::Error;
use crate::output;
use crate::render::units;

pub async fn run(args: &VerifyArgs, context: &Context) -> Result<(), Error> {
    let client = context.client().await?;
    output::note("verifying every blob of the store (this reads all of it)");
    let report = client
        .verify(&whale_api::VerifyRequest {
            repair: args.repair,
        })
        .await?;
    if args.json {
        output::json(&report)?;
    } else {
        output::data(&describe(&report, args.repair))?;
    }
    if report.status == "ok" {
        return Ok(());
    }
    let mut models: Vec<&str> = report.missing.iter().map(|m| m.model.as_str()).collect();
    models.dedup();
    let summary = [
        (report.corrupt.len(), "corrupt blob"),
        (report.missing.len(), "missing blob"),
        (report.invalid_manifests.len(), "unreadable manifest"),
    ]
    .iter()
    .filter(|(count, _)| *count > 0)
    .map(|(count, what)| format!("{count} {what}{}", if *count == 1 { "" } else { "s" }))
    .collect::<Vec<_>>()
    .join(", ");
    Err(Error::Damaged {
        summary,
        repaired: args.repair,
    })
}

/// The report as lines for a person.
fn describe(report: &whale_api::VerifyResponse, repair: bool) -> String {
    let mut text = format!(
        "verified {} blobs ({})\n",
        report.blobs,
        units::bytes(report.bytes)
    );
    for digest in &report.corrupt {
        let fate = if repair { " (removed)" } else { "" };
        let _ = writeln!(text, "corrupt: {digest}{fate}");
    }
    for missing in &report.missing {
        let _ = writeln!(text, "missing: {} needs {}", missing.model, missing.digest);
    }
    for path in &report.invalid_manifests {
        let _ = writeln!(text, "unreadable manifest: {path}");
    }
    for path in &report.leftovers {
        let _ = writeln!(text, "leftover: {path} (a download that may resume)");
    }
    if report.status == "ok" {
        text.push_str("every model is whole\n");
    }
    text
}
