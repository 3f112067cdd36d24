//! End-to-end: the real `whale` binary against a real `whaled`, as a person uses it — one-shot
//! answers, piped prompts, the REPL in a pseudo-terminal, pulls into a pipe, the model
//! commands, and the errors with their hints. (`cli/tests/binary.rs` covers what needs no
//! daemon: usage errors, help, completion scripts.)
//!
//! Answers are checked against the same request made through the HTTP API, on Gemma 3 270M
//! made into `counter`: its template passes the messages through as raw text and its
//! parameters make it greedy and short, so this base model continues a count (`1, 2, 3, 4, 5,`
//! → ` 6, 7, 8`) and every answer is known.

use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Command, Stdio};

use rexpect::process::WaitStatus;
use rexpect::reader::Options;
use serde_json::{Value, json};
use whale_tests::fixtures;
use whale_tests::whaled::{self, Whaled};

/// A prompt whose greedy continuation is ` 6, 7, 8`.
const COUNT: &str = "1, 2, 3, 4, 5,";

/// The Modelfile of `counter`, on top of the `gemma` model.
const COUNTER: &str = r#"FROM gemma
TEMPLATE """{{ bos_token }}{% for message in messages %}{{ message.content }}{% endfor %}"""
PARAMETER temperature 0
PARAMETER num_predict 8
PARAMETER num_ctx 512
"#;

/// How one `whale` run ended.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Runs `command` to its end with `input` on a piped stdin (none: stdin is closed).
    fn of(mut command: Command, input: Option<&str>) -> Self {
        command
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start whale");
        if let Some(input) = input {
            // Dropping the handle closes the pipe, so whale reads to its end.
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(input.as_bytes()).expect("write stdin");
        }
        let output = child.wait_with_output().expect("wait for whale");
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts that whale exited 0.
    #[track_caller]
    fn success(self) -> Self {
        assert_eq!(self.code, Some(0), "whale failed: {self:#?}");
        self
    }

    /// Asserts that whale exited 1 with `error: <message>…` and a hint on stderr, nothing on
    /// stdout.
    #[track_caller]
    fn failure(self, message: &str) -> Self {
        assert_eq!(self.code, Some(1), "{self:#?}");
        assert!(
            self.stderr.contains(&format!("error: {message}")),
            "stderr lacks 'error: {message}': {self:#?}"
        );
        assert!(
            self.stderr.lines().any(|line| line.starts_with("hint: ")),
            "no hint: {self:#?}"
        );
        assert_eq!(self.stdout, "", "{self:#?}");
        self
    }

    /// The rows of a table on stdout, each split into its columns (the header first).
    fn table(&self) -> Vec<Vec<&str>> {
        self.stdout
            .lines()
            .map(|line| {
                line.split("  ")
                    .map(str::trim)
                    .filter(|cell| !cell.is_empty())
                    .collect()
            })
            .collect()
    }
}

/// `whale ARGS` against `daemon`, stdin closed.
fn whale(daemon: &Whaled, args: &[&str]) -> Run {
    Run::of(daemon.whale(args), None)
}

/// A daemon with `gemma` (Gemma 3 270M) and `counter` made from it by `whale create`.
fn counter() -> Whaled {
    let daemon = Whaled::start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    let dir = tempfile::tempdir().expect("temp dir");
    let modelfile = dir.path().join("Modelfile");
    std::fs::write(&modelfile, COUNTER).expect("write Modelfile");
    let created = whale(
        &daemon,
        &[
            "create",
            "counter",
            "-f",
            modelfile.to_str().expect("UTF-8 path"),
        ],
    )
    .success();
    assert_eq!(
        created.stderr.lines().last(),
        Some("success"),
        "{created:#?}"
    );
    daemon
}

/// `counter`'s answer to `messages` through `POST /api/chat`, with extra `options`.
fn api_answer(daemon: &Whaled, messages: &Value, options: Option<Value>) -> String {
    let mut request = json!({"model": "counter", "messages": messages, "stream": false});
    if let Some(options) = options {
        request["options"] = options;
    }
    let (status, body) = daemon.post("/api/chat", &request);
    assert_eq!(status, 200, "{body}");
    body["message"]["content"]
        .as_str()
        .expect("answer text")
        .to_owned()
}

/// An answer as whale prints it: the text, ending its last line.
fn printed(answer: &str) -> String {
    if answer.is_empty() || answer.ends_with('\n') {
        answer.to_owned()
    } else {
        format!("{answer}\n")
    }
}

#[test]
fn one_shot_prompt_prints_the_answer() {
    let daemon = counter();
    let run = whale(&daemon, &["run", "counter", COUNT]).success();
    assert!(run.stdout.starts_with(" 6, 7, 8"), "{run:#?}");
    let expected = api_answer(&daemon, &json!([{"role": "user", "content": COUNT}]), None);
    assert_eq!(run.stdout, printed(&expected));
    // Into a pipe, stderr stays quiet: no spinner, no note.
    assert_eq!(run.stderr, "", "{run:#?}");

    // A prompt of several words is one prompt.
    let words: Vec<&str> = COUNT.split(' ').collect();
    let run = whale(&daemon, &[&["run", "counter"], &words[..]].concat()).success();
    assert_eq!(run.stdout, printed(&expected));
}

#[test]
fn piped_stdin_is_the_prompt() {
    let daemon = counter();
    // `echo 1, 2, 3, 4, 5, | whale run counter`: the text as piped, newline included.
    let piped = format!("{COUNT}\n");
    let run = Run::of(daemon.whale(["run", "counter"]), Some(&piped)).success();
    let expected = api_answer(&daemon, &json!([{"role": "user", "content": piped}]), None);
    assert_eq!(run.stdout, printed(&expected), "{run:#?}");
    assert!(run.stdout.contains("6, 7"), "{run:#?}");

    // Piped text and an argument: the argument follows the piped text.
    let run = Run::of(
        daemon.whale(["run", "counter", "Wednesday,"]),
        Some("Monday, Tuesday,"),
    )
    .success();
    let expected = api_answer(
        &daemon,
        &json!([{"role": "user", "content": "Monday, Tuesday, Wednesday,"}]),
        None,
    );
    assert_eq!(run.stdout, printed(&expected), "{run:#?}");
}

/// `whale run counter` in a pseudo-terminal: the REPL.
struct Repl {
    session: rexpect::session::PtySession,
}

impl Repl {
    const PROMPT: &str = ">>> ";

    fn start(daemon: &Whaled) -> Self {
        let options = Options::new()
            .timeout_ms(Some(120_000))
            .strip_ansi_escape_codes(true);
        let session = rexpect::spawn_with_options(daemon.whale(["run", "counter"]), options)
            .expect("start whale in a pseudo-terminal");
        let mut repl = Self { session };
        repl.until_prompt();
        repl
    }

    /// Everything printed until the next prompt, with the terminal's `\r` taken out.
    fn until_prompt(&mut self) -> String {
        self.session
            .exp_string(Self::PROMPT)
            .expect("the REPL's prompt")
            .replace('\r', "")
    }

    /// Types `line` and returns what follows it until the next prompt (the line's own echo
    /// left out).
    fn enter(&mut self, line: &str) -> String {
        self.session.send_line(line).expect("type a line");
        let shown = self.until_prompt();
        match shown.split_once(&format!("{line}\n")) {
            Some((_, after)) => after.to_owned(),
            None => panic!("{line:?} was not echoed: {shown:?}"),
        }
    }
}

#[test]
fn repl_in_a_terminal() {
    let daemon = counter();
    let mut repl = Repl::start(&daemon);

    // An answer, then a blank line before the next prompt.
    let answer = repl.enter(COUNT);
    let first = api_answer(&daemon, &json!([{"role": "user", "content": COUNT}]), None);
    assert_eq!(answer, format!("{}\n", printed(&first)));
    assert!(answer.starts_with(" 6, 7, 8"), "{answer:?}");

    let info = repl.enter("/show info");
    assert!(
        info.lines()
            .any(|line| line.split_whitespace().eq(["architecture", "gemma3"])),
        "{info:?}"
    );

    let set = repl.enter("/set parameter num_predict 2");
    assert_eq!(set, "Set parameter 'num_predict' to '2'\n");

    // The second turn carries the first and the session's parameter.
    let answer = repl.enter("10, 20, 30,");
    let second = api_answer(
        &daemon,
        &json!([
            {"role": "user", "content": COUNT},
            {"role": "assistant", "content": first},
            {"role": "user", "content": "10, 20, 30,"},
        ]),
        Some(json!({"num_predict": 2})),
    );
    assert_eq!(answer, format!("{}\n", printed(&second)));

    repl.session.send_line("/bye").expect("type /bye");
    repl.session.exp_eof().expect("whale exits after /bye");
    let status = repl.session.process().wait().expect("wait for whale");
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "whale ended with {status:?}"
    );
}

#[test]
fn pull_into_a_pipe_then_list_show_copy_ps_remove() {
    let source = Whaled::start();
    source.create_from_gguf("deepseek-tiny", &fixtures::deepseek2());
    let daemon = Whaled::builder()
        .env("WHALE_REGISTRY_MIRROR", source.url())
        .env("WHALE_CONTEXT_LENGTH", "256")
        .start();

    // Plain lines on stderr: one per status and one per finished layer, no bars.
    let pull = whale(&daemon, &["pull", "deepseek-tiny", "--insecure"]).success();
    assert_eq!(pull.stdout, "", "{pull:#?}");
    assert!(
        !pull.stderr.contains(['\u{1b}', '\r']),
        "escape codes or carriage returns in {:?}",
        pull.stderr
    );
    let lines: Vec<&str> = pull.stderr.lines().collect();
    assert_eq!(lines.first(), Some(&"pulling manifest"), "{lines:?}");
    assert_eq!(lines.last(), Some(&"success"), "{lines:?}");
    let layers: Vec<&&str> = lines
        .iter()
        .filter(|line| line.starts_with("pulling ") && line.contains(": 100% "))
        .collect();
    assert_eq!(layers.len(), 2, "weights and params, once each: {lines:?}");
    assert_eq!(lines.len(), 6, "{lines:?}");

    let list = whale(&daemon, &["list", "--json"]).success();
    let models: Value = serde_json::from_str(&list.stdout).expect("whale list --json is JSON");
    assert_eq!(
        models["models"][0]["name"], "deepseek-tiny:latest",
        "{models}"
    );
    let details = &models["models"][0]["details"];
    assert_eq!(details["family"], "deepseek2", "{models}");
    assert_eq!(details["quantization_level"], "F16", "{models}");
    let digest = models["models"][0]["digest"].as_str().expect("digest");
    let list = whale(&daemon, &["list"]).success();
    let table = list.table();
    assert_eq!(table[0], ["NAME", "ID", "SIZE", "MODIFIED"], "{list:#?}");
    assert_eq!(table.len(), 2, "{list:#?}");
    assert_eq!(
        table[1][..2],
        ["deepseek-tiny:latest", &digest[..12]],
        "{list:#?}"
    );

    let show = whale(&daemon, &["show", "deepseek-tiny"]).success();
    assert!(
        show.stdout
            .lines()
            .any(|line| line.split_whitespace().eq(["architecture", "deepseek2"])),
        "{show:#?}"
    );

    let copy = whale(&daemon, &["cp", "deepseek-tiny", "mine/tiny:v1"]).success();
    assert_eq!(copy.stderr, "copied 'deepseek-tiny' to 'mine/tiny:v1'\n");
    let names = |daemon: &Whaled| -> Vec<String> {
        let list = whale(daemon, &["list"]).success();
        list.table()[1..]
            .iter()
            .map(|row| row[0].to_owned())
            .collect()
    };
    assert_eq!(names(&daemon), ["deepseek-tiny:latest", "mine/tiny:v1"]);

    // After a run the model stays loaded, with the daemon's context length.
    whale(&daemon, &["run", "deepseek-tiny", "Hi"]).success();
    let ps = whale(&daemon, &["ps"]).success();
    let table = ps.table();
    assert_eq!(
        table[0],
        ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"],
        "{ps:#?}"
    );
    assert_eq!(table.len(), 2, "{ps:#?}");
    assert_eq!(table[1][0], "deepseek-tiny", "{ps:#?}");
    assert_eq!(table[1][1], &digest[..12], "{ps:#?}");
    assert_eq!(table[1][3..5], ["100% CPU", "256"], "{ps:#?}");

    // rm unloads it first, then deletes it; the copy stays.
    let remove = whale(&daemon, &["rm", "deepseek-tiny"]).success();
    assert_eq!(remove.stderr, "deleted 'deepseek-tiny'\n");
    assert_eq!(names(&daemon), ["mine/tiny:v1"]);
    let ps = whale(&daemon, &["ps", "--json"]).success();
    let running: Value = serde_json::from_str(&ps.stdout).expect("whale ps --json is JSON");
    assert_eq!(running["models"], json!([]), "{running}");
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn errors_say_what_went_wrong_and_what_to_do() {
    let daemon = Whaled::start();
    let missing =
        whale(&daemon, &["show", "no-such-model"]).failure("model 'no-such-model' not found");
    assert!(
        missing.stderr.contains(
            "hint: 'whale list' shows the models here; 'whale pull no-such-model' fetches this one"
        ),
        "{missing:#?}"
    );
    for args in [
        &["rm", "no-such-model"][..],
        &["stop", "no-such-model"],
        &["cp", "no-such-model", "other"],
    ] {
        let failed = whale(&daemon, args).failure("model 'no-such-model' not found");
        assert!(failed.stderr.contains("hint: 'whale list'"), "{failed:#?}");
    }
    // `run` pulls a model it does not have; that fails for a name no registry knows (or, on a
    // machine without the internet, because the registry cannot be reached).
    let run =
        whale(&daemon, &["run", "no-such-model", "hi"]).failure("cannot pull 'no-such-model'");
    assert!(run.stderr.contains("hint: check the name"), "{run:#?}");
    assert!(!run.stderr.contains("(HTTP 200)"), "{run:#?}");

    // Nothing listens and autostart is off: every command that needs whaled says so.
    let host = format!("127.0.0.1:{}", closed_port());
    for args in [
        &["list"][..],
        &["ps"],
        &["show", "m"],
        &["run", "m", "hi"],
        &["pull", "m"],
        &["cp", "m", "n"],
        &["rm", "m"],
        &["stop", "m"],
    ] {
        let run = Run::of(whaled::whale(&host, args), None);
        run.failure(&format!("could not connect to whaled at {host}"));
    }
}
