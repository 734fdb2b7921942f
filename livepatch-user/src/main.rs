use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// eBPF-assisted livepatch readiness and transition tracing.
#[derive(Parser)]
#[command(name = "klpscope", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The loaded livepatches and their state.
    Status,
    /// Before applying a patch: can it apply here, and who would block it?
    Check,
    /// Follow a transition live.
    Watch,
    /// Explain a stuck transition: blockers, why, and what to do.
    Diagnose,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Status => "status",
        Command::Check => "check",
        Command::Watch => "watch",
        Command::Diagnose => "diagnose",
    };
    eprintln!("klpscope {name}: not implemented yet");
    ExitCode::FAILURE
}
