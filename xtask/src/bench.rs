//! `cargo xtask bench`: every benchmark, each against its baseline in the
//! same run. Reports numbers; asserts none.
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::{build, cache, setup, vm};

pub fn run() -> Result<ExitCode> {
    let toolchain = setup::run()?;
    build::ebpf(&toolchain)?;

    println!("bench: patch_state scan of /proc vs kpatch's shell loop (host)");
    // The syscalls per thread are counted with it.
    vm::apt::ensure_installed(&["strace"])?;
    build::checked(
        build::user_cargo("bench").args([
            "--package",
            "livepatch-user",
            "--bench",
            "patch_state_scan",
        ]),
        "the patch_state scan benchmark",
    )?;

    crate::prometheus::bench_serve_idle()?;

    println!("bench: call counter cost per call vs no probe and the fentry floor (VM)");
    build::checked(
        build::user_cargo("build").args([
            "--release",
            "--package",
            "livepatch-user",
            "--example",
            "call_counter_cost",
        ]),
        "building the call counter benchmark",
    )?;
    let root = cache::workspace_root();
    let example = root.join("target/release/examples/call_counter_cost");
    let script = root.join("target/klpscope-bench/call_counter_cost.sh");
    std::fs::create_dir_all(script.parent().unwrap())?;
    std::fs::write(&script, "/bin/call_counter_cost\n")
        .with_context(|| format!("cannot write {}", script.display()))?;
    vm::run_script(
        vm::Series::V6_12,
        vec![format!("{}:/bin/call_counter_cost", example.display())],
        script,
    )
}
