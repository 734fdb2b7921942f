//! `cargo xtask lint` and `cargo xtask test`.
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

use crate::{build, cache, import_graph, setup};

pub fn lint() -> Result<()> {
    let toolchain = setup::run()?;
    build::ebpf(&toolchain)?;
    build::checked(
        Command::new("cargo")
            .current_dir(cache::workspace_root())
            .args(["fmt", "--all", "--check"]),
        "cargo fmt --check",
    )?;
    let cycles: Vec<String> = ["livepatch-user/src", "xtask/src"]
        .iter()
        .filter_map(|src| import_graph::check(&cache::workspace_root().join(src)).err())
        .map(|error| format!("{error:#}"))
        .collect();
    if !cycles.is_empty() {
        anyhow::bail!("{}", cycles.join("\n"));
    }
    build::checked(
        build::user_cargo("clippy").args(["--workspace", "--all-targets", "--", "-D", "warnings"]),
        "clippy (host)",
    )?;
    build::checked(
        build::ebpf_cargo(&toolchain, "clippy").args(["--", "-D", "warnings"]),
        "clippy (eBPF crate, bpf target)",
    )?;
    println!("lint: clean");
    Ok(())
}

pub fn all() -> Result<ExitCode> {
    lint()?;
    // The alert rules, and promtool, prometheus and node_exporter for the
    // metrics tests below.
    crate::prometheus::test_rules()?;
    // systemd-analyze, for the tests of the packaged units.
    crate::vm::apt::ensure_installed(&["systemd"])
        .context("the unit tests need systemd-analyze from Debian's systemd package")?;
    build::checked(
        build::user_cargo("test").args(["--workspace"]),
        "unit and integration tests",
    )?;
    // The Debian package, installed, used and removed on this machine.
    crate::dist_test::run()?;
    // The parsers of untrusted input, fuzzed from their seeds.
    crate::fuzz::run(None)?;
    // Real livepatch transitions, on every supported Debian kernel.
    crate::vm::test(crate::vm::Kernels::All)?;
    // The TUI as a person sees it, in a terminal.
    crate::vm::demo_test()?;
    Ok(ExitCode::SUCCESS)
}
