//! `klpscope completions SHELL`: the shell's completion script, generated
//! from the command line's own definition, so that it always offers what
//! this binary accepts.
use std::process::ExitCode;

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::{
    cli::{Cli, CompletionsArgs},
    commands::output,
};

pub fn run(args: &CompletionsArgs) -> Result<ExitCode> {
    output::print(&script(args.shell))?;
    Ok(ExitCode::SUCCESS)
}

/// The completion script for `shell`, for the command named `klpscope`.
pub fn script(shell: Shell) -> String {
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    // clap_complete writes text it built from Rust strings.
    String::from_utf8_lossy(&script).into_owned()
}
