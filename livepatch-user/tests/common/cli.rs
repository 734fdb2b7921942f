//! klpscope run on a fixture root, as the CLI tests run it.
// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]
use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

pub fn klpscope(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("klpscope runs")
}

/// `check --module` of `module` without eBPF or sampling: its exit code
/// and its JSON, checked against the schema.
pub fn check_json(root: &Path, module: &Path) -> (i32, serde_json::Value) {
    let output = klpscope(
        root,
        &[
            "check",
            "--no-ebpf",
            "--duration",
            "0",
            "--json",
            "--module",
            module.to_str().unwrap(),
        ],
    );
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    super::json_schema::assert_valid("check", &doc);
    (output.status.code().unwrap_or(-1), doc)
}

pub fn kernel_check<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    doc["kernel_checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no kernel check {id}: {doc}"))
}
