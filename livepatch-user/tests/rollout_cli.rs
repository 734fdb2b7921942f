//! `klpscope apply` and `klpscope revert` end to end against fixture roots
//! that change as a kernel would: the gates before any change, the steps as
//! JSON lines, the back-out at the deadline, and one clear line for each
//! bad input. A fixture root never gets a module loaded into the running
//! kernel: that refusal is part of what is tested.
mod common;

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use common::fixture::{Fixture, Thread};
use serde_json::Value;

const KALLSYMS: &str = "\
ffffffff817876b0 t cmdline_proc_show
ffffffff817876f0 t cmdline_proc_show
ffffffff81787700 t meminfo_proc_show
ffffffffc0200000 t klp_test_park_wait\t[klp_test_target]
";

const FILTER_FUNCTIONS: &str = "\
cmdline_proc_show
cmdline_proc_show
meminfo_proc_show
klp_test_park_wait [klp_test_target]
";

/// The bound on any one run: a hang is a failure, not a stuck test.
const BOUND: Duration = Duration::from_secs(60);

/// A livepatch kernel with klp_test_target loaded, where the test module
/// (fake_livepatch: cmdline_proc_show,2, meminfo_proc_show and
/// klp_test_park_wait) resolves.
fn kernel() -> Fixture {
    let fixture = Fixture::livepatch_kernel();
    fixture
        .file("proc/kallsyms", KALLSYMS)
        .file(
            "proc/modules",
            "klp_test_target 16384 0 - Live 0xffffffffc0200000 (OE)\n",
        )
        .file(
            "sys/kernel/tracing/available_filter_functions",
            FILTER_FUNCTIONS,
        )
        .file("sys/kernel/tracing/enabled_functions", "")
        .user_thread(100, 100, "-1");
    fixture
}

fn fake_ko(dir: &Path) -> PathBuf {
    fake_ko_with(dir, &[])
}

/// The test module built with these `-D` definitions.
fn fake_ko_with(dir: &Path, defines: &[&str]) -> PathBuf {
    let out = dir.join("fake_livepatch.ko");
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check/fake_livepatch.c");
    let status = Command::new("gcc")
        .args(["-c", "-O2", "-fno-pic", "-mcmodel=kernel"])
        .args(defines)
        .arg("-o")
        .arg(&out)
        .arg(source)
        .status()
        .expect("gcc runs");
    assert!(status.success());
    out
}

fn command(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_klpscope"));
    command
        .arg("--root")
        .arg(root)
        .args(args)
        .args(["--no-ebpf", "--check-duration", "0"])
        .stdin(Stdio::null());
    command
}

fn run(root: &Path, args: &[&str]) -> Output {
    let child = command(root, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("klpscope runs");
    let (done, output) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    output
        .recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("klpscope {args:?} did not end"))
        .unwrap()
}

fn steps(stdout: &[u8]) -> Vec<Value> {
    BufReader::new(stdout)
        .lines()
        .map(|line| {
            let step = serde_json::from_str(&line.unwrap()).expect("one JSON object per line");
            common::json_schema::assert_valid("rollout", &step);
            step
        })
        .collect()
}

fn names(steps: &[Value]) -> Vec<&str> {
    steps.iter().map(|s| s["event"].as_str().unwrap()).collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The check's warnings (here: an atomic replace of a loaded patch) stop
/// the rollout without --yes when there is nobody to ask.
#[test]
fn warnings_stop_apply_unless_yes() {
    let fixture = kernel();
    fixture.patch("klp_old", "1", "0", None).object(
        "klp_old",
        "vmlinux",
        "1",
        &["meminfo_proc_show,1"],
    );
    let dir = tempfile::tempdir().unwrap();
    let ko = fake_ko(dir.path());
    let output = run(fixture.root(), &["apply", ko.to_str().unwrap(), "--json"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let steps = steps(&output.stdout);
    assert_eq!(names(&steps), ["check", "finished"]);
    assert_eq!(steps[0]["verdict"], "warnings");
    assert_eq!(steps[1]["end"], "not_confirmed");
    assert_eq!(steps[1]["exit_code"], 3);
    assert!(stderr(&output).contains("--yes"), "{}", stderr(&output));
}

#[test]
fn a_dry_run_checks_and_gets_ready_but_changes_nothing() {
    let fixture = kernel();
    let dir = tempfile::tempdir().unwrap();
    let ko = fake_ko(dir.path());
    let output = run(
        fixture.root(),
        &[
            "apply",
            ko.to_str().unwrap(),
            "--json",
            "--yes",
            "--dry-run",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let steps = steps(&output.stdout);
    assert_eq!(names(&steps), ["check", "ready", "finished"]);
    assert_eq!(steps[2]["end"], "dry_run");
    assert!(
        fs::read_dir(fixture.path("sys/kernel/livepatch"))
            .unwrap()
            .next()
            .is_none(),
        "nothing loaded"
    );
}

/// With another tree as root, no module ever goes into the running kernel.
#[test]
fn a_fixture_root_never_loads_a_module_into_this_kernel() {
    let fixture = kernel();
    let dir = tempfile::tempdir().unwrap();
    let ko = fake_ko(dir.path());
    let output = run(
        fixture.root(),
        &["apply", ko.to_str().unwrap(), "--json", "--yes"],
    );
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    let steps = steps(&output.stdout);
    assert_eq!(names(&steps), ["check", "ready", "refused", "finished"]);
    let why = steps[2]["why"].as_str().unwrap();
    assert!(why.contains("--root points at"), "{why}");
    assert_eq!(steps[3]["end"], "refused");
}

#[test]
fn another_transition_in_progress_is_not_ready_and_loads_nothing() {
    let fixture = kernel();
    fixture.patch("klp_other", "1", "1", None).object(
        "klp_other",
        "vmlinux",
        "1",
        &["meminfo_proc_show,1"],
    );
    let dir = tempfile::tempdir().unwrap();
    let ko = fake_ko(dir.path());
    let output = run(
        fixture.root(),
        &["apply", ko.to_str().unwrap(), "--json", "--yes"],
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let steps = steps(&output.stdout);
    assert_eq!(names(&steps), ["check", "finished"]);
    assert_eq!(steps[0]["verdict"], "not_ready");
    assert_eq!(steps[1]["end"], "not_ready");
}

#[test]
fn bad_input_is_one_line() {
    let fixture = kernel();
    for (args, code, says) in [
        (&["apply", "/dev/zero"][..], 1, "not a regular file"),
        (&["apply", "/nonexistent/x.ko"], 1, "cannot read"),
        (&["revert", "../x"], 2, "not a module or patch name"),
        (&["revert", "klp_missing"], 1, "no livepatch named"),
        (&["apply", "x.ko", "--deadline", "nan"], 2, "seconds"),
    ] {
        let output = run(fixture.root(), args);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        if code == 1 {
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        }
    }
}

/// An applied patch with a task asleep in its replacement function.
fn applied(fixture: &Fixture) {
    fixture.patch("klp_demo", "1", "0", None).object(
        "klp_demo",
        "vmlinux",
        "1",
        &["cmdline_proc_show,1"],
    );
}

/// Runs `klpscope revert` in the background; its steps arrive one by one.
fn revert(fixture: &Fixture, extra: &[&str]) -> (Child, mpsc::Receiver<Value>) {
    let mut args = vec!["revert", "klp_demo", "--json", "--yes"];
    args.extend_from_slice(extra);
    let mut child = command(fixture.root(), &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("klpscope runs");
    let stdout = child.stdout.take().unwrap();
    let (send, steps) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let step = serde_json::from_str(&line).expect("JSON");
            common::json_schema::assert_valid("rollout", &step);
            let _ = send.send(step);
        }
    });
    (child, steps)
}

/// Steps up to (and with) the first `event`.
fn until(steps: &mpsc::Receiver<Value>, event: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let step = steps
            .recv_timeout(BOUND)
            .unwrap_or_else(|_| panic!("no {event} step after {seen:#?}"));
        let done = step["event"] == event;
        seen.push(step);
        if done {
            return seen;
        }
    }
}

fn exit_code(mut child: Child) -> Option<i32> {
    for _ in 0..(BOUND.as_millis() / 50) {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("klpscope revert did not end");
}

/// Disabled, the fixture "kernel" unpatches and frees the patch at once:
/// revert is done (the module's unload refused: not this kernel).
#[test]
fn a_revert_that_completes_unpatches_then_unloads() {
    let fixture = kernel();
    applied(&fixture);
    let (child, steps) = revert(&fixture, &["--deadline", "30"]);
    let seen = until(&steps, "disabling");
    assert_eq!(names(&seen), ["check", "ready", "disabling"]);
    let enabled = fs::read_to_string(fixture.path("sys/kernel/livepatch/klp_demo/enabled"));
    assert_eq!(enabled.unwrap().trim(), "0", "revert wrote 0 to enabled");
    fixture.remove("sys/kernel/livepatch/klp_demo");
    let seen = until(&steps, "finished");
    let names = names(&seen);
    assert!(
        names.starts_with(&["start", "complete"]),
        "an unpatching transition: {seen:#?}"
    );
    assert_eq!(seen[1]["direction"], "unpatching");
    let failed = seen
        .iter()
        .find(|s| s["event"] == "failed")
        .expect("unload refused");
    assert!(
        failed["what"]
            .as_str()
            .unwrap()
            .contains("--root points at")
    );
    assert_eq!(seen.last().unwrap()["end"], "done");
    assert_eq!(exit_code(child), Some(0));
}

/// Stalled by a task asleep in the replacement: past the deadline revert
/// enables the patch again (1 to `enabled` while in transition) and, once
/// the kernel has re-patched, ends backed out with the patch applied.
#[test]
fn a_stalled_revert_enables_the_patch_again() {
    let fixture = kernel();
    applied(&fixture);
    fixture.thread(Thread {
        pid: 42,
        tid: 42,
        comm: "reader",
        state: 'S',
        kthread: false,
        patch_state: Some("1"),
        stack: Some("[<0>] livepatch_cmdline_proc_show+0x3c/0x80 [klp_demo]\n"),
    });
    let (child, steps) = revert(&fixture, &["--deadline", "2"]);
    until(&steps, "disabling");
    // The kernel starts unpatching: every task but the reader switches back.
    fixture.rewrite("sys/kernel/livepatch/klp_demo/transition", "1\n");
    fixture.rewrite("proc/100/task/100/patch_state", "0\n");
    let seen = until(&steps, "reversing");
    let deadline = seen
        .iter()
        .find(|s| s["event"] == "deadline")
        .expect("the deadline step");
    assert_eq!(deadline["tasks_pending"], 1, "{deadline:#}");
    assert_eq!(deadline["blockers"][0]["tid"], 42, "{deadline:#}");
    assert_eq!(
        deadline["blockers"][0]["function"],
        "livepatch_cmdline_proc_show"
    );
    assert_eq!(seen.last().unwrap()["direction"], "patching");
    // The step is said before the write is made.
    let enabled = || fs::read_to_string(fixture.path("sys/kernel/livepatch/klp_demo/enabled"));
    for _ in 0..100 {
        if enabled().unwrap().trim() == "1" {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(enabled().unwrap().trim(), "1", "re-enabled");
    // Re-patched: the transition ends enabled.
    fixture.rewrite("proc/100/task/100/patch_state", "-1\n");
    fixture.rewrite("proc/42/task/42/patch_state", "-1\n");
    fixture.rewrite("sys/kernel/livepatch/klp_demo/transition", "0\n");
    let seen = until(&steps, "finished");
    assert!(names(&seen).contains(&"reversed"), "{seen:#?}");
    assert!(!names(&seen).contains(&"unloaded"), "{seen:#?}");
    assert_eq!(seen.last().unwrap()["end"], "backed_out");
    assert_eq!(exit_code(child), Some(5));
}

/// Issue 28: a patch folder that is a symlink is no patch to status, and
/// revert agrees: nothing to revert, nothing written.
#[test]
fn a_symlinked_patch_folder_is_not_revertible() {
    let fixture = kernel();
    applied(&fixture);
    let elsewhere = fixture.path("elsewhere");
    fs::rename(fixture.path("sys/kernel/livepatch/klp_demo"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, fixture.path("sys/kernel/livepatch/klp_demo")).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .arg("--root")
        .arg(fixture.root())
        .args(["status", "--json"])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["patches"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );
    let output = run(
        fixture.root(),
        &["revert", "klp_demo", "--json", "--dry-run"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no livepatch named 'klp_demo' is loaded"),
        "{}",
        stderr(&output)
    );
    assert!(output.stdout.is_empty());
    assert_eq!(
        fs::read_to_string(elsewhere.join("enabled")).unwrap(),
        "1\n"
    );
}

/// Issue 28: the name a module's .modinfo gives becomes sysfs paths (the
/// back-out, the unload): it passes the command line's own name check
/// before anything, a dry run included.
#[test]
fn a_module_whose_name_leaves_sysfs_is_refused_before_anything() {
    let fixture = kernel();
    let dir = tempfile::tempdir().unwrap();
    for name in ["../../../../../x/victim", "klp\x1b[2J"] {
        let ko = fake_ko_with(dir.path(), &[&format!("-DMODULE_NAME=\"{name}\"")]);
        let output = run(
            fixture.root(),
            &[
                "apply",
                ko.to_str().unwrap(),
                "--json",
                "--yes",
                "--dry-run",
            ],
        );
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{name:?}: {err}");
        assert!(err.contains("not a module or patch name"), "{err}");
        assert!(!err.contains('\x1b'), "escaped: {err}");
        assert!(output.stdout.is_empty(), "no step taken");
    }
}
