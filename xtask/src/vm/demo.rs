//! `cargo xtask demo`: `klpscope watch` live in the user's terminal, on the
//! guest's serial console, while a parked task holds up a livepatch
//! transition until tests/scenarios/demo.sh releases it. And its test: the
//! demo run in tmux, read off the screen as a person would see it.
use std::{
    io::IsTerminal,
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{Series, apt, kernel, lab::Lab, script_path};
use crate::cache;

#[derive(Args)]
pub struct DemoArgs {
    /// Debian kernel series to boot.
    #[arg(long, value_enum, default_value = "6.12")]
    kernel: Series,
    /// Script the guest runs on its console.
    #[arg(long, default_value = "tests/scenarios/demo.sh")]
    script: PathBuf,
}

/// The host terminal's size and TERM for the guest: a serial line has no
/// size of its own, and watch draws nothing on a 0x0 terminal.
const TERMINAL_ENV: &str = "/lib/klpscope-test/terminal.env";

pub fn demo(args: DemoArgs) -> Result<ExitCode> {
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        bail!("the demo shows klpscope watch in this terminal: run it from one");
    }
    let script = script_path(&args.script)?;
    let lab = Lab::prepare()?;
    let kernel = kernel::prepare(args.kernel)?;
    let machine = lab.machine(&kernel)?;
    let dir = cache::dir().join("vm");
    std::fs::create_dir_all(&dir)?;
    let env = dir.join(format!("terminal-{}.env", std::process::id()));
    std::fs::write(&env, terminal_env()?)?;
    let initramfs = lab.initramfs(&kernel, &script, &[(env.clone(), TERMINAL_ENV.into())]);
    let _ = std::fs::remove_file(&env);
    let initramfs = initramfs?;
    println!(
        "vm: booting Debian kernel {} (qemu, {}) with the console here; \
         q quits watch and powers the VM off, Ctrl-A X kills qemu",
        kernel.release(),
        machine.accel.name()
    );
    let status = machine.interactive(&initramfs);
    let _ = std::fs::remove_file(&initramfs);
    let status = status?;
    println!("vm: qemu exited ({status})");
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Shell assignments for demo.sh: ROWS, COLS and TERM.
fn terminal_env() -> Result<String> {
    let out = Command::new("stty")
        .arg("size")
        .stdin(Stdio::inherit())
        .output()
        .context("cannot run stty")?;
    let size = String::from_utf8_lossy(&out.stdout);
    let (rows, cols) = match size.split_whitespace().collect::<Vec<_>>()[..] {
        [rows, cols] if out.status.success() => (rows.parse::<u16>()?, cols.parse::<u16>()?),
        _ => bail!(
            "cannot read the terminal's size (stty size: {})",
            size.trim()
        ),
    };
    // Sourced by the guest's shell: only a plain name may pass.
    let term = std::env::var("TERM")
        .ok()
        .filter(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
        })
        .unwrap_or_else(|| "xterm".into());
    Ok(format!("ROWS={rows}\nCOLS={cols}\nTERM={term}\n"))
}

/// The demo's screen size in the test; 80x24 must work too, but a wider
/// screen keeps the blocker's function name unabbreviated.
const TEST_COLS: &str = "100";
const TEST_ROWS: &str = "30";
/// From the demo's start: xtask checks the build, boots the VM (TCG), parks
/// the reader and loads the patch.
const BLOCKER_WITHIN: Duration = Duration::from_secs(240);
/// From the blocker's row: demo.sh releases it about 20 s after the load,
/// and the transition then completes within a retry round or two.
const COMPLETE_WITHIN: Duration = Duration::from_secs(90);
/// From `q`: watch restores the terminal, the guest powers off, qemu exits.
const EXIT_WITHIN: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(500);

/// A tmux server of our own, killed (with the demo's qemu) when dropped.
struct Tmux {
    socket: PathBuf,
}

/// The demo's only window.
const TARGET: &str = "demo";

impl Tmux {
    fn start(command: &str) -> Result<Tmux> {
        let tmux = Tmux {
            socket: std::env::temp_dir()
                .join(format!("klpscope-demo-test-{}.tmux", std::process::id())),
        };
        // The pane stays after the demo exits, so that its last screen
        // can be read.
        tmux.run(&[
            "-f",
            "/dev/null",
            "start-server",
            ";",
            "set-option",
            "-g",
            "remain-on-exit",
            "on",
            ";",
            "new-session",
            "-d",
            "-s",
            TARGET,
            "-x",
            TEST_COLS,
            "-y",
            TEST_ROWS,
            command,
        ])?;
        Ok(tmux)
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run tmux")?;
        if !out.status.success() {
            bail!(
                "tmux {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn screen(&self) -> Result<String> {
        self.run(&["capture-pane", "-p", "-t", TARGET])
    }

    fn demo_ended(&self) -> Result<bool> {
        let out = self.run(&["display-message", "-p", "-t", TARGET, "#{pane_dead}"])?;
        Ok(out.trim() == "1")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        // tmux leaves its socket file behind.
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The blockers table's row for the parked reader: pid, tid, `cat`, and
/// the function it sleeps in. (The event log's line about it starts with
/// a time, not a pid.)
fn blocker_row(screen: &str) -> bool {
    screen.lines().any(|line| {
        let words: Vec<&str> = line
            .trim_start_matches(['│', ' '])
            .split_whitespace()
            .collect();
        words.len() > 3
            && words[..2]
                .iter()
                .all(|w| w.chars().all(|c| c.is_ascii_digit()))
            && words[2] == "cat"
            && line.contains("klp_test_park_wait")
    })
}

/// Every task switched: the gauge at 100%, or the event that says so
/// (the idle screen may replace the gauge between two screen reads).
fn all_switched(screen: &str) -> bool {
    screen.contains("tasks switched (100%)") || screen.contains("tasks switched, 0 pending")
}

/// What the pane's command prints after `xtask demo`, then its status.
const EXITED: &str = "xtask demo exited with status";

fn exit_status(screen: &str) -> String {
    screen
        .lines()
        .find_map(|l| l.split(EXITED).nth(1))
        .map_or("no exit status on the screen".into(), |s| {
            format!("status {}", s.trim())
        })
}

/// What the test saw, for the PASS line.
struct Seen {
    blocker_secs: f64,
    signals: bool,
    complete_secs: f64,
    exit_secs: f64,
}

pub fn demo_test() -> Result<()> {
    apt::ensure_installed(&["tmux"])?;
    // Built, fetched and probed here, where errors read well: the demo in
    // the pane then finds everything ready and boots at once.
    let lab = Lab::prepare()?;
    let kernel = kernel::prepare(Series::V6_12)?;
    lab.machine(&kernel)?;
    let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
    // The status on the screen: tmux's #{pane_dead_status} stays empty when
    // its server inherited a blocked SIGCHLD (seen from some shells).
    let command = format!("'{}' demo; echo \"{EXITED} $?\"", xtask.display());
    let started = Instant::now();
    let tmux = Tmux::start(&command)?;
    let mut last = String::new();
    match drive(&tmux, started, &mut last) {
        Ok(seen) => {
            println!(
                "PASS demo in tmux ({TEST_COLS}x{TEST_ROWS}): blocker row after {:.1}s, \
                 fake signals {}, COMPLETE after {:.1}s, clean exit {:.1}s after q",
                seen.blocker_secs,
                if seen.signals { "shown" } else { "not seen" },
                seen.complete_secs,
                seen.exit_secs
            );
            Ok(())
        }
        Err(error) => {
            eprintln!("---- last screen of the demo ----");
            eprintln!("{last}");
            eprintln!("---- end of screen ----");
            println!(
                "FAIL demo in tmux: {error:#} ({:.1}s)",
                started.elapsed().as_secs_f64()
            );
            bail!("demo-test failed")
        }
    }
}

/// Reads the screen until `done` holds, at most `within` from now; fails
/// early when the demo exits. `last` keeps the latest screen.
fn wait_for(
    tmux: &Tmux,
    what: &str,
    within: Duration,
    last: &mut String,
    mut done: impl FnMut(&str) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let ended = tmux.demo_ended()?;
        *last = tmux.screen()?;
        if done(last) {
            return Ok(());
        }
        if ended {
            bail!("the demo ended ({}) before {what}", exit_status(last));
        }
        if Instant::now() > deadline {
            bail!("no {what} within {}s", within.as_secs());
        }
        std::thread::sleep(POLL);
    }
}

fn drive(tmux: &Tmux, started: Instant, last: &mut String) -> Result<Seen> {
    wait_for(tmux, "blocker row", BLOCKER_WITHIN, last, blocker_row)?;
    let blocker_secs = started.elapsed().as_secs_f64();
    let (mut signals, mut switched) = (false, false);
    wait_for(tmux, "COMPLETE", COMPLETE_WITHIN, last, |screen| {
        signals |= screen.contains("signals sent");
        switched |= all_switched(screen);
        screen.contains("klp_test_patch_target COMPLETE")
    })?;
    if !switched {
        bail!("COMPLETE, but progress never showed every task switched");
    }
    let complete_secs = started.elapsed().as_secs_f64();
    let quit = Instant::now();
    tmux.run(&["send-keys", "-t", TARGET, "q"])?;
    let deadline = quit + EXIT_WITHIN;
    loop {
        let ended = tmux.demo_ended()?;
        *last = tmux.screen()?;
        if ended {
            break;
        }
        if Instant::now() > deadline {
            bail!("still running {}s after q", EXIT_WITHIN.as_secs());
        }
        std::thread::sleep(POLL);
    }
    let status = exit_status(last);
    if status != "status 0" {
        bail!("the demo ended ({status}) after q");
    }
    if !last.contains("klpscope watch exited with status 0") {
        bail!("watch's exit status not on the screen");
    }
    Ok(Seen {
        blocker_secs,
        signals,
        complete_secs,
        exit_secs: quit.elapsed().as_secs_f64(),
    })
}
