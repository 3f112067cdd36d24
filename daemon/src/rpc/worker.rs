//! `whaled worker` (`whale worker`): lends this machine's memory and compute to a whaled on
//! another machine. llama.cpp's RPC server serves this machine's devices on an ephemeral
//! loopback port; the front on `--listen` admits clients by the handshake of
//! [`super::link`] and carries their bytes to it.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ggml;
use tokio::net::TcpListener;

use super::link::{self, Admitted, FrontPolicy, Memory, Token};

/// The worker's token, the same on whaled (`WHALE_WORKER_TOKEN`).
pub const ENV_WORKER_TOKEN: &str = "WHALE_WORKER_TOKEN";

/// `whaled worker`'s arguments.
#[derive(Debug, clap::Parser)]
#[command(
    name = "whale worker",
    bin_name = "whale worker",
    about = "Lend this machine's memory to a whaled elsewhere (llama.cpp RPC, guarded)"
)]
pub struct Args {
    /// Address to listen on. Beyond loopback it needs a token.
    #[arg(long, default_value = "127.0.0.1:50052", value_name = "HOST:PORT")]
    listen: SocketAddr,
    /// Where received tensors are cached, so that a reload does not send them again.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Keep no tensor cache.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
    /// CPU threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Shared token every client must present; without it only loopback clients are served.
    #[arg(long = "token", env = ENV_WORKER_TOKEN, hide_env_values = true, hide = true)]
    token: Option<String>,
    /// Speak TLS with this PEM certificate (chain); whaled trusts it with `WHALE_WORKER_CA`.
    #[arg(
        long,
        env = "WHALE_WORKER_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "WHALE_WORKER_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Log filter.
    #[arg(long, env = "WHALE_LOG", default_value = "info")]
    log: String,
}

/// Entry point of `whaled worker`: serves until killed.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use clap::Parser as _;
    let args = Args::parse_from(args);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    let token = args
        .token
        .as_deref()
        .filter(|token| !token.is_empty())
        .map(Token::new)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if token.is_none() && !args.listen.ip().is_loopback() {
        eprintln!(
            "error: a worker on {} without a token would take no client: without one it serves loopback only\n\
             hint: set {ENV_WORKER_TOKEN} to the same secret here and on whaled (e.g. `openssl rand -hex 32`)",
            args.listen
        );
        std::process::exit(2);
    }
    let cache_dir = if args.no_cache {
        None
    } else {
        let dir = args.cache_dir.clone().or_else(|| {
            directories::ProjectDirs::from("", "", "whale").map(|dirs| dirs.cache_dir().join("rpc"))
        });
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the cache folder {}", dir.display()))?;
        }
        dir
    };
    let devices = ggml::local_devices();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(4, std::num::NonZero::get));
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(
            link::server_tls(cert, key).map_err(anyhow::Error::msg)?,
        )),
        _ => None,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let front = runtime
        .block_on(TcpListener::bind(args.listen))
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let inner = start_rpc_server(cache_dir.clone(), threads, devices.clone())?;
    for device in &devices {
        tracing::info!(
            device = %device.name,
            free_mib = device.free >> 20,
            total_mib = device.total >> 20,
            "serving"
        );
    }
    let address = front.local_addr()?;
    tracing::info!(
        %address,
        cache = ?cache_dir,
        token = token.is_some(),
        tls = tls.is_some(),
        "worker listening"
    );
    // Tests and scripts read this line to find a port chosen by the OS.
    println!("whale worker listening on {address}");
    std::io::stdout().flush()?;
    let policy = Arc::new(FrontPolicy { token, tls });
    runtime.block_on(async move {
        loop {
            let Ok((client, peer)) = front.accept().await else {
                continue;
            };
            tokio::spawn(serve(client, peer, inner, Arc::clone(&policy)));
        }
    })
}

/// Starts llama.cpp's RPC server on a free loopback port and waits until it accepts.
fn start_rpc_server(
    cache_dir: Option<PathBuf>,
    threads: usize,
    devices: Vec<ggml::Device>,
) -> anyhow::Result<SocketAddr> {
    let port = std::net::TcpListener::bind((IpAddr::from([127, 0, 0, 1]), 0))?
        .local_addr()?
        .port();
    let inner = SocketAddr::from(([127, 0, 0, 1], port));
    std::thread::Builder::new()
        .name("rpc-server".to_owned())
        .spawn(move || {
            let error =
                ggml::start_server(&inner.to_string(), cache_dir.as_deref(), threads, &devices)
                    .err()
                    .unwrap_or_default();
            tracing::error!(error, "the RPC server stopped");
            std::process::exit(1);
        })?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(inner).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "llama.cpp's RPC server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(inner)
}

/// One client of the front.
async fn serve(
    client: tokio::net::TcpStream,
    peer: SocketAddr,
    inner: SocketAddr,
    policy: Arc<FrontPolicy>,
) {
    match link::admit(client, peer, &policy).await {
        Some(Admitted::Memory(mut stream)) => {
            let devices = ggml::local_devices();
            let memory = Memory {
                free: devices.iter().map(|device| device.free).sum(),
                total: devices.iter().map(|device| device.total).sum(),
            };
            link::answer_memory(&mut stream, memory).await;
        }
        Some(Admitted::Rpc(mut stream)) => {
            tracing::info!(%peer, "client linked");
            link::serve_rpc(&mut stream, inner).await;
            tracing::info!(%peer, "client gone");
        }
        None => {}
    }
}
