//! `whale completion bash|zsh|fish`: prints the completion script for a shell.

use clap::CommandFactory as _;

use crate::cli::{Cli, Shell};
use crate::error::Error;

pub fn run(shell: Shell) -> Result<(), Error> {
    let mut script = Vec::new();
    let mut command = Cli::command();
    match shell {
        Shell::Bash => clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut command,
            "whale",
            &mut script,
        ),
        Shell::Zsh => clap_complete::generate(
            clap_complete::Shell::Zsh,
            &mut command,
            "whale",
            &mut script,
        ),
        Shell::Fish => clap_complete::generate(
            clap_complete::Shell::Fish,
            &mut command,
            "whale",
            &mut script,
        ),
    }
    crate::output::data(&String::from_utf8_lossy(&script))
}
