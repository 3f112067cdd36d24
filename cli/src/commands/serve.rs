//! `whale serve` and `whale worker`: run whaled (or `whaled worker`) in the foreground, in place
//! of this process, with the arguments given (`whale serve --help` shows whaled's own help).

use std::process::Command;

use crate::cli::ServeArgs;
use crate::daemon::whaled_program;
use crate::error::Error;

/// Replaces this process with whaled (on Unix), so signals and the exit status are whaled's.
pub fn run(subcommand: Option<&str>, args: &ServeArgs) -> Result<(), Error> {
    let program = whaled_program();
    let mut command = Command::new(&program);
    command.args(subcommand).args(&args.args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        // `exec` returns only when it failed.
        let source = command.exec();
        Err(Error::Spawn { program, source })
    }
    #[cfg(not(unix))]
    {
        let status = command.status().map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
        std::process::exit(status.code().unwrap_or(1));
    }
}
