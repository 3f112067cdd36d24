//! `whale catalog` (`whale list --available`): the catalogue as a table `NAME  SIZE  ARCH
//! CONTEXT  FITS  PULLED`, or `--json`. FITS says whether the model's weights fit this
//! machine's memory as whaled counts it (RAM or `WHALE_MAX_MEMORY`, GPUs, workers).

use crate::cli::CatalogArgs;
use crate::commands::Context;
use crate::error::Error;
use crate::output;
use crate::render::{table, units};

pub async fn run(args: &CatalogArgs, context: &Context) -> Result<(), Error> {
    let client = context.client().await?;
    let mut catalog = client.catalog().await?;
    if let Some(prefix) = &args.filter {
        catalog
            .models
            .retain(|model| model.name.starts_with(prefix.as_str()));
    }
    if args.json {
        return output::json(&catalog);
    }
    let yes_no = |yes: bool| if yes { "yes" } else { "no" }.to_owned();
    let rows: Vec<Vec<String>> = catalog
        .models
        .iter()
        .map(|model| {
            vec![
                model.name.clone(),
                units::bytes(model.size),
                model.architecture.clone(),
                format!("{}K", model.context_length / 1024),
                yes_no(model.fits),
                yes_no(model.pulled),
            ]
        })
        .collect();
    output::data(&table::render(
        &["NAME", "SIZE", "ARCH", "CONTEXT", "FITS", "PULLED"],
        &rows,
    ))
}
