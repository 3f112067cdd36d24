//! `whale`: parses the command line and runs it. Failures print `error:`, the causes and a
//! `hint:` on stderr and exit 1 (2 for usage errors); a closed stdout ends quietly.

use std::process::ExitCode;

use clap::Parser as _;
use whale_cli::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // --help and usage errors; clap picks stdout or stderr and the status (0 or 2).
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    match whale_cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is_broken_pipe() => ExitCode::SUCCESS,
        Err(error) => {
            whale_cli::error::report(&error);
            ExitCode::from(error.exit_code())
        }
    }
}
