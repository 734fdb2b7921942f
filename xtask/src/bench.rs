//! `cargo xtask bench`: every benchmark, each against its baseline in the
//! same run. Reports numbers; asserts none.
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::{build, setup, vm};

pub fn run() -> Result<ExitCode> {
    let toolchain = setup::run()?;
    build::ebpf(&toolchain)?;

    println!(
        "bench: every thread's patch_state, and with stacks: BPF task iterator vs kept-fd \
         scanner vs one-shot procfs reader vs kpatch's shell loop (host)"
    );
    // The syscalls per scan are counted with it.
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

    println!(
        "bench: call counter cost per call vs no probe and the fentry floor; watch's start-up \
         step by step, and from launch to ready (VM)"
    );
    let examples = ["call_counter_cost", "start_up_cost"];
    let mut build = build::user_cargo("build");
    build.args(["--release", "--package", "livepatch-user"]);
    for example in examples {
        build.args(["--example", example]);
    }
    build::checked(&mut build, "building the VM benchmarks")?;
    let script = build::target_dir().join("klpscope-bench/vm-bench.sh");
    std::fs::create_dir_all(script.parent().unwrap())?;
    std::fs::write(&script, VM_SCRIPT)
        .with_context(|| format!("cannot write {}", script.display()))?;
    let files = examples
        .iter()
        .map(|example| {
            let binary = build::release_example(example);
            format!("{}:/bin/{example}", binary.display())
        })
        .collect();
    vm::run_script(vm::Series::V6_12, files, script)
}

/// What runs in the VM.
const VM_SCRIPT: &str = include_str!("bench_vm.sh");
