//! `whale cp SRC DST`: gives a model a second name (the daemon copies the manifest; blobs are
//! shared).

use crate::cli::CopyArgs;
use crate::commands::Context;
use crate::error::{Error, not_found};
use crate::output;

pub async fn run(args: &CopyArgs, context: &Context) -> Result<(), Error> {
    let client = context.client().await?;
    let request = whale_api::CopyRequest {
        source: args.source.clone(),
        destination: args.destination.clone(),
    };
    client
        .copy(&request)
        .await
        .map_err(|error| not_found(error, &args.source))?;
    output::note(&format!(
        "copied '{}' to '{}'",
        args.source, args.destination
    ));
    Ok(())
}
