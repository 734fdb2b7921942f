//! `klpscope diagnose` on this host, whatever its kernel offers, and on
//! fixture trees.
mod common;

use std::process::Command;

use common::fixture::Fixture;

fn klpscope(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .args(args)
        .output()
        .expect("run klpscope")
}

fn host_has_livepatch() -> bool {
    std::path::Path::new("/sys/kernel/livepatch").exists()
}

/// On a kernel without livepatch, one line saying why; on one with it, a
/// report (no transition, or the one in progress). Either way exit 0, or
/// 3 when a pending task could not be explained.
#[test]
fn diagnose_on_this_host_follows_what_the_kernel_offers() {
    let out = klpscope(&["diagnose"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if host_has_livepatch() {
        assert!(matches!(out.status.code(), Some(0 | 3)), "{err}");
        assert!(!text.is_empty());
    } else {
        assert!(out.status.success(), "{err}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("nothing to diagnose: "), "{text}");
        assert!(err.is_empty(), "{err}");
    }
}

#[test]
fn without_livepatch_diagnose_says_so_in_one_line_and_exits_0() {
    let fixture = Fixture::without_livepatch();
    let out = klpscope(&["--root", fixture.root().to_str().unwrap(), "diagnose"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("CONFIG_LIVEPATCH"), "{text}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn without_livepatch_diagnose_json_reports_no_transition() {
    let fixture = Fixture::without_livepatch();
    let out = klpscope(&[
        "--root",
        fixture.root().to_str().unwrap(),
        "diagnose",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    common::json_schema::assert_valid("diagnose", &doc);
    assert_eq!(doc["in_transition"], false);
    assert_eq!(doc["livepatch_supported"], false);
    assert!(doc["reason"].as_str().unwrap().contains("CONFIG_LIVEPATCH"));
    assert_eq!(doc["blockers"].as_array().unwrap().len(), 0);
}

#[test]
fn an_unknown_patch_is_a_clear_error_on_a_livepatch_tree() {
    // A fixture tree with livepatch support (its sysfs folder) and one idle
    // patch.
    let root = tempfile::tempdir().unwrap();
    let p = root.path();
    std::fs::create_dir_all(p.join("sys/kernel/livepatch/real_patch/vmlinux")).unwrap();
    for (file, value) in [("enabled", "1"), ("transition", "0"), ("force", "0")] {
        std::fs::write(p.join("sys/kernel/livepatch/real_patch").join(file), value).unwrap();
    }
    std::fs::write(
        p.join("sys/kernel/livepatch/real_patch/vmlinux/patched"),
        "1",
    )
    .unwrap();
    std::fs::create_dir_all(p.join("proc/1/task/1")).unwrap();
    std::fs::create_dir_all(p.join("proc/sys/kernel")).unwrap();
    std::fs::write(p.join("proc/sys/kernel/osrelease"), "6.12.0-test\n").unwrap();
    let out = klpscope(&["--root", p.to_str().unwrap(), "diagnose", "--patch", "nope"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no livepatch named 'nope'"), "{err}");
}
