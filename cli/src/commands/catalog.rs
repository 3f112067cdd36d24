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
                context_length(model.context_length),
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

/// A context length as model cards give it: `128K`, `1M`.
fn context_length(tokens: u32) -> String {
    const MI: u32 = 1 << 20;
    if tokens >= MI && tokens.is_multiple_of(MI) {
        format!("{}M", tokens / MI)
    } else {
        format!("{}K", tokens / 1024)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn context_lengths_read_as_model_cards_give_them() {
        assert_eq!(super::context_length(131_072), "128K");
        assert_eq!(super::context_length(163_840), "160K");
        assert_eq!(super::context_length(1_048_576), "1M");
    }
}
