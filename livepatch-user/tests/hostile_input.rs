//! klpscope as a careless or hostile user meets it: closed pipes, a full
//! disk, bad numbers and names, task names with escape sequences, signals,
//! and a /proc whose scan never returns. Each test runs the real binary
//! against a fixture root and asserts what the user sees: one line and a
//! documented exit code, never a panic, a hang or raw escapes.
mod common;

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Read},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::fixture::{Fixture, Thread};

const EXIT_USAGE: i32 = 2;
const EXIT_OUTPUT_CLOSED: i32 = 141;
const EXIT_TIMED_OUT: i32 = 6;
/// Far longer than any of these commands needs: reaching it means a hang.
const HANG: Duration = Duration::from_secs(30);

/// A comm any local user can set with prctl(PR_SET_NAME): it retitles the
/// terminal window (OSC 2) and clears the screen if printed raw.
const HOSTILE_COMM: &str = "x\x1b]2;owned\x07\x1b[2J";

fn klpscope(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_klpscope"));
    command.arg("--root").arg(root);
    command
}

fn run(root: &Path, args: &[&str]) -> Output {
    klpscope(root).args(args).output().expect("run klpscope")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits for the child, killing it and failing the test if it hangs.
fn wait_bounded(mut child: Child, what: &str) -> Output {
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "{what}: still running after {HANG:?}; stderr: {}",
                text(&output.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn assert_no_panic(output: &Output) {
    let err = text(&output.stderr);
    assert!(
        !err.contains("panicked") && output.status.code() != Some(101),
        "{err}"
    );
}

/// A livepatch kernel with klp_demo patching cmdline_proc_show, one task
/// switched and one, with a hostile name, asleep in the old function.
fn blocked_transition() -> Fixture {
    pending_reader(
        HOSTILE_COMM,
        Some(
            "[<0>] cmdline_proc_show+0x3c/0x80\n[<0>] seq_read_iter+0x11d/0x4a0\n\
             [<0>] vfs_read+0x1c0/0x360\n",
        ),
    )
}

/// klp_demo patching cmdline_proc_show: task 1 switched, task 42 (`comm`,
/// with `stack` when it can be read) still pending.
fn pending_reader(comm: &str, stack: Option<&str>) -> Fixture {
    let fixture = Fixture::livepatch_kernel();
    fixture
        .patch("klp_demo", "1", "1", None)
        .object("klp_demo", "vmlinux", "1", &["cmdline_proc_show,1"])
        .user_thread(1, 1, "1")
        .thread(Thread {
            pid: 42,
            tid: 42,
            comm,
            state: 'S',
            kthread: false,
            patch_state: Some("0"),
            stack,
        });
    fixture
}

// 3: output that fails

#[test]
fn a_full_disk_is_one_error_line_not_a_panic() {
    let fixture = blocked_transition();
    for args in [
        &["diagnose", "--no-ebpf"][..],
        &["diagnose", "--no-ebpf", "--json"],
        &["status"],
    ] {
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let output = klpscope(fixture.root())
            .args(args)
            .stdout(full)
            .output()
            .unwrap();
        assert_no_panic(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let err = text(&output.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("writing to stdout"), "{err}");
    }
}

#[test]
fn a_closed_pipe_ends_quietly_with_141() {
    let fixture = blocked_transition();
    for args in [
        &["diagnose", "--no-ebpf"][..],
        &["status", "--json"],
        &["watch", "--no-ebpf", "--json"],
        &["watch", "--no-ebpf", "--plain"],
    ] {
        // The reader is gone before klpscope starts: its first write fails,
        // however fast it is.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let child = klpscope(fixture.root())
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = wait_bounded(child, &format!("{args:?} into a closed pipe"));
        assert_no_panic(&output);
        let err = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(EXIT_OUTPUT_CLOSED),
            "{args:?}: {err}"
        );
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
    }
}

// 6: numbers that are not a number of seconds

#[test]
fn negative_nan_and_infinite_seconds_are_refused() {
    let fixture = blocked_transition();
    for bad in ["-5", "nan", "inf", "1e400", "soon"] {
        for option in ["watch --timeout", "check --duration"] {
            let mut args: Vec<&str> = option.split(' ').collect();
            let value = format!("{}={bad}", args.pop().unwrap());
            args.push(&value);
            // Accepted, such a watch would run forever: bounded here.
            let child = klpscope(fixture.root())
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let output = wait_bounded(child, &format!("{args:?}"));
            assert_eq!(output.status.code(), Some(EXIT_USAGE), "{args:?}");
            assert!(
                text(&output.stderr).contains("not a number of seconds"),
                "{args:?}: {}",
                text(&output.stderr)
            );
        }
    }
}

// 7: escape sequences in task names

#[test]
fn task_names_are_escaped_in_every_text_view() {
    let fixture = blocked_transition();
    let diagnose = run(fixture.root(), &["diagnose", "--no-ebpf"]);
    let report = text(&diagnose.stdout);
    assert!(report.contains("x\\x1b]2;owned\\x07"), "{report}");
    assert!(
        !report.contains('\x1b') && !report.contains('\x07'),
        "{report:?}"
    );

    let child = klpscope(fixture.root())
        .args(["watch", "--no-ebpf", "--plain", "--timeout", "1.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = text(&wait_bounded(child, "watch --plain").stdout);
    assert!(lines.contains("blocker:"), "{lines}");
    assert!(lines.contains("x\\x1b]2;owned"), "{lines}");
    assert!(
        !lines.contains('\x1b') && !lines.contains('\x07'),
        "{lines:?}"
    );

    // JSON keeps the real name, escaped by JSON itself.
    let json = run(fixture.root(), &["diagnose", "--no-ebpf", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    common::json_schema::assert_valid("diagnose", &doc);
    assert_eq!(doc["blockers"][0]["comm"], HOSTILE_COMM);
}

// 9 and 11: names that are not names

#[test]
fn patch_and_object_names_cannot_leave_sysfs() {
    let fixture = blocked_transition();
    for bad in ["/etc", "/", "../../x", ".", "..", "klp_demo/vmlinux"] {
        for args in [
            vec!["check", "--patch", bad],
            vec!["watch", "--patch", bad],
            vec!["diagnose", "--patch", bad],
            vec!["check", "--function", "f", "--object", bad],
        ] {
            let output = run(fixture.root(), &args);
            assert_eq!(output.status.code(), Some(EXIT_USAGE), "{args:?}");
            assert!(
                text(&output.stderr).contains("not a module or patch name"),
                "{args:?}: {}",
                text(&output.stderr)
            );
            assert!(output.stdout.is_empty(), "{args:?}");
        }
    }
}

#[test]
fn a_huge_function_name_is_refused_at_once() {
    let fixture = blocked_transition();
    let huge = "a".repeat(10_000);
    for spec in [huge.as_str(), "../x", "a b", "f\x1b[2J"] {
        let output = run(fixture.root(), &["check", "--function", spec]);
        assert_eq!(output.status.code(), Some(EXIT_USAGE), "{spec:.20}");
        assert!(text(&output.stderr).contains("not a function name"));
    }
}

// 10: a cause said once

#[test]
fn a_cause_is_said_once() {
    let fixture = blocked_transition();
    let missing = fixture.path("missing.ko");
    let output = run(
        fixture.root(),
        &["check", "--module", missing.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1));
    let err = text(&output.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");

    // A /proc that cannot be listed: the reader's error and its cause.
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(empty.path().join("sys/kernel/livepatch")).unwrap();
    std::fs::write(empty.path().join("proc"), "not a folder").unwrap();
    let output = run(empty.path(), &["diagnose", "--no-ebpf"]);
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
}

// 8 and 12: signals

/// A watch that is following a transition, ready to be signalled.
fn watching(fixture: &Fixture, format: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = klpscope(fixture.root())
        .args(["watch", "--no-ebpf", format, "--until-complete"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str(&line) {
                common::json_schema::assert_valid("watch", &event);
            }
            let _ = lines.send(line);
        }
    });
    let first = received.recv_timeout(HANG).expect("a first line");
    assert!(first.contains("\"ready\""), "{first}");
    (child, received)
}

#[test]
fn each_signal_has_its_own_exit_code_distinct_from_completed() {
    for (signal, code, name) in [
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGINT, 130, "SIGINT"),
        (libc::SIGHUP, 129, "SIGHUP"),
    ] {
        let fixture = blocked_transition();
        let (child, lines) = watching(&fixture, "--json");
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let output = wait_bounded(child, name);
        assert_eq!(output.status.code(), Some(code), "{name}");
        // The reader thread ends at the exited child's end of output.
        let rest: Vec<String> = lines.iter().collect();
        assert!(
            rest.iter()
                .any(|l| l.contains("\"interrupted\"") && l.contains(name)),
            "{name}: {rest:?}"
        );
    }
}

/// Opens a pseudo-terminal: (controller, the terminal's path).
fn open_pty() -> (File, String) {
    // SAFETY: plain libc pty calls; every return value is checked and the
    // descriptor is owned from here on.
    unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(fd >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(fd), 0);
        assert_eq!(libc::unlockpt(fd), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_string_lossy()
            .into_owned();
        // A new pty is 0x0: nothing would be drawn.
        let size = libc::winsize {
            ws_row: 30,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        assert_eq!(libc::ioctl(fd, libc::TIOCSWINSZ, &size), 0);
        (File::from(OwnedFd::from_raw_fd(fd)), path)
    }
}

fn termios_of(terminal: &File) -> libc::termios {
    // SAFETY: tcgetattr fills the struct it is given.
    unsafe {
        let mut termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(terminal.as_raw_fd(), &mut termios), 0);
        termios
    }
}

#[test]
fn sighup_restores_the_terminal() {
    let fixture = blocked_transition();
    let (mut controller, terminal_path) = open_pty();
    let terminal = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&terminal_path)
        .unwrap();
    let cooked = termios_of(&terminal);
    assert_ne!(cooked.c_lflag & libc::ICANON, 0, "a new pty starts cooked");
    let child = klpscope(fixture.root())
        .args(["watch", "--no-ebpf"])
        .env("TERM", "xterm")
        .stdin(terminal.try_clone().unwrap())
        .stdout(terminal.try_clone().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (screen, received) = mpsc::channel();
    thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = controller.read(&mut buffer) {
            if n == 0 || screen.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let until = |seen: &mut Vec<u8>, what: &[u8]| {
        let started = Instant::now();
        while !seen.windows(what.len()).any(|w| w == what) {
            assert!(started.elapsed() < HANG, "never saw {what:?}");
            if let Ok(bytes) = received.recv_timeout(Duration::from_millis(100)) {
                seen.extend(bytes);
            }
        }
    };
    // The alternate screen, then the first frame (the feed line).
    until(&mut seen, b"\x1b[?1049h");
    until(&mut seen, b"klpscope watch");
    assert_eq!(termios_of(&terminal).c_lflag & libc::ICANON, 0, "raw mode");

    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    let output = wait_bounded(child, "the TUI after SIGHUP");
    assert_eq!(output.status.code(), Some(129));
    until(&mut seen, b"\x1b[?1049l");
    let restored = termios_of(&terminal);
    assert_ne!(restored.c_lflag & libc::ICANON, 0, "cooked mode is back");
    assert_ne!(restored.c_lflag & libc::ECHO, 0, "echo is back");
}

// 13: a scan that does not return must not hold up timeouts and signals

/// A thread whose patch_state is a FIFO: opening it blocks until a writer
/// comes, so every scan of /proc hangs there.
fn stuck_scan() -> Fixture {
    let fixture = blocked_transition();
    let fifo = fixture.path("proc/42/task/42/patch_state");
    std::fs::remove_file(&fifo).unwrap();
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    fixture
}

#[test]
fn a_stuck_scan_does_not_hold_up_the_timeout() {
    let fixture = stuck_scan();
    let child = klpscope(fixture.root())
        .args(["watch", "--no-ebpf", "--json", "--timeout", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_bounded(child, "watch --timeout 1 over a stuck scan");
    assert_eq!(output.status.code(), Some(EXIT_TIMED_OUT));
    assert!(text(&output.stdout).contains("\"timeout\""));
}

#[test]
fn a_stuck_scan_does_not_hold_up_sigterm() {
    let fixture = stuck_scan();
    let child = klpscope(fixture.root())
        .args(["watch", "--no-ebpf", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Past start-up, into the scan that never returns.
    thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let output = wait_bounded(child, "watch after SIGTERM over a stuck scan");
    assert_eq!(output.status.code(), Some(143));
}

// Issue 15: a pending task that nothing explains is never an all-clear.

#[test]
fn a_pending_task_whose_stack_cannot_be_read_is_unexplained_and_exit_3() {
    // As without root: no stack to read.
    let fixture = pending_reader("hidden", None);
    let text = run(fixture.root(), &["diagnose", "--no-ebpf"]);
    assert_eq!(text.status.code(), Some(3), "{}", self::text(&text.stderr));
    let report = self::text(&text.stdout);
    assert!(!report.contains("no blocker found"), "{report}");
    assert!(report.contains("pending, reason unknown"), "{report}");

    let json = run(fixture.root(), &["diagnose", "--no-ebpf", "--json"]);
    assert_eq!(json.status.code(), Some(3));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    common::json_schema::assert_valid("diagnose", &doc);
    let blocker = &doc["blockers"][0];
    assert_eq!(blocker["pid"], 42);
    assert_eq!(blocker["reason"], "unexplained");
    assert_eq!(blocker["forecast"], "unknown");
    assert!(blocker["unexplained"].as_str().unwrap().contains("stack"));
}

// Issue 28: files that are not what they should be

/// Puts a FIFO where the fixture had a file: opening it to read would wait
/// for a writer that never comes.
fn plant_fifo(fixture: &Fixture, relative: &str) {
    let path = fixture.path(relative);
    let _ = std::fs::remove_file(&path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
}

/// Runs `args` over `fixture` and fails the test if it hangs or panics.
fn run_bounded(fixture: &Fixture, args: &[&str]) -> Output {
    let child = klpscope(fixture.root())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_bounded(child, &args.join(" "));
    assert_no_panic(&output);
    output
}

#[test]
fn a_fifo_anywhere_in_proc_or_sys_hangs_no_command() {
    for planted in [
        "sys/kernel/livepatch/klp_demo/enabled",
        "sys/kernel/livepatch/klp_demo/transition",
        "sys/kernel/livepatch/klp_demo/vmlinux/patched",
        "proc/42/task/42/patch_state",
        "proc/42/task/42/stat",
        "proc/42/task/42/stack",
        "proc/mounts",
        "proc/sys/kernel/osrelease",
        "dev/kmsg",
    ] {
        let fixture = blocked_transition();
        plant_fifo(&fixture, planted);
        for args in [
            &["status"][..],
            &["status", "--json"],
            &["diagnose", "--no-ebpf"],
            &["metrics"],
        ] {
            let output = run_bounded(&fixture, args);
            assert!(
                matches!(output.status.code(), Some(0 | 1 | 3)),
                "{planted}, {args:?}: {output:?}"
            );
        }
    }
}

#[test]
fn a_kernel_log_that_never_runs_dry_is_refused() {
    let fixture = blocked_transition();
    fixture.dir("dev");
    std::os::unix::fs::symlink("/dev/zero", fixture.path("dev/kmsg")).unwrap();
    for args in [&["metrics"][..], &["diagnose", "--no-ebpf", "--json"]] {
        let output = run_bounded(&fixture, args);
        assert!(
            matches!(output.status.code(), Some(0 | 3)),
            "{args:?}: {output:?}"
        );
    }
    // Without the log, the transition's age is unknown and left out.
    let metrics = run_bounded(&fixture, &["metrics"]);
    assert!(!text(&metrics.stdout).contains("klpscope_transition_elapsed_seconds "));
}

#[test]
fn a_device_as_a_thread_file_is_not_read_as_one() {
    let fixture = blocked_transition();
    let stack = fixture.path("proc/42/task/42/stack");
    std::fs::remove_file(&stack).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &stack).unwrap();
    let output = run_bounded(&fixture, &["diagnose", "--no-ebpf", "--json"]);
    assert!(
        text(&output.stdout).contains("not a regular file"),
        "{}",
        text(&output.stdout)
    );
}

/// `--log FILE` as root: a symlink planted at FILE must not lead the
/// truncation to its target, nor a FIFO hold the command up.
#[test]
fn the_log_file_is_never_a_symlink_or_a_fifo() {
    let fixture = blocked_transition();
    let victim = fixture.path("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = fixture.path("link.log");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    plant_fifo(&fixture, "fifo.log");
    for log in [link, fixture.path("fifo.log")] {
        let output = run_bounded(&fixture, &["--log", log.to_str().unwrap(), "status"]);
        assert_eq!(output.status.code(), Some(1), "{log:?}: {output:?}");
        assert!(text(&output.stderr).contains("cannot write the log file"));
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

    // A regular file is still emptied and written.
    let log = fixture.path("klpscope.log");
    std::fs::write(&log, "old run\n".repeat(1000)).unwrap();
    let output = run_bounded(&fixture, &["--log", log.to_str().unwrap(), "status"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(
        !written.contains("old run") && written.contains("started"),
        "{written}"
    );
}

/// A path is the user's, or a script's that took it from elsewhere: its
/// escape sequences are escaped in the error line like any name.
#[test]
fn a_path_with_escape_sequences_is_escaped_on_stderr() {
    let fixture = blocked_transition();
    let hostile = fixture.path("x\x1b]2;owned\x07\x1b[2J.ko");
    std::fs::write(&hostile, "not an ELF file").unwrap();
    let missing = fixture.path("gone\x1b[31m.ko");
    for path in [&hostile, &missing] {
        for args in [
            vec!["check", "--module", path.to_str().unwrap()],
            vec!["apply", path.to_str().unwrap(), "--dry-run"],
        ] {
            let output = run_bounded(&fixture, &args);
            let err = text(&output.stderr);
            assert_eq!(output.status.code(), Some(1), "{args:?}: {err}");
            assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
            assert!(err.contains("\\x1b"), "{err:?}");
        }
    }
}

/// JSON escapes C0 controls itself; C1 controls (U+009B is a CSI to many
/// terminals) went out raw. Now escaped, and the text reads back the same.
#[test]
fn json_escapes_c1_controls_and_reads_back_the_same() {
    let comm = "csi\u{9b}2J";
    let fixture = pending_reader(
        comm,
        Some("[<0>] cmdline_proc_show+0x3c/0x80\n[<0>] vfs_read+0x1c0/0x360\n"),
    );
    for args in [
        &["diagnose", "--no-ebpf", "--json"][..],
        &["status", "--json"],
    ] {
        let output = run_bounded(&fixture, args);
        let json = text(&output.stdout);
        assert!(!json.contains('\u{9b}'), "{args:?}: {json}");
        let _: serde_json::Value = serde_json::from_str(&json).expect("still JSON");
    }
    let diagnose = run_bounded(&fixture, &["diagnose", "--no-ebpf", "--json"]);
    let json = text(&diagnose.stdout);
    assert!(json.contains("csi\\u009b2J"), "{json}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&json)
            .unwrap()
            .to_string()
            .contains(comm),
        "the same name read back"
    );
}

/// Help and version are output like any other: a full disk is a failure.
#[test]
fn help_that_cannot_be_written_is_a_failure() {
    let fixture = blocked_transition();
    for args in [&["--help"][..], &["--version"], &["status", "--help"]] {
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let output = klpscope(fixture.root())
            .args(args)
            .stdout(full)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(text(&output.stderr).contains("No space left"), "{args:?}");
        let written = run(fixture.root(), args);
        assert_eq!(written.status.code(), Some(0), "{args:?}");
        assert!(!written.stdout.is_empty());
    }
}

/// `watch --json | head -c 10` on a quiet kernel: the reader is gone after
/// the first line, and watch must notice without waiting for an event that
/// may come hours later.
#[test]
fn watch_notices_a_closed_pipe_without_an_event() {
    let fixture = Fixture::livepatch_kernel();
    fixture.patch("klp_demo", "1", "0", None);
    let mut child = klpscope(fixture.root())
        .args(["watch", "--no-ebpf", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let output = wait_bounded(child, "watch --json after its reader went away");
    assert_eq!(output.status.code(), Some(EXIT_OUTPUT_CLOSED));
}
