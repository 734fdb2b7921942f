mod bench;
mod build;
mod cache;
mod dist;
mod dist_test;
mod fuzz;
mod import_graph;
mod prometheus;
mod setup;
mod test;
mod tools;
mod vm;

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
    /// Build and run klpscope's release build as root, as an administrator
    /// runs it: `cargo xtask run -- status`.
    Run {
        /// The debug build instead (overflow checks on, unoptimised).
        #[arg(long)]
        debug: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the Debian package (target/debian): the release binary with its
    /// eBPF object, a manual page per command, bash, zsh and fish completions.
    Dist,
    /// Build the package, install it with dpkg, check the binary, `man -w`
    /// and bash completion, and remove it again (root; part of `test`).
    DistTest,
    /// rustfmt and clippy, the eBPF crate linted for its own target.
    Lint,
    /// Benchmarks, each side by side with its baseline: the patch_state
    /// scan against kpatch's shell loop (host), and the call counter's cost
    /// per call against no probe and a minimal fentry (VM).
    Bench,
    /// Every test of the project: lint, unit, integration, the package,
    /// fuzzing, VM scenarios and the TUI in tmux.
    Test,
    /// Run every fuzz target of livepatch-user's parsers (cargo-fuzz, nightly)
    /// for a fixed number of executions, from the checked-in seeds.
    Fuzz {
        /// Executions per target, instead of each target's default (about a
        /// minute for all).
        #[arg(long)]
        runs: Option<u64>,
    },
    /// Boot a Debian kernel in qemu with klpscope and the test modules; run a script as root.
    VmRun(vm::RunArgs),
    /// Run every VM scenario and the harness self-checks.
    VmTest {
        #[arg(long, value_enum, default_value = "all")]
        kernel: vm::Kernels,
    },
    /// Watch a blocked livepatch transition live in a VM: klpscope watch in this terminal.
    Demo(vm::DemoArgs),
    /// Run the demo in tmux and check its screen (also part of `test`).
    DemoTest,
    /// Build the livepatch modules in each producer's layout that the host
    /// tests decode, into livepatch-user/tests/fixtures/producers.
    Fixtures,
    /// Build the lab kernels from Debian's kernel source packages and
    /// livepatch modules of them with the real kpatch-build and klp-build,
    /// into livepatch-user/tests/fixtures/real (cached; half an hour or
    /// more per kernel on 2 cores; not part of `test`).
    RealFixtures {
        /// Only this lab kernel: lab-6.12 (kpatch-build) or lab-7.3 (klp-build).
        #[arg(long, value_enum)]
        kernel: Option<vm::Series>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run().map(|_| ExitCode::SUCCESS),
        Command::Build { release } => build::all(release).map(|_| ExitCode::SUCCESS),
        Command::Run { debug, args } => build::run(!debug, &args),
        Command::Dist => dist::package().map(|_| ExitCode::SUCCESS),
        Command::DistTest => dist_test::run().map(|_| ExitCode::SUCCESS),
        Command::Lint => test::lint().map(|_| ExitCode::SUCCESS),
        Command::Bench => bench::run(),
        Command::Test => test::all(),
        Command::Fuzz { runs } => fuzz::run(runs).map(|_| ExitCode::SUCCESS),
        Command::VmRun(args) => vm::run(args),
        Command::VmTest { kernel } => vm::test(kernel).map(|_| ExitCode::SUCCESS),
        Command::Demo(args) => vm::demo(args),
        Command::DemoTest => vm::demo_test().map(|_| ExitCode::SUCCESS),
        Command::Fixtures => vm::fixtures().map(|_| ExitCode::SUCCESS),
        Command::RealFixtures { kernel } => vm::real_fixtures(kernel).map(|_| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}
