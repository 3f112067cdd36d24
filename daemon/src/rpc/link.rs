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
//! On whaled's side a [`Connector`] is the other half: a loopback listener in the runner whose
//! connections it carries to the worker after the handshake, so that llama.cpp's RPC client
//! talks to `127.0.0.1:<port>` and never knows about the token.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// The first word of the handshake; the version changes if the line does.
const PROTOCOL: &str = "WHALE-RPC/1";
/// The longest handshake line a front reads.
const MAX_LINE: u64 = 512;
/// How long either side waits for the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection attempt to a worker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Connects to `worker` and makes the handshake; the stream is ready for what was asked (for
/// [`Ask::Memory`] the answer has been read: see [`memory`]).
fn dial(worker: &str, token: Option<&Token>, ask: Ask) -> Result<(TcpStream, String), LinkError> {
    let unreachable = |source| LinkError::Unreachable {
        worker: worker.to_owned(),
        source,
    };
    let addresses: Vec<SocketAddr> = worker.to_socket_addrs().map_err(unreachable)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(error) => last = error,
        }
    }
    let mut stream = stream.ok_or_else(|| unreachable(last))?;
    stream.set_nodelay(true).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(unreachable)?;
    let token = token.map_or("-", |token| token.text.as_str());
    stream
        .write_all(format!("{PROTOCOL} {} {token}\n", ask.word()).as_bytes())
        .map_err(unreachable)?;
    let answer = read_line(&mut stream).map_err(unreachable)?;
    stream.set_read_timeout(None).map_err(unreachable)?;
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

/// The free and total memory of `worker`'s devices; also how whaled checks a worker is up.
pub fn memory(worker: &str, token: Option<&Token>) -> Result<Memory, LinkError> {
    let (_, answer) = dial(worker, token, Ask::Memory)?;
    let mut numbers = answer
        .strip_prefix("OK ")
        .unwrap_or_default()
        .split(' ')
        .map(str::parse::<u64>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(free)), Some(Ok(total))) => Ok(Memory { free, total }),
        _ => Err(LinkError::Protocol {
            worker: worker.to_owned(),
            detail: format!("memory answer {answer:.60}"),
        }),
    }
}

/// Reads one `\n`-ended line byte by byte (nothing past it is consumed), at most
/// [`MAX_LINE`] bytes; an empty string if the peer closed first.
fn read_line(stream: &mut TcpStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_LINE as usize {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Copies bytes both ways until either side closes, then closes both.
pub fn splice(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let forward = std::thread::spawn(move || pipe(a, b2));
    pipe(b, a2);
    let _ = forward.join();
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Whaled's half of the link to one worker: a loopback listener whose connections are carried
/// to the worker after the handshake. It lives as long as the process (a runner).
#[derive(Debug)]
pub struct Connector {
    /// `127.0.0.1:<port>`: what llama.cpp's RPC client is given.
    pub local: SocketAddr,
}

impl Connector {
    /// Listens on an ephemeral loopback port and carries each connection to `worker`.
    pub fn start(worker: &str, token: Option<Token>) -> io::Result<Self> {
        let listener = TcpListener::bind((IpAddr::from([127, 0, 0, 1]), 0))?;
        let local = listener.local_addr()?;
        let worker = worker.to_owned();
        std::thread::Builder::new()
            .name(format!("link:{worker}"))
            .spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    let _ = client.set_nodelay(true);
                    match dial(&worker, token.as_ref(), Ask::Rpc) {
                        Ok((remote, _)) => {
                            std::thread::spawn(move || splice(client, remote));
                        }
                        Err(error) => {
                            // llama.cpp sees a closed connection; the reason goes to the log,
                            // which whaled quotes if the runner dies of it.
                            tracing::error!(%error, "worker link");
                            let _ = client.shutdown(Shutdown::Both);
                        }
                    }
                }
            })?;
        Ok(Self { local })
    }
}

/// What a worker's front lets through.
#[derive(Debug, Clone)]
pub struct FrontPolicy {
    /// Required of every client when set; without it only loopback clients are served.
    pub token: Option<Token>,
}

/// The outcome of a front's handshake with one client.
#[derive(Debug, PartialEq, Eq)]
pub enum Admitted {
    Rpc,
    Memory,
}

/// Reads and checks a client's handshake; on refusal answers `DENIED …` and returns `None`.
pub fn admit(
    stream: &mut TcpStream,
    peer: SocketAddr,
    policy: &FrontPolicy,
) -> io::Result<Option<Admitted>> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let line = read_line(stream)?;
    stream.set_read_timeout(None)?;
    let mut words = line.split(' ');
    let (protocol, ask, presented) = (words.next(), words.next(), words.next());
    let refuse = |stream: &mut TcpStream, why: &str| -> io::Result<Option<Admitted>> {
        tracing::warn!(%peer, why, "refused a client");
        stream.write_all(format!("DENIED {why}\n").as_bytes())?;
        let _ = stream.shutdown(Shutdown::Both);
        Ok(None)
    };
    if protocol != Some(PROTOCOL) || words.next().is_some() {
        return refuse(
            stream,
            "not a whale worker handshake (whaled --workers speaks it)",
        );
    }
    let admitted = match ask {
        Some("rpc") => Admitted::Rpc,
        Some("memory") => Admitted::Memory,
        _ => return refuse(stream, "unknown request"),
    };
    let presented = presented.unwrap_or("-");
    match &policy.token {
        Some(token) if !token.matches(presented) => {
            return refuse(stream, "wrong or missing token (WHALE_WORKER_TOKEN)");
        }
        None if !peer.ip().to_canonical().is_loopback() => {
            return refuse(
                stream,
                "this worker has no token and takes loopback clients only (set WHALE_WORKER_TOKEN on both sides)",
            );
        }
        _ => {}
    }
    Ok(Some(admitted))
}

/// Answers an admitted `memory` request.
pub fn answer_memory(stream: &mut TcpStream, memory: Memory) -> io::Result<()> {
    stream.write_all(format!("OK {} {}\n", memory.free, memory.total).as_bytes())
}

/// Answers an admitted `rpc` request; the caller then splices.
pub fn answer_rpc(stream: &mut TcpStream) -> io::Result<()> {
    stream.write_all(b"OK\n")
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
