//! Where commands write: stdout for the result, stderr for one-line notes.
//! Both can fail (a closed pipe, a full disk); neither may panic. A reader
//! that went away (`klpscope diagnose | head -3`) ends the command quietly
//! with `exit_code::OUTPUT_CLOSED`, as a shell tool killed by SIGPIPE would.
use std::{
    io::{self, Write},
    time::Duration,
};

use rustix::event::{PollFd, PollFlags, Timespec};

use crate::views::printable::printable;

/// The reader of stdout went away: nothing more can be said, and nothing
/// is wrong with the kernel or the input.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct OutputClosed;

/// Writes the whole text to stdout and flushes it.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(stdout_error)
}

/// A closed pipe becomes `OutputClosed`; any other failure stays an error
/// that says it was stdout that failed.
pub fn stdout_error(error: io::Error) -> anyhow::Error {
    if error.kind() == io::ErrorKind::BrokenPipe {
        OutputClosed.into()
    } else {
        anyhow::Error::new(error).context("writing to stdout")
    }
}

/// One line on stderr, escaped: it may carry a path, a module's name or
/// a kernel reader's reason, none of them ours. If stderr itself is gone
/// there is nobody to tell.
pub fn note(line: &str) {
    let _ = writeln!(io::stderr().lock(), "klpscope: {}", printable(line));
}

/// How often `stdout_closed` looks.
const STDOUT_CHECK: Duration = Duration::from_millis(250);

/// Resolves once the reader of stdout is gone (a pipe's reader closed, a
/// terminal hung up). A command that prints only when something happens
/// would otherwise learn it at its next line, maybe hours later.
pub async fn stdout_closed() {
    let mut every = tokio::time::interval(STDOUT_CHECK);
    loop {
        every.tick().await;
        // No events asked: poll reports only the error and hang-up states.
        let stdout = io::stdout();
        let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
        let now = Timespec::default();
        if rustix::event::poll(&mut fds, Some(&now)).is_ok_and(|ready| ready > 0)
            && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
        {
            return;
        }
    }
}
