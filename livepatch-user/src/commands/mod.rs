//! Each command is a short composition of readers, analysis and views.
// A command or probe longer than a screen does more than one thing.
#![warn(clippy::too_many_lines)]
mod check;
pub mod completions;
mod diagnose;
mod event_lines;
mod live_driver;
mod live_output;
mod metrics;
mod metrics_listener;
pub mod output;
mod rollout;
mod serve;
mod status;
mod stop_signals;
mod watch;

use std::process::ExitCode;

use anyhow::Result;

use crate::{
    cli::{Cli, Command},
    exit_code,
    views::style::Color,
};

/// The command line, or the exit code once clap has answered it: a usage
/// error on stderr (2), or help and version on stdout, which can fail like
/// any output (clap's own exit said 0 whatever became of the text).
pub fn parse_command_line() -> Result<Cli, ExitCode> {
    use clap::Parser as _;
    use std::io::Write as _;
    let answer = match Cli::try_parse() {
        Ok(cli) => return Ok(cli),
        Err(answer) if answer.use_stderr() => answer.exit(),
        Err(answer) => answer,
    };
    match answer.print().and_then(|()| std::io::stdout().flush()) {
        Ok(()) => Err(ExitCode::SUCCESS),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            Err(exit_code::OUTPUT_CLOSED.into())
        }
        Err(error) => {
            output::note(&format!("writing to stdout: {error}"));
            Err(exit_code::ERROR.into())
        }
    }
}

/// The command's exit code; errors come back as one line for stderr. A
/// closed stdout is not an error: the command ends quietly.
pub fn run(cli: Cli) -> Result<ExitCode> {
    if let Some(path) = &cli.log {
        start_log(path)?;
    }
    let color = Color::for_stdout(cli.color);
    let result = match cli.command {
        Command::Status(args) => status::run(&cli.root, &args, color),
        Command::Check(args) => check::run(&cli.root, &args, color),
        Command::Watch(args) => watch::run(&cli.root, &args, color),
        Command::Diagnose(args) => diagnose::run(&cli.root, &args, color),
        Command::Apply(args) => rollout::apply(&cli.root, &args, color),
        Command::Revert(args) => rollout::revert(&cli.root, &args, color),
        Command::Metrics(args) => metrics::run(&cli.root, &args),
        Command::Serve(args) => serve::run(&cli.root, &args),
        Command::Completions(args) => completions::run(&args),
    };
    match result {
        Err(error) if error.is::<output::OutputClosed>() => {
            Ok(ExitCode::from(exit_code::OUTPUT_CLOSED))
        }
        result => result,
    }
}

/// klpscope's own log, eBPF programs' messages included, goes to a file: the
/// terminal belongs to the output (or the TUI).
fn start_log(path: &std::path::Path) -> Result<()> {
    use anyhow::Context as _;
    let file =
        open_log(path).with_context(|| format!("cannot write the log file {}", path.display()))?;
    env_logger::Builder::new()
        // klpscope's own debug lines; the libraries' only from info up.
        .filter_level(log::LevelFilter::Info)
        .filter_module("livepatch_user", log::LevelFilter::Debug)
        .parse_env("KLPSCOPE_LOG")
        .target(env_logger::Target::Pipe(Box::new(file)))
        .init();
    log::info!("klpscope {} started", env!("CARGO_PKG_VERSION"));
    Ok(())
}

/// The log file, new or emptied, only if it is a regular file: klpscope
/// runs as root, so a symlink planted at the path must not lead the
/// truncation elsewhere (O_NOFOLLOW), nor a FIFO hold up the open
/// (O_NONBLOCK), nor a device take the log. Emptied after the check, not
/// by O_TRUNC at the open.
fn open_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    file.set_len(0)?;
    Ok(file)
}
