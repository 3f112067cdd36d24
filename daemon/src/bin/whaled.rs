//! `whaled`: resolves its config and serves until Ctrl-C or SIGTERM. `whaled runner …` is a
//! model's runner process, started by whaled itself; `whaled worker …` (`whale worker`) lends
//! this machine to a whaled elsewhere.

use std::io::IsTerminal as _;

use anyhow::Context;
use clap::Parser;
use whale_daemon::Config;

fn main() -> anyhow::Result<()> {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "runner")
    {
        whale_daemon::runner::process::main(std::env::args_os().skip(1)).context("model runner")?;
        return Ok(());
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "worker")
    {
        return whale_daemon::rpc::worker::main(std::env::args_os().skip(1));
    }
    // Before the async runtime starts its threads, which inherit it.
    whale_daemon::runner::process::yield_to_models();
    daemon()
}

#[tokio::main]
async fn daemon() -> anyhow::Result<()> {
    let config = Config::parse();
    // Colours only on a terminal: the log of a background whaled is a file.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log))
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    let policy = whale_daemon::http::policy(&config);
    if let Err(message) =
        whale_daemon::http::guard::check_exposure(config.host, &policy, config.no_api_key)
    {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
    let listener = tokio::net::TcpListener::bind(config.host)
        .await
        .with_context(|| format!("cannot listen on {}", config.host))?;
    let address = listener.local_addr()?;
    let state = whale_daemon::state(config)?;
    tracing::info!(%address, store = %state.store.root().display(), version = whale_daemon::VERSION, "listening");
    // Tests and scripts read this line to find a port chosen by the OS.
    println!("whaled listening on {address}");
    whale_daemon::serve(listener, state, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
