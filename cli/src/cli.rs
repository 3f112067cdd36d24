//! The command line: clap definitions of every `whale` command and flag, and the rule for the
//! boolean environment variables whale reads (`WHALE_NO_AUTOSTART`, `WHALE_NOHISTORY`).
//!
//! Parsing is kept apart from behaviour so it can be tested without a daemon; each command's
//! arguments struct lives here and its behaviour in `commands/<name>.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::think::Think;

/// The `whale` command line: runs models on this machine through the `whaled` daemon.
#[derive(Debug, Parser)]
#[command(
    name = "whale",
    about = "Run DeepSeek models on your own machine",
    long_about = "Run DeepSeek models on your own machine.\n\n\
        whale talks to the daemon whaled over HTTP (WHALE_HOST, default 127.0.0.1:11434) and \
        starts it when it is not running and the address is local (WHALE_NO_AUTOSTART=1 turns \
        that off).",
    disable_version_flag = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Print the client's and the server's versions.
    #[arg(short = 'v', long = "version")]
    pub version: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Every `whale` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run whaled in the foreground (arguments, `--help` too, are passed to it).
    #[command(alias = "start", disable_help_flag = true)]
    Serve(ServeArgs),
    /// Lend this machine's memory to a whaled elsewhere (`whaled worker`; arguments, `--help`
    /// too, are passed to it).
    #[command(disable_help_flag = true)]
    Worker(ServeArgs),
    /// Create a model from a Modelfile.
    Create(CreateArgs),
    /// Show information about a model.
    Show(ShowArgs),
    /// Run a model: answer one prompt, or chat interactively.
    Run(RunArgs),
    /// Unload a running model.
    Stop(ModelArg),
    /// Pull a model from a registry, or from another whale with --from.
    Pull(PullArgs),
    /// Push a model to a registry.
    Push(TransferArgs),
    /// List local models.
    #[command(alias = "ls")]
    List(ListArgs),
    /// List running models.
    Ps(JsonArg),
    /// List the DeepSeek models whale knows, their sizes, and whether each fits here.
    Catalog(CatalogArgs),
    /// Copy a model.
    Cp(CopyArgs),
    /// Remove models.
    Rm(RemoveArgs),
    /// Re-hash every blob of the store and check that every model has its blobs.
    Verify(VerifyArgs),
    /// Print a shell completion script.
    Completion(CompletionArgs),
    /// Print the client's and the server's versions.
    Version,
}

/// `whale serve [ARGS]...`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Arguments for whaled (see `whaled --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<std::ffi::OsString>,
}

/// `whale create NAME -f Modelfile`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the model to create.
    pub model: String,
    /// The Modelfile to read.
    #[arg(short = 'f', long = "file", default_value = "Modelfile")]
    pub file: PathBuf,
    /// Quantize the model to this type (e.g. `q4_K_M`, `q8_0`).
    #[arg(short = 'q', long)]
    pub quantize: Option<String>,
}

/// `whale show MODEL`
#[derive(Debug, Args)]
#[allow(clippy::struct_excessive_bools)] // one bool per flag is what clap derives.
pub struct ShowArgs {
    pub model: String,
    /// Show the license.
    #[arg(long)]
    pub license: bool,
    /// Show the Modelfile.
    #[arg(long)]
    pub modelfile: bool,
    /// Show the parameters.
    #[arg(long)]
    pub parameters: bool,
    /// Show the template.
    #[arg(long)]
    pub template: bool,
    /// Show the system message.
    #[arg(long)]
    pub system: bool,
    /// Show everything the server knows (large metadata arrays, tensors).
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `whale run MODEL [PROMPT]...`
#[derive(Debug, Args, Clone)]
#[allow(clippy::struct_excessive_bools)]
pub struct RunArgs {
    pub model: String,
    /// A prompt to answer once; without it (and without piped input) whale starts a chat.
    pub prompt: Vec<String>,
    /// Print timings after each answer.
    #[arg(long)]
    pub verbose: bool,
    /// Think before answering: true, false, low, medium, high, max (`--think` alone = true).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = crate::think::parse)]
    pub think: Option<Think>,
    /// Do not print the model's reasoning.
    #[arg(long)]
    pub hidethinking: bool,
    /// Answer format: `json`.
    #[arg(long)]
    pub format: Option<String>,
    /// How long the model stays loaded after the last request (e.g. 10m, 1h, -1 for ever).
    #[arg(long)]
    pub keepalive: Option<String>,
    /// Do not wrap words (accepted for compatibility; whale does not wrap).
    #[arg(long)]
    pub nowordwrap: bool,
    /// Allow plain-http registries when the model has to be pulled.
    #[arg(long)]
    pub insecure: bool,
}

/// `whale stop MODEL`
#[derive(Debug, Args)]
pub struct ModelArg {
    pub model: String,
}

/// `whale pull|push MODEL`
#[derive(Debug, Args)]
pub struct TransferArgs {
    pub model: String,
    /// Allow plain-http registries.
    #[arg(long)]
    pub insecure: bool,
}

/// `whale pull [--from ADDRESS] MODEL`
#[derive(Debug, Args)]
pub struct PullArgs {
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// Pull from another whale at this address (`http://host:11434`) instead of the registry.
    #[arg(long, value_name = "ADDRESS")]
    pub from: Option<String>,
    /// Download even when the model will not fit this machine's memory or disk.
    #[arg(long)]
    pub force: bool,
}

/// `whale list [FILTER]`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only list models whose name starts with this.
    pub filter: Option<String>,
    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// List the catalogue of models to pull instead (as `whale catalog`).
    #[arg(long)]
    pub available: bool,
}

/// `whale catalog [FILTER]`
#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// Only list models whose name starts with this.
    pub filter: Option<String>,
    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--json` alone.
#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `whale verify [--repair]`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Remove blobs whose content does not match their digest, so a pull fetches them again.
    #[arg(long)]
    pub repair: bool,
    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `whale cp SRC DST`
#[derive(Debug, Args)]
pub struct CopyArgs {
    pub source: String,
    pub destination: String,
}

/// `whale rm MODEL...`
#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[arg(required = true)]
    pub models: Vec<String>,
}

/// `whale completion SHELL`
#[derive(Debug, Args)]
pub struct CompletionArgs {
    pub shell: Shell,
}

/// Shells with a completion script.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Whether a boolean environment variable is on: any non-empty value but a false one (`0`,
/// `f`, `false`, `no`, `off`), as Ollama reads its boolean variables.
pub fn env_flag(name: &str) -> bool {
    flag_value(std::env::var(name).ok().as_deref())
}

/// The rule of [`env_flag`] on a value.
pub fn flag_value(value: Option<&str>) -> bool {
    match value.map(str::trim) {
        None | Some("") => false,
        Some(value) => !matches!(
            value.to_ascii_lowercase().as_str(),
            "0" | "f" | "false" | "no" | "off"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::think::ThinkLevel as Level;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("whale").chain(args.iter().copied()))
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args).unwrap().command {
            Some(Command::Run(run)) => run,
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn environment_flags() {
        assert!(!flag_value(None));
        assert!(!flag_value(Some("")));
        assert!(!flag_value(Some("0")));
        assert!(!flag_value(Some("false")));
        assert!(!flag_value(Some(" OFF ")));
        assert!(flag_value(Some("1")));
        assert!(flag_value(Some("true")));
        assert!(flag_value(Some("yes please")));
    }

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_a_prompt_of_several_words() {
        let run = run_args(&[
            "run",
            "deepseek-r1:1.5b",
            "why",
            "is",
            "the",
            "sky",
            "blue?",
        ]);
        assert_eq!(run.model, "deepseek-r1:1.5b");
        assert_eq!(run.prompt.join(" "), "why is the sky blue?");
        assert_eq!(run.think, None);
    }

    #[test]
    fn think_flag_forms() {
        assert_eq!(
            run_args(&["run", "m", "--think"]).think,
            Some(Think::Enabled(true))
        );
        assert_eq!(
            run_args(&["run", "m", "--think=false"]).think,
            Some(Think::Enabled(false))
        );
        assert_eq!(
            run_args(&["run", "m", "--think=high"]).think,
            Some(Think::Level(Level::High))
        );
        // `--think` takes no separate value, so the next word stays the prompt.
        let run = run_args(&["run", "m", "--think", "hello"]);
        assert_eq!(run.think, Some(Think::Enabled(true)));
        assert_eq!(run.prompt, ["hello"]);
        assert!(parse(&["run", "m", "--think=loud"]).is_err());
    }

    #[test]
    fn run_flags() {
        let run = run_args(&[
            "run",
            "m",
            "--verbose",
            "--hidethinking",
            "--format",
            "json",
            "--keepalive",
            "10m",
            "--nowordwrap",
            "--insecure",
        ]);
        assert!(run.verbose && run.hidethinking && run.nowordwrap && run.insecure);
        assert_eq!(run.format.as_deref(), Some("json"));
        assert_eq!(run.keepalive.as_deref(), Some("10m"));
    }

    #[test]
    fn aliases_and_lists() {
        assert!(matches!(
            parse(&["ls"]).unwrap().command,
            Some(Command::List(_))
        ));
        assert!(matches!(
            parse(&["start"]).unwrap().command,
            Some(Command::Serve(_))
        ));
        match parse(&["rm", "a", "b:latest"]).unwrap().command {
            Some(Command::Rm(rm)) => assert_eq!(rm.models, ["a", "b:latest"]),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["rm"]).is_err());
    }

    #[test]
    fn serve_passes_flags_through() {
        match parse(&["serve", "--host", "0.0.0.0:1", "-x"])
            .unwrap()
            .command
        {
            Some(Command::Serve(serve)) => assert_eq!(serve.args, ["--host", "0.0.0.0:1", "-x"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_available_is_the_catalogue() {
        match parse(&["list", "--available", "deepseek-r1"])
            .unwrap()
            .command
        {
            Some(Command::List(list)) => {
                assert!(list.available);
                assert_eq!(list.filter.as_deref(), Some("deepseek-r1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["catalog", "--json"]).unwrap().command,
            Some(Command::Catalog(CatalogArgs { json: true, .. }))
        ));
    }

    #[test]
    fn help_after_serve_or_worker_is_whaled_s() {
        match parse(&["worker", "--help"]).unwrap().command {
            Some(Command::Worker(worker)) => assert_eq!(worker.args, ["--help"]),
            other => panic!("{other:?}"),
        }
        match parse(&["serve", "-h"]).unwrap().command {
            Some(Command::Serve(serve)) => assert_eq!(serve.args, ["-h"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn worker_passes_flags_through() {
        match parse(&["worker", "--listen", "0.0.0.0:50052"])
            .unwrap()
            .command
        {
            Some(Command::Worker(worker)) => {
                assert_eq!(worker.args, ["--listen", "0.0.0.0:50052"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn version_flag_and_show_verbose_do_not_clash() {
        assert!(parse(&["-v"]).unwrap().version);
        assert!(parse(&["--version"]).unwrap().version);
        match parse(&["show", "m", "-v", "--json"]).unwrap().command {
            Some(Command::Show(show)) => assert!(show.verbose && show.json),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_defaults_to_modelfile_in_the_current_directory() {
        match parse(&["create", "mine"]).unwrap().command {
            Some(Command::Create(create)) => assert_eq!(create.file, PathBuf::from("Modelfile")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors_are_usage_errors() {
        let error = parse(&["pull"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let error = parse(&["completion", "tcsh"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }
}
