//! The REPL's slash commands (`/set`, `/show`, `/load`, `/clear`, `/bye`, `/?`), parsed from
//! one input into a typed value so the loop only acts on them.

use crate::think::Think;

/// One REPL input.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Text for the model.
    Prompt(String),
    /// A slash command.
    Command(Command),
}

/// A slash command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Bye,
    Clear,
    Help(Option<String>),
    Set(Set),
    Show(Show),
    Load(String),
    /// A command the REPL does not know, or used wrongly: the message says what is expected.
    Invalid(String),
}

/// `/set …`
#[derive(Debug, Clone, PartialEq)]
pub enum Set {
    Parameter { name: String, values: Vec<String> },
    System(String),
    Think(Think),
    NoThink,
    Verbose(bool),
    Format(Option<String>),
    History(bool),
    WordWrap(bool),
}

/// `/show …`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Info,
    License,
    Modelfile,
    Parameters,
    System,
    Template,
}

/// Usage of `/set`, shown when it is used wrongly and by `/? set`.
pub const SET_HELP: &str = "\
Available commands:
  /set parameter NAME VALUE   Set a parameter (e.g. num_ctx 8192, temperature 0.6, stop a b)
  /set system TEXT            Set the system message
  /set think [LEVEL]          Think before answering (LEVEL: low, medium, high, max)
  /set nothink                Answer without thinking
  /set verbose                Show timings after each answer
  /set quiet                  Do not show timings
  /set format json            Answer in JSON
  /set noformat               Answer in free text
  /set history | nohistory    Keep or stop keeping input history
  /set wordwrap | nowordwrap  Accepted for compatibility
";

/// Usage of `/show`.
pub const SHOW_HELP: &str = "\
Available commands:
  /show info         Details of this model
  /show license      The model's license
  /show modelfile    The model's Modelfile
  /show parameters   The parameters in effect
  /show system       The system message
  /show template     The prompt template
";

/// General help.
pub const HELP: &str = "\
Available commands:
  /set            Set session variables (/? set)
  /show           Show model information (/? show)
  /load MODEL     Switch to another model, keeping the conversation
  /clear          Forget the conversation so far
  /bye            Exit
  /?, /help       This help

Use \"\"\" to begin and end a message of several lines.
Ctrl-C stops an answer, Ctrl-D exits.
";

impl Input {
    /// Classifies one whole input (after `"""` blocks were assembled).
    pub fn parse(text: &str) -> Self {
        let trimmed = text.trim_start();
        if !trimmed.starts_with('/') {
            return Self::Prompt(text.to_owned());
        }
        let (word, rest) = split_word(trimmed);
        let command = match word {
            "/bye" | "/exit" => Command::Bye,
            "/clear" => Command::Clear,
            "/?" | "/help" => {
                let topic = rest.trim();
                Command::Help((!topic.is_empty()).then(|| topic.to_owned()))
            }
            "/set" => parse_set(rest),
            "/show" => parse_show(rest.trim()),
            "/load" => match rest.trim() {
                "" => Command::Invalid("usage: /load MODEL".into()),
                model => Command::Load(model.to_owned()),
            },
            // A path such as "/etc/hosts explain this" is a prompt, not a command.
            other if other[1..].contains('/') => return Self::Prompt(text.to_owned()),
            other => Command::Invalid(format!("unknown command '{other}'; type /? for help")),
        };
        Self::Command(command)
    }
}

fn parse_set(rest: &str) -> Command {
    let (what, value) = split_word(rest.trim_start());
    let set = match what {
        "parameter" => {
            let mut words = value.split_whitespace().map(str::to_owned);
            match (words.next(), words.collect::<Vec<_>>()) {
                (Some(name), values) if !values.is_empty() => Set::Parameter { name, values },
                _ => return Command::Invalid("usage: /set parameter NAME VALUE".into()),
            }
        }
        "system" => {
            let text = value.trim();
            if text.is_empty() {
                return Command::Invalid("usage: /set system TEXT".into());
            }
            Set::System(text.trim_matches('"').to_owned())
        }
        "think" => match value.trim() {
            "" => Set::Think(Think::Enabled(true)),
            level => match crate::think::parse(level) {
                Ok(think) => Set::Think(think),
                Err(message) => return Command::Invalid(message),
            },
        },
        "nothink" => Set::NoThink,
        "verbose" => Set::Verbose(true),
        "quiet" => Set::Verbose(false),
        "format" => match value.trim() {
            "json" => Set::Format(Some("json".into())),
            _ => return Command::Invalid("usage: /set format json".into()),
        },
        "noformat" => Set::Format(None),
        "history" => Set::History(true),
        "nohistory" => Set::History(false),
        "wordwrap" => Set::WordWrap(true),
        "nowordwrap" => Set::WordWrap(false),
        _ => return Command::Invalid(SET_HELP.trim_end().to_owned()),
    };
    Command::Set(set)
}

fn parse_show(what: &str) -> Command {
    let show = match what {
        "info" => Show::Info,
        "license" => Show::License,
        "modelfile" => Show::Modelfile,
        "parameters" => Show::Parameters,
        "system" => Show::System,
        "template" => Show::Template,
        _ => return Command::Invalid(SHOW_HELP.trim_end().to_owned()),
    };
    Command::Show(show)
}

/// The first whitespace-separated word and the rest after it.
fn split_word(text: &str) -> (&str, &str) {
    match text.find(char::is_whitespace) {
        Some(at) => (&text[..at], &text[at..]),
        None => (text, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::think::ThinkLevel as Level;

    fn command(text: &str) -> Command {
        match Input::parse(text) {
            Input::Command(command) => command,
            Input::Prompt(prompt) => panic!("{text:?} parsed as prompt {prompt:?}"),
        }
    }

    #[test]
    fn prompts_are_prompts() {
        assert_eq!(
            Input::parse("why is the sky blue?"),
            Input::Prompt("why is the sky blue?".into())
        );
        assert_eq!(
            Input::parse("/etc/hosts: what is it?"),
            Input::Prompt("/etc/hosts: what is it?".into())
        );
    }

    #[test]
    fn simple_commands() {
        assert_eq!(command("/bye"), Command::Bye);
        assert_eq!(command("/exit"), Command::Bye);
        assert_eq!(command("  /clear"), Command::Clear);
        assert_eq!(command("/?"), Command::Help(None));
        assert_eq!(command("/help set"), Command::Help(Some("set".into())));
        assert_eq!(
            command("/load deepseek-r1:7b"),
            Command::Load("deepseek-r1:7b".into())
        );
        assert!(matches!(command("/load"), Command::Invalid(_)));
        assert!(matches!(command("/frobnicate"), Command::Invalid(m) if m.contains("/frobnicate")));
    }

    #[test]
    fn set_commands() {
        assert_eq!(
            command("/set parameter num_ctx 8192"),
            Command::Set(Set::Parameter {
                name: "num_ctx".into(),
                values: vec!["8192".into()]
            })
        );
        assert_eq!(
            command("/set parameter stop <a> <b>"),
            Command::Set(Set::Parameter {
                name: "stop".into(),
                values: vec!["<a>".into(), "<b>".into()]
            })
        );
        assert!(matches!(
            command("/set parameter num_ctx"),
            Command::Invalid(_)
        ));
        assert_eq!(
            command("/set system You are terse.\nVery."),
            Command::Set(Set::System("You are terse.\nVery.".into()))
        );
        assert_eq!(
            command("/set think"),
            Command::Set(Set::Think(Think::Enabled(true)))
        );
        assert_eq!(
            command("/set think high"),
            Command::Set(Set::Think(Think::Level(Level::High)))
        );
        assert!(matches!(command("/set think loud"), Command::Invalid(_)));
        assert_eq!(command("/set nothink"), Command::Set(Set::NoThink));
        assert_eq!(command("/set verbose"), Command::Set(Set::Verbose(true)));
        assert_eq!(command("/set quiet"), Command::Set(Set::Verbose(false)));
        assert_eq!(
            command("/set format json"),
            Command::Set(Set::Format(Some("json".into())))
        );
        assert_eq!(command("/set noformat"), Command::Set(Set::Format(None)));
        assert_eq!(command("/set nohistory"), Command::Set(Set::History(false)));
        assert!(matches!(command("/set"), Command::Invalid(m) if m.contains("/set parameter")));
    }

    #[test]
    fn show_commands() {
        assert_eq!(command("/show info"), Command::Show(Show::Info));
        assert_eq!(command("/show modelfile"), Command::Show(Show::Modelfile));
        assert_eq!(command("/show parameters"), Command::Show(Show::Parameters));
        assert!(matches!(command("/show"), Command::Invalid(_)));
    }
}
