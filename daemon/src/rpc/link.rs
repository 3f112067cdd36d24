//! The guarded link between whaled and a worker.
//!
//! ggml's RPC protocol has no authentication: whoever reaches an RPC server can allocate
//! memory on it and read or write any of its buffers. So a worker never exposes it. Its RPC
//! server listens on an ephemeral loopback port, and the port people connect to is a front
//! that reads one line first:
//!
//! ```text
//! WHALE-RPC/1 <what> <token>\n      what: rpc | memory; token: the shared token, or -
//! ```
//!
//! and answers `OK\n` (then, for `rpc`, forwards bytes both ways to the RPC server), `OK <free>
//! <total>\n` for `memory` (the bytes its devices have, then closes), or `DENIED <why>\n` and
//! closes. Without a token configured the front takes loopback clients only; with one, every
//! client must present it, compared by digest. Nothing reaches the RPC server before the line
//! is checked.
//!
//! With a certificate the front speaks TLS (rustls), handshake line included, and whaled
//! verifies the worker against the certificates it was told to trust: for links that cross
//! networks nobody vouches for.
//!
//! On whaled's side a [`Connector`] is the other half: a loopback listener in the runner whose
//! connections it carries to the worker after the handshake, so that llama.cpp's RPC client
//! talks to `127.0.0.1:<port>` and never knows about the token or TLS.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// The first word of the handshake; the version changes if the line does.
const PROTOCOL: &str = "WHALE-RPC/1";
/// The longest handshake line a front reads.
const MAX_LINE: usize = 512;
/// How long either side waits for the handshake (TLS's included).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection attempt to a worker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A byte stream to the RPC server.
    Rpc,
    /// The free and total bytes of the worker's devices.
    Memory,
}

impl Ask {
    fn word(self) -> &'static str {
        match self {
            Self::Rpc => "rpc",
            Self::Memory => "memory",
        }
    }
}

/// Free and total bytes of a worker's devices, summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub free: u64,
    pub total: u64,
}

/// Why a worker could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("worker {worker} is unreachable ({source}); is `whale worker` running there?")]
    Unreachable {
        worker: String,
        #[source]
        source: io::Error,
    },
    #[error("worker {worker} refused the link: {why}")]
    Denied { worker: String, why: String },
    #[error("worker {worker} answered something else than a whale worker would ({detail})")]
    Protocol { worker: String, detail: String },
    #[error(
        "TLS with worker {worker} failed ({detail}); does it run with --tls-cert, and does WHALE_WORKER_CA hold its certificate?"
    )]
    Tls { worker: String, detail: String },
}

/// A shared token, kept as its digest so that comparing leaks nothing about it.
#[derive(Clone)]
pub struct Token {
    text: String,
    digest: [u8; 32],
}

impl Token {
    /// A token from its text: printable, without spaces, at most 256 bytes.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty()
            || text.len() > 256
            || !text.bytes().all(|byte| byte.is_ascii_graphic())
            || text == "-"
        {
            return Err(
                "a worker token is 1 to 256 printable characters without spaces (e.g. `openssl rand -hex 32`)"
                    .to_owned(),
            );
        }
        Ok(Self {
            text: text.to_owned(),
            digest: Sha256::digest(text.as_bytes()).into(),
        })
    }

    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest == self.digest
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// How whaled reaches one worker: its address, the token, the TLS settings.
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: String,
    pub token: Option<Token>,
    /// TLS with the certificates to trust, or plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Peer {
    /// A peer from a runner's [`super::WorkerLink`].
    pub fn new(link: &super::WorkerLink) -> Result<Self, String> {
        Ok(Self {
            address: link.address.clone(),
            token: link.token.as_deref().map(Token::new).transpose()?,
            tls: link.ca.as_deref().map(client_tls).transpose()?,
        })
    }
}

/// A TLS client configuration trusting the certificates in the PEM file `ca`.
pub fn client_tls(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(ca)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| format!("cannot read certificates from {}: {error}", ca.display()))?;
    if certificates.is_empty() {
        return Err(format!("{} holds no PEM certificate", ca.display()));
    }
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|error| format!("a certificate in {}: {error}", ca.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A TLS server configuration from a PEM certificate chain and its private key.
pub fn server_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| format!("cannot read certificates from {}: {error}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| format!("cannot read a private key from {}: {error}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| format!("the certificate and key do not go together: {error}"))?;
    Ok(Arc::new(config))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The runtime the link's own tasks run on in processes that have none of their own (a
/// runner's engine thread): two threads, started on first use.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("link")
            .enable_all()
            .build()
            .expect("start the link's runtime")
    })
}

/// Connects to `peer` and makes the handshake; the stream is ready for what was asked (for
/// [`Ask::Memory`] the answer has been read: see [`memory`]).
async fn dial(peer: &Peer, ask: Ask) -> Result<(Box<dyn AsyncStream>, String), LinkError> {
    let worker = peer.address.as_str();
    let unreachable = |source| LinkError::Unreachable {
        worker: worker.to_owned(),
        source,
    };
    let tcp = timeout(CONNECT_TIMEOUT, TcpStream::connect(worker))
        .await
        .map_err(|_| unreachable(io::ErrorKind::TimedOut.into()))?
        .map_err(unreachable)?;
    tcp.set_nodelay(true).map_err(unreachable)?;
    let mut stream: Box<dyn AsyncStream> = match &peer.tls {
        None => Box::new(tcp),
        Some(config) => {
            let tls_error = |detail: String| LinkError::Tls {
                worker: worker.to_owned(),
                detail,
            };
            let host = worker
                .rsplit_once(':')
                .map_or(worker, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = ServerName::try_from(host.to_owned())
                .map_err(|error| tls_error(format!("{host:?}: {error}")))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
            let tls = timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| tls_error("timed out".to_owned()))?
                .map_err(|error| tls_error(error.to_string()))?;
            Box::new(tls)
        }
    };
    let token = peer.token.as_ref().map_or("-", |token| token.text.as_str());
    let line = format!("{PROTOCOL} {} {token}\n", ask.word());
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(unreachable)?;
    stream.flush().await.map_err(unreachable)?;
    let answer = timeout(HANDSHAKE_TIMEOUT, read_line(&mut stream))
        .await
        .map_err(|_| unreachable(io::ErrorKind::TimedOut.into()))?
        .map_err(unreachable)?;
    if let Some(why) = answer.strip_prefix("DENIED ") {
        return Err(LinkError::Denied {
            worker: worker.to_owned(),
            why: why.to_owned(),
        });
    }
    if answer != "OK" && !answer.starts_with("OK ") {
        return Err(LinkError::Protocol {
            worker: worker.to_owned(),
            detail: if answer.is_empty() {
                "it closed the connection".to_owned()
            } else {
                format!("{answer:.60}")
            },
        });
    }
    Ok((stream, answer))
}

/// The free and total memory of `peer`'s devices; also how whaled checks a worker is up.
pub async fn memory(peer: &Peer) -> Result<Memory, LinkError> {
    let (_, answer) = dial(peer, Ask::Memory).await?;
    let mut numbers = answer
        .strip_prefix("OK ")
        .unwrap_or_default()
        .split(' ')
        .map(str::parse::<u64>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(free)), Some(Ok(total))) => Ok(Memory { free, total }),
        _ => Err(LinkError::Protocol {
            worker: peer.address.clone(),
            detail: format!("memory answer {answer:.60}"),
        }),
    }
}

/// [`memory`], for threads outside any async runtime.
pub fn memory_blocking(peer: &Peer) -> Result<Memory, LinkError> {
    runtime().block_on(memory(peer))
}

/// Reads one `\n`-ended line byte by byte (nothing past it is consumed), at most
/// [`MAX_LINE`] bytes; an empty string if the peer closed first.
async fn read_line(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_LINE {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Whaled's half of the link to one worker: a loopback listener whose connections are carried
/// to the worker after the handshake. It lives as long as the process (a runner).
#[derive(Debug)]
pub struct Connector {
    /// `127.0.0.1:<port>`: what llama.cpp's RPC client is given.
    pub local: SocketAddr,
}

impl Connector {
    /// Listens on an ephemeral loopback port and carries each connection to `peer`.
    pub fn start(peer: Peer) -> io::Result<Self> {
        let runtime = runtime();
        let listener = runtime.block_on(TcpListener::bind((IpAddr::from([127, 0, 0, 1]), 0)))?;
        let local = listener.local_addr()?;
        let peer = Arc::new(peer);
        runtime.spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let peer = Arc::clone(&peer);
                tokio::spawn(async move {
                    match dial(&peer, Ask::Rpc).await {
                        Ok((mut remote, _)) => {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut remote).await;
                        }
                        // llama.cpp sees a closed connection; the reason goes to the log,
                        // which whaled quotes if the runner dies of it.
                        Err(error) => tracing::error!(%error, "worker link"),
                    }
                });
            }
        });
        Ok(Self { local })
    }
}

/// What a worker's front lets through.
#[derive(Clone)]
pub struct FrontPolicy {
    /// Required of every client when set; without it only loopback clients are served.
    pub token: Option<Token>,
    /// TLS required of every client when set.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// What an admitted client asked for, on its stream.
pub enum Admitted {
    Rpc(Box<dyn AsyncStream>),
    Memory(Box<dyn AsyncStream>),
}

/// A byte stream of either kind, plain or TLS.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// Makes the TLS handshake if the policy asks for it, then reads and checks the client's
/// handshake line; on refusal answers `DENIED …` and returns `None`.
pub async fn admit(client: TcpStream, peer: SocketAddr, policy: &FrontPolicy) -> Option<Admitted> {
    let _ = client.set_nodelay(true);
    let mut stream: Box<dyn AsyncStream> = match &policy.tls {
        None => Box::new(client),
        Some(acceptor) => {
            // A client speaking plain text to a TLS worker is told so in plain text.
            let mut first = [0u8; 1];
            match timeout(HANDSHAKE_TIMEOUT, client.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {}
                Ok(Ok(1)) => {
                    let mut client = client;
                    let why = "this worker takes TLS clients only (set WHALE_WORKER_CA on whaled)";
                    return refuse(&mut client, peer, why).await;
                }
                _ => return None,
            }
            match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(client)).await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(error)) => {
                    tracing::warn!(%peer, %error, "TLS handshake failed");
                    return None;
                }
                Err(_) => return None,
            }
        }
    };
    let line = timeout(HANDSHAKE_TIMEOUT, read_line(&mut stream))
        .await
        .ok()?
        .ok()?;
    let mut words = line.split(' ');
    let (protocol, ask, presented) = (words.next(), words.next(), words.next());
    if protocol != Some(PROTOCOL) || words.next().is_some() {
        let why = "not a whale worker handshake (whaled --workers speaks it)";
        return refuse(&mut stream, peer, why).await;
    }
    let rpc = match ask {
        Some("rpc") => true,
        Some("memory") => false,
        _ => return refuse(&mut stream, peer, "unknown request").await,
    };
    let presented = presented.unwrap_or("-");
    match &policy.token {
        Some(token) if !token.matches(presented) => {
            let why = "wrong or missing token (WHALE_WORKER_TOKEN)";
            return refuse(&mut stream, peer, why).await;
        }
        None if !peer.ip().to_canonical().is_loopback() => {
            let why = "this worker has no token and takes loopback clients only (set WHALE_WORKER_TOKEN on both sides)";
            return refuse(&mut stream, peer, why).await;
        }
        _ => {}
    }
    Some(if rpc {
        Admitted::Rpc(stream)
    } else {
        Admitted::Memory(stream)
    })
}

async fn refuse<T>(
    stream: &mut (impl AsyncWrite + Unpin),
    peer: SocketAddr,
    why: &str,
) -> Option<T> {
    tracing::warn!(%peer, why, "refused a client");
    let _ = stream.write_all(format!("DENIED {why}\n").as_bytes()).await;
    let _ = stream.shutdown().await;
    None
}

/// Answers an admitted `memory` request.
pub async fn answer_memory(stream: &mut (impl AsyncWrite + Unpin), memory: Memory) {
    let line = format!("OK {} {}\n", memory.free, memory.total);
    let _ = stream.write_all(line.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Answers an admitted `rpc` request, then carries bytes both ways between the client and
/// the RPC server at `inner` until either closes.
pub async fn serve_rpc(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), inner: SocketAddr) {
    let mut server = match TcpStream::connect(inner).await {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "cannot reach the RPC server");
            return;
        }
    };
    let _ = server.set_nodelay(true);
    if stream.write_all(b"OK\n").await.is_err() || stream.flush().await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(stream, &mut server).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_printable_words() {
        assert!(Token::new("s3cret-token").is_ok());
        for bad in ["", "-", "two words", "tab\there", &"x".repeat(257), "é"] {
            assert!(Token::new(bad).is_err(), "{bad:?}");
        }
        let token = Token::new("abc").unwrap();
        assert!(token.matches("abc"));
        assert!(!token.matches("abd"));
        assert_eq!(format!("{token:?}"), "Token(…)");
    }
}
