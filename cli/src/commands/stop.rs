//! `whale stop MODEL`: unloads a model now — an empty generate with `keep_alive: 0`, which
//! does nothing when the model is not loaded.

use whale_api::Client;

use crate::commands::Context;
use crate::error::{Error, not_found};

pub async fn run(model: &str, context: &Context) -> Result<(), Error> {
    let client = context.client().await?;
    unload(&client, model).await
}

/// Asks the daemon to unload `model`.
pub async fn unload(client: &Client, model: &str) -> Result<(), Error> {
    let request = whale_api::GenerateRequest {
        model: model.to_owned(),
        prompt: String::new(),
        keep_alive: Some(whale_api::KeepAlive::For(std::time::Duration::ZERO)),
        stream: Some(false),
        ..Default::default()
    };
    client
        .generate(&request)
        .await
        .map_err(|error| not_found(error, model))?;
    Ok(())
}
