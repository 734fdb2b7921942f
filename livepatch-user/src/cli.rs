//! The command line: what the user can ask for.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::{Target, VMLINUX};

/// eBPF-assisted livepatch readiness and transition tracing.
///
/// klpscope shows a Linux livepatch transition as the kernel sees it:
/// status lists the loaded patches and the transition in progress, check
/// says whether a patch can apply here and which tasks would block it,
/// watch follows a transition live, and diagnose explains a stuck one. It
/// is read-only, except for reversing or forcing a transition from watch,
/// each after a confirmation. Kernel stacks and eBPF need root.
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
    /// Colour the text views: auto colours only a terminal, and not when
    /// NO_COLOR is set. JSON is never coloured.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
}

/// When the text views are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
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
    /// Check, load and watch a livepatch module; back it out if its
    /// transition stalls past the deadline.
    Apply(ApplyArgs),
    /// Disable a loaded patch, watch it unpatch and unload its module;
    /// enable it again if the transition stalls past the deadline.
    Revert(RevertArgs),
    /// Print the shell completion script for klpscope.
    Completions(CompletionsArgs),
    /// The livepatch state as Prometheus metrics, once: for node_exporter's
    /// textfile collector.
    Metrics(MetricsArgs),
    /// Serve the livepatch state as Prometheus metrics over HTTP, following
    /// transitions live between scrapes.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 ready, 3 warnings, 4 not ready, 1 error, 2 usage error, 141 stdout closed."
)]
pub struct CheckArgs {
    /// A function to patch, as NAME or NAME,SYMPOS (repeatable).
    #[arg(long = "function", value_name = "NAME[,SYMPOS]", value_parser = function_spec)]
    pub functions: Vec<FunctionSpec>,
    /// The object the --function names live in (a module); default vmlinux.
    #[arg(long, value_name = "MODULE", requires = "functions", value_parser = module_name)]
    pub object: Option<String>,
    /// A livepatch module file: its patched functions are read from its ELF.
    #[arg(long, value_name = "FILE.ko", conflicts_with_all = ["functions", "patch"])]
    pub module: Option<PathBuf>,
    /// A loaded patch: readiness to disable it.
    #[arg(long, value_name = "NAME", conflicts_with = "functions", value_parser = module_name)]
    pub patch: Option<String>,
    /// How long to sample calls and stacks (0 to 3600).
    #[arg(long, value_name = "SECS", default_value_t = 3.0, value_parser = seconds::<3600>)]
    pub duration: f64,
    /// Do not load eBPF programs; use /proc and /sys only.
    #[arg(long)]
    pub no_ebpf: bool,
    /// One JSON document instead of the report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 completed (or quit with q), 5 reversed, 6 timed out, \
    7 load refused by the kernel (with --until-complete), 1 error, 2 usage error, 141 stdout closed; interrupted: 129 SIGHUP, 130 SIGINT or Ctrl-C, 143 SIGTERM.

Keys: r reverses the transition after a y; f forces it after its name is typed out. Any other \
key cancels, and nothing is written if the transition has ended or turned around meanwhile."
)]
pub struct WatchArgs {
    /// Only this patch's transitions.
    #[arg(long, value_name = "NAME", value_parser = module_name)]
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
    /// Give up after this many seconds (up to a year).
    #[arg(long, value_name = "SECS", value_parser = seconds::<31_536_000>)]
    pub timeout: Option<f64>,
    /// Do not load eBPF programs; poll /proc and /sys only.
    #[arg(long)]
    pub no_ebpf: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 diagnosed (or no transition), 3 incomplete: some pending task could \
    not be explained (its stack is unreadable without root), 1 error, 2 usage error, 141 stdout closed."
)]
pub struct DiagnoseArgs {
    /// The patch to diagnose; default the one in transition.
    #[arg(long, value_name = "NAME", value_parser = module_name)]
    pub patch: Option<String>,
    /// One JSON document instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Infer verdicts from /proc and /sys instead of tracing the kernel.
    #[arg(long)]
    pub no_ebpf: bool,
}

const ROLLOUT_EXIT_CODES: &str = "Exit codes: 0 done, 3 check warnings not confirmed (nothing \
    changed), 4 not ready (nothing changed), 5 backed out (stalled past the deadline, or interrupted: \
    apply leaves no patch behind, revert leaves the patch applied), 7 the kernel refused the module \
    or the write, 8 the reversal stalled too (the patch is left in transition; klpscope never \
    forces), 1 error, 2 usage error, 141 stdout closed; interrupted before anything changed: 129 \
    SIGHUP, 130 SIGINT, 143 SIGTERM.

The first SIGINT (or Ctrl-C) asks: a second one, SIGTERM or SIGHUP reverses the transition, \
waits for the reversal and cleans up before exiting.";

/// How a guarded rollout runs: the same for apply and revert.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// Back out when the transition has not completed after this many
    /// seconds (60 lets the kernel's fake signals, sent after 15 s, work).
    #[arg(long, value_name = "SECS", default_value_t = 60.0, value_parser = seconds::<86400>)]
    pub deadline: f64,
    /// Go on past check warnings and predicted blockers without asking.
    #[arg(long)]
    pub yes: bool,
    /// Check and get ready, but change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long the check before the change samples stacks and calls.
    #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = seconds::<3600>)]
    pub check_duration: f64,
    /// One line per step instead of the TUI (the default without a
    /// terminal).
    #[arg(long, conflicts_with = "json")]
    pub plain: bool,
    /// One JSON object per line: the check, every step and the
    /// transition's events.
    #[arg(long)]
    pub json: bool,
    /// Do not load eBPF programs; poll /proc and /sys only.
    #[arg(long)]
    pub no_ebpf: bool,
}

#[derive(Debug, Args)]
#[command(after_help = ROLLOUT_EXIT_CODES)]
pub struct ApplyArgs {
    /// The livepatch module file to load.
    #[arg(value_name = "FILE.ko")]
    pub module: PathBuf,
    #[command(flatten)]
    pub rollout: RolloutArgs,
}

#[derive(Debug, Args)]
#[command(after_help = ROLLOUT_EXIT_CODES)]
pub struct RevertArgs {
    /// The loaded patch to disable (its module is unloaded once it is
    /// gone).
    #[arg(value_name = "NAME", value_parser = module_name)]
    pub patch: String,
    #[command(flatten)]
    pub rollout: RolloutArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "The Debian package installs them for bash, zsh and fish. By hand, for example: \
    klpscope completions bash > ~/.local/share/bash-completion/completions/klpscope"
)]
pub struct CompletionsArgs {
    /// The shell to complete klpscope's commands and options in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 written, 1 error, 2 usage error, 141 stdout closed.

For node_exporter's textfile collector, run it every minute with --output \
DIR/klpscope.prom (DIR being the collector's --collector.textfile.directory)."
)]
pub struct MetricsArgs {
    /// Write the exposition to this file instead of stdout, atomically (a
    /// temporary file in the same folder, renamed over it).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 stopped by SIGTERM, SIGINT or SIGHUP, 1 error (the address \
    cannot be bound, /proc or /sys unreadable), 2 usage error."
)]
pub struct ServeArgs {
    /// Where to answer scrapes of /metrics (port 0: any free port, said on
    /// stderr).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9757")]
    pub listen: std::net::SocketAddr,
    /// Do not load eBPF programs; poll /proc and /sys only.
    #[arg(long)]
    pub no_ebpf: bool,
    /// Connections held at once; more are closed as soon as they are
    /// accepted (said once on stderr).
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub max_connections: u16,
    /// A client must send a request's headers within this many seconds of
    /// connecting or of the last response, or its connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = timeout_seconds)]
    pub header_timeout: f64,
}

/// The kernel's MODULE_NAME_LEN less its NUL: a patch is named after its
/// module.
const MODULE_NAME_MAX: usize = 55;
/// The kernel's KSYM_NAME_LEN less its NUL.
const SYMBOL_NAME_MAX: usize = 511;

/// A module or patch name as the kernel allows it. It becomes a path under
/// /sys/kernel/livepatch, so `/`, `.` and `..` must never get through.
pub(crate) fn module_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= MODULE_NAME_MAX
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "not a module or patch name: letters, digits, '_' and '-', at most {MODULE_NAME_MAX} characters"
        ))
    }
}

/// `--function NAME[,SYMPOS]`, as the command line gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionSpec {
    pub name: String,
    /// 0: the only one of that name.
    pub sympos: u32,
}

impl FunctionSpec {
    /// The function in `object` (`--object`; None: vmlinux).
    pub fn target(&self, object: Option<&str>) -> Target {
        Target::in_object(object.unwrap_or(VMLINUX), &self.name, self.sympos)
    }
}

/// `NAME` or `NAME,SYMPOS`.
fn function_spec(text: &str) -> Result<FunctionSpec, String> {
    let (name, sympos) = match text.split_once(',') {
        Some((name, sympos)) => {
            let sympos = sympos
                .parse()
                .map_err(|_| format!("sympos '{sympos}' is not a number (NAME[,SYMPOS])"))?;
            (name, sympos)
        }
        None => (text, 0),
    };
    function_name(name)?;
    Ok(FunctionSpec {
        name: name.to_owned(),
        sympos,
    })
}

/// A kernel symbol's name: letters, digits, `_`, `.`, `$` (compilers add
/// suffixes such as `.isra.0` and `.cold`).
pub(crate) fn function_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= SYMBOL_NAME_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "not a function name: letters, digits, '_', '.' and '$', at most {SYMBOL_NAME_MAX} characters, then an optional ,SYMPOS"
        ))
    }
}

/// A number of seconds from 0 to MAX: negative, NaN and infinite values
/// would make a wait that never ends or ends at once.
fn seconds<const MAX: u32>(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=f64::from(MAX)).contains(&secs) => Ok(secs),
        _ => Err(format!("not a number of seconds from 0 to {MAX}")),
    }
}

/// Seconds for a timeout: 0 would close every connection at once.
fn timeout_seconds(text: &str) -> Result<f64, String> {
    match seconds::<3600>(text) {
        Ok(secs) if secs > 0.0 => Ok(secs),
        _ => Err("not a number of seconds above 0, up to 3600".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_sysfs_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "/etc",
            "../../x",
            "a/b",
            "a b",
            "x\x1b",
            &"a".repeat(56),
        ] {
            assert!(module_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(module_name("klp_test-2").unwrap(), "klp_test-2");
        for bad in [".", "..", "/etc", "a/b,1", "", ",1", &"f".repeat(512)] {
            assert!(function_spec(bad).is_err(), "{bad:?}");
        }
        assert!(function_spec("foo.isra.0,2").is_ok());
    }

    #[test]
    fn seconds_are_finite_and_in_range() {
        for bad in ["-5", "nan", "NaN", "inf", "-0.1", "3601", "x"] {
            assert!(seconds::<3600>(bad).is_err(), "{bad:?}");
        }
        assert_eq!(seconds::<3600>("0.5"), Ok(0.5));
    }
}
