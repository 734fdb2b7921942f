//! Boots a kernel and initramfs in qemu (TCG), streams the serial console,
//! and turns it into an outcome: the script's exit status, a crash or a
//! timeout.
//!
//! TCG runs both vCPUs in one host thread (`thread=single`): with one thread
//! per vCPU, a vCPU now and then executed a stale int3 the kernel had just
//! patched away (an "Oops: int3" at boot, about 1 boot in 25), and livepatch
//! itself patches code the same way. KVM only where a probe boot proved it
//! works (on our build machines the guest dies during decompression).
use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// What /init prints after the script, followed by its exit status.
pub const MARKER: &str = "KLPSCOPE-VM-RESULT exit=";
/// Console lines that mean the guest kernel is broken.
const CRASHES: [&str; 4] = ["Kernel panic", "Oops:", "BUG:", "general protection fault"];
/// After a crash line, how long to keep reading the trace that follows.
const CRASH_GRACE: Duration = Duration::from_secs(5);
const TAIL_LINES: usize = 60;
/// How a scenario says why it failed (tests/scenarios/lib.sh `fail`).
const SCRIPT_FAILURE: &str = "FAIL: ";
/// Lines kept before the script's failure: the output it names (a JSON
/// file, a command's stderr). The state dump after it can push them out of
/// the tail.
const FAILURE_CONTEXT_LINES: usize = 40;

pub enum Outcome {
    /// The script finished with this status.
    Exited(i32),
    /// The guest kernel crashed; the first crash line.
    Crashed(String),
    TimedOut,
    /// qemu ended without a result marker.
    Vanished(ExitStatus),
}

/// How a boot ended, in the words of the summaries.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited(status) => write!(f, "script exited with status {status}"),
            Outcome::Crashed(line) => write!(f, "guest kernel crashed: {}", line.trim()),
            Outcome::TimedOut => f.write_str("timed out: no result from the guest"),
            Outcome::Vanished(status) => write!(f, "qemu ended ({status}) without a result"),
        }
    }
}

pub struct Report {
    pub outcome: Outcome,
    /// The last console lines, for failure reports.
    pub tail: VecDeque<String>,
    /// The script's first `FAIL: ` line and the lines before it.
    pub failure: Option<Vec<String>>,
    pub elapsed: Duration,
}

impl Report {
    /// The console's last lines, in one piece: boots running side by side
    /// must not interleave them.
    pub fn print_tail(&self) {
        let mut text = String::new();
        if let Some(failure) = &self.failure {
            text.push_str("---- where the script failed ----\n");
            for line in failure {
                text.push_str(&format!("| {line}\n"));
            }
        }
        text.push_str(&format!(
            "---- last {} console lines ----\n",
            self.tail.len()
        ));
        for line in &self.tail {
            text.push_str(&format!("| {line}\n"));
        }
        text.push_str("---- end of console ----\n");
        eprint!("{text}");
    }

    /// The outcome, with the script's own reason when it gave one.
    pub fn summary(&self) -> String {
        match self.failure.as_ref().and_then(|lines| lines.last()) {
            Some(reason) => format!("{} ({})", self.outcome, reason.trim()),
            None => self.outcome.to_string(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "TCG",
            Accel::Kvm => "KVM",
        }
    }
}

/// A kernel to boot and how.
pub struct Machine {
    pub vmlinuz: PathBuf,
    pub accel: Accel,
}

impl Machine {
    fn command(&self, initrd: &Path, append: &str) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        match self.accel {
            Accel::Tcg => cmd.args(["-accel", "tcg,thread=single", "-cpu", "max"]),
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
        };
        cmd.args(["-m", "1024", "-smp", "2"])
            .args(["-nographic", "-no-reboot", "-nic", "none"])
            .arg("-kernel")
            .arg(&self.vmlinuz)
            .arg("-initrd")
            .arg(initrd)
            .arg("-append")
            .arg(format!("console=ttyS0 quiet panic=-1 {append}"));
        cmd
    }

    /// Boots with the console on the user's terminal (Ctrl-A X quits qemu).
    pub fn interactive(&self, initrd: &Path) -> Result<ExitStatus> {
        self.command(initrd, "klpscope_interactive=1")
            .status()
            .context("cannot start qemu-system-x86_64")
    }

    /// Boots and waits for the result marker, at most `timeout`. `echo`
    /// streams the console to stdout.
    pub fn boot(&self, initrd: &Path, timeout: Duration, echo: bool) -> Result<Report> {
        let started = Instant::now();
        let mut child = self
            .command(initrd, "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start qemu-system-x86_64")?;
        watch(&mut child, started, timeout, echo)
    }
}

fn watch(child: &mut Child, started: Instant, timeout: Duration, echo: bool) -> Result<Report> {
    let (sender, lines) = mpsc::channel();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    forward(stdout, sender.clone());
    forward(stderr, sender);

    let mut tail = VecDeque::new();
    let mut failure = None;
    let mut deadline = started + timeout;
    let mut outcome = None;
    loop {
        let line = match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                outcome.get_or_insert(Outcome::Vanished(status));
                break;
            }
        };
        if echo {
            println!("{line}");
        }
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        if failure.is_none() && line.starts_with(SCRIPT_FAILURE) {
            let from = tail.len().saturating_sub(FAILURE_CONTEXT_LINES);
            failure = Some(tail.iter().skip(from).cloned().collect());
        }
        if outcome.is_some() {
            continue;
        }
        if CRASHES.iter().any(|c| line.contains(c)) {
            outcome = Some(Outcome::Crashed(line.clone()));
            deadline = Instant::now() + CRASH_GRACE;
        } else if let Some(status) = line.split(MARKER).nth(1) {
            let status = status.trim().parse().unwrap_or(-1);
            outcome = Some(Outcome::Exited(status));
            // Leave time for poweroff; a clean exit needs nothing more.
            deadline = Instant::now() + Duration::from_secs(10);
        }
    }
    stop(child);
    Ok(Report {
        outcome: outcome.unwrap_or(Outcome::TimedOut),
        tail,
        failure,
        elapsed: started.elapsed(),
    })
}

fn forward(stream: impl Read + Send + 'static, sender: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
            if sender.send(line).is_err() {
                return;
            }
            buf.clear();
        }
    });
}

/// Kills qemu if it still runs (only our own child).
fn stop(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}
