//! `whale run MODEL [PROMPT...]`: pulls the model if it is not there, then answers one prompt
//! (from the arguments and/or piped stdin) or, on a terminal without a prompt, starts the REPL.

use std::io::{IsTerminal as _, Read as _};

use serde_json::Value;
use whale_api::Client;

use crate::cli::RunArgs;
use crate::commands::Context;
use crate::commands::pull::{self, pull};
use crate::conversation::{Conversation, Outcome, parse_format, parse_keep_alive};
use crate::error::{Error, not_found};
use crate::output;
use crate::render::Style;

pub async fn run(args: RunArgs, context: &Context) -> Result<(), Error> {
    // Bad flags are usage errors before anything talks to the daemon.
    let conversation = Conversation {
        model: args.model.clone(),
        think: args.think,
        format: args.format.as_deref().map(parse_format).transpose()?,
        keep_alive: args
            .keepalive
            .as_deref()
            .map(parse_keep_alive)
            .transpose()?,
        hide_thinking: args.hidethinking,
        verbose: args.verbose,
        ..Conversation::default()
    };
    let client = context.client().await?;
    let show = ensure(&client, &args.model, args.insecure, context.style).await?;

    let interactive = std::io::stdin().is_terminal();
    let mut prompt = args.prompt.join(" ");
    if !interactive {
        let mut piped = String::new();
        std::io::stdin()
            .read_to_string(&mut piped)
            .map_err(|source| Error::Read {
                path: "stdin".into(),
                source,
            })?;
        prompt = [piped.as_str(), prompt.as_str()]
            .into_iter()
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
    }
    if interactive && prompt.is_empty() {
        return crate::repl::run(&client, conversation, context.style).await;
    }
    if capabilities(&show).any(|capability| capability == "embedding") {
        return embed(&client, &args.model, &prompt).await;
    }
    let mut conversation = conversation;
    if prompt.trim().is_empty() {
        return conversation.load(&client).await;
    }
    match conversation.turn(&client, &prompt, context.style).await? {
        Outcome::Answered => Ok(()),
        Outcome::Cancelled => Err(Error::Interrupted),
    }
}

/// Makes sure `model` is in the store — pulling it when the daemon does not know it — and
/// returns what `/api/show` says about it.
pub async fn ensure(
    client: &Client,
    model: &str,
    insecure: bool,
    style: Style,
) -> Result<Value, Error> {
    let request = whale_api::ShowRequest {
        model: model.to_owned(),
        verbose: None,
    };
    let response = match client
        .show(&request)
        .await
        .map_err(|error| not_found(error, model))
    {
        Err(Error::ModelNotFound { .. }) => {
            let source = pull::Source {
                insecure,
                from: None,
                force: false,
            };
            pull(client, model, source, style).await?;
            client
                .show(&request)
                .await
                .map_err(|error| not_found(error, model))?
        }
        other => other?,
    };
    Ok(serde_json::to_value(&response).map_err(std::io::Error::other)?)
}

/// The capabilities `/api/show` lists.
pub fn capabilities(show: &Value) -> impl Iterator<Item = &str> {
    show["capabilities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// An embedding model's answer: the vector as a JSON array on stdout.
async fn embed(client: &Client, model: &str, input: &str) -> Result<(), Error> {
    let request = whale_api::EmbedRequest {
        model: model.to_owned(),
        input: whale_api::EmbedInput::One(input.to_owned()),
        truncate: None,
        options: None,
        keep_alive: None,
        dimensions: None,
    };
    let response = client
        .embed(&request)
        .await
        .map_err(|error| not_found(error, model))?;
    match response.embeddings.first() {
        Some(vector) => output::json(vector),
        None => output::json(&Vec::<f32>::new()),
    }
}
