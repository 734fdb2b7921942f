//! The command line: what the user can ask for.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// eBPF-assisted livepatch readiness and transition tracing.
#[derive(Debug, Parser)]
#[command(name = "klpscope", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Where the kernel's /sys and /proc are found (tests point this at a
    /// fixture tree).
    #[arg(long, global = true, default_value = "/", hide = true)]
    pub root: PathBuf,
    /// Write klpscope's own log (including messages from its eBPF programs)
    /// to this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The loaded livepatches and their state.
    Status(StatusArgs),
    /// Before applying a patch: can it apply here, how hot are its functions,
    /// and which tasks would block it?
    Check(CheckArgs),
    /// Follow a transition live: progress, blockers, calls per version.
    Watch(WatchArgs),
    /// Explain a stuck transition: who blocks it, why, and what to do.
    Diagnose(DiagnoseArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Exit codes: 0 ready, 3 warnings, 4 not ready, 1 error.")]
pub struct CheckArgs {
    /// A function to patch, as NAME or NAME,SYMPOS (repeatable).
    #[arg(long = "function", value_name = "NAME[,SYMPOS]")]
    pub functions: Vec<String>,
    /// The object the --function names live in (a module); default vmlinux.
    #[arg(long, value_name = "MODULE", requires = "functions")]
    pub object: Option<String>,
    /// A livepatch module file: its patched functions are read from its ELF.
    #[arg(long, value_name = "FILE.ko", conflicts_with_all = ["functions", "patch"])]
    pub module: Option<PathBuf>,
    /// A loaded patch: readiness to disable it.
    #[arg(long, value_name = "NAME", conflicts_with = "functions")]
    pub patch: Option<String>,
    /// How long to sample calls and stacks.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub duration: f64,
    /// Do not load eBPF programs; use /proc and /sys only.
    #[arg(long)]
    pub no_ebpf: bool,
    /// One JSON document instead of the report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Exit codes: 0 completed (or quit), 5 reversed, 6 timed out, 1 error.")]
pub struct WatchArgs {
    /// Only this patch's transitions.
    #[arg(long, value_name = "NAME")]
    pub patch: Option<String>,
    /// One line per change instead of the TUI (the default without a
    /// terminal).
    #[arg(long, conflicts_with = "json")]
    pub plain: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Exit when the transition ends.
    #[arg(long)]
    pub until_complete: bool,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Do not load eBPF programs; poll /proc and /sys only.
    #[arg(long)]
    pub no_ebpf: bool,
}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// The patch to diagnose; default the one in transition.
    #[arg(long, value_name = "NAME")]
    pub patch: Option<String>,
    /// One JSON document instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Infer verdicts from /proc and /sys instead of tracing the kernel.
    #[arg(long)]
    pub no_ebpf: bool,
}
