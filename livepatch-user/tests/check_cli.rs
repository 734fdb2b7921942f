//! `klpscope check` end to end against fixture roots: verdicts, exit codes,
//! predicted blockers, and one clear error line for each bad input.
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::fixture::{Fixture, Thread};
use serde_json::Value;

const KALLSYMS: &str = "\
ffffffff817876b0 t cmdline_proc_show
ffffffff81787700 t meminfo_proc_show
ffffffff81900000 t vfs_read
ffffffff81900100 t dup_name
ffffffff81900200 t dup_name
ffffffffc0200000 t klp_test_park_wait\t[klp_test_target]
ffffffffc0200100 t klp_test_busy_loop\t[klp_test_target]
ffffffffc0200200 t klp_test_thread\t[klp_test_target]
";

const FILTER_FUNCTIONS: &str = "\
cmdline_proc_show
meminfo_proc_show
vfs_read
dup_name
dup_name
klp_test_park_wait [klp_test_target]
klp_test_busy_loop [klp_test_target]
";

/// A livepatch kernel with klp_test_target loaded, nothing traced and one
/// idle user thread.
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

fn klpscope(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .arg("--root")
        .arg(root)
        .arg("check")
        .args(["--no-ebpf", "--duration", "0"])
        .args(args)
        .output()
        .expect("klpscope runs")
}

fn json(output: &Output) -> Value {
    let doc = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    common::json_schema::assert_valid("check", &doc);
    doc
}

/// An error: exit 1 and exactly one line on stderr, nothing on stdout.
fn error_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(output.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

fn check_status<'a>(doc: &'a Value, id: &str) -> &'a str {
    doc["kernel_checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}"))["status"]
        .as_str()
        .unwrap()
}

fn fake_ko(dir: &Path) -> PathBuf {
    let out = dir.join("fake_livepatch.ko");
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check/fake_livepatch.c");
    let status = Command::new("gcc")
        .args(["-c", "-O2", "-fno-pic", "-mcmodel=kernel", "-o"])
        .arg(&out)
        .arg(source)
        .status()
        .expect("gcc runs");
    assert!(status.success());
    out
}

#[test]
fn a_clean_kernel_is_ready() {
    let fixture = kernel();
    let output = klpscope(
        fixture.root(),
        &["--function", "cmdline_proc_show", "--json"],
    );
    let doc = json(&output);
    assert_eq!(doc["verdict"], "ready", "{doc:#}");
    assert_eq!(output.status.code(), Some(0));
    let function = &doc["functions"][0];
    assert_eq!(function["name"], "cmdline_proc_show");
    assert_eq!(function["object"], "vmlinux");
    assert_eq!(function["sympos"], 0);
    assert_eq!(function["status"], "pass");
    assert_eq!(function["present"], true);
    assert_eq!(function["traceable"], true);
    assert_eq!(function["calls_per_sec"], Value::Null);
    assert_eq!(function["problems"], serde_json::json!([]));
    assert_eq!(doc["predicted_blockers"], serde_json::json!([]));
}

#[test]
fn the_text_report_ends_in_one_verdict_line() {
    let fixture = kernel();
    let output = klpscope(fixture.root(), &["--function", "cmdline_proc_show"]);
    let text = String::from_utf8_lossy(&output.stdout);
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("verdict: ready"), "{text}");
    assert_eq!(text.matches("verdict:").count(), 1);
}

#[test]
fn a_parked_task_in_a_module_target_is_a_persistent_blocker() {
    let fixture = kernel();
    fixture
        .file(
            "proc/kallsyms",
            &format!("{KALLSYMS}ffffffff81787800 t cmdline_proc_show\n"),
        )
        .thread(Thread {
            pid: 200,
            tid: 201,
            comm: "parker",
            state: 'D',
            kthread: false,
            patch_state: Some("-1"),
            stack: Some(
                "[<0>] __schedule+0x2c0/0x7a0\n\
                 [<0>] schedule+0x27/0xa0\n\
                 [<0>] klp_test_park_wait+0x8a/0x100 [klp_test_target]\n\
                 [<0>] klp_test_park_read+0x20/0x40 [klp_test_target]\n\
                 [<0>] vfs_read+0xa5/0x300\n",
            ),
        })
        .thread(Thread {
            pid: 300,
            tid: 300,
            comm: "klp_test_kthread",
            state: 'S',
            kthread: true,
            patch_state: Some("-1"),
            // Same name in vmlinux would not count: only the module's does.
            stack: Some("[<0>] klp_test_park_wait+0x8a/0x100\n[<0>] kthread+0xd2/0x100\n"),
        });
    let dir = tempfile::tempdir().unwrap();
    let ko = fake_ko(dir.path());
    let output = klpscope(
        fixture.root(),
        &["--module", ko.to_str().unwrap(), "--json"],
    );
    let doc = json(&output);
    assert_eq!(doc["target"], "module");
    assert_eq!(doc["module"]["name"], "fake_livepatch");
    assert_eq!(doc["verdict"], "warnings", "{doc:#}");
    assert_eq!(output.status.code(), Some(3));
    let blockers = doc["predicted_blockers"].as_array().unwrap();
    assert_eq!(blockers.len(), 1, "{doc:#}");
    let blocker = &blockers[0];
    assert_eq!(blocker["pid"], 200);
    assert_eq!(blocker["tid"], 201);
    assert_eq!(blocker["comm"], "parker");
    assert_eq!(blocker["kthread"], false);
    assert_eq!(blocker["function"], "klp_test_park_wait");
    assert_eq!(blocker["persistent"], true);
    assert!(
        blocker["why"]
            .as_str()
            .unwrap()
            .contains("fake signal does not wake it"),
        "{blocker:#}"
    );
    let names: Vec<(&str, &str, u64)> = doc["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap(),
                f["object"].as_str().unwrap(),
                f["sympos"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("cmdline_proc_show", "vmlinux", 2),
            ("meminfo_proc_show", "vmlinux", 0),
            ("klp_test_park_wait", "klp_test_target", 0),
        ]
    );
    // Module functions are counted like vmlinux ones (by kprobe): here
    // only --no-ebpf keeps it from counting.
    let park = &doc["functions"][2];
    assert!(
        park["calls_unmeasured"]
            .as_str()
            .unwrap()
            .contains("--no-ebpf"),
        "{park:#}"
    );
}

#[test]
fn a_kthread_whose_main_loop_is_a_target_will_not_clear() {
    let fixture = kernel();
    fixture.thread(Thread {
        pid: 300,
        tid: 300,
        comm: "klp_test_busy",
        state: 'S',
        kthread: true,
        patch_state: Some("-1"),
        stack: Some(
            "[<0>] schedule_timeout+0x9e/0x160\n\
             [<0>] klp_test_busy_loop+0x3a/0x60 [klp_test_target]\n\
             [<0>] klp_test_thread+0x10/0x20 [klp_test_target]\n\
             [<0>] kthread+0xd2/0x100\n\
             [<0>] ret_from_fork+0x34/0x50\n",
        ),
    });
    let output = klpscope(
        fixture.root(),
        &[
            "--function",
            "klp_test_busy_loop",
            "--object",
            "klp_test_target",
            "--json",
        ],
    );
    let doc = json(&output);
    let blocker = &doc["predicted_blockers"][0];
    assert_eq!(blocker["kthread"], true);
    assert_eq!(blocker["persistent"], true);
    assert!(
        blocker["why"].as_str().unwrap().contains("main loop"),
        "{blocker:#}"
    );
    assert_eq!(doc["verdict"], "warnings");
}

#[test]
fn an_ambiguous_name_lists_its_candidates() {
    let fixture = kernel();
    let output = klpscope(fixture.root(), &["--function", "dup_name", "--json"]);
    let doc = json(&output);
    assert_eq!(doc["verdict"], "not_ready");
    assert_eq!(output.status.code(), Some(4));
    let function = &doc["functions"][0];
    assert_eq!(function["status"], "fail");
    assert_eq!(
        function["candidates"],
        serde_json::json!([
            "dup_name,1 at 0xffffffff81900100",
            "dup_name,2 at 0xffffffff81900200"
        ])
    );
    // With a sympos it resolves.
    let output = klpscope(fixture.root(), &["--function", "dup_name,2", "--json"]);
    assert_eq!(json(&output)["functions"][0]["status"], "pass");
}

#[test]
fn an_ipmodify_ftrace_user_makes_the_patch_fail() {
    let fixture = kernel();
    fixture.file(
        "sys/kernel/tracing/enabled_functions",
        "cmdline_proc_show (1) R I       \ttramp: 0xffffffffc0201000 (kprobe_ftrace_handler+0x0/0x1a0)\n",
    );
    let doc = json(&klpscope(
        fixture.root(),
        &["--function", "cmdline_proc_show", "--json"],
    ));
    let function = &doc["functions"][0];
    assert_eq!(function["status"], "fail");
    assert_eq!(function["ftrace_users"], 1);
    assert!(
        function["problems"][0]
            .as_str()
            .unwrap()
            .contains("IPMODIFY")
    );
}

#[test]
fn a_function_already_patched_is_a_warning_and_its_ftrace_use_is_shared() {
    let fixture = kernel();
    fixture
        .patch("old_patch", "1", "0", Some("0"))
        .object("old_patch", "vmlinux", "1", &["cmdline_proc_show,1"])
        .file(
            "sys/kernel/tracing/enabled_functions",
            "cmdline_proc_show (1) R I       \ttramp: 0xffffffffc0201000 (klp_ftrace_handler+0x0/0x1a0)\n",
        );
    let doc = json(&klpscope(
        fixture.root(),
        &["--function", "cmdline_proc_show", "--json"],
    ));
    let function = &doc["functions"][0];
    assert_eq!(function["status"], "warn", "{function:#}");
    assert_eq!(function["patched_by"], serde_json::json!(["old_patch"]));
    assert_eq!(doc["verdict"], "warnings");
}

#[test]
fn a_transition_in_progress_means_not_ready() {
    let fixture = kernel();
    fixture.patch("busy_patch", "1", "1", None).object(
        "busy_patch",
        "vmlinux",
        "1",
        &["vfs_read,1"],
    );
    let doc = json(&klpscope(
        fixture.root(),
        &["--function", "cmdline_proc_show", "--json"],
    ));
    assert_eq!(check_status(&doc, "transition"), "fail");
    assert_eq!(doc["verdict"], "not_ready");
}

#[test]
fn disabling_a_loaded_patch_looks_for_its_new_functions() {
    let fixture = kernel();
    fixture
        .patch("klp_test_patch_target", "1", "0", Some("0"))
        .object(
            "klp_test_patch_target",
            "klp_test_target",
            "1",
            &["klp_test_park_wait,1"],
        )
        .thread(Thread {
            pid: 400,
            tid: 400,
            comm: "parker",
            state: 'D',
            kthread: false,
            patch_state: Some("-1"),
            stack: Some(
                "[<0>] livepatch_klp_test_park_wait+0x8a/0x100 [klp_test_patch_target]\n\
                 [<0>] vfs_read+0xa5/0x300\n",
            ),
        });
    let doc = json(&klpscope(
        fixture.root(),
        &["--patch", "klp_test_patch_target", "--json"],
    ));
    assert_eq!(doc["target"], "patch");
    let blocker = &doc["predicted_blockers"][0];
    assert_eq!(blocker["pid"], 400);
    assert_eq!(blocker["function"], "livepatch_klp_test_park_wait");
}

#[test]
fn tracefs_not_mounted_is_a_warning_with_the_fix() {
    let fixture = kernel();
    fixture.file("proc/mounts", "proc /proc proc rw 0 0\n");
    let output = klpscope(
        fixture.root(),
        &["--function", "cmdline_proc_show", "--json"],
    );
    let doc = json(&output);
    assert_eq!(check_status(&doc, "tracefs"), "warn");
    let tracefs = doc["kernel_checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "tracefs")
        .unwrap();
    assert!(
        tracefs["detail"]
            .as_str()
            .unwrap()
            .contains("mount -t tracefs nodev /sys/kernel/tracing")
    );
    assert_eq!(doc["functions"][0]["traceable"], Value::Null);
    assert_eq!(doc["functions"][0]["present"], true);
    assert_eq!(doc["verdict"], "warnings");
}

#[test]
fn unreadable_stacks_say_predictions_are_incomplete() {
    let fixture = kernel();
    // A folder where the stack file should be: reading it fails, as it
    // does for anyone but root.
    fixture.dir("proc/100/task/100/stack");
    let doc = json(&klpscope(
        fixture.root(),
        &["--function", "cmdline_proc_show", "--json"],
    ));
    assert_eq!(check_status(&doc, "root"), "warn");
    let root = doc["kernel_checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "root")
        .unwrap();
    assert!(root["detail"].as_str().unwrap().contains("incomplete"));
}

#[test]
fn an_unknown_function_names_the_closest_symbols() {
    let fixture = kernel();
    let line = error_line(&klpscope(
        fixture.root(),
        &["--function", "cmdline_proc_shw"],
    ));
    assert!(line.contains("unknown function cmdline_proc_shw"), "{line}");
    assert!(line.contains("closest: cmdline_proc_show"), "{line}");
}

#[test]
fn a_function_in_another_object_says_where() {
    let fixture = kernel();
    let line = error_line(&klpscope(
        fixture.root(),
        &["--function", "klp_test_park_wait"],
    ));
    assert!(
        line.contains("is not in vmlinux but in klp_test_target"),
        "{line}"
    );
}

#[test]
fn a_sympos_out_of_range_is_refused() {
    let fixture = kernel();
    let line = error_line(&klpscope(
        fixture.root(),
        &["--function", "cmdline_proc_show,3"],
    ));
    assert!(line.contains("sympos out of range"), "{line}");
    assert!(line.contains("1 symbol(s)"), "{line}");
    // Not a number at all: the command line is wrong (2).
    let output = klpscope(fixture.root(), &["--function", "cmdline_proc_show,x"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sympos 'x' is not a number"), "{stderr}");
}

#[test]
fn an_object_not_loaded_is_refused() {
    let fixture = kernel();
    let line = error_line(&klpscope(
        fixture.root(),
        &["--function", "foo", "--object", "nosuchmod"],
    ));
    assert!(line.contains("module nosuchmod is not loaded"), "{line}");
    fixture.remove("proc/modules");
    let line = error_line(&klpscope(
        fixture.root(),
        &["--function", "foo", "--object", "nosuchmod"],
    ));
    assert!(line.contains("no module support"), "{line}");
}

#[test]
fn a_module_target_not_loaded_is_a_warning_not_an_error() {
    let fixture = kernel();
    fixture.file("proc/modules", "");
    let dir = tempfile::tempdir().unwrap();
    let ko = fake_ko(dir.path());
    let doc = json(&klpscope(
        fixture.root(),
        &["--module", ko.to_str().unwrap(), "--json"],
    ));
    let park = &doc["functions"][2];
    assert_eq!(park["status"], "warn");
    assert!(park["problems"][0].as_str().unwrap().contains("not loaded"));
}

#[test]
fn bad_module_files_are_refused() {
    let fixture = kernel();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.ko");
    std::fs::write(&text, "hello\n").unwrap();
    let line = error_line(&klpscope(
        fixture.root(),
        &["--module", text.to_str().unwrap()],
    ));
    assert!(line.contains("is not an ELF file"), "{line}");

    let ko = fake_ko(dir.path());
    let bytes = std::fs::read(&ko).unwrap();
    let cut = dir.path().join("cut.ko");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let line = error_line(&klpscope(
        fixture.root(),
        &["--module", cut.to_str().unwrap()],
    ));
    assert!(line.contains("truncated or corrupt"), "{line}");

    let plain = dir.path().join("plain.ko");
    let status = Command::new("objcopy")
        .args(["--remove-section", ".modinfo"])
        .arg(&ko)
        .arg(&plain)
        .status()
        .unwrap();
    assert!(status.success());
    let line = error_line(&klpscope(
        fixture.root(),
        &["--module", plain.to_str().unwrap()],
    ));
    assert!(line.contains("is not a livepatch module"), "{line}");

    let line = error_line(&klpscope(fixture.root(), &["--module", "/nonexistent.ko"]));
    assert!(line.contains("cannot read /nonexistent.ko"), "{line}");
}

#[test]
fn a_patch_not_loaded_and_no_target_are_refused() {
    let fixture = kernel();
    let line = error_line(&klpscope(fixture.root(), &["--patch", "nope"]));
    assert!(
        line.contains("no livepatch named 'nope' is loaded"),
        "{line}"
    );
    let line = error_line(&klpscope(fixture.root(), &[]));
    assert!(line.contains("nothing to check"), "{line}");
}

#[test]
fn a_bad_duration_is_refused() {
    let fixture = kernel();
    let output = Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .arg("--root")
        .arg(fixture.root())
        .args(["check", "--function", "cmdline_proc_show", "--duration=-1"])
        .output()
        .unwrap();
    // A usage error, caught by the command line parser like any other (2).
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(output.stdout.is_empty());
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("--duration") && first.contains("not a number of seconds"),
        "{stderr}"
    );
}

/// A patch built for another kernel release is refused by the kernel
/// ("Invalid module format"): check says not ready and names both.
#[test]
fn a_module_built_for_another_kernel_is_not_ready() {
    let fixture = kernel();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fake_livepatch.ko");
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check/fake_livepatch.c");
    let status = Command::new("gcc")
        .args(["-c", "-O2", "-fno-pic", "-mcmodel=kernel"])
        .arg("-DVERMAGIC=\"6.1.0-56-amd64 SMP preempt mod_unload modversions\"")
        .arg("-o")
        .arg(&out)
        .arg(source)
        .status()
        .expect("gcc runs");
    assert!(status.success());
    let output = klpscope(
        fixture.root(),
        &["--module", out.to_str().unwrap(), "--json"],
    );
    let doc = json(&output);
    assert_eq!(doc["verdict"], "not_ready", "{doc:#}");
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(check_status(&doc, "vermagic"), "fail");
    let detail = doc["kernel_checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "vermagic")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("6.1.0-56-amd64 SMP") && detail.contains("6.12.0-fixture"),
        "{detail}"
    );

    // Built for this kernel: the check passes.
    let ko = fake_ko(dir.path());
    let doc = json(&klpscope(
        fixture.root(),
        &["--module", ko.to_str().unwrap(), "--json"],
    ));
    assert_eq!(check_status(&doc, "vermagic"), "pass", "{doc:#}");
}
