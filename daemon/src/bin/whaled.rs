//! `whaled`: resolves its config and serves until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Parser;
use whale_daemon::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log))
        .with_writer(std::io::stderr)
        .init();
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
