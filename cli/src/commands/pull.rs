//! `whale pull [--from ADDRESS] MODEL`: downloads a model through whaled, drawing its progress.
//! `whale run` calls [`pull`] too when the model is not there yet.

use futures::{Stream, StreamExt as _};
use whale_api::Client;

use crate::cli::PullArgs;
use crate::commands::Context;
use crate::error::Error;
use crate::render::Style;
use crate::render::progress::{Progress, Update};

pub async fn run(args: &PullArgs, context: &Context) -> Result<(), Error> {
    let client = context.client().await?;
    let source = Source {
        insecure: args.transfer.insecure,
        from: args.from.as_deref(),
        force: args.force,
    };
    pull(&client, &args.transfer.model, source, context.style).await
}

/// Where a pull fetches from: the name's registry (over plain http when `insecure`), or
/// another whale; `force` downloads a model that will not fit this machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Source<'a> {
    pub insecure: bool,
    pub from: Option<&'a str>,
    pub force: bool,
}

/// Pulls `model` and renders the daemon's progress until `success` or an error. What the
/// daemon or the registry refused is an [`Error::Pull`], whose hint is about the name.
pub async fn pull(
    client: &Client,
    model: &str,
    source: Source<'_>,
    style: Style,
) -> Result<(), Error> {
    let request = whale_api::PullRequest {
        model: model.to_owned(),
        insecure: source.insecure.then_some(true),
        stream: Some(true),
        from: source.from.map(str::to_owned),
        force: source.force.then_some(true),
    };
    let pulled = match client.pull_stream(&request).await {
        Ok(stream) => follow(stream, style).await,
        Err(error) => Err(error.into()),
    };
    pulled.map_err(|error| match error {
        Error::Daemon { .. } | Error::Api(whale_api::Error::Api { .. }) => Error::Pull {
            model: model.to_owned(),
            source: Box::new(error),
        },
        other => other,
    })
}

/// Draws a progress stream (`pull`, `push`, `create`) to its end.
pub async fn follow<S>(stream: S, style: Style) -> Result<(), Error>
where
    S: Stream<Item = Result<whale_api::ProgressResponse, whale_api::Error>>,
{
    let mut progress = Progress::new(style);
    let mut stream = std::pin::pin!(stream);
    while let Some(message) = stream.next().await {
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                progress.finish();
                return Err(error.into());
            }
        };
        progress.update(Update {
            status: &message.status,
            digest: message.digest.as_deref(),
            total: message.total,
            completed: message.completed,
        });
    }
    progress.finish();
    Ok(())
}
