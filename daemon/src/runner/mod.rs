//! Runner processes: each loaded model's engine runs in a process of its own.
//!
//! llama.cpp aborts the process on a failed `GGML_ASSERT`, a CUDA error or an allocation it
//! cannot make, and a model file is untrusted input. So whaled never runs llama.cpp itself: the
//! scheduler starts `whaled runner` (this same binary, see [`process`]) for each model it loads
//! and talks to it over a Unix socket ([`protocol`]). Continuous batching, prefix reuse,
//! sampling and cancellation all happen inside the runner; whaled sends jobs and relays events.
//!
//! A runner that dies — abort, segfault, the kernel's OOM killer — ends the requests on its model
//! with `model runner crashed: <how>: <its last lines of output>`; everything else in whaled goes
//! on, and the scheduler loads the model again for the next request. Unloading a model ends its
//! process, so its memory really returns to the system. A runner whose whaled dies (even by
//! SIGKILL) sees its socket close and exits at once.

pub mod process;
mod protocol;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::{Embeddings, EngineError, Event, GenerateJob, Gpu, LoadParams, ModelInfo};
use protocol::{Message, Request};

/// How long a new runner has to connect back before it is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an unloaded runner has to exit on its own before it is killed. It finishes its
/// current decode step first, which on a large model on a CPU can take a while.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of a runner's output kept for the message that reports its death.
const TAIL_LINES: usize = 16;
/// Lines of that tail quoted in the message.
const QUOTED_LINES: usize = 3;

/// Starts runner processes.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The whaled binary (a runner is `whaled runner`).
    program: PathBuf,
    /// Log filter handed to runners, so they log as whaled does.
    log: String,
}

impl Launcher {
    /// Runners of the running binary. On Linux that is `/proc/self/exe`, which stays valid when
    /// an upgrade replaces the file on disk while whaled runs.
    pub fn current(log: &str) -> std::io::Result<Self> {
        let proc_exe = PathBuf::from("/proc/self/exe");
        let program = if proc_exe.exists() {
            proc_exe
        } else {
            std::env::current_exe()?
        };
        Ok(Self::new(program, log))
    }

    /// Runners of `program`, which must accept `runner --socket PATH --log FILTER`.
    pub fn new(program: PathBuf, log: &str) -> Self {
        Self {
            program,
            log: log.to_owned(),
        }
    }

    /// Starts a runner for the model `name` and waits until it is connected.
    pub async fn spawn(&self, name: &str) -> Result<Process, EngineError> {
        let spawn_error = |what: &str, error: &dyn std::fmt::Display| {
            EngineError::Spawn(format!("{what}: {error}"))
        };
        // A private directory (mode 0700): nobody else can connect in between.
        let dir = tempfile::Builder::new()
            .prefix("whale-runner-")
            .tempdir()
            .map_err(|error| spawn_error("cannot make its socket directory", &error))?;
        let socket = dir.path().join("socket");
        let listener = tokio::net::UnixListener::bind(&socket).map_err(|error| {
            spawn_error(&format!("cannot listen on {}", socket.display()), &error)
        })?;
        let mut child = tokio::process::Command::new(&self.program)
            // `ps` and `top` show "whaled runner …", not "/proc/self/exe runner …".
            .arg0("whaled")
            .arg("runner")
            .arg("--socket")
            .arg(&socket)
            .arg("--log")
            .arg(&self.log)
            // ggml's backtrace on abort runs gdb, which takes seconds and says nothing to users.
            .env("GGML_NO_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                spawn_error(&format!("cannot start {}", self.program.display()), &error)
            })?;
        let pid = child.id().unwrap_or_default();
        let output = Output::default();
        let mut readers = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            readers.push(tokio::spawn(output.clone().relay(
                stderr,
                name.to_owned(),
                pid,
            )));
        }
        if let Some(stdout) = child.stdout.take() {
            readers.push(tokio::spawn(output.clone().relay(
                stdout,
                name.to_owned(),
                pid,
            )));
        }
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => return Err(spawn_error("it did not connect", &error)),
            },
            status = child.wait() => {
                let how = status.map_or_else(|error| error.to_string(), describe);
                finish_readers(readers).await;
                return Err(EngineError::Crashed(output.quote(&how)));
            }
            () = tokio::time::sleep(CONNECT_TIMEOUT) => {
                return Err(EngineError::Spawn(format!(
                    "it did not connect within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        };
        drop(listener);
        drop(dir);
        let (read_half, write_half) = stream.into_split();
        let (requests, outgoing) = mpsc::unbounded_channel();
        let (kill, killed) = oneshot::channel();
        let (exit, _) = watch::channel(None);
        let link = Arc::new(Link {
            requests,
            state: Mutex::new(LinkState::default()),
            next_id: AtomicU64::new(1),
            exit,
            kill: Mutex::new(Some(kill)),
            stopping: AtomicBool::new(false),
            stop_reason: Mutex::new(crate::engine::UNLOADED.to_owned()),
        });
        tokio::spawn(write_loop(write_half, outgoing, Arc::clone(&link)));
        tokio::spawn(read_loop(read_half, Arc::clone(&link)));
        tokio::spawn(supervise(
            child,
            pid,
            killed,
            readers,
            output,
            Arc::clone(&link),
        ));
        tracing::debug!(model = name, pid, "runner started");
        Ok(Process { pid, link })
    }
}

/// A runner process, started but with no model loaded yet.
pub struct Process {
    pid: u32,
    link: Arc<Link>,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The GPUs the runner sees, with their free memory now.
    pub async fn gpus(&self) -> Result<Vec<Gpu>, EngineError> {
        self.link
            .ask(Pending::Gpus, |id| Request::Gpus { id })
            .await
    }

    /// Loads the model. On failure the process is ended and the error says why (a load error,
    /// or how the runner died while loading).
    pub async fn load(self, params: LoadParams) -> Result<Runner, EngineError> {
        match self
            .link
            .ask(Pending::Loaded, |id| Request::Load { id, params })
            .await
        {
            Ok(info) => Ok(Runner {
                process: self,
                info: Arc::new(info),
            }),
            Err(error) => {
                self.shutdown(crate::engine::UNLOADED).await;
                Err(error)
            }
        }
    }

    /// Asks the runner to stop and waits until its process is gone (killing it if it takes
    /// longer than [`EXIT_TIMEOUT`]). Generations still running end with `reason`.
    pub async fn shutdown(&self, reason: &str) {
        self.link.stopping.store(true, Ordering::SeqCst);
        reason.clone_into(&mut self.link.stop_reason.lock().expect("stop reason lock"));
        let _ = self.link.requests.send(Request::Shutdown {
            reason: reason.to_owned(),
        });
        if tokio::time::timeout(EXIT_TIMEOUT, self.exited())
            .await
            .is_err()
        {
            tracing::warn!(pid = self.pid, "runner did not exit; killing it");
            self.link.kill();
            self.exited().await;
        }
    }

    /// Waits until the process has ended, and says how.
    pub async fn exited(&self) -> EngineError {
        self.on_exit().await
    }

    /// Resolves when the process has ended, with how; holds nothing of the process.
    pub fn on_exit(&self) -> impl std::future::Future<Output = EngineError> + Send + 'static {
        let mut exit = self.link.exit.subscribe();
        async move {
            match exit.wait_for(Option::is_some).await {
                Ok(reason) => reason.clone().unwrap_or(EngineError::Gone),
                Err(_) => EngineError::Gone,
            }
        }
    }

    /// How the process ended, if it has.
    pub fn exit_reason(&self) -> Option<EngineError> {
        self.link.exit.borrow().clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Without a shutdown first, nothing waits for it: make sure it goes.
        self.link.kill();
    }
}

/// A runner process with its model loaded: the handle the rest of whaled uses.
pub struct Runner {
    process: Process,
    info: Arc<ModelInfo>,
}

impl Runner {
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Tokenizes with the model's vocabulary; special tokens in the text are parsed.
    pub async fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<i32>, EngineError> {
        let text = text.to_owned();
        self.process
            .link
            .ask(Pending::Tokens, |id| Request::Tokenize {
                id,
                text,
                add_special,
            })
            .await
    }

    /// Renders tokens back to text (special tokens included).
    pub async fn detokenize(&self, tokens: &[i32]) -> Result<String, EngineError> {
        let tokens = tokens.to_vec();
        self.process
            .link
            .ask(Pending::Text, |id| Request::Detokenize { id, tokens })
            .await
    }

    /// Embeds each input; inputs longer than the context are cut when `truncate`.
    pub async fn embed(
        &self,
        inputs: Vec<String>,
        truncate: bool,
    ) -> Result<Embeddings, EngineError> {
        self.process
            .link
            .ask(Pending::Embeddings, |id| Request::Embed {
                id,
                inputs,
                truncate,
            })
            .await
    }

    /// Queues a job; its events arrive through the returned [`Events`], whose drop cancels it.
    pub fn generate(&self, job: GenerateJob) -> Result<Events, EngineError> {
        let link = &self.process.link;
        let (sender, receiver) = mpsc::unbounded_channel();
        let id = link.register(Pending::Events(sender))?;
        let _ = link.requests.send(Request::Generate { id, job });
        Ok(Events {
            id,
            receiver,
            link: Arc::clone(link),
            finished: false,
        })
    }

    /// Unloads: see [`Process::shutdown`].
    pub async fn shutdown(&self, reason: &str) {
        self.process.shutdown(reason).await;
    }
}

/// The events of one generation. The last is `Done`, `Rejected` or `Error` (the latter also
/// when the runner dies). Dropping it before then cancels the generation.
pub struct Events {
    id: u64,
    receiver: mpsc::UnboundedReceiver<Event>,
    link: Arc<Link>,
    finished: bool,
}

impl Events {
    pub async fn recv(&mut self) -> Option<Event> {
        let event = self.receiver.recv().await;
        if !matches!(event, Some(Event::Text(..))) {
            self.finished = true;
        }
        event
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        if !self.finished {
            self.link.forget(self.id);
            let _ = self.link.requests.send(Request::Cancel { id: self.id });
        }
    }
}

/// What whaled's side of one runner connection shares between its tasks.
struct Link {
    /// To the writer task. Closed when that task ends (the socket broke).
    requests: mpsc::UnboundedSender<Request>,
    state: Mutex<LinkState>,
    next_id: AtomicU64,
    /// How the process ended; `None` while it runs.
    exit: watch::Sender<Option<EngineError>>,
    /// Tells the supervisor to kill the process.
    kill: Mutex<Option<oneshot::Sender<()>>>,
    /// Set once whaled asked the runner to stop: its end is then not a crash.
    stopping: AtomicBool,
    /// Why it was asked to stop, for requests still waiting when it is gone.
    stop_reason: Mutex<String>,
}

#[derive(Default)]
struct LinkState {
    /// Requests waiting for their answer. Invariant: once `ended` is set, this is empty and
    /// stays so (both change under the same lock).
    pending: HashMap<u64, Pending>,
    ended: Option<EngineError>,
}

/// Where the answer to a request goes.
enum Pending {
    Events(mpsc::UnboundedSender<Event>),
    Gpus(oneshot::Sender<Result<Vec<Gpu>, EngineError>>),
    Loaded(oneshot::Sender<Result<ModelInfo, EngineError>>),
    Tokens(oneshot::Sender<Result<Vec<i32>, EngineError>>),
    Text(oneshot::Sender<Result<String, EngineError>>),
    Embeddings(oneshot::Sender<Result<Embeddings, EngineError>>),
}

impl Pending {
    /// Ends this request with `error`.
    fn fail(self, error: &EngineError) {
        match self {
            Pending::Events(sender) => {
                let _ = sender.send(Event::Error(error.to_string()));
            }
            Pending::Gpus(sender) => {
                let _ = sender.send(Err(error.clone()));
            }
            Pending::Loaded(sender) => {
                let _ = sender.send(Err(error.clone()));
            }
            Pending::Tokens(sender) => {
                let _ = sender.send(Err(error.clone()));
            }
            Pending::Text(sender) => {
                let _ = sender.send(Err(error.clone()));
            }
            Pending::Embeddings(sender) => {
                let _ = sender.send(Err(error.clone()));
            }
        }
    }
}

impl Link {
    /// Records a request waiting for an answer and gives it an id; refused once the runner is
    /// gone.
    fn register(&self, pending: Pending) -> Result<u64, EngineError> {
        let mut state = self.state.lock().expect("link lock");
        if let Some(error) = &state.ended {
            return Err(error.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        state.pending.insert(id, pending);
        Ok(id)
    }

    /// Sends a request and waits for its one answer.
    async fn ask<T>(
        &self,
        pending: fn(oneshot::Sender<Result<T, EngineError>>) -> Pending,
        request: impl FnOnce(u64) -> Request,
    ) -> Result<T, EngineError> {
        let (sender, answer) = oneshot::channel();
        let id = self.register(pending(sender))?;
        let _ = self.requests.send(request(id));
        answer.await.map_err(|_| EngineError::Gone)?
    }

    fn forget(&self, id: u64) {
        self.state.lock().expect("link lock").pending.remove(&id);
    }

    /// Hands a message from the runner to whoever waits for it.
    fn deliver(&self, message: Message) {
        let mut state = self.state.lock().expect("link lock");
        let id = match &message {
            Message::Gpus { id, .. }
            | Message::Loaded { id, .. }
            | Message::Event { id, .. }
            | Message::Tokens { id, .. }
            | Message::Text { id, .. }
            | Message::Embeddings { id, .. } => *id,
        };
        if let Message::Event { event, .. } = message {
            if matches!(event, Event::Text(..)) {
                if let Some(Pending::Events(sender)) = state.pending.get(&id) {
                    let _ = sender.send(event);
                }
            } else if let Some(Pending::Events(sender)) = state.pending.remove(&id) {
                let _ = sender.send(event);
            }
            return;
        }
        let Some(pending) = state.pending.remove(&id) else {
            return;
        };
        drop(state);
        match (pending, message) {
            (Pending::Gpus(sender), Message::Gpus { gpus, .. }) => {
                let _ = sender.send(Ok(gpus));
            }
            (Pending::Loaded(sender), Message::Loaded { result, .. }) => {
                let _ = sender.send(result);
            }
            (Pending::Tokens(sender), Message::Tokens { result, .. }) => {
                let _ = sender.send(result);
            }
            (Pending::Text(sender), Message::Text { result, .. }) => {
                let _ = sender.send(result);
            }
            (Pending::Embeddings(sender), Message::Embeddings { result, .. }) => {
                let _ = sender.send(result);
            }
            (pending, message) => {
                tracing::warn!(
                    id,
                    ?message,
                    "runner answered with the wrong kind of message"
                );
                pending.fail(&EngineError::Llama(
                    "the runner answered with the wrong kind of message".to_owned(),
                ));
            }
        }
    }

    /// The process has ended: every waiting request gets `error`, and so does every later one.
    fn end(&self, error: &EngineError) {
        let pending = {
            let mut state = self.state.lock().expect("link lock");
            state.ended = Some(error.clone());
            std::mem::take(&mut state.pending)
        };
        for (_, pending) in pending {
            pending.fail(error);
        }
        self.exit.send_replace(Some(error.clone()));
    }

    fn kill(&self) {
        if let Some(kill) = self.kill.lock().expect("kill lock").take() {
            let _ = kill.send(());
        }
    }
}

/// Sends requests, each batch of those ready in one write.
async fn write_loop(
    mut stream: OwnedWriteHalf,
    mut requests: mpsc::UnboundedReceiver<Request>,
    link: Arc<Link>,
) {
    let mut buffer = Vec::with_capacity(16 << 10);
    while let Some(first) = requests.recv().await {
        buffer.clear();
        let mut next = Some(first);
        while let Some(request) = next {
            if let Err(error) = protocol::encode(&request, &mut buffer)
                && let Some(id) = request.id()
            {
                let pending = link.state.lock().expect("link lock").pending.remove(&id);
                if let Some(pending) = pending {
                    pending.fail(&EngineError::InvalidInput(error.to_string()));
                }
            }
            next = requests.try_recv().ok();
        }
        if let Err(error) = stream.write_all(&buffer).await {
            tracing::debug!(%error, "cannot write to the runner");
            break;
        }
    }
}

/// Reads the runner's messages until it closes the socket.
async fn read_loop(stream: OwnedReadHalf, link: Arc<Link>) {
    // A decode step's frames arrive in one write: read them with one system call.
    let mut stream = tokio::io::BufReader::with_capacity(64 << 10, stream);
    let mut body = Vec::new();
    loop {
        match protocol::read_async::<Message>(&mut stream, &mut body).await {
            Ok(Some(message)) => link.deliver(message),
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(%error, "bad message from a runner");
                break;
            }
        }
    }
    // The runner is exiting, or broken: make sure it is gone. The supervisor says why.
    link.kill();
}

/// Waits for the process to end (or kills it when told to), then ends every request on it
/// with what happened.
async fn supervise(
    mut child: tokio::process::Child,
    pid: u32,
    killed: oneshot::Receiver<()>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    output: Output,
    link: Arc<Link>,
) {
    let status = tokio::select! {
        status = child.wait() => status,
        _ = killed => {
            let _ = child.start_kill();
            child.wait().await
        }
    };
    finish_readers(readers).await;
    let how = status.map_or_else(|error| error.to_string(), describe);
    let clean = link.stopping.load(Ordering::SeqCst);
    let error = if clean {
        EngineError::Stopped(link.stop_reason.lock().expect("stop reason lock").clone())
    } else {
        EngineError::Crashed(output.quote(&how))
    };
    if !clean {
        tracing::error!(pid, "{error}");
    }
    link.end(&error);
}

/// Waits briefly for the output relays to reach the end of the output. A grandchild that
/// holds the pipes open must not keep the death of a runner from being reported.
async fn finish_readers(readers: Vec<tokio::task::JoinHandle<()>>) {
    let all = futures::future::join_all(readers);
    let _ = tokio::time::timeout(Duration::from_secs(2), all).await;
}

/// "exited with status 1", "killed by signal 6 (SIGABRT)".
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(signal) = status.signal() {
        let name = match signal {
            4 => " (SIGILL)",
            6 => " (SIGABRT)",
            7 => " (SIGBUS)",
            8 => " (SIGFPE)",
            9 => " (SIGKILL, e.g. the out-of-memory killer)",
            11 => " (SIGSEGV)",
            15 => " (SIGTERM)",
            _ => "",
        };
        return format!("killed by signal {signal}{name}");
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => status.to_string(),
    }
}

/// The last lines a runner wrote, relayed into whaled's log as they come.
#[derive(Clone, Default)]
struct Output {
    tail: Arc<Mutex<VecDeque<Line>>>,
}

/// A line of output and its log level (none for raw output).
type Line = (Option<tracing::Level>, String);

impl Output {
    /// Logs each line of `stream` under the runner's model name and keeps the last few.
    async fn relay(self, stream: impl AsyncRead + Unpin, model: String, pid: u32) {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let (level, text) = split_level(&line);
            match level {
                Some(tracing::Level::ERROR) => {
                    tracing::error!(model, pid, "{text}");
                }
                Some(tracing::Level::WARN) => {
                    tracing::warn!(model, pid, "{text}");
                }
                Some(tracing::Level::DEBUG) => {
                    tracing::debug!(model, pid, "{text}");
                }
                Some(tracing::Level::TRACE) => {
                    tracing::trace!(model, pid, "{text}");
                }
                _ => tracing::info!(model, pid, "{text}"),
            }
            if text.trim().is_empty()
                || matches!(level, Some(tracing::Level::DEBUG | tracing::Level::TRACE))
            {
                continue;
            }
            let mut tail = self.tail.lock().expect("tail lock");
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back((level, text.trim().to_owned()));
        }
    }

    /// `how` with the last lines that say what went wrong: errors, and raw output such as
    /// llama.cpp's assertion messages. Routine log lines (loading chatter, warnings about the
    /// model) say nothing about a death and are left out.
    fn quote(&self, how: &str) -> String {
        let tail = self.tail.lock().expect("tail lock");
        let telling: Vec<&str> = tail
            .iter()
            .filter(|(level, _)| level.is_none_or(|level| level == tracing::Level::ERROR))
            .map(|(_, line)| line.as_str())
            .collect();
        let quoted = &telling[telling.len().saturating_sub(QUOTED_LINES)..];
        if quoted.is_empty() {
            how.to_owned()
        } else {
            format!("{how}: {}", quoted.join("; "))
        }
    }
}

/// A runner's log line starts with its level (see [`process`]'s log format); other output
/// (llama.cpp writing to stderr itself) has none.
fn split_level(line: &str) -> (Option<tracing::Level>, &str) {
    let trimmed = line.trim_start();
    let (word, rest) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
    match word.parse::<tracing::Level>() {
        Ok(level) if word.chars().all(|c| c.is_ascii_uppercase()) => (Some(level), rest),
        _ => (None, line),
    }
}

impl Request {
    /// The id an answer will carry, for requests that get one.
    fn id(&self) -> Option<u64> {
        match self {
            Request::Gpus { id }
            | Request::Load { id, .. }
            | Request::Generate { id, .. }
            | Request::Tokenize { id, .. }
            | Request::Detokenize { id, .. }
            | Request::Embed { id, .. } => Some(*id),
            Request::Cancel { .. } | Request::Shutdown { .. } => None,
        }
    }
}
