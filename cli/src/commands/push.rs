//! `whale push MODEL`: uploads a model to its registry through whaled, drawing its progress.

use crate::cli::TransferArgs;
use crate::commands::Context;
use crate::commands::pull::follow;
use crate::error::{Error, not_found};

pub async fn run(args: &TransferArgs, context: &Context) -> Result<(), Error> {
    let client = context.client().await?;
    let request = whale_api::PushRequest {
        model: args.model.clone(),
        insecure: args.insecure.then_some(true),
        stream: Some(true),
        from: None,
        force: None,
    };
    let stream = client
        .push_stream(&request)
        .await
        .map_err(|error| not_found(error, &args.model))?;
    follow(stream, context.style).await
}
