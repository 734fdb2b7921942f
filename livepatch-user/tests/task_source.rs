//! How the task source is chosen, and that its procfs side reads what the
//! procfs readers read: on fixture trees, where the iterator never runs
//! (it reads this kernel, not a tree), and through the CLI for the
//! `KLPSCOPE_TASK_SOURCE` switch.
mod common;

use std::{path::Path, process::Command};

use common::fixture::{Fixture, Thread};
use livepatch_user::{
    kernel::{Stacks, ThreadId, read_tasks, scan_patch_states},
    model::Task,
    probes::{Facility, TASK_SOURCE_ENV, TaskSource},
};

/// klp_demo patching cmdline_proc_show: task 1 switched, tid 42 of a
/// two-thread process pending in it, tid 43 switched.
fn blocked() -> Fixture {
    let fixture = Fixture::livepatch_kernel();
    fixture
        .patch("klp_demo", "1", "1", None)
        .object("klp_demo", "vmlinux", "1", &["cmdline_proc_show,1"])
        .user_thread(1, 1, "1");
    for (tid, patch_state) in [(42, "0"), (43, "1")] {
        fixture.thread(Thread {
            pid: 42,
            tid,
            comm: "reader",
            state: 'S',
            kthread: false,
            patch_state: Some(patch_state),
            stack: Some("[<0>] cmdline_proc_show+0x3c/0x80\n[<0>] vfs_read+0x1c0/0x360\n"),
        });
    }
    fixture
}

fn summary(tasks: &[Task]) -> Vec<String> {
    let mut lines: Vec<String> = tasks.iter().map(|task| format!("{task:?}")).collect();
    lines.sort();
    lines
}

#[test]
fn another_root_is_read_from_procfs_and_the_reason_said() {
    let fixture = blocked();
    let root = fixture.root();
    let mut source = TaskSource::open(root, false).expect("no switch set");
    let capability = source.capability();
    assert_eq!(capability.facility, Facility::TaskIterator);
    assert!(!capability.available);
    assert!(
        capability.reason.as_deref().unwrap().contains("--root"),
        "{capability:?}"
    );
    assert_eq!(
        summary(&source.tasks(Stacks::Read).unwrap()),
        summary(&read_tasks(root, Stacks::Read).unwrap())
    );
    // Asked again and again, as watch polls: the same states each time.
    for _ in 0..3 {
        let mut states = source.patch_states().unwrap();
        states.sort_by_key(|s| s.tid);
        let mut expected = scan_patch_states(root).unwrap();
        expected.sort_by_key(|s| s.tid);
        assert_eq!(states, expected);
    }
}

#[test]
fn threads_read_again_leave_out_those_that_exited() {
    let fixture = blocked();
    let mut source = TaskSource::open(fixture.root(), false).unwrap();
    let wanted = [42, 43, 99].map(|tid| ThreadId { pid: 42, tid });
    let mut tids: Vec<u32> = source
        .tasks_of(&wanted, Stacks::Read)
        .unwrap()
        .iter()
        .map(|task| task.tid)
        .collect();
    tids.sort();
    assert_eq!(tids, [42, 43]);
    let one = source
        .task(wanted[0], Stacks::Read)
        .expect("tid 42 is there");
    assert_eq!(one.stack.value().map(Vec::len), Some(2));
    assert!(source.task(wanted[2], Stacks::Read).is_none());
}

#[test]
fn no_ebpf_means_procfs() {
    let source = TaskSource::open(Path::new("/"), true).unwrap();
    let capability = source.capability();
    assert!(!capability.available);
    assert_eq!(capability.reason.as_deref(), Some("not tried (--no-ebpf)"));
}

fn diagnose_with(fixture: &Fixture, switch: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .arg("--root")
        .arg(fixture.root())
        .args(["diagnose", "--json", "--no-ebpf"])
        .env(TASK_SOURCE_ENV, switch)
        .output()
        .expect("klpscope runs")
}

#[test]
fn the_switch_forces_procfs_and_refuses_what_it_cannot_have() {
    let fixture = blocked();
    // procfs, or auto on another tree: the same report.
    let procfs = diagnose_with(&fixture, "procfs");
    let auto = diagnose_with(&fixture, "auto");
    assert_eq!(procfs.status.code(), Some(0), "{procfs:?}");
    assert_eq!(procfs.stdout, auto.stdout);
    let doc: serde_json::Value = serde_json::from_slice(&procfs.stdout).unwrap();
    assert_eq!(doc["blockers"][0]["tid"], 42, "{doc}");

    // --no-ebpf wins over a switch that asks for the iterator.
    let no_ebpf = diagnose_with(&fixture, "iterator");
    assert_eq!(no_ebpf.status.code(), Some(0), "{no_ebpf:?}");

    let bogus = diagnose_with(&fixture, "bogus");
    assert_eq!(bogus.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bogus.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("KLPSCOPE_TASK_SOURCE") && err.contains("bogus"),
        "{err}"
    );
}

#[test]
fn asking_for_the_iterator_where_it_cannot_be_had_is_an_error_that_says_why() {
    let fixture = blocked();
    let output = Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .arg("--root")
        .arg(fixture.root())
        .args(["diagnose", "--json"])
        .env(TASK_SOURCE_ENV, "iterator")
        .output()
        .expect("klpscope runs");
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("KLPSCOPE_TASK_SOURCE=iterator") && err.contains("--root"),
        "{err}"
    );
}
