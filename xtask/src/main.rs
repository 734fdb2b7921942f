mod build;
mod cache;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Developer and user tasks for klpscope. Run as `cargo xtask <command>`.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the build needs (nightly rust-src, bpf-linker), if missing.
    Setup,
    /// Build the eBPF object and the klpscope binary.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build and run klpscope as root: `cargo xtask run -- status`.
    Run {
        #[arg(long)]
        release: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// rustfmt and clippy, the eBPF crate linted for its own target.
    Lint,
    /// Every test of the project: lint, unit, integration and VM scenarios.
    Test,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run().map(|_| ExitCode::SUCCESS),
        Command::Build { release } => build::all(release).map(|_| ExitCode::SUCCESS),
        Command::Run { release, args } => build::run(release, &args),
        Command::Lint => test::lint().map(|_| ExitCode::SUCCESS),
        Command::Test => test::all(),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}
