//! The runner process: `whaled runner --socket PATH`, spawned by whaled for one model.
//!
//! Three threads. The main thread runs the engine (it loads the model when whaled says `Load`
//! and then decodes until `Shutdown`). A reader thread turns frames from whaled into engine
//! commands; when whaled's end of the socket closes, whaled is gone, and the reader ends the
//! process at once, so a runner never outlives its daemon holding memory. A writer thread
//! batches whatever the engine has produced into one write per wake-up.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use super::protocol::{self, Message, Request};
use crate::engine::{self, Command, EngineError, Event, EventSink, LoadParams, Reply, SinkError};

/// Generations in flight, by id: the flag `Cancel` sets.
type Cancels = Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>>;

/// Runs the runner until whaled says `Shutdown` or goes away.
pub fn run(socket: &Path) -> std::io::Result<()> {
    let stream = UnixStream::connect(socket)?;
    let (outbox, outgoing) = std::sync::mpsc::channel::<Outgoing>();
    let messages = Messages(outbox);
    let write_half = stream.try_clone()?;
    let writer = std::thread::Builder::new()
        .name("runner-writer".to_owned())
        .spawn(move || write_loop(write_half, &outgoing))?;
    let (commands, engine_commands) = std::sync::mpsc::channel::<Command>();
    let (load, load_request) = std::sync::mpsc::channel::<(u64, LoadParams)>();
    let reader_messages = messages.clone();
    std::thread::Builder::new()
        .name("runner-reader".to_owned())
        .spawn(move || read_loop(stream, &commands, &load, &reader_messages))?;

    // Nothing to do until whaled says what to load; it may first ask about the GPUs.
    let Ok((id, params)) = load_request.recv() else {
        return Ok(());
    };
    tracing::info!(model = %params.name, path = %params.model_path.display(), "loading");
    let ready = reply(&messages, id, |id, result| Message::Loaded { id, result });
    engine::run(&params, &engine_commands, ready);
    // The engine's last words (generations ended by the shutdown) go out before the process
    // ends; the reader thread is still blocked reading and simply ends with the process.
    let (flushed, done) = std::sync::mpsc::channel();
    if messages.0.send(Outgoing::Flush(flushed)).is_ok() {
        let _ = done.recv_timeout(std::time::Duration::from_secs(2));
    }
    drop(writer);
    Ok(())
}

/// What the writer thread is given.
enum Outgoing {
    Message(Message),
    /// Answer on this channel once everything before it is written.
    Flush(Sender<()>),
}

/// The writer thread's queue, as the rest of the runner sends to it.
#[derive(Clone)]
struct Messages(Sender<Outgoing>);

impl Messages {
    /// Queues `message`; `Err` once the writer has stopped (whaled is gone).
    fn send(&self, message: Message) -> Result<(), ()> {
        self.0.send(Outgoing::Message(message)).map_err(drop)
    }
}

/// Turns whaled's requests into engine commands, until whaled closes its end.
fn read_loop(
    stream: UnixStream,
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
                let _ = messages.send(Message::Gpus {
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
    Box::new(move |result| {
        let _ = messages.send(wrap(id, result));
    })
}

/// A generation's events, on their way to whaled. The writer's queue is unbounded, so the
/// engine never waits on it: whaled reads continuously and buffers for slow clients itself.
struct RemoteEvents {
    id: u64,
    messages: Messages,
    cancelled: Arc<AtomicBool>,
    cancels: Cancels,
}

impl EventSink for RemoteEvents {
    fn try_send(&mut self, event: Event) -> Result<(), SinkError> {
        let last = !matches!(event, Event::Text(..));
        if last {
            self.cancels.lock().expect("cancels lock").remove(&self.id);
        }
        self.messages
            .send(Message::Event { id: self.id, event })
            .map_err(|()| SinkError::Closed)
    }

    fn is_closed(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// Writes every message that is ready as one batch.
fn write_loop(stream: UnixStream, outgoing: &Receiver<Outgoing>) {
    use std::io::Write as _;
    let mut stream = stream;
    let mut buffer = Vec::with_capacity(64 << 10);
    let mut flushed = Vec::new();
    while let Ok(first) = outgoing.recv() {
        buffer.clear();
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Outgoing::Message(message) => {
                    if let Err(error) = protocol::encode(&message, &mut buffer) {
                        tracing::error!(%error, "cannot encode a message for whaled");
                        let failed = message.failed(&error.to_string());
                        let _ = protocol::encode(&failed, &mut buffer);
                    }
                }
                Outgoing::Flush(done) => flushed.push(done),
            }
            next = outgoing.try_recv().ok();
        }
        if let Err(error) = stream.write_all(&buffer) {
            parent_gone(&format!("cannot write to whaled: {error}"));
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
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
    run(&args.socket)
}
