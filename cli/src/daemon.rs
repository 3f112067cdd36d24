//! Finding whaled, and starting it when it is not running.
//!
//! Before a command that needs the daemon, whale asks `GET /api/version`:
//! - an answer with `"server": "whaled"` → go on;
//! - an answer without it → something else (Ollama?) holds the address: say so and how to pick
//!   another (`WHALE_HOST`);
//! - connection refused, on a local address (loopback, `localhost`, unspecified), autostart not
//!   disabled (`WHALE_NO_AUTOSTART`) → start `whaled` detached (own process group, output to
//!   `<data dir>/whaled.log`) and poll until it answers, up to [`STARTUP_WAIT`];
//! - anything else → an error whose hint says what to do. whale never starts a daemon for a
//!   remote address.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use whale_api::{Client, Host};

use crate::error::{Error, Unreachable, root_cause};
use crate::output;

/// Set to a true value (`1`, `true`, …) to never start whaled from the CLI.
pub const NO_AUTOSTART_ENV: &str = "WHALE_NO_AUTOSTART";
/// The value `/api/version`'s `server` field has when whaled answers.
pub const SERVER_NAME: &str = "whaled";
/// How long a freshly started whaled gets to answer.
pub const STARTUP_WAIT: Duration = Duration::from_secs(10);

/// What to do when nothing answers at `address`.
pub fn on_refused(address: &Host, autostart_disabled: bool) -> Result<(), Unreachable> {
    if !address.is_local() {
        Err(Unreachable::Remote)
    } else if autostart_disabled {
        Err(Unreachable::AutostartDisabled)
    } else {
        Ok(())
    }
}

/// whale's data directory (`~/.local/share/whale` on Linux): the daemon's log and the REPL's
/// history live there.
pub fn data_dir() -> Result<PathBuf, Error> {
    directories::ProjectDirs::from("", "", "whale")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .ok_or(Error::NoDataDirectory)
}

/// The whaled binary: the one next to this executable (how install.sh and cargo lay them out),
/// else whatever `whaled` is on PATH.
pub fn whaled_program() -> PathBuf {
    let name = format!("whaled{}", std::env::consts::EXE_SUFFIX);
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&name)))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A client for whaled, started first if needed and allowed.
pub async fn connect() -> Result<Client, Error> {
    let client = client()?;
    let address = client.host().clone();
    match check(&client, &address).await {
        Ok(_) => return Ok(client),
        Err(Probe::Refused(source)) => {
            let disabled = crate::cli::env_flag(NO_AUTOSTART_ENV);
            if let Err(why) = on_refused(&address, disabled) {
                return Err(Error::Unreachable {
                    address: address.to_string(),
                    why,
                    reason: root_cause(&source),
                });
            }
        }
        Err(Probe::Failed(error)) => return Err(error),
    }
    start(&client, &address).await?;
    Ok(client)
}

/// A client for `WHALE_HOST` without checking anything (for `whale version`).
pub fn client() -> Result<Client, Error> {
    Ok(Client::from_env()?)
}

/// What a version probe found, short of whaled.
pub enum Probe {
    /// Nothing listens: worth starting whaled.
    Refused(whale_api::Error),
    /// Anything else, already an error for the person.
    Failed(Error),
}

/// What whaled says about itself in `/api/version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// whale's own version (`whale_version`), else the Ollama API version it speaks.
    pub version: String,
}

/// Asks `/api/version` and checks that whaled answered.
pub async fn check(client: &Client, address: &Host) -> Result<Server, Probe> {
    match client.version().await {
        Ok(answer) => {
            // Read by wire names: `server` and `whale_version` are whaled's additions.
            let answer = serde_json::to_value(&answer).unwrap_or_default();
            let field = |name: &str| answer[name].as_str().map(str::to_owned);
            let version = field("version");
            match field("server") {
                Some(server) if server == SERVER_NAME => Ok(Server {
                    version: field("whale_version").or(version).unwrap_or_default(),
                }),
                server => Err(Probe::Failed(Error::NotWhaled {
                    address: address.to_string(),
                    server,
                    version,
                })),
            }
        }
        // Nothing listens there (refused or unreachable): worth starting whaled if local.
        Err(error @ whale_api::Error::Connect { .. }) => Err(Probe::Refused(error)),
        Err(error) => Err(Probe::Failed(Error::Api(error))),
    }
}

/// Starts whaled detached and waits until it answers.
async fn start(client: &Client, address: &Host) -> Result<(), Error> {
    let log = data_dir()?.join("whaled.log");
    output::note(&format!(
        "starting whaled at {address} (log: {})",
        log.display()
    ));
    let mut child = spawn(&log)?;
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match check(client, address).await {
            Ok(_) => return Ok(()),
            Err(Probe::Failed(error)) => return Err(error),
            Err(Probe::Refused(_)) => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::DaemonExited { status, log });
        }
        if started.elapsed() > STARTUP_WAIT {
            return Err(Error::DaemonSilent {
                address: address.to_string(),
                seconds: STARTUP_WAIT.as_secs(),
                log,
            });
        }
    }
}

/// Spawns whaled in its own process group (so a Ctrl-C in this terminal does not stop it),
/// stdin closed, stdout and stderr appended to `log`. It inherits `WHALE_HOST`, so it listens
/// where whale looks.
fn spawn(log: &std::path::Path) -> Result<Child, Error> {
    let program = whaled_program();
    let io_error = |source| Error::Read {
        path: log.to_path_buf(),
        source,
    };
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(io_error)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_error)?;
    let file_too = file.try_clone().map_err(io_error)?;
    let mut command = Command::new(&program);
    command.stdin(Stdio::null()).stdout(file).stderr(file_too);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        command.process_group(0);
    }
    command
        .spawn()
        .map_err(|source| Error::Spawn { program, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(host: &str, port: u16) -> Host {
        Host::new(host, port)
    }

    #[test]
    fn locality() {
        for local in [
            "127.0.0.1",
            "127.1.2.3",
            "localhost",
            "LOCALHOST",
            "api.localhost",
            "::1",
            "0.0.0.0",
            "::",
        ] {
            assert!(address(local, 1).is_local(), "{local}");
        }
        for remote in [
            "10.0.0.5",
            "192.168.1.2",
            "gpu-box.lan",
            "example.com",
            "fe80::1",
        ] {
            assert!(!address(remote, 1).is_local(), "{remote}");
        }
    }

    #[test]
    fn autostart_decision() {
        let local = address("127.0.0.1", 11434);
        let remote = address("10.0.0.5", 11434);
        assert_eq!(on_refused(&local, false), Ok(()));
        assert_eq!(
            on_refused(&local, true),
            Err(Unreachable::AutostartDisabled)
        );
        assert_eq!(on_refused(&remote, false), Err(Unreachable::Remote));
        assert_eq!(on_refused(&remote, true), Err(Unreachable::Remote));
    }
}
