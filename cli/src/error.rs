//! The CLI's errors, each carrying what a person needs to act, and the `hint:` that goes
//! with it. `main` prints `error: <message>`, the cause chain, then the hint, and exits with
//! [`Error::exit_code`].

use std::path::PathBuf;
use std::process::ExitStatus;

/// Why whaled could not be reached, which decides the hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// The address is on another machine: whale never starts a daemon there.
    Remote,
    /// Local, but `WHALE_NO_AUTOSTART` is set.
    AutostartDisabled,
}

/// Everything that can make a `whale` command fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not connect to whaled at {address}: {reason}")]
    Unreachable {
        address: String,
        why: Unreachable,
        /// The innermost cause ("Connection refused"); the layers above it say nothing more.
        reason: String,
    },
    #[error("the server at {address} is not whaled{}", describe_server(.server.as_deref(), .version.as_deref()))]
    NotWhaled {
        address: String,
        server: Option<String>,
        version: Option<String>,
    },
    #[error("cannot start {}", .program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("whaled stopped right after starting ({status}); its log is {}", .log.display())]
    DaemonExited { status: ExitStatus, log: PathBuf },
    #[error("whaled did not answer at {address} within {seconds} s; its log is {}", .log.display())]
    DaemonSilent {
        address: String,
        seconds: u64,
        log: PathBuf,
    },
    #[error("model '{model}' not found")]
    ModelNotFound { model: String },
    #[error("cannot pull '{model}'")]
    Pull {
        model: String,
        #[source]
        source: Box<Error>,
    },
    #[error(transparent)]
    Api(whale_api::Error),
    /// A failure whaled reported in the middle of a stream it had begun with `200 OK` (a
    /// registry that cannot be reached during a pull, a model that fails while answering): its
    /// message alone, since the status of the stream says nothing about it.
    #[error("{message}")]
    Daemon { message: String },
    /// `whale verify` found blobs that do not match or models that lack some.
    #[error("the store is damaged: {summary}")]
    Damaged { summary: String, repaired: bool },
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", .path.display())]
    Modelfile { path: PathBuf, message: String },
    #[error("cannot find the home directory, so there is no data directory")]
    NoDataDirectory,
    #[error("{0}")]
    Usage(String),
    #[error("cannot read the input")]
    Input(#[source] rustyline::error::ReadlineError),
    #[error("cannot write the output")]
    Output(#[from] std::io::Error),
    #[error("interrupted")]
    Interrupted,
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl From<whale_api::Error> for Error {
    fn from(error: whale_api::Error) -> Self {
        match error {
            whale_api::Error::Api {
                status: 200,
                message,
            } => Self::Daemon { message },
            other => Self::Api(other),
        }
    }
}

/// A 404 from the daemon names the model the person asked for; other errors pass through.
pub fn not_found(error: whale_api::Error, model: &str) -> Error {
    match error {
        whale_api::Error::Api { status: 404, .. } => Error::ModelNotFound {
            model: model.to_owned(),
        },
        other => other.into(),
    }
}

/// The innermost cause of `error`: what actually went wrong under the layers of context.
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Prints `error: <message>`, each cause on its own line, then `hint: …` — all on stderr.
/// A cause already spelled out in the line above it (HTTP client layers repeat themselves) is
/// left out.
pub fn report(error: &Error) {
    use std::fmt::Write as _;
    let mut text = format!("error: {error}\n");
    let mut previous = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let line = cause.to_string();
        if !previous.contains(&line) {
            let _ = writeln!(text, "  caused by: {line}");
        }
        previous = line;
        source = cause.source();
    }
    if let Some(hint) = error.hint() {
        let _ = writeln!(text, "hint: {hint}");
    }
    let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
}

fn describe_server(server: Option<&str>, version: Option<&str>) -> String {
    match (server, version) {
        (Some(server), Some(version)) => format!(" (it says it is '{server}' version {version})"),
        (Some(server), None) => format!(" (it says it is '{server}')"),
        (None, Some(version)) => {
            format!(" (it answers /api/version with {version}, as Ollama does)")
        }
        (None, None) => String::new(),
    }
}

/// What whaled's refusal of a pull that cannot fit this machine says.
const WONT_FIT: &str = "will not fit on this machine";

impl Error {
    /// The process exit status: 2 for usage errors, 130 after Ctrl-C, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Interrupted => 130,
            _ => 1,
        }
    }

    /// Whether stdout was closed by its reader: the command then stops quietly.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Output(error) if error.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// What the person can do about it, when there is something useful to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Unreachable {
                why: Unreachable::Remote,
                ..
            } => Some(
                "whale starts whaled only on this machine: run 'whale serve' on that host, \
                 or set WHALE_HOST to another address"
                    .into(),
            ),
            Self::Unreachable {
                why: Unreachable::AutostartDisabled,
                ..
            } => Some(
                "start it with 'whale serve' (WHALE_NO_AUTOSTART is set) or set WHALE_HOST".into(),
            ),
            Self::NotWhaled { .. } => Some(
                "another server (Ollama?) uses this address: pick another one for whale, e.g. \
                 export WHALE_HOST=127.0.0.1:11435"
                    .into(),
            ),
            Self::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Some("install whaled next to whale (./install.sh does) or put it on PATH".into())
            }
            Self::DaemonExited { .. } | Self::DaemonSilent { .. } => {
                Some("run 'whale serve' to see what whaled says".into())
            }
            Self::ModelNotFound { model } => Some(format!(
                "'whale list' shows the models here; 'whale pull {model}' fetches this one"
            )),
            // whaled's refusal to download what cannot load here says the numbers itself.
            Self::Pull { model, source } if source.to_string().contains(WONT_FIT) => Some(format!(
                "'whale pull --force {model}' downloads it anyway; a smaller tag or \
                 quantization of it may fit"
            )),
            Self::Pull { .. } => Some(
                "check the name: 'whale list' shows the models here, and a name without a \
                 registry host is pulled from registry.ollama.ai"
                    .into(),
            ),
            Self::Damaged {
                repaired: false, ..
            } => Some(
                "'whale verify --repair' removes corrupt blobs; then 'whale pull' each model \
                 listed fetches what it lacks"
                    .into(),
            ),
            Self::Damaged { repaired: true, .. } => {
                Some("'whale pull' each model listed to fetch what it lacks".into())
            }
            Self::Api(whale_api::Error::InvalidAddress { .. }) => {
                Some("set WHALE_HOST to host:port, e.g. 127.0.0.1:11434".into())
            }
            Self::Api(whale_api::Error::Api { status: 401, .. }) => {
                Some("this whaled requires an API key: set WHALE_API_KEY to one of its keys".into())
            }
            Self::Api(whale_api::Error::InvalidApiKey) => {
                Some("an API key is printable ASCII without spaces or commas".into())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_way_out() {
        let unreachable = |why| Error::Unreachable {
            address: "10.0.0.5:11434".into(),
            why,
            reason: "Connection refused".into(),
        };
        assert!(
            unreachable(Unreachable::Remote)
                .hint()
                .unwrap()
                .contains("WHALE_HOST")
        );
        assert!(
            unreachable(Unreachable::AutostartDisabled)
                .hint()
                .unwrap()
                .contains("WHALE_NO_AUTOSTART")
        );
        let missing = Error::ModelNotFound {
            model: "deepseek-r1:7b".into(),
        };
        assert_eq!(
            missing.hint().unwrap(),
            "'whale list' shows the models here; 'whale pull deepseek-r1:7b' fetches this one"
        );
        let spawn = Error::Spawn {
            program: "whaled".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(spawn.hint().unwrap().contains("PATH"));
        assert_eq!(Error::Usage("x".into()).hint(), None);
        let unauthorised = Error::Api(whale_api::Error::Api {
            status: 401,
            message: "invalid API key".into(),
        });
        assert!(unauthorised.hint().unwrap().contains("WHALE_API_KEY"));
    }

    #[test]
    fn not_whaled_says_what_answered() {
        let ollama = Error::NotWhaled {
            address: "127.0.0.1:11434".into(),
            server: None,
            version: Some("0.12.3".into()),
        };
        assert_eq!(
            ollama.to_string(),
            "the server at 127.0.0.1:11434 is not whaled (it answers /api/version with 0.12.3, as Ollama does)"
        );
        assert!(ollama.hint().unwrap().contains("WHALE_HOST"));
    }

    #[test]
    fn failures_mid_stream_are_the_daemon_s_message_alone() {
        let error = Error::from(whale_api::Error::Api {
            status: 200,
            message: "registry unreachable".into(),
        });
        assert_eq!(error.to_string(), "registry unreachable");
        let error = Error::from(whale_api::Error::Api {
            status: 400,
            message: "invalid model name".into(),
        });
        assert_eq!(error.to_string(), "invalid model name (HTTP 400)");
        let pull = Error::Pull {
            model: "no-such-model".into(),
            source: Box::new(Error::Daemon {
                message: "file does not exist".into(),
            }),
        };
        assert_eq!(pull.to_string(), "cannot pull 'no-such-model'");
        assert!(pull.hint().unwrap().contains("whale list"));
    }

    #[test]
    fn exit_codes_and_broken_pipes() {
        assert_eq!(Error::Usage("bad".into()).exit_code(), 2);
        assert_eq!(Error::Interrupted.exit_code(), 130);
        assert_eq!(Error::ModelNotFound { model: "m".into() }.exit_code(), 1);
        let pipe = Error::Output(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(pipe.is_broken_pipe());
        assert!(!Error::Output(std::io::Error::other("disk full")).is_broken_pipe());
    }
}
