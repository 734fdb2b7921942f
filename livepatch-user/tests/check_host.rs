//! `klpscope check` on this build host, the real binary on the real kernel:
//! no livepatch here, so not ready, yet the function is found, its
//! traceability read once tracefs is mounted (or the refusal to tell it
//! reported), and eBPF's absence explained.
use std::process::{Command, Output};

use serde_json::Value;

fn check_cmdline_proc_show() -> (Output, Value) {
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
    (output, doc)
}

fn tracefs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|line| line.split_whitespace().nth(2) == Some("tracefs"))
}

fn mount_tracefs(mount: bool) {
    let status = if mount {
        Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status()
    } else {
        Command::new("umount").arg("/sys/kernel/tracing").status()
    };
    assert!(status.expect("mount runs").success());
}

/// One test, so that nothing else in this binary sees tracefs come and go.
#[test]
fn not_ready_without_livepatch_yet_present_and_ebpf_explained() {
    let was_mounted = tracefs_mounted();
    if was_mounted {
        mount_tracefs(false);
    }
    let (output, unmounted) = check_cmdline_proc_show();
    mount_tracefs(true);
    let (_, mounted) = check_cmdline_proc_show();
    // What klpscope should have seen, read here directly: this host's
    // kernel refuses reads of the ftrace function list (EPERM) even to root.
    let listed = std::fs::read_to_string("/sys/kernel/tracing/available_filter_functions")
        .map(|text| text.lines().any(|line| line == "cmdline_proc_show"));
    if !was_mounted {
        mount_tracefs(false);
    }

    for doc in [&unmounted, &mounted] {
        assert_eq!(doc["verdict"], "not_ready", "{doc:#}");
        let livepatch = &doc["kernel_checks"][0];
        assert_eq!(livepatch["id"], "livepatch");
        assert_eq!(livepatch["status"], "fail");
        let function = &doc["functions"][0];
        assert_eq!(function["name"], "cmdline_proc_show");
        assert_eq!(function["present"], true);
        assert_eq!(function["calls_per_sec"], Value::Null);
        assert_eq!(doc["ebpf"]["available"], false);
        let reason = doc["ebpf"]["reason"].as_str().unwrap();
        assert!(reason.contains("fentry"), "{reason}");
    }
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(unmounted["functions"][0]["traceable"], Value::Null);
    let function = &mounted["functions"][0];
    match listed {
        Ok(listed) => assert_eq!(function["traceable"], listed, "{mounted:#}"),
        Err(error) => {
            assert_eq!(function["traceable"], Value::Null, "{mounted:#}");
            let problem = function["problems"][0].as_str().unwrap();
            assert!(
                problem.starts_with("traceability unknown") && problem.contains(&error.to_string()),
                "{problem} vs {error}"
            );
        }
    }
}
