//! The runner process: `whaled runner --socket PATH`, spawned by whaled for one model.
//!
//! Two threads. The main thread runs the engine (it loads the model when whaled says `Load`
//! and then decodes until `Shutdown`). A reader thread turns frames from whaled into engine
//! commands; when whaled's end of the socket closes, whaled is gone, and the reader ends the
//! process at once, so a runner never outlives its daemon holding memory.
//!
//! Answers go out from the thread that has them, under one lock. A decode step's text for
//! every sequence is gathered and written once, when the step ends, or with the next steps'
//! when steps come faster than [`TEXT_INTERVAL`]: one system call and one wake-up of whaled
//! per step at most, and no thread in between to wake (on a GPU a step is a few milliseconds,
//! and every wake-up that is not the model shows in its rate).

use std::collections::HashMap;
use std::io::{Read, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::protocol::{self, Message, Request};
use crate::engine::{
    self, Command, EngineError, Event, EventSink, Flush, LoadParams, Reply, SinkError,
};

/// How long a decode step's text may wait for the next step's, so that they go out in one
/// write: a model that steps faster than this (a tiny model, or a small one on a fast GPU)
/// wakes whaled and its clients once per interval instead of once per step, each token still
/// its own chunk. Below what a reader can see; a model that steps slower writes every step.
/// Nothing waits while the engine is idle or processes a prompt ([`Flush::Now`]), and a
/// generation's last event goes out at once with everything queued before it.
const TEXT_INTERVAL: Duration = Duration::from_millis(5);

/// Generations in flight, by id: the flag `Cancel` sets.
type Cancels = Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>>;

/// Runs the runner until whaled says `Shutdown` or goes away.
pub fn run(socket: &Path) -> std::io::Result<()> {
    let stream = UnixStream::connect(socket)?;
    let messages = Messages::new(stream.try_clone()?);
    let (commands, engine_commands) = std::sync::mpsc::channel::<Command>();
    let (load, load_request) = std::sync::mpsc::channel::<(u64, LoadParams)>();
    let reader_messages = messages.clone();
    std::thread::Builder::new()
        .name("runner-reader".to_owned())
        .spawn(move || read_loop(Readable(stream), &commands, &load, &reader_messages))?;

    // Nothing to do until whaled says what to load; it may first ask about the GPUs.
    let Ok((id, params)) = load_request.recv() else {
        return Ok(());
    };
    tracing::info!(model = %params.name, path = %params.model_path.display(), "loading");
    let ready = reply(&messages, id, |id, result| Message::Loaded { id, result });
    engine::run(&params, &engine_commands, ready, &mut |flush| match flush {
        Flush::Now => messages.flush(),
        Flush::Soon => messages.flush_if_older(TEXT_INTERVAL),
    });
    // The engine's last words (generations ended by the shutdown) go out before the process
    // ends; the reader thread is still blocked reading and simply ends with the process.
    messages.flush();
    Ok(())
}

/// The runner's half of the socket, as every thread writes to it: frames are encoded into
/// one buffer and written together, whole, under the lock.
#[derive(Clone)]
struct Messages(Arc<Mutex<Outgoing>>);

struct Outgoing {
    stream: UnixStream,
    /// Encoded frames not yet written.
    buffer: Vec<u8>,
    /// When frames were last written.
    written: Instant,
}

impl Messages {
    fn new(stream: UnixStream) -> Messages {
        Messages(Arc::new(Mutex::new(Outgoing {
            stream,
            buffer: Vec::with_capacity(64 << 10),
            written: Instant::now(),
        })))
    }

    /// Writes `message` now, after anything queued before it.
    fn send(&self, message: &Message) {
        let mut outgoing = self.0.lock().expect("outgoing lock");
        outgoing.queue(message);
        outgoing.write();
    }

    /// Adds `message` to what the next [`Messages::flush`] writes.
    fn queue(&self, message: &Message) {
        self.0.lock().expect("outgoing lock").queue(message);
    }

    /// Writes everything queued.
    fn flush(&self) {
        self.0.lock().expect("outgoing lock").write();
    }

    /// Writes everything queued if the last write was `interval` ago or more.
    fn flush_if_older(&self, interval: Duration) {
        let mut outgoing = self.0.lock().expect("outgoing lock");
        if outgoing.written.elapsed() >= interval {
            outgoing.write();
        }
    }
}

impl Outgoing {
    fn queue(&mut self, message: &Message) {
        if let Err(error) = protocol::encode(message, &mut self.buffer) {
            tracing::error!(%error, "cannot encode a message for whaled");
            let failed = message.failed(&error.to_string());
            let _ = protocol::encode(&failed, &mut self.buffer);
        }
    }

    fn write(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        if let Err(error) = self.stream.write_all(&self.buffer) {
            parent_gone(&format!("cannot write to whaled: {error}"));
        }
        self.written = Instant::now();
        self.buffer.clear();
        if self.buffer.capacity() > 1 << 20 {
            // An answer with large embeddings: do not keep its memory.
            self.buffer = Vec::with_capacity(64 << 10);
        }
    }
}

/// The socket as the reader thread reads it: it waits to be readable before each read. A
/// thread blocked in `read` on a Unix socket is woken whenever the other end takes data this
/// process wrote (the socket has one wait queue for both directions), which is every decode
/// step; `poll` for input is woken only by input.
struct Readable(UnixStream);

impl Read for Readable {
    #[allow(unsafe_code)]
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut wanted = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: `wanted` is one valid `pollfd` for the duration of the call, and the
            // descriptor stays open while `self` lives.
            let ready = unsafe { libc::poll(&raw mut wanted, 1, -1) };
            if ready >= 0 {
                break;
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
        self.0.read(buf)
    }
}

/// Turns whaled's requests into engine commands, until whaled closes its end.
fn read_loop(
    stream: Readable,
    commands: &Sender<Command>,
    load: &Sender<(u64, LoadParams)>,
    messages: &Messages,
) {
    let cancels: Cancels = Arc::default();
    let mut reader = std::io::BufReader::new(stream);
    loop {
        let request = match protocol::read::<Request>(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => parent_gone("whaled closed the connection"),
            Err(error) => parent_gone(&format!("cannot read from whaled: {error}")),
        };
        let command = match request {
            Request::Gpus { id } => {
                messages.send(&Message::Gpus {
                    id,
                    gpus: engine::gpus(),
                });
                continue;
            }
            Request::Load { id, params } => {
                let _ = load.send((id, params));
                continue;
            }
            Request::Cancel { id } => {
                if let Some(cancel) = cancels.lock().expect("cancels lock").get(&id) {
                    cancel.store(true, Ordering::Relaxed);
                }
                continue;
            }
            Request::Generate { id, job } => {
                let cancelled = Arc::new(AtomicBool::new(false));
                cancels
                    .lock()
                    .expect("cancels lock")
                    .insert(id, Arc::clone(&cancelled));
                Command::Generate {
                    job: Box::new(job),
                    events: Box::new(RemoteEvents {
                        id,
                        messages: messages.clone(),
                        cancelled,
                        cancels: Arc::clone(&cancels),
                    }),
                }
            }
            Request::Tokenize {
                id,
                text,
                add_special,
            } => Command::Tokenize {
                text,
                add_special,
                reply: reply(messages, id, |id, result| Message::Tokens { id, result }),
            },
            Request::Detokenize { id, tokens } => Command::Detokenize {
                tokens,
                reply: reply(messages, id, |id, result| Message::Text { id, result }),
            },
            Request::Embed {
                id,
                inputs,
                truncate,
            } => Command::Embed {
                inputs,
                truncate,
                reply: reply(messages, id, |id, result| Message::Embeddings {
                    id,
                    result,
                }),
            },
            Request::Shutdown { reason } => Command::Shutdown(reason),
        };
        if let Err(refused) = commands.send(command) {
            refuse(refused.0);
        }
    }
}

/// A command the engine can no longer take (it has stopped): answered with an error.
fn refuse(command: Command) {
    let gone = || EngineError::Stopped(engine::UNLOADED.to_owned());
    match command {
        Command::Generate { mut events, .. } => {
            let _ = events.try_send(Event::Error(gone().to_string()));
        }
        Command::Tokenize { reply, .. } => reply(Err(gone())),
        Command::Detokenize { reply, .. } => reply(Err(gone())),
        Command::Embed { reply, .. } => reply(Err(gone())),
        Command::Shutdown(_) => {}
    }
}

/// whaled is gone: end now. Not `std::process::exit`: the engine thread may be inside
/// llama.cpp, and running C++ destructors under it can hang; nothing here needs flushing.
fn parent_gone(why: &str) -> ! {
    tracing::info!("{why}; exiting");
    exit_now()
}

#[allow(unsafe_code)]
fn exit_now() -> ! {
    // SAFETY: `_exit` ends the process without running any user-space code; it is
    // async-signal-safe and valid from any thread.
    unsafe { libc::_exit(0) }
}

/// A [`Reply`] that goes back to whaled as the message `wrap` makes.
fn reply<T: Send + 'static>(
    messages: &Messages,
    id: u64,
    wrap: fn(u64, Result<T, EngineError>) -> Message,
) -> Reply<T> {
    let messages = messages.clone();
    Box::new(move |result| messages.send(&wrap(id, result)))
}

/// A generation's events, on their way to whaled: text waits for the end of the decode step,
/// the last event goes at once. whaled reads continuously and buffers for slow clients
/// itself, so a write waits only as long as a system call.
struct RemoteEvents {
    id: u64,
    messages: Messages,
    cancelled: Arc<AtomicBool>,
    cancels: Cancels,
}

impl EventSink for RemoteEvents {
    fn try_send(&mut self, event: Event) -> Result<(), SinkError> {
        let last = !matches!(event, Event::Text(..));
        let message = Message::Event { id: self.id, event };
        if last {
            self.cancels.lock().expect("cancels lock").remove(&self.id);
            self.messages.send(&message);
        } else {
            self.messages.queue(&message);
        }
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// `whaled runner`'s arguments (whaled passes them; people do not).
#[derive(Debug, clap::Parser)]
#[command(
    name = "whaled runner",
    about = "Runs one model for whaled (started by whaled)"
)]
pub struct Args {
    /// whaled's Unix socket to connect to.
    #[arg(long)]
    socket: std::path::PathBuf,
    /// Log filter, as whaled's.
    #[arg(long, default_value = "info")]
    log: String,
}

/// Entry point of `whaled runner`. Logs go to stderr as `LEVEL message` lines, which whaled
/// relays into its own log (and quotes when the runner dies).
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::io::Result<()> {
    use clap::Parser as _;
    let args = Args::parse_from(args);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .init();
    // whaled's own threads yield to the model (see `yield_to_models`); a runner is the model.
    set_scheduling(Scheduling::Normal);
    run(&args.socket)
}

/// How Linux schedules the calling thread and the threads it starts afterwards.
#[derive(Debug, Clone, Copy)]
enum Scheduling {
    /// `SCHED_OTHER`: a thread that wakes may preempt a running one.
    Normal,
    /// `SCHED_BATCH`: a thread that wakes waits for a free core or the next tick.
    Batch,
}

/// Puts whaled's own threads (HTTP, pulls, relaying runner output) under `SCHED_BATCH`:
/// call it before any other thread starts, they inherit it. Each token a runner writes wakes
/// whaled; under the normal policy that wake-up preempts one of llama.cpp's threads mid-step
/// when every core is busy, and the step waits for it (llama.cpp's threads meet at a barrier
/// after each operation). Under `SCHED_BATCH` whaled's work waits for a core that is free, or
/// for the next scheduler tick, and takes the tokens that arrived meanwhile together. On a
/// machine with idle cores nothing changes. Runners set themselves back to the normal policy.
pub fn yield_to_models() {
    set_scheduling(Scheduling::Batch);
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_scheduling(scheduling: Scheduling) {
    let policy = match scheduling {
        Scheduling::Normal => libc::SCHED_OTHER,
        Scheduling::Batch => libc::SCHED_BATCH,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param` for the duration of the call; pid 0 is the
    // calling thread. Both policies are open to unprivileged threads at priority 0.
    let result = unsafe { libc::sched_setscheduler(0, policy, &raw const param) };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(?scheduling, %error, "scheduling policy not changed");
    }
}

#[cfg(not(target_os = "linux"))]
fn set_scheduling(_scheduling: Scheduling) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(id: u64, text: &str) -> Message {
        Message::Event {
            id,
            event: Event::Text(text.to_owned(), Vec::new()),
        }
    }

    /// Every frame the other end can read without waiting.
    fn received(peer: &mut UnixStream) -> Vec<Message> {
        peer.set_nonblocking(true).unwrap();
        let mut bytes = Vec::new();
        let _ = peer.read_to_end(&mut bytes);
        let mut reader = bytes.as_slice();
        std::iter::from_fn(|| protocol::read::<Message>(&mut reader).unwrap()).collect()
    }

    #[test]
    fn text_waits_for_its_interval_and_the_last_event_takes_it_along() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let messages = Messages::new(ours);
        messages.queue(&text(1, "a"));
        // Written just now (the stream is new): a step's text waits.
        messages.flush_if_older(Duration::from_mins(1));
        assert!(received(&mut peer).is_empty());
        messages.queue(&text(1, "b"));
        // Due: everything queued goes, in order, in one write.
        messages.flush_if_older(Duration::ZERO);
        let texts: Vec<String> = received(&mut peer)
            .into_iter()
            .map(|message| match message {
                Message::Event {
                    id: 1,
                    event: Event::Text(text, _),
                } => text,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, ["a", "b"]);
        // A generation's last event never waits, nor what was queued before it.
        messages.queue(&text(1, "c"));
        messages.flush_if_older(Duration::from_mins(1));
        messages.send(&Message::Event {
            id: 1,
            event: Event::Error("stopped".to_owned()),
        });
        let got = received(&mut peer);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            matches!(&got[1], Message::Event { event: Event::Error(why), .. } if why == "stopped")
        );
        // `Now` writes whatever waits.
        messages.queue(&text(2, "d"));
        messages.flush();
        assert_eq!(received(&mut peer).len(), 1);
    }
}
