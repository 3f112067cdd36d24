//! The interactive chat of `whale run MODEL`: a rustyline prompt (`>>> `, `... ` inside a
//! `"""` block) with history in the data directory (unless `WHALE_NOHISTORY`), slash
//! commands, and one `POST /api/chat` per turn carrying the whole conversation. Ctrl-C stops
//! an answer and returns to the prompt; Ctrl-D or `/bye` leaves.

pub mod command;
pub mod input;

use rustyline::DefaultEditor;
use std::fmt::Write as _;

use rustyline::error::ReadlineError;
use serde_json::Value;
use whale_api::Client;

use crate::commands::run::ensure;
use crate::commands::show::summary;
use crate::conversation::{Conversation, parse_format};
use crate::error::{Error, report};
use crate::output;
use crate::render::Style;
use crate::render::progress::spinner;
use crate::think::Think;
use command::{Command, HELP, Input, SET_HELP, SHOW_HELP, Set, Show};
use input::{Assembler, Line};

/// Set to a true value to keep no REPL history on disk.
pub const NO_HISTORY_ENV: &str = "WHALE_NOHISTORY";

const SHORTCUTS: &str = "\
Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line
  Ctrl + e            Move to the end of the line
  Ctrl + k            Delete the rest of the line
  Ctrl + u            Delete the line up to the cursor
  Ctrl + w            Delete the word before the cursor
  Ctrl + l            Clear the screen
  Ctrl + c            Stop the answer
  Ctrl + d            Exit (on an empty line)
";

/// Whether the loop goes on after a command.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

/// Runs the chat until `/bye` or Ctrl-D.
pub async fn run(
    client: &Client,
    mut conversation: Conversation,
    style: Style,
) -> Result<(), Error> {
    let spinner = spinner(style, "loading model");
    let loaded = conversation.load(client).await;
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    loaded?;
    let history = history_file();
    let mut editor = DefaultEditor::new().map_err(Error::Input)?;
    if let Some(path) = &history {
        // A first run has no history yet.
        let _ = editor.load_history(path);
    }
    let mut keep_history = history.is_some();
    let mut assembler = Assembler::default();
    loop {
        let prompt = if assembler.is_open() { "... " } else { ">>> " };
        // rustyline blocks; let the runtime move its other work off this thread meanwhile.
        let line = match tokio::task::block_in_place(|| editor.readline(prompt)) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                if assembler.is_open() {
                    assembler.reset();
                } else {
                    output::note("Use Ctrl + d or /bye to exit.");
                }
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(Error::Input(error)),
        };
        let Line::Complete(text) = assembler.push(&line) else {
            continue;
        };
        if keep_history && !text.trim().is_empty() {
            let _ = editor.add_history_entry(text.as_str());
        }
        let result = match Input::parse(&text) {
            Input::Prompt(prompt) if prompt.trim().is_empty() => continue,
            Input::Prompt(prompt) => match conversation.turn(client, &prompt, style).await {
                // A blank line between an answer and the next prompt, as in a transcript.
                Ok(_) => output::data("\n").map(|()| Flow::Continue),
                Err(error) => Err(error),
            },
            Input::Command(command) => {
                execute(command, client, &mut conversation, &mut keep_history, style).await
            }
        };
        match result {
            Ok(Flow::Continue) => {}
            Ok(Flow::Exit) => break,
            // A broken stdout ends the session; any other error is for this turn only.
            Err(error) if error.is_broken_pipe() => return Err(error),
            Err(error) => report(&error),
        }
    }
    if let (Some(path), true) = (&history, keep_history) {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// `<data dir>/history`, or none when `WHALE_NOHISTORY` is set.
fn history_file() -> Option<std::path::PathBuf> {
    if crate::cli::env_flag(NO_HISTORY_ENV) {
        return None;
    }
    crate::daemon::data_dir()
        .ok()
        .map(|dir| dir.join("history"))
}

async fn execute(
    command: Command,
    client: &Client,
    conversation: &mut Conversation,
    keep_history: &mut bool,
    style: Style,
) -> Result<Flow, Error> {
    match command {
        Command::Bye => return Ok(Flow::Exit),
        Command::Clear => {
            conversation.history.clear();
            output::note("Cleared session context");
        }
        Command::Help(topic) => output::note(match topic.as_deref() {
            Some("set" | "/set") => SET_HELP,
            Some("show" | "/show") => SHOW_HELP,
            Some("shortcut" | "shortcuts") => SHORTCUTS,
            _ => HELP,
        }),
        Command::Invalid(message) => output::note(&message),
        Command::Load(model) => {
            ensure(client, &model, false, style).await?;
            let previous = std::mem::replace(&mut conversation.model, model.clone());
            if let Err(error) = conversation.load(client).await {
                conversation.model = previous;
                return Err(error);
            }
            output::note(&format!("Loaded model '{model}'"));
        }
        Command::Set(set) => apply(set, conversation, keep_history)?,
        Command::Show(show) => {
            let info = ensure(client, &conversation.model, false, style).await?;
            output::data(&describe(show, &info, conversation))?;
        }
    }
    Ok(Flow::Continue)
}

fn apply(set: Set, conversation: &mut Conversation, keep_history: &mut bool) -> Result<(), Error> {
    let note = match set {
        Set::Parameter { name, values } => {
            conversation.set_parameter(&name, &values)?;
            format!("Set parameter '{name}' to '{}'", values.join(", "))
        }
        Set::System(text) => {
            conversation.system = Some(text);
            "Set system message.".into()
        }
        Set::Think(think) => {
            conversation.think = Some(think);
            match think {
                Think::Enabled(_) => "Set 'think' mode.".into(),
                Think::Level(level) => format!("Set 'think' mode to '{}'.", level.as_str()),
            }
        }
        Set::NoThink => {
            conversation.think = Some(Think::Enabled(false));
            "Set 'nothink' mode.".into()
        }
        Set::Verbose(on) => {
            conversation.verbose = on;
            if on {
                "Set 'verbose' mode."
            } else {
                "Set 'quiet' mode."
            }
            .into()
        }
        Set::Format(format) => {
            let note = match &format {
                Some(format) => format!("Set format to '{format}' mode."),
                None => "Disabled format.".into(),
            };
            conversation.format = format.as_deref().map(parse_format).transpose()?;
            note
        }
        Set::History(on) => {
            *keep_history = on;
            if on {
                "Set 'history' mode."
            } else {
                "Set 'nohistory' mode."
            }
            .into()
        }
        Set::WordWrap(on) => if on {
            "Set 'wordwrap' mode."
        } else {
            "Set 'nowordwrap' mode."
        }
        .into(),
    };
    output::note(&note);
    Ok(())
}

/// The text `/show …` prints, from `/api/show`'s answer and the session's own settings.
fn describe(show: Show, info: &Value, conversation: &Conversation) -> String {
    let field = |name: &str| info[name].as_str().unwrap_or_default().to_owned();
    let mut text = match show {
        Show::Info => return summary(info),
        Show::License => field("license"),
        Show::Modelfile => field("modelfile"),
        Show::Template => field("template"),
        Show::System => conversation
            .system
            .clone()
            .unwrap_or_else(|| field("system")),
        Show::Parameters => {
            let mut text = String::new();
            let model = field("parameters");
            if !model.is_empty() {
                text.push_str("Model defined parameters:\n");
                text.push_str(&model);
                text.push('\n');
            }
            let session = conversation.options.to_parameter_lines();
            if !session.is_empty() {
                text.push_str("User defined parameters:\n");
                for (name, value) in session {
                    let _ = writeln!(text, "{name:<30} {value}");
                }
            }
            if text.is_empty() {
                text.push_str("No parameters were specified for this model.");
            }
            text
        }
    };
    if text.is_empty() {
        text = "No value was specified for this model.".into();
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_changes_the_conversation() {
        let mut conversation = Conversation::default();
        let mut keep_history = true;
        let mut set = |set| apply(set, &mut conversation, &mut keep_history).unwrap();
        set(Set::Parameter {
            name: "num_ctx".into(),
            values: vec!["8192".into()],
        });
        set(Set::System("Be terse.".into()));
        set(Set::NoThink);
        set(Set::Verbose(true));
        set(Set::Format(Some("json".into())));
        set(Set::History(false));
        assert_eq!(conversation.options.num_ctx, Some(8192));
        assert_eq!(conversation.system.as_deref(), Some("Be terse."));
        assert_eq!(conversation.think, Some(Think::Enabled(false)));
        assert!(conversation.verbose);
        assert_eq!(conversation.format, Some(whale_api::Format::Json));
        assert!(!keep_history);
    }

    #[test]
    fn a_bad_parameter_is_an_error_for_the_turn() {
        let mut conversation = Conversation::default();
        let mut keep_history = true;
        let set = Set::Parameter {
            name: "num_ctx".into(),
            values: vec!["many".into()],
        };
        assert!(apply(set, &mut conversation, &mut keep_history).is_err());
        assert_eq!(conversation.options.num_ctx, None);
    }

    #[test]
    fn show_prefers_the_session_settings() {
        let info = serde_json::json!({"system": "model system", "parameters": "temperature 0.6"});
        let mut conversation = Conversation::default();
        assert_eq!(
            describe(Show::System, &info, &conversation),
            "model system\n"
        );
        conversation.system = Some("mine".into());
        assert_eq!(describe(Show::System, &info, &conversation), "mine\n");
        conversation.options.num_ctx = Some(4096);
        let parameters = describe(Show::Parameters, &info, &conversation);
        assert!(
            parameters.contains("Model defined parameters:\ntemperature 0.6\n"),
            "{parameters}"
        );
        assert!(
            parameters.contains("User defined parameters:\nnum_ctx"),
            "{parameters}"
        );
        assert_eq!(
            describe(Show::License, &info, &conversation),
            "No value was specified for this model.\n"
        );
    }
}
