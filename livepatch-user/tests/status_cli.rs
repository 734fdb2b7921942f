//! The real `klpscope status` binary: on this host, and on fixture trees
//! through the hidden --root flag.
mod common;

use std::process::{Command, Output};

use common::fixture::Fixture;
use serde_json::Value;

fn klpscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .args(args)
        .output()
        .expect("run klpscope")
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let doc = serde_json::from_slice(&output.stdout).expect("status --json prints JSON");
    common::json_schema::assert_valid("status", &doc);
    doc
}

/// Whatever this host is, the JSON has the keys the issue names; on the
/// build hosts (no CONFIG_LIVEPATCH) it says why, from the kernel config.
#[test]
fn status_json_on_this_host() {
    let status = json(&klpscope(&["status", "--json"]));
    let kernel = &status["kernel"];
    assert!(kernel["release"].is_string());
    assert!(status["patches"].is_array());
    assert!(status.get("transition").is_some());
    let problems: Vec<&str> = kernel["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if std::path::Path::new("/sys/kernel/livepatch").exists() {
        assert_eq!(kernel["livepatch_supported"], true);
        return;
    }
    assert_eq!(kernel["livepatch_supported"], false);
    let reason = problems
        .iter()
        .find(|p| p.starts_with("livepatch unsupported"))
        .expect("a reason for no livepatch");
    assert!(
        reason.contains("CONFIG_LIVEPATCH is not set in /proc/config.gz")
            || reason.contains("CONFIG_LIVEPATCH is not set in /boot/config-")
            || reason.contains("no kernel config found"),
        "{reason}"
    );
}

#[test]
fn status_text_on_a_fixture_in_transition() {
    let fixture = Fixture::livepatch_kernel();
    fixture
        .patch("klp_t", "1", "1", Some("0"))
        .object("klp_t", "vmlinux", "1", &["cmdline_proc_show,1"])
        .user_thread(10, 10, "1")
        .user_thread(20, 20, "0");
    let root = fixture.root().to_str().unwrap();
    let output = klpscope(&["--root", root, "status"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("klp_t"), "{text}");
    assert!(text.contains("cmdline_proc_show,1"), "{text}");
    assert!(
        text.contains("transition  klp_t patching: 1 of 2 tasks pending"),
        "{text}"
    );

    let status = json(&klpscope(&["--root", root, "status", "--json"]));
    assert_eq!(status["transition"]["tasks_pending"], 1);
    assert_eq!(status["transition"]["direction"], "patching");
    assert_eq!(
        status["patches"][0]["objects"][0]["functions"][0]["sympos"],
        1
    );
    assert!(
        status.get("tasks").is_none(),
        "status JSON leaves the tasks out"
    );
}

/// Root ignores mode 000, so a real EACCES needs another user: run the
/// binary as `nobody` with runuser. Skipped (with a note) when not root or
/// runuser is missing.
#[test]
fn eacces_as_another_user_is_unknown_not_fatal() {
    use std::os::unix::fs::PermissionsExt;

    let runuser = std::path::Path::new("/usr/sbin/runuser");
    let is_root =
        std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    assert!(
        runuser.exists() && is_root.ok() == Some(true),
        "this test reads a fixture as another user: it needs root and {} (util-linux)",
        runuser.display()
    );
    let fixture = Fixture::livepatch_kernel();
    fixture
        .patch("klp_t", "1", "1", Some("0"))
        .object("klp_t", "vmlinux", "1", &["cmdline_proc_show,1"])
        .user_thread(10, 10, "0");
    for entry in walk(fixture.root()) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let enabled = fixture.path("sys/kernel/livepatch/klp_t/enabled");
    std::fs::set_permissions(&enabled, std::fs::Permissions::from_mode(0o000)).unwrap();
    // The binary itself may sit under a 0700 home: copy it somewhere nobody
    // can run it from.
    let binary = fixture.path("klpscope");
    std::fs::copy(env!("CARGO_BIN_EXE_klpscope"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Another test's child, forked while the copy was open for writing,
    // can hold it a moment longer: exec then fails with ETXTBSY.
    let run = || {
        Command::new(runuser)
            .args(["-u", "nobody", "--"])
            .arg(&binary)
            .args([
                "--root",
                fixture.root().to_str().unwrap(),
                "status",
                "--json",
            ])
            .output()
            .unwrap()
    };
    let mut output = run();
    for _ in 0..20 {
        if !String::from_utf8_lossy(&output.stderr).contains("Text file busy") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        output = run();
    }
    let status = json(&output);
    let enabled = &status["patches"][0]["enabled"]["unknown"];
    assert!(
        enabled.as_str().unwrap().contains("Permission denied"),
        "{status}"
    );
    assert!(
        status["transition"].is_null(),
        "no direction without `enabled`"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walk(&path));
        } else {
            all.push(path);
        }
    }
    all
}
