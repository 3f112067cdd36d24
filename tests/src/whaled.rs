//! A real `whaled` for end-to-end tests: built once per test process, started on a free
//! loopback port with its own temporary store, killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::workspace_root;

/// Path of a binary of the workspace, built (or found up to date) once per test process with
/// the same profile as the running test.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // <target>/<profile>/deps/<test>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir")
            .to_path_buf();
        let release = profile_dir
            .file_name()
            .is_some_and(|name| name == "release");
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        // The same selection as `cargo test --workspace`, so features resolve alike and the
        // build is a no-op there (another selection would rebuild llama.cpp for its own
        // feature set).
        cargo.current_dir(workspace_root()).args([
            "build",
            "--quiet",
            "--workspace",
            "--bins",
            "--tests",
        ]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build of whaled/whale failed");
        profile_dir
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A running whaled; killed on drop. Its log is printed if the test fails.
pub struct Whaled {
    child: Child,
    pub address: SocketAddr,
    /// The store root (a temp dir unless the builder was given one).
    pub models: PathBuf,
    _store: Option<tempfile::TempDir>,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Options for starting a [`Whaled`].
#[derive(Default)]
pub struct WhaledBuilder {
    env: Vec<(String, String)>,
    models: Option<PathBuf>,
}

impl WhaledBuilder {
    /// Sets an environment variable for the daemon (e.g. `WHALE_NUM_PARALLEL`).
    #[must_use]
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Uses this store root instead of a fresh temp dir.
    #[must_use]
    pub fn models(mut self, root: impl Into<PathBuf>) -> Self {
        self.models = Some(root.into());
        self
    }

    pub fn start(self) -> Whaled {
        let (store, models) = if let Some(root) = self.models {
            (None, root)
        } else {
            let dir = tempfile::tempdir().expect("temp store");
            let root = dir.path().to_path_buf();
            (Some(dir), root)
        };
        let mut command = Command::new(binary("whaled"));
        command
            .env_remove("WHALE_HOST")
            .env_remove("WHALE_API_KEY")
            .env("WHALE_HOST", "127.0.0.1:0")
            .env("WHALE_MODELS", &models)
            .env("WHALE_LOG", "info")
            .env("WHALE_NUM_THREADS", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start whaled");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().expect("log").push_str(&line);
                line.clear();
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(address) = line.trim().strip_prefix("whaled listening on ") {
                    let _ = sender.send(address.parse::<SocketAddr>());
                }
                line.clear();
            }
            // Drain whatever follows so the daemon never blocks on a full pipe.
            let _ = reader.read_to_end(&mut Vec::new());
        });
        let address = match receiver.recv_timeout(Duration::from_mins(1)) {
            Ok(Ok(address)) => address,
            other => {
                let _ = child.kill();
                panic!(
                    "whaled did not start ({other:?}); its log:\n{}",
                    log.lock().expect("log")
                );
            }
        };
        Whaled {
            child,
            address,
            models,
            _store: store,
            log,
        }
    }
}

impl Whaled {
    pub fn builder() -> WhaledBuilder {
        WhaledBuilder::default()
    }

    /// Starts a daemon with defaults and an empty temporary store.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Whether a line of the log satisfies `wanted`, waiting up to a minute for one: the log
    /// is read on another thread, so a line whaled wrote before answering may lag the answer.
    pub fn log_shows(&self, wanted: impl Fn(&str) -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_mins(1);
        loop {
            if self.log().lines().any(&wanted) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The daemon's process id (to read its memory use from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Process ids of the runners whaled started for `model` (the name a request used), in
    /// the order they were loaded, read from its log (`loaded model=… pid=…`).
    pub fn runner_pids(&self, model: &str) -> Vec<u32> {
        self.runner_pids_within(model, 0, Duration::ZERO)
    }

    /// [`Self::runner_pids`] once the log shows `loads` of them, waiting up to a minute: the
    /// log is read on another thread, so a line whaled wrote before answering may not be in
    /// it yet when the answer comes.
    pub fn loaded_runner_pids(&self, model: &str, loads: usize) -> Vec<u32> {
        self.runner_pids_within(model, loads, Duration::from_mins(1))
    }

    fn runner_pids_within(&self, model: &str, loads: usize, patience: Duration) -> Vec<u32> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            let pids = self.runner_pids_now(model);
            if pids.len() >= loads || std::time::Instant::now() >= deadline {
                return pids;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn runner_pids_now(&self, model: &str) -> Vec<u32> {
        let wanted = format!("model={model} ");
        self.log()
            .lines()
            .filter(|line| line.contains(" loaded ") && line.contains(&wanted))
            .filter_map(|line| {
                let (_, rest) = line.split_once(" pid=")?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .collect()
    }

    /// Sends SIGTERM, as a service manager stopping whaled does.
    pub fn terminate(&self) {
        signal(self.child.id(), "TERM");
    }

    /// Waits up to `timeout` for the daemon to exit; its exit status, or `None` if it still
    /// runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A `whale` command aimed at this daemon (see [`whale`]).
    pub fn whale<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        whale(&self.url(), args)
    }
}

/// Sends `signal` (`TERM`, `KILL`, …) to process `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Whether process `pid` exists (and is not a zombie waiting to be reaped).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// Waits up to `timeout` for process `pid` to be gone.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while process_alive(pid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A `whale` command aimed at `host` (any form `WHALE_HOST` takes), as a person's shell would
/// run it: never starting a daemon of its own (`WHALE_NO_AUTOSTART`), no colour (`NO_COLOR`),
/// no REPL history on disk (`WHALE_NOHISTORY`). Standard input, output and error are the
/// caller's to set.
pub fn whale<I, S>(host: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(binary("whale"));
    command
        .args(args)
        .env("WHALE_HOST", host)
        .env_remove("WHALE_API_KEY")
        .env("WHALE_NO_AUTOSTART", "1")
        .env("NO_COLOR", "1")
        .env("WHALE_NOHISTORY", "1");
    command
}

impl Drop for Whaled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- whaled log ---\n{}", self.log());
        }
    }
}

/// Talking to a daemon over plain HTTP with JSON values, so tests see the wire exactly.
impl Whaled {
    /// A blocking HTTP client with no proxy and a generous timeout.
    pub fn http() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_mins(10))
            .build()
            .expect("http client")
    }

    /// `POST path` with a JSON body; returns the status and the body parsed as JSON (or as a
    /// JSON string when it is not JSON).
    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let response = Self::http()
            .post(format!("{}{path}", self.url()))
            .json(body)
            .send()
            .expect("request");
        let status = response.status().as_u16();
        let text = response.text().expect("body");
        (status, parse_body(&text))
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = Self::http()
            .get(format!("{}{path}", self.url()))
            .send()
            .expect("request");
        let status = response.status().as_u16();
        let text = response.text().expect("body");
        (status, parse_body(&text))
    }

    /// `POST path` reading an NDJSON stream to the end: every line parsed.
    pub fn stream(&self, path: &str, body: &serde_json::Value) -> Vec<serde_json::Value> {
        let response = Self::http()
            .post(format!("{}{path}", self.url()))
            .json(body)
            .send()
            .expect("request");
        let status = response.status().as_u16();
        let text = response.text().expect("body");
        assert_eq!(status, 200, "{path} answered {status}: {text}");
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("bad NDJSON line {line:?}: {e}"))
            })
            .collect()
    }

    /// Uploads a local file as a blob (unless the store has it, as Ollama's clients check
    /// first) and creates model `name` from it.
    pub fn create_from_gguf(&self, name: &str, gguf: &Path) {
        let digest = sha256_file(gguf);
        let blob = format!("{}/api/blobs/{digest}", self.url());
        let present = Self::http()
            .head(&blob)
            .send()
            .is_ok_and(|response| response.status().is_success());
        if !present {
            let file = std::fs::File::open(gguf).expect("open GGUF");
            let response = Self::http()
                .post(&blob)
                .body(file)
                .send()
                .expect("upload blob");
            assert!(
                response.status().is_success(),
                "blob upload answered {}",
                response.status()
            );
        }
        let (status, body) = self.post(
            "/api/create",
            &serde_json::json!({"model": name, "files": {"model.gguf": digest}, "stream": false}),
        );
        assert_eq!(status, 200, "create {name}: {body}");
    }
}

fn parse_body(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// `sha256:<hex>` of a file.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path).expect("open file to hash");
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).expect("hash file");
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// A running `whaled worker` (what `whale worker` runs); killed on drop.
pub struct Worker {
    child: Child,
    pub address: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Worker {
    /// Starts a worker listening on `listen` (`127.0.0.1:0` for a free port) with `token`
    /// (`WHALE_WORKER_TOKEN`) if given, and waits for it to listen.
    pub fn start(listen: &str, token: Option<&str>) -> Self {
        Self::start_with(listen, token, &[])
    }

    /// [`Worker::start`] with more arguments (`--tls-cert`, …).
    pub fn start_with(listen: &str, token: Option<&str>, args: &[&str]) -> Self {
        let mut command = Command::new(binary("whaled"));
        command
            .args(["worker", "--listen", listen, "--no-cache", "--threads", "2"])
            .args(args)
            .env_remove("WHALE_WORKER_TOKEN")
            .env("WHALE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            command.env("WHALE_WORKER_TOKEN", token);
        }
        let mut child = command.spawn().expect("start whaled worker");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (sender, receiver) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.trim().strip_prefix("whale worker listening on ") {
                    let _ = sender.send(address.parse::<SocketAddr>());
                }
                let mut log = sink.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let address = match receiver.recv_timeout(Duration::from_mins(1)) {
            Ok(Ok(address)) => address,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the worker did not start ({other:?}); its output:\n{}",
                    log.lock().expect("log")
                );
            }
        };
        Self {
            child,
            address,
            log,
        }
    }

    /// Its standard output and error so far (llama.cpp's RPC server prints to the former).
    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Kills it with SIGKILL and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A self-signed certificate for `127.0.0.1` and `localhost` and its key, written as PEM files
/// `<name>.pem` and `<name>.key` in `dir`: (certificate path, key path), for TLS workers.
pub fn self_signed_certificate(dir: &Path, name: &str) -> (String, String) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate");
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    (
        cert_path.to_string_lossy().into_owned(),
        key_path.to_string_lossy().into_owned(),
    )
}
