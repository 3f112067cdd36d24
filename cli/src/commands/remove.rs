//! `whale rm MODEL...`: unloads each model, then deletes it (the daemon removes blobs no other
//! model uses). Stops at the first model that cannot be removed.

use crate::commands::Context;
use crate::commands::stop::unload;
use crate::error::{Error, not_found};
use crate::output;

pub async fn run(models: &[String], context: &Context) -> Result<(), Error> {
    let client = context.client().await?;
    for model in models {
        // A model that is not loaded (or not there) is not an error yet: delete says which.
        let _ = unload(&client, model).await;
        let request = whale_api::DeleteRequest {
            model: model.clone(),
        };
        client
            .delete(&request)
            .await
            .map_err(|error| not_found(error, model))?;
        output::note(&format!("deleted '{model}'"));
    }
    Ok(())
}
