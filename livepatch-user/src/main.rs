use std::process::ExitCode;

use clap::Parser;
use livepatch_user::{cli, commands, probes};

fn main() -> ExitCode {
    probes::return_freed_memory_promptly();
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(error) => {
            // One line naming the cause: the chain, not a backtrace.
            commands::output::note(&format!("{error:#}"));
            commands::EXIT_ERROR.into()
        }
    }
}
