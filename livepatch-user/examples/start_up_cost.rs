//! Where `klpscope watch`'s start-up goes: each step it takes before its
//! `ready` event, timed on its own, in the order watch takes them. Runs in
//! the VM lab (`cargo xtask bench`), where watch's start is slow under TCG.
//! Each step runs three times and the fastest counts: interference (other
//! work on the host, emulation hiccups) only ever adds time.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{FEntry, FExit},
};
use livepatch_user::{
    kernel::{PatchStateScanner, Stacks, read_kernel, read_patches},
    probes::{self, KernelSymbols, ProbeRequest, TaskSource, task_layout},
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/livepatch.bpf.o"));

const ROUNDS: usize = 3;

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

/// Runs `run` ROUNDS times; reports the fastest and returns the last value.
fn step<T>(name: &str, mut run: impl FnMut() -> T) -> T {
    let mut fastest = Duration::MAX;
    let mut value = None;
    for _ in 0..ROUNDS {
        // The last round's value goes first, untimed: dropping probes
        // detaches them, which takes long and is no part of the step.
        drop(value.take());
        let started = Instant::now();
        let round = run();
        fastest = fastest.min(started.elapsed());
        value = Some(round);
    }
    report(name, fastest);
    value.expect("at least one round")
}

fn report(name: &str, took: Duration) {
    println!("{:>9.1} ms  {name}", took.as_secs_f64() * 1e3);
}

/// Loads and attaches the tracer's programs as probes::load does: the
/// verifier's time and the trampolines' time apart.
fn tracer(ebpf: &mut Ebpf, btf: &Btf) -> (Duration, Duration, usize) {
    let (mut loads, mut attaches, mut attached) = (Duration::ZERO, Duration::ZERO, 0);
    for (program, function, entry) in TRACER {
        let Some(prog) = ebpf.program_mut(program) else {
            continue;
        };
        let started = Instant::now();
        let loaded = if entry {
            <&mut FEntry>::try_from(prog).map(|p| p.load(function, btf))
        } else {
            <&mut FExit>::try_from(prog).map(|p| p.load(function, btf))
        };
        loads += started.elapsed();
        if !matches!(loaded, Ok(Ok(()))) {
            continue;
        }
        let started = Instant::now();
        let prog = ebpf.program_mut(program).expect("loaded above");
        let ok = if entry {
            <&mut FEntry>::try_from(prog).map(|p| p.attach().is_ok())
        } else {
            <&mut FExit>::try_from(prog).map(|p| p.attach().is_ok())
        };
        attaches += started.elapsed();
        attached += usize::from(matches!(ok, Ok(true)));
    }
    (loads, attaches, attached)
}

fn main() -> anyhow::Result<()> {
    let root = Path::new("/");
    println!("watch's start-up, step by step (fastest of {ROUNDS})");
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
    step(
        "EbpfLoader::new (aya parses the kernel's BTF itself, for CO-RE)",
        EbpfLoader::new,
    );
    step("aya loads the object: maps created", || {
        EbpfLoader::new().btf(None).load(OBJECT)
    })?;
    step(
        "aya loads the object, its big maps at their smallest (the difference is theirs)",
        || {
            EbpfLoader::new()
                .btf(None)
                .map_max_entries("TASK_CHECKS", 1)
                .map_max_entries("OLD_CALLS_BY_TASK", 1)
                .map_max_entries("EVENTS", 4096)
                .map_max_entries("AYA_LOGS", 4096)
                .load(OBJECT)
        },
    )?;

    let (mut loads, mut attaches, mut detaches) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let mut attached = 0;
    for _ in 0..ROUNDS {
        let mut ebpf = EbpfLoader::new().btf(None).load(OBJECT)?;
        let (load, attach, count) = tracer(&mut ebpf, &btf);
        let started = Instant::now();
        drop(ebpf);
        detaches = detaches.min(started.elapsed());
        loads = loads.min(load);
        attaches = attaches.min(attach);
        attached = count;
    }
    report("tracer programs: verifier and JIT (all loads)", loads);
    report(
        &format!("tracer programs: attach ({attached} BPF trampolines)"),
        attaches,
    );
    report("tracer programs: detach and unload (at exit)", detaches);

    let request = ProbeRequest {
        tracer: true,
        task_iterator: true,
        ..ProbeRequest::default()
    };
    let loaded = step(
        "probes::load of the tracer and the task iterator, all of the above, as watch runs it",
        || probes::load(root, &request),
    );
    let caps = loaded.capabilities;
    drop((loaded.probes, loaded.task_iterator));
    if let Some(reason) = caps.unavailable_reason() {
        println!("             (no eBPF: {reason})");
    }

    let mut tasks = step(
        "TaskSource::open (the BPF task iterator on its own, as status, diagnose and check open it)",
        || TaskSource::open(root, false),
    )?;
    if let Some(reason) = &tasks.capability().reason {
        println!("             (procfs: {reason})");
    }
    let threads = step("patch_state scan, task iterator", || tasks.patch_states())?;
    println!("             ({} threads)", threads.len());
    step(
        "first patch_state scan, kept-fd scanner (opens every file)",
        || PatchStateScanner::new(root).and_then(|mut scanner| scanner.scan()),
    )?;
    let mut scanner = PatchStateScanner::new(root)?;
    scanner.scan()?;
    step("patch_state scan, kept-fd scanner, steady", || {
        scanner.scan()
    })?;
    step("/proc/kallsyms read to name the iterator's stacks", || {
        KernelSymbols::read(root)
    })?;
    step(
        "every task with its stack, task iterator (symbols already read)",
        || tasks.tasks(Stacks::Read),
    )?;
    Ok(())
}
