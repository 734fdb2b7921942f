//! Where `klpscope watch`'s start-up goes: each step it takes before its
//! `ready` event, timed on its own, in the order watch takes them. Runs in
//! the VM lab (`cargo xtask bench`), where watch's start is slow under TCG.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    Btf, EbpfLoader,
    programs::{FEntry, FExit},
};
use livepatch_user::{
    kernel::{PatchStateScanner, Stacks, TaskReader, read_kernel, read_patches},
    probes::{self, KernelSymbols, ProbeRequest, TaskSource, task_layout},
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/livepatch.bpf.o"));

/// The transition tracer's programs (probes/loader.rs), entry or exit.
const TRACER: [(&str, &str, bool); 10] = [
    (
        "klp_check_and_switch_task",
        "klp_check_and_switch_task",
        false,
    ),
    ("klp_start_transition", "klp_start_transition", true),
    (
        "klp_try_complete_transition_entry",
        "klp_try_complete_transition",
        true,
    ),
    (
        "klp_try_complete_transition_exit",
        "klp_try_complete_transition",
        false,
    ),
    (
        "klp_update_patch_state_entry",
        "klp_update_patch_state",
        true,
    ),
    (
        "klp_update_patch_state_exit",
        "klp_update_patch_state",
        false,
    ),
    ("klp_reverse_transition", "klp_reverse_transition", true),
    ("klp_force_transition", "klp_force_transition", true),
    ("klp_complete_transition", "klp_complete_transition", true),
    ("klp_cancel_transition", "klp_cancel_transition", true),
];

fn step<T>(name: &str, run: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = run();
    report(name, started.elapsed());
    value
}

fn report(name: &str, took: Duration) {
    println!("{:>9.1} ms  {name}", took.as_secs_f64() * 1e3);
}

fn main() -> anyhow::Result<()> {
    let root = Path::new("/");
    println!("watch's start-up, step by step");
    step("read_kernel (facts, config, lockdown, taint)", || {
        read_kernel(root)
    });
    step("read_patches (sysfs)", || read_patches(root))?;

    let raw = step("read /sys/kernel/btf/vmlinux", || {
        std::fs::read("/sys/kernel/btf/vmlinux")
    })?;
    println!("             ({} KiB of BTF)", raw.len() / 1024);
    step("task_struct offsets from BTF (klpscope's reader)", || {
        task_layout(&raw)
    })?;
    let btf = step(
        "aya parses the kernel's BTF (Btf::from_sys_fs)",
        Btf::from_sys_fs,
    )?;
    let mut ebpf = step("aya loads the object: maps created", || {
        EbpfLoader::new().btf(Some(&btf)).load(OBJECT)
    })?;
    let mut loads = Duration::ZERO;
    let mut attaches = Duration::ZERO;
    for (program, function, entry) in TRACER {
        let Some(prog) = ebpf.program_mut(program) else {
            continue;
        };
        let started = Instant::now();
        let loaded = if entry {
            <&mut FEntry>::try_from(prog).map(|p| p.load(function, &btf))
        } else {
            <&mut FExit>::try_from(prog).map(|p| p.load(function, &btf))
        };
        let load = started.elapsed();
        loads += load;
        let Ok(Ok(())) = loaded else {
            println!("             {program}: not loaded on this kernel");
            continue;
        };
        let started = Instant::now();
        let prog = ebpf.program_mut(program).expect("loaded above");
        let attached = if entry {
            <&mut FEntry>::try_from(prog).map(|p| p.attach().map(drop))
        } else {
            <&mut FExit>::try_from(prog).map(|p| p.attach().map(drop))
        };
        let attach = started.elapsed();
        attaches += attach;
        let ok = matches!(attached, Ok(Ok(())));
        println!(
            "             {program}: load {:.1} ms, attach {:.1} ms{}",
            load.as_secs_f64() * 1e3,
            attach.as_secs_f64() * 1e3,
            if ok { "" } else { " (refused)" }
        );
    }
    report("tracer programs: verifier and JIT (all loads)", loads);
    report("tracer programs: attach (BPF trampolines)", attaches);
    step("detach and unload them", || drop(ebpf));

    let request = ProbeRequest {
        tracer: true,
        count_calls: Vec::new(),
    };
    let (probes, caps) = step("probes::load, all of the above as watch runs it", || {
        probes::load(root, &request)
    });
    if let Some(reason) = caps.unavailable_reason() {
        println!("             (no eBPF: {reason})");
    }
    drop(probes);

    let mut tasks = step("TaskSource::open (the BPF task iterator)", || {
        TaskSource::open(root, false)
    })?;
    if let Some(reason) = &tasks.capability().reason {
        println!("             (procfs: {reason})");
    }
    let threads = step("first patch_state scan, task iterator", || {
        tasks.patch_states()
    })?;
    println!("             ({} threads)", threads.len());
    step("second patch_state scan, task iterator", || {
        tasks.patch_states()
    })?;
    let mut scanner = step("PatchStateScanner::new", || PatchStateScanner::new(root))?;
    step(
        "first patch_state scan, kept-fd scanner (opens every file)",
        || scanner.scan(),
    )?;
    step("second patch_state scan, kept-fd scanner", || {
        scanner.scan()
    })?;
    step("/proc/kallsyms read for the iterator's stacks", || {
        KernelSymbols::read(root)
    })?;
    step(
        "every task with its stack, task iterator (symbols read again)",
        || tasks.tasks(Stacks::Read),
    )?;
    step("every task with its stack, task iterator, again", || {
        tasks.tasks(Stacks::Read)
    })?;
    Ok(())
}
