//! The `whale` binary as a person meets it, without a daemon: usage errors, help, completion
//! scripts, and the errors and hints when whaled is unreachable or another server holds the
//! address. (End-to-end tests against a real whaled live in the workspace's `tests/`.)

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::process::{Command, Output};

fn whale(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_whale"));
    command
        .args(args)
        .env_remove("WHALE_HOST")
        .env("NO_COLOR", "1");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run whale")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn usage_errors_exit_2() {
    let output = whale(&["pull"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(output.stdout.is_empty());
    let output = whale(&["frobnicate"], &[]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn help_goes_to_stdout() {
    let output = whale(&["--help"], &[]);
    assert_eq!(output.status.code(), Some(0));
    let help = text(&output.stdout);
    for command in [
        "serve",
        "create",
        "show",
        "run",
        "stop",
        "pull",
        "push",
        "list",
        "ps",
        "cp",
        "rm",
        "completion",
    ] {
        assert!(help.contains(command), "help lacks {command}:\n{help}");
    }
}

#[test]
fn completion_scripts() {
    for shell in ["bash", "zsh", "fish"] {
        let output = whale(&["completion", shell], &[]);
        assert_eq!(output.status.code(), Some(0), "{shell}");
        assert!(text(&output.stdout).contains("whale"), "{shell}");
    }
}

#[test]
fn unreachable_daemon_without_autostart() {
    let host = format!("127.0.0.1:{}", closed_port());
    let output = whale(
        &["list"],
        &[("WHALE_HOST", &host), ("WHALE_NO_AUTOSTART", "1")],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!("error: could not connect to whaled at {host}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: start it with 'whale serve'"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn remote_daemon_is_never_started() {
    // TEST-NET-1 (RFC 5737): not local, so no autostart whatever WHALE_NO_AUTOSTART says.
    let output = whale(
        &["ps"],
        &[("WHALE_HOST", "192.0.2.1:9"), ("WHALE_NO_AUTOSTART", "0")],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("error: could not connect to whaled at 192.0.2.1:9"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: whale starts whaled only on this machine"),
        "{stderr}"
    );
    assert!(!stderr.contains("starting whaled"), "{stderr}");
}

#[test]
fn version_without_a_daemon_still_prints_the_client() {
    let host = format!("127.0.0.1:{}", closed_port());
    let output = whale(&["--version"], &[("WHALE_HOST", &host)]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        text(&output.stdout),
        format!("whale version {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert!(
        text(&output.stderr).contains("could not connect"),
        "{}",
        text(&output.stderr)
    );
}

/// Answers every request like an Ollama server answers `/api/version`.
fn ollama_lookalike() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = r#"{"version":"0.12.3"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn another_server_on_the_address_is_named() {
    let host = format!("127.0.0.1:{}", ollama_lookalike());
    let output = whale(&["list"], &[("WHALE_HOST", &host)]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("error: the server at {host} is not whaled")),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: another server (Ollama?) uses this address"),
        "{stderr}"
    );
    assert!(!stderr.contains("starting whaled"), "{stderr}");
}
