//! `klpscope watch --json` run as a script would, against a fixture kernel
//! root that changes while it watches.
mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

use common::fixture::{Fixture, Thread};
use serde_json::Value;

const READER_STACK: &str = "[<0>] cmdline_proc_show+0x3c/0x80\n[<0>] seq_read_iter+0x11d/0x4a0\n\
                            [<0>] vfs_read+0x1c0/0x360\n";

fn watch(root: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .arg("--root")
        .arg(root)
        .args(["watch", "--json", "--no-ebpf"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run klpscope")
}

/// The exit code and the events after `ready`, which must come first.
fn finish(child: Child) -> (Option<i32>, Vec<Value>) {
    let output = child.wait_with_output().expect("wait for klpscope");
    let mut events: Vec<Value> = BufReader::new(output.stdout.as_slice())
        .lines()
        .map(|line| {
            let event = serde_json::from_str(&line.unwrap()).expect("one JSON object per line");
            common::json_schema::assert_valid("watch", &event);
            event
        })
        .collect();
    let ready = events.first().map(|e| e["event"].clone());
    assert_eq!(
        ready,
        Some("ready".into()),
        "ready comes first: {events:#?}"
    );
    assert_eq!(events[0]["ebpf"], false, "--no-ebpf");
    events.remove(0);
    assert!(
        events.iter().all(|e| e["event"] != "ready"),
        "ready is said once: {events:#?}"
    );
    (output.status.code(), events)
}

fn names(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

fn reader(fixture: &Fixture, patch_state: &str, stack: &str) {
    fixture.thread(Thread {
        pid: 42,
        tid: 42,
        comm: "reader",
        state: 'S',
        kthread: false,
        patch_state: Some(patch_state),
        stack: Some(stack),
    });
}

#[test]
fn started_before_the_patch_it_waits_follows_the_blocker_and_exits_0() {
    let fixture = Fixture::livepatch_kernel();
    fixture.user_thread(1, 1, "-1");
    reader(&fixture, "-1", READER_STACK);
    let child = watch(fixture.root(), &["--until-complete", "--timeout", "30"]);
    sleep(Duration::from_millis(1200));

    // The patch loads; the reader sits in the old cmdline_proc_show.
    fixture.rewrite("proc/1/task/1/patch_state", "1\n");
    fixture.rewrite("proc/42/task/42/patch_state", "0\n");
    fixture.object("klp_demo", "vmlinux", "1", &["cmdline_proc_show,1"]);
    fixture.rewrite("sys/kernel/livepatch/klp_demo/enabled", "1\n");
    fixture.rewrite("sys/kernel/livepatch/klp_demo/transition", "1\n");
    sleep(Duration::from_millis(1500));

    // It leaves the function and switches; the transition completes.
    fixture.rewrite("proc/42/task/42/patch_state", "1\n");
    sleep(Duration::from_millis(1200));
    fixture.rewrite("sys/kernel/livepatch/klp_demo/transition", "0\n");
    fixture.rewrite("proc/1/task/1/patch_state", "-1\n");
    fixture.rewrite("proc/42/task/42/patch_state", "-1\n");

    let (code, events) = finish(child);
    assert_eq!(code, Some(0), "{events:#?}");
    assert_eq!(
        names(&events),
        [
            "start",
            "blocker",
            "progress",
            "blocker_cleared",
            "complete"
        ],
        "{events:#?}"
    );
    assert_eq!(events[0]["patch"], "klp_demo");
    assert_eq!(events[0]["direction"], "patching");
    assert_eq!(events[0]["tasks_total"], 2);
    let blocker = &events[1];
    assert_eq!(
        (
            blocker["pid"].as_u64(),
            blocker["tid"].as_u64(),
            blocker["comm"].as_str()
        ),
        (Some(42), Some(42), Some("reader"))
    );
    assert_eq!(blocker["kthread"], false);
    assert_eq!(blocker["reason"], "function_on_stack");
    assert_eq!(blocker["function"], "cmdline_proc_show");
    assert_eq!(events[2]["tasks_pending"], 0);
    assert_eq!(events[4]["reversed"], false);
    assert!(
        events
            .iter()
            .all(|e| e["ts"].as_f64().is_some_and(|ts| ts > 1e9))
    );
}

#[test]
fn started_during_a_transition_that_reverses_it_exits_5() {
    let fixture = Fixture::livepatch_kernel();
    fixture.user_thread(1, 1, "1");
    reader(&fixture, "0", READER_STACK);
    fixture.patch("klp_demo", "1", "1", Some("0")).object(
        "klp_demo",
        "vmlinux",
        "1",
        &["cmdline_proc_show,1"],
    );
    let child = watch(fixture.root(), &["--until-complete", "--timeout", "30"]);
    sleep(Duration::from_millis(1200));

    // Someone writes 0 to `enabled`: the tasks head back to unpatched.
    fixture.rewrite("sys/kernel/livepatch/klp_demo/enabled", "0\n");
    sleep(Duration::from_millis(1200));
    fixture.rewrite("proc/1/task/1/patch_state", "-1\n");
    fixture.rewrite("proc/42/task/42/patch_state", "-1\n");
    fixture.remove("sys/kernel/livepatch/klp_demo");

    let (code, events) = finish(child);
    assert_eq!(code, Some(5), "{events:#?}");
    let names = names(&events);
    assert_eq!(names.first(), Some(&"start"), "{events:#?}");
    let reverse = names
        .iter()
        .position(|n| *n == "reverse")
        .expect("a reverse event");
    let complete = names
        .iter()
        .position(|n| *n == "complete")
        .expect("a complete event");
    assert!(reverse < complete);
    assert_eq!(events[reverse]["direction"], "unpatching");
    assert_eq!(events[complete]["reversed"], true);
    assert_eq!(names.last(), Some(&"gone"));
}

#[test]
fn a_timeout_is_an_event_and_exit_6() {
    let fixture = Fixture::livepatch_kernel();
    fixture.user_thread(1, 1, "-1");
    let (code, events) = finish(watch(
        fixture.root(),
        &["--until-complete", "--timeout", "1"],
    ));
    assert_eq!(code, Some(6));
    assert_eq!(names(&events), ["timeout"]);
}

#[test]
fn on_a_kernel_without_livepatch_watch_says_so_in_one_line() {
    let fixture = Fixture::without_livepatch();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .args(["--root", fixture.root().to_str().unwrap()])
        .args(["watch", "--json", "--timeout", "5"])
        .output()
        .expect("run klpscope");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("CONFIG_LIVEPATCH"), "{err}");
    assert!(out.stdout.is_empty());
}

/// A load the kernel refuses (a pre-patch callback failed) never becomes a
/// transition: watch says so from the kernel log and stops waiting.
#[test]
fn a_refused_load_is_one_event_and_ends_until_complete_with_7() {
    let fixture = Fixture::livepatch_kernel();
    fixture.user_thread(1, 1, "-1");
    // Older messages only mark where the log stands.
    fixture.rewrite(
        "dev/kmsg",
        "6,1,100,-;livepatch: 'old': patching complete\n",
    );
    let child = watch(fixture.root(), &["--until-complete", "--timeout", "30"]);
    sleep(Duration::from_millis(1200));
    fixture.rewrite(
        "dev/kmsg",
        "4,2,200,-;livepatch: pre-patch callback failed for object 'klp_test_target'\n",
    );
    sleep(Duration::from_millis(1200));
    fixture.rewrite(
        "dev/kmsg",
        "4,3,300,-;livepatch: failed to enable patch 'klp_refused'\n",
    );
    let (code, events) = finish(child);
    assert_eq!(code, Some(7), "{events:#?}");
    assert_eq!(names(&events), ["refused"], "{events:#?}");
    assert_eq!(events[0]["patch"], "klp_refused");
    assert!(
        events[0]["why"]
            .as_str()
            .unwrap()
            .contains("pre-patch callback failed for object klp_test_target"),
        "{events:#?}"
    );
}
