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
    let code = vm::run_script(vm::Series::V6_12, files, script)?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }

    println!(
        "bench: does klpscope disturb the transition it watches? The kernel's failed checks \
         and each transition's duration, klpscope absent vs watch polling vs watch with eBPF \
         (VM, every kernel of the lab)"
    );
    let script = build::target_dir().join("klpscope-bench/perturbation.sh");
    std::fs::write(&script, PERTURBATION_SCRIPT)
        .with_context(|| format!("cannot write {}", script.display()))?;
    for kernel in [
        vm::Series::V6_12,
        vm::Series::V6_1,
        vm::Series::V5_10,
        vm::Series::V7,
    ] {
        let code = vm::run_script(kernel, Vec::new(), script.clone())?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What runs in the VM.
const VM_SCRIPT: &str = include_str!("bench_vm.sh");
/// The perturbation experiment, on each kernel.
const PERTURBATION_SCRIPT: &str = include_str!("perturbation_vm.sh");
