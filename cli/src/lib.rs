//! whale-cli: the `whale` command. It talks to the daemon `whaled` only over HTTP, through
//! whale-api's `Client`; it never links the daemon or the registry.
//!
//! `main.rs` parses the command line and calls [`run`]; everything else lives here: one module
//! per command under [`commands`], the chat in [`conversation`] and [`repl`], drawing in
//! [`render`], finding and starting the daemon in [`daemon`].

pub mod cli;
pub mod commands;
pub mod conversation;
pub mod daemon;
pub mod error;
pub mod output;
pub mod render;
pub mod repl;
pub mod think;

pub use error::Error;

/// Runs a parsed command line to completion.
pub fn run(cli: cli::Cli) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(commands::dispatch(cli))
}
