//! Each command is a short composition of readers, analysis and views.
mod check;
mod diagnose;
mod status;
mod watch;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};

pub const EXIT_ERROR: u8 = 1;

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Status(args) => status::run(&cli.root, &args),
        Command::Check(args) => check::run(&cli.root, &args),
        Command::Watch(args) => watch::run(&cli.root, &args),
        Command::Diagnose(args) => diagnose::run(&cli.root, &args),
    }
}
