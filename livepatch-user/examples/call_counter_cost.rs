//! What the call counter adds to each call of a hot function, compared in
//! one run with no probe and with the floor: an fentry program that only
//! increments one per-CPU counter.
//!
//! Runs where fentry is allowed (the VM lab: `cargo xtask bench`). The hot
//! function is `__task_pid_nr_ns`, which each getppid syscall calls once: the
//! cheapest round trip user space can make into a traceable vmlinux function.
use std::time::Instant;

use aya::{EbpfLoader, maps::PerCpuArray, programs::FEntry};
use livepatch_ebpf::{VERSION_OLD, call_index};
use livepatch_user::probes::task_layout;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/livepatch.bpf.o"));

const HOT_FUNCTION: &str = "__task_pid_nr_ns";
const CALLS: u64 = 100_000;
const ROUNDS: usize = 25;

#[derive(Clone, Copy, PartialEq)]
enum Probe {
    None,
    Floor,
    CallCounter,
}

impl Probe {
    fn program(self) -> Option<&'static str> {
        match self {
            Probe::None => None,
            Probe::Floor => Some("count_calls_floor"),
            Probe::CallCounter => Some("count_calls_0"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Probe::None => "no probe",
            Probe::Floor => "floor (one per-CPU increment)",
            Probe::CallCounter => "klpscope call counter",
        }
    }
}

fn hot_loop() -> f64 {
    let started = Instant::now();
    for _ in 0..CALLS {
        // SAFETY: getppid takes no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    started.elapsed().as_nanos() as f64 / CALLS as f64
}

/// The fastest round: interference (other work on the host, emulation
/// hiccups) only ever adds time, so the minimum is the steadiest estimate.
fn fastest(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn main() -> anyhow::Result<()> {
    // One CPU: per-CPU counters and caches then behave the same in every run.
    // SAFETY: a zeroed cpu_set_t with CPU 0 set is a valid mask.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
    let layout = task_layout(&std::fs::read("/sys/kernel/btf/vmlinux")?)?;
    let btf = aya::Btf::from_sys_fs()?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("TASK_OFFSETS", &layout.offsets, true)
        .load(OBJECT)?;
    for probe in [Probe::Floor, Probe::CallCounter] {
        let program: &mut FEntry = ebpf
            .program_mut(probe.program().unwrap())
            .unwrap()
            .try_into()?;
        program.load(HOT_FUNCTION, &btf)?;
    }

    let probes = [Probe::None, Probe::Floor, Probe::CallCounter];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); probes.len()];
    // Interleaved rounds in rotating order, so that drift (other load, cache
    // state) hits all three alike.
    for round in 0..ROUNDS {
        for k in 0..probes.len() {
            let i = (k + round) % probes.len();
            let probe = &probes[i];
            let link = match probe.program() {
                None => None,
                Some(name) => {
                    let program: &mut FEntry = ebpf.program_mut(name).unwrap().try_into()?;
                    Some((name, program.attach()?))
                }
            };
            samples[i].push(hot_loop());
            if let Some((name, link)) = link {
                let program: &mut FEntry = ebpf.program_mut(name).unwrap().try_into()?;
                program.detach(link)?;
            }
        }
    }

    let calls: PerCpuArray<_, u64> = PerCpuArray::try_from(ebpf.map("CALLS").unwrap())?;
    let counted: u64 = calls
        .get(&call_index(0, VERSION_OLD), 0)?
        .iter()
        .sum::<u64>();
    let expected = CALLS * ROUNDS as u64;
    anyhow::ensure!(
        counted >= expected,
        "the call counter saw {counted} calls, expected at least {expected}"
    );

    let base = fastest(&samples[0]);
    println!(
        "call counter cost on {HOT_FUNCTION}, {CALLS} calls x {ROUNDS} rounds (fastest round)"
    );
    println!("{:<32} {:>10} {:>12}", "probe", "ns/call", "added ns");
    let mut added = Vec::new();
    for (probe, values) in probes.iter().zip(samples) {
        let ns = fastest(&values);
        added.push(ns - base);
        println!("{:<32} {:>10.1} {:>12.1}", probe.name(), ns, ns - base);
    }
    let ratio = added[2] / added[1];
    println!("call counter / floor added cost: {ratio:.2} (goal: at most 1.5)");
    println!("call counter counted {counted} calls (at least {expected} expected)");
    Ok(())
}
