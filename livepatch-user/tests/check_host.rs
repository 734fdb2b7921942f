//! `klpscope check` on this host, the real binary on the real kernel,
//! whatever it offers: each answer is compared with what the kernel itself
//! says (its livepatch folder, its ftrace function list), read here.
mod common;

use std::{path::Path, process::Command};

use serde_json::Value;

fn check_cmdline_proc_show() -> (Option<i32>, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .args([
            "check",
            "--function",
            "cmdline_proc_show",
            "--duration",
            "1",
            "--json",
        ])
        .output()
        .expect("klpscope runs");
    let doc = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    common::json_schema::assert_valid("check", &doc);
    (output.status.code(), doc)
}

/// Where tracefs is mounted, as /proc/mounts says.
fn tracefs_mount() -> Option<String> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .find(|line| line.split_whitespace().nth(2) == Some("tracefs"))
        .and_then(|line| line.split_whitespace().nth(1).map(str::to_owned))
}

#[test]
fn check_on_this_host_agrees_with_the_kernel() {
    let (code, doc) = check_cmdline_proc_show();
    let livepatch = Path::new("/sys/kernel/livepatch").exists();
    let check = &doc["kernel_checks"][0];
    assert_eq!(check["id"], "livepatch");
    assert_eq!(
        check["status"],
        if livepatch { "pass" } else { "fail" },
        "{doc:#}"
    );
    if livepatch {
        assert!(matches!(code, Some(0 | 3 | 4)), "{doc:#}");
    } else {
        assert_eq!(doc["verdict"], "not_ready", "{doc:#}");
        assert_eq!(code, Some(4));
    }

    let function = &doc["functions"][0];
    assert_eq!(function["name"], "cmdline_proc_show");
    assert_eq!(function["present"], true, "every kernel has it: {doc:#}");

    // Calls are counted exactly when eBPF works here; otherwise one reason.
    if doc["ebpf"]["available"] == true {
        assert!(function["calls_per_sec"].is_number(), "{doc:#}");
    } else {
        assert_eq!(function["calls_per_sec"], Value::Null);
        let reason = doc["ebpf"]["reason"].as_str().expect("a reason");
        assert!(!reason.is_empty() && !reason.contains('\n'), "{reason}");
    }

    // Traceable exactly when ftrace lists it; unknown, with the reason,
    // when the list cannot be read.
    let listed = tracefs_mount().map(|mount| {
        std::fs::read_to_string(Path::new(&mount).join("available_filter_functions"))
            .map(|text| text.lines().any(|line| line == "cmdline_proc_show"))
    });
    match listed {
        Some(Ok(listed)) => assert_eq!(function["traceable"], listed, "{doc:#}"),
        Some(Err(error)) => {
            assert_eq!(function["traceable"], Value::Null, "{doc:#}");
            let problems = function["problems"].to_string();
            assert!(
                problems.contains(&error.to_string()),
                "{problems} vs {error}"
            );
        }
        None => {
            assert_eq!(function["traceable"], Value::Null, "{doc:#}");
            assert!(
                function["problems"]
                    .to_string()
                    .contains("traceability unknown"),
                "{doc:#}"
            );
        }
    }
}
