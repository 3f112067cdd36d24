//! One module per `whale` command; [`dispatch`] routes a parsed command line to it.

pub mod catalog;
pub mod completion;
pub mod copy;
pub mod create;
pub mod list;
pub mod ps;
pub mod pull;
pub mod push;
pub mod remove;
pub mod run;
pub mod serve;
pub mod show;
pub mod stop;
pub mod verify;
pub mod version;

use crate::cli::{Cli, Command};
use crate::error::Error;
use crate::render::Style;

/// What every command may need: how to draw, and a way to reach the daemon.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub style: Style,
}

impl Context {
    /// A client for whaled, which is started first when needed (see [`crate::daemon`]).
    pub async fn client(&self) -> Result<whale_api::Client, Error> {
        crate::daemon::connect().await
    }
}

/// Runs the command `cli` names.
pub async fn dispatch(cli: Cli) -> Result<(), Error> {
    let context = Context {
        style: Style::detect(),
    };
    if cli.version {
        return version::run().await;
    }
    let Some(command) = cli.command else {
        return Err(Error::Usage(
            "a command is required; see 'whale --help'".into(),
        ));
    };
    match command {
        Command::Serve(args) => serve::run(None, &args),
        Command::Worker(args) => serve::run(Some("worker"), &args),
        Command::Create(args) => create::run(args, &context).await,
        Command::Show(args) => show::run(args, &context).await,
        Command::Run(args) => run::run(args, &context).await,
        Command::Stop(args) => stop::run(&args.model, &context).await,
        Command::Pull(args) => pull::run(&args, &context).await,
        Command::Push(args) => push::run(&args, &context).await,
        Command::List(args) if args.available => {
            let args = crate::cli::CatalogArgs {
                filter: args.filter,
                json: args.json,
            };
            catalog::run(&args, &context).await
        }
        Command::List(args) => list::run(&args, &context).await,
        Command::Catalog(args) => catalog::run(&args, &context).await,
        Command::Ps(args) => ps::run(args.json, &context).await,
        Command::Cp(args) => copy::run(&args, &context).await,
        Command::Rm(args) => remove::run(&args.models, &context).await,
        Command::Verify(args) => verify::run(&args, &context).await,
        Command::Completion(args) => completion::run(args.shell),
        Command::Version => version::run().await,
    }
}
