//! `klpscope metrics` against fixture kernel roots in every state a host
//! can be in: each exposition passes `promtool check metrics` and says what
//! the fixture holds.
mod common;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output},
};

use common::{
    exposition::{assert_promtool_accepts, series_count, value},
    fixture::{Fixture, Thread},
};
use livepatch_user::kernel::clock::monotonic_ns;

const READER_STACK: &str = "[<0>] cmdline_proc_show+0x3c/0x80\n[<0>] seq_read_iter+0x11d/0x4a0\n\
                            [<0>] vfs_read+0x1c0/0x360\n";
const RUNNING_STACK: &str = "[<0>] do_syscall_64+0x5d/0x170\n";

fn metrics(root: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .arg("--root")
        .arg(root)
        .arg("metrics")
        .args(extra)
        .output()
        .expect("run klpscope")
}

/// The exposition of `fixture`, checked by promtool.
fn exposition(fixture: &Fixture) -> String {
    let out = metrics(fixture.root(), &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert_promtool_accepts(&text);
    text
}

/// A kernel log holding one record, `ago_secs` before now.
/// Logs `message` `ago_secs` before now, or at boot on a machine up for less
/// than that; returns how long ago it is logged.
fn logged(fixture: &Fixture, ago_secs: u64, message: &str) -> f64 {
    let now_us = monotonic_ns() / 1000;
    let at_us = now_us.saturating_sub(ago_secs * 1_000_000);
    fixture.file("dev/kmsg", &format!("6,1,{at_us},-;{message}\n"));
    (now_us - at_us) as f64 / 1e6
}

fn thread(fixture: &Fixture, tid: u32, comm: &str, state: char, patch_state: &str, stack: &str) {
    fixture.thread(Thread {
        pid: tid,
        tid,
        comm,
        state,
        kthread: false,
        patch_state: Some(patch_state),
        stack: Some(stack),
    });
}

/// `klp_demo` replacing cmdline_proc_show, with these sysfs flags.
fn demo_patch(fixture: &Fixture, enabled: &str, transition: &str) {
    fixture
        .patch("klp_demo", enabled, transition, Some("0"))
        .object("klp_demo", "vmlinux", enabled, &["cmdline_proc_show,1"]);
}

/// No transition: no task pending and every blocker class at zero.
fn assert_idle(text: &str) {
    assert_eq!(
        value(text, "klpscope_transition_in_progress"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(value(text, "klpscope_transition_tasks_pending"), Some(0.0));
    assert_eq!(series_count(text, "klpscope_transition_info"), 0);
    assert_eq!(
        series_count(text, "klpscope_transition_blockers"),
        6,
        "{text}"
    );
    let blocked: f64 = text
        .lines()
        .filter(|l| l.starts_with("klpscope_transition_blockers{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(blocked, 0.0, "{text}");
    assert_eq!(series_count(text, "klpscope_transition_blocker_info"), 0);
}

#[test]
fn without_livepatch_it_says_so_and_why() {
    let text = exposition(&Fixture::without_livepatch());
    assert_eq!(
        value(&text, "klpscope_livepatch_supported"),
        Some(0.0),
        "{text}"
    );
    let why = text
        .lines()
        .find(|l| l.starts_with("klpscope_kernel_problem_info{"))
        .expect("a problem");
    assert!(why.contains("CONFIG_LIVEPATCH is not set"), "{why}");
    let version = format!(
        "klpscope_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&text, &version), Some(1.0));
    // Nothing about transitions that can never come; no eBPF was tried.
    assert_eq!(series_count(&text, "klpscope_transition_in_progress"), 0);
    assert_eq!(series_count(&text, "klpscope_ebpf_available"), 0);
}

#[test]
fn an_idle_kernel_with_no_patch() {
    let fixture = Fixture::livepatch_kernel();
    thread(&fixture, 1, "init", 'S', "-1", RUNNING_STACK);
    let text = exposition(&fixture);
    assert_eq!(value(&text, "klpscope_livepatch_supported"), Some(1.0));
    assert_idle(&text);
    assert_eq!(series_count(&text, "klpscope_patch_enabled"), 0);
    assert_eq!(series_count(&text, "klpscope_last_transition_info"), 0);
}

#[test]
fn an_applied_patch_and_how_its_transition_ended() {
    let fixture = Fixture::livepatch_kernel();
    thread(&fixture, 1, "init", 'S', "-1", RUNNING_STACK);
    demo_patch(&fixture, "1", "0");
    let _ = logged(&fixture, 30, "livepatch: 'klp_demo': patching complete");
    let text = exposition(&fixture);
    assert_idle(&text);
    assert_eq!(
        value(&text, "klpscope_patch_enabled{patch=\"klp_demo\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "klpscope_patch_transition{patch=\"klp_demo\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "klpscope_patch_replace{patch=\"klp_demo\"}"),
        Some(0.0)
    );
    let last = "klpscope_last_transition_info{direction=\"patching\",patch=\"klp_demo\"}";
    assert_eq!(value(&text, last), Some(1.0), "{text}");
    assert_eq!(value(&text, "klpscope_last_transition_reversed"), Some(0.0));
    // Its start is no longer in the log: how long it took is not known.
    assert_eq!(
        series_count(&text, "klpscope_last_transition_duration_seconds"),
        0
    );
}

#[test]
fn a_transition_in_progress_with_its_blockers() {
    let fixture = Fixture::livepatch_kernel();
    thread(&fixture, 1, "init", 'S', "1", RUNNING_STACK);
    thread(&fixture, 42, "reader", 'S', "0", READER_STACK);
    thread(&fixture, 43, "spinner", 'R', "0", RUNNING_STACK);
    demo_patch(&fixture, "1", "1");
    let ago = logged(
        &fixture,
        700,
        "livepatch: 'klp_demo': starting patching transition",
    );
    let text = exposition(&fixture);

    assert_eq!(
        value(&text, "klpscope_transition_in_progress"),
        Some(1.0),
        "{text}"
    );
    let info =
        "klpscope_transition_info{direction=\"patching\",patch=\"klp_demo\",verdicts=\"inferred\"}";
    assert_eq!(value(&text, info), Some(1.0), "{text}");
    assert_eq!(value(&text, "klpscope_transition_tasks"), Some(3.0));
    assert_eq!(value(&text, "klpscope_transition_tasks_pending"), Some(2.0));
    let elapsed = value(&text, "klpscope_transition_elapsed_seconds").expect("elapsed");
    // Up to a minute later than logged: the time the test takes to get there.
    assert!(
        (ago..ago + 60.0).contains(&elapsed),
        "{elapsed} after {ago}"
    );
    let rounds = value(&text, "klpscope_transition_retry_rounds").expect("rounds");
    assert!(
        (ago.floor()..ago + 60.0).contains(&rounds),
        "{rounds} after {ago}"
    );
    assert_eq!(value(&text, "klpscope_transition_signals_sent"), Some(0.0));
    assert_eq!(value(&text, "klpscope_transition_reversed"), Some(0.0));
    let asleep = "klpscope_transition_blockers{kind=\"user_task_asleep_in_patched_function\",reason=\"function_on_stack\"}";
    assert_eq!(value(&text, asleep), Some(1.0), "{text}");
    let running = "klpscope_transition_blockers{kind=\"running_in_kernel\",reason=\"running\"}";
    assert_eq!(value(&text, running), Some(1.0));
    assert_eq!(series_count(&text, "klpscope_transition_blocker_info"), 2);
    let reader = "klpscope_transition_blocker_info{comm=\"reader\",function=\"cmdline_proc_show\",\
                  kind=\"user_task_asleep_in_patched_function\",pid=\"42\",reason=\"function_on_stack\",tid=\"42\"}";
    assert_eq!(value(&text, reader), Some(1.0), "{text}");
    let spinner = "klpscope_transition_blocker_info{comm=\"spinner\",function=\"\",\
                   kind=\"running_in_kernel\",pid=\"43\",reason=\"running\",tid=\"43\"}";
    assert_eq!(value(&text, spinner), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "klpscope_patch_transition{patch=\"klp_demo\"}"),
        Some(1.0)
    );
}

#[test]
fn an_unpatching_transition_with_an_unexplained_task() {
    let fixture = Fixture::livepatch_kernel();
    thread(&fixture, 1, "init", 'S', "0", RUNNING_STACK);
    // A task whose patch_state cannot be read is pending, never dropped.
    fixture.thread(Thread {
        pid: 50,
        tid: 50,
        comm: "secret",
        state: 'S',
        kthread: false,
        patch_state: None,
        stack: None,
    });
    demo_patch(&fixture, "0", "1");
    let _ = logged(
        &fixture,
        5,
        "livepatch: 'klp_demo': starting unpatching transition",
    );
    let text = exposition(&fixture);
    let info = "klpscope_transition_info{direction=\"unpatching\",patch=\"klp_demo\",verdicts=\"inferred\"}";
    assert_eq!(value(&text, info), Some(1.0), "{text}");
    assert_eq!(value(&text, "klpscope_transition_tasks_pending"), Some(1.0));
    let unexplained = "klpscope_transition_blockers{kind=\"unexplained\",reason=\"unexplained\"}";
    assert_eq!(value(&text, unexplained), Some(1.0), "{text}");
}

/// Task names are the tasks' own: whatever they hold goes out escaped,
/// control characters as the text views write them (issue 28).
#[test]
fn a_hostile_task_name_is_escaped() {
    let fixture = Fixture::livepatch_kernel();
    let comm = "a\"b\\c} d=\u{1b}]2;PWN\u{7}";
    thread(&fixture, 42, comm, 'S', "0", READER_STACK);
    demo_patch(&fixture, "1", "1");
    let text = exposition(&fixture);
    let line = text
        .lines()
        .find(|l| l.starts_with("klpscope_transition_blocker_info{"))
        .expect("the blocker");
    assert!(
        line.contains(r#"comm="a\"b\\c} d=\\x1b]2;PWN\\x07""#),
        "{line}"
    );
    assert_no_control_bytes(&text);
}

/// Patch names are sysfs folders, which a module names: a patch and an
/// object named with escape sequences and a C1 control.
#[test]
fn no_control_byte_reaches_the_exposition() {
    let fixture = Fixture::livepatch_kernel();
    let patch = "klp\u{1b}[2J\u{9b}x";
    fixture
        .patch(patch, "1", "1", None)
        .object(patch, "vmlinux", "1", &["cmdline_proc_show,1"]);
    thread(&fixture, 42, "reader", 'S', "0", READER_STACK);
    let text = exposition(&fixture);
    assert!(text.contains(r#"patch="klp\\x1b[2J\\x9bx""#), "{text}");
    assert_no_control_bytes(&text);
}

fn assert_no_control_bytes(text: &str) {
    let control = text.chars().find(|&c| c.is_control() && c != '\n');
    assert_eq!(control, None, "{text:?}");
}

#[test]
fn output_is_written_whole_for_the_textfile_collector() {
    let fixture = Fixture::livepatch_kernel();
    demo_patch(&fixture, "1", "0");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("klpscope.prom");
    fs::write(&file, "old\n").unwrap();
    let out = metrics(fixture.root(), &["--output", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let written = fs::read_to_string(&file).unwrap();
    assert_eq!(written, exposition(&fixture));
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "readable by the collector's own user");
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
}

#[test]
fn an_output_that_cannot_be_written_is_one_line() {
    let fixture = Fixture::livepatch_kernel();
    let out = metrics(
        fixture.root(),
        &["--output", "/nonexistent/dir/klpscope.prom"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/dir/klpscope.prom"), "{err}");
}

/// Issue 28: run as root from cron, `--output` must not replace a device
/// (`--output /dev/null` would replace the real one), a FIFO or a symlink:
/// only a regular file or nothing.
#[test]
fn an_output_that_is_not_a_regular_file_is_left_alone() {
    use std::os::unix::fs::FileTypeExt;
    let fixture = Fixture::livepatch_kernel();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let c_path = |name: &str| std::ffi::CString::new(path(name).to_str().unwrap()).unwrap();
    // SAFETY: mknod and mkfifo on paths we own; 1:3 is /dev/null's number.
    let made = unsafe {
        libc::mknod(
            c_path("null").as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(1, 3),
        )
    };
    assert_eq!(made, 0, "mknod needs root, which these tests run as");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::mkfifo(c_path("fifo").as_ptr(), 0o600) }, 0);
    fs::write(path("target"), "kept\n").unwrap();
    std::os::unix::fs::symlink(path("target"), path("link")).unwrap();
    for name in ["null", "fifo", "link"] {
        let out = metrics(fixture.root(), &["--output", path(name).to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("not a regular file"), "{name}: {err}");
    }
    let kind = |name: &str| fs::symlink_metadata(path(name)).unwrap().file_type();
    assert!(kind("null").is_char_device());
    assert!(kind("fifo").is_fifo());
    assert!(kind("link").is_symlink());
    assert_eq!(fs::read_to_string(path("target")).unwrap(), "kept\n");
}
