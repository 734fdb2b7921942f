//! `cargo xtask vm-test`: every scenario of tests/scenarios on each kernel,
//! one boot each, then self-checks proving the harness catches a failing
//! script, a guest panic and a hang.
use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{ValueEnum, builder::PossibleValue};

use super::{Series, kernel, lab::Lab, modules, qemu, real};
use crate::cache;

/// Bounds one scenario boot. An idle host runs most in about a minute, but
/// 06-ebpf-detach starts watch six times (each ready after 7-19 s under
/// TCG), and on a host busy with builds 01 and 06 took up to 185 s.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(300);
/// Bounds the hang self-check: enough to boot and start the script.
const HANG_TIMEOUT: Duration = Duration::from_secs(25);

/// What vm-test runs on: one kernel of the lab, or `all`, Debian's stable
/// ones (`Series::ALL`).
#[derive(Clone, Copy)]
pub enum Kernels {
    All,
    One(Series),
}

impl ValueEnum for Kernels {
    fn value_variants<'a>() -> &'a [Self] {
        static VARIANTS: OnceLock<Vec<Kernels>> = OnceLock::new();
        VARIANTS.get_or_init(|| {
            let series = Series::value_variants().iter().copied().map(Kernels::One);
            std::iter::once(Kernels::All).chain(series).collect()
        })
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        match self {
            Kernels::All => Some(PossibleValue::new("all").help("6.12, 6.1, 5.10 and 7")),
            Kernels::One(series) => series.to_possible_value(),
        }
    }
}

impl Kernels {
    fn series(self) -> Vec<Series> {
        match self {
            Kernels::All => Series::ALL.to_vec(),
            Kernels::One(series) => vec![series],
        }
    }
}

/// A broken script and the failure the harness must report for it.
struct SelfCheck {
    script: &'static str,
    expect: fn(&qemu::Outcome) -> bool,
    /// Console text proving the tail reached the report.
    console: &'static str,
    timeout: Duration,
}

const SELF_CHECKS: [SelfCheck; 3] = [
    SelfCheck {
        script: "exit-1.sh",
        expect: |o| matches!(o, qemu::Outcome::Exited(1)),
        console: "selfcheck: exiting with status 1",
        timeout: SCENARIO_TIMEOUT,
    },
    SelfCheck {
        script: "panic.sh",
        expect: |o| matches!(o, qemu::Outcome::Crashed(_)),
        console: "Kernel panic",
        timeout: SCENARIO_TIMEOUT,
    },
    SelfCheck {
        script: "hang.sh",
        expect: |o| matches!(o, qemu::Outcome::TimedOut),
        console: "selfcheck: hanging",
        timeout: HANG_TIMEOUT,
    },
];

/// Boots at once: one per core (`KLPSCOPE_VM_PARALLEL` overrides).
fn parallel_boots() -> usize {
    std::env::var("KLPSCOPE_VM_PARALLEL")
        .ok()
        .and_then(|n| n.parse().ok())
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .max(1)
}

/// One kernel's run, for the summary.
struct KernelRun {
    name: String,
    /// Downloading and extracting the kernel (zero when cached).
    kernel: Duration,
    /// Building the test modules (zero when cached).
    modules: Duration,
    scenarios: Duration,
    passed: usize,
    /// Each failure's summary line, repeated at the end where a log's tail
    /// shows it.
    failures: Vec<String>,
    /// Why the kernel could not be booted at all.
    broken: Option<String>,
}

pub fn test(kernels: Kernels) -> Result<()> {
    let started = Instant::now();
    let lab = Lab::prepare()?;
    let dir = cache::workspace_root().join("tests/scenarios");
    let all_scenarios = scenario_scripts(&dir)?;
    let mut runs = Vec::new();
    let mut first = true;
    for series in kernels.series() {
        let mut run = KernelRun {
            name: series.name().to_string(),
            kernel: Duration::ZERO,
            modules: Duration::ZERO,
            scenarios: Duration::ZERO,
            passed: 0,
            failures: Vec::new(),
            broken: None,
        };
        // A kernel that cannot be had or built for fails alone, in one
        // line; the others still run.
        let scenarios = for_kernel(&all_scenarios, series)?;
        let prepared = (|| {
            let t0 = Instant::now();
            let kernel = kernel::prepare(series)?;
            run.name = format!("{} ({})", series.name(), kernel.release());
            run.kernel = t0.elapsed();
            let t1 = Instant::now();
            modules::build(&kernel)?;
            let mut foreign = modules::foreign(series)?;
            foreign.extend(real::guest_files(series)?);
            run.modules = t1.elapsed();
            let machine = lab.machine(&kernel)?;
            anyhow::Ok((kernel, machine, foreign))
        })();
        let (kernel, machine, foreign) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                println!("FAIL kernel {}: {error:#}", series.name());
                run.broken = Some(format!("{error:#}"));
                runs.push(run);
                continue;
            }
        };
        println!(
            "vm-test: Debian kernel {} (qemu, {})",
            kernel.release(),
            machine.accel.name()
        );
        let t2 = Instant::now();
        // Single-threaded TCG keeps one core busy per boot: boot as many
        // scenarios side by side as there are cores.
        let queue = Mutex::new(scenarios.iter());
        let results = Mutex::new(Vec::new());
        std::thread::scope(|threads| {
            for _ in 0..parallel_boots() {
                threads.spawn(|| {
                    loop {
                        let Some(script) = queue.lock().unwrap().next() else {
                            return;
                        };
                        let name = script.file_stem().unwrap_or_default().to_string_lossy();
                        let report =
                            lab.boot(&kernel, &machine, script, &foreign, SCENARIO_TIMEOUT, false);
                        let passed = match report {
                            Ok(report) => {
                                let secs = report.elapsed.as_secs_f64();
                                if matches!(report.outcome, qemu::Outcome::Exited(0)) {
                                    println!("PASS {name} on {} ({secs:.1}s)", kernel.release());
                                    Ok(())
                                } else {
                                    report.print_tail();
                                    let failure = format!(
                                        "FAIL {name} on {}: {} ({secs:.1}s)",
                                        kernel.release(),
                                        report.summary()
                                    );
                                    println!("{failure}");
                                    Err(failure)
                                }
                            }
                            Err(error) => {
                                let failure =
                                    format!("FAIL {name} on {}: {error:#}", kernel.release());
                                println!("{failure}");
                                Err(failure)
                            }
                        };
                        results.lock().unwrap().push(passed);
                    }
                });
            }
        });
        for result in results.into_inner().unwrap() {
            match result {
                Ok(()) => run.passed += 1,
                Err(failure) => run.failures.push(failure),
            }
        }
        // The harness does not depend on the kernel: check it on one.
        if first {
            first = false;
            for check in &SELF_CHECKS {
                let name = format!("selfcheck/{}", check.script);
                let script = dir.join("selfcheck").join(check.script);
                let report = lab.boot(&kernel, &machine, &script, &[], check.timeout, false)?;
                let secs = report.elapsed.as_secs_f64();
                let caught = (check.expect)(&report.outcome)
                    && report.tail.iter().any(|l| l.contains(check.console))
                    && report.elapsed < check.timeout + Duration::from_secs(15);
                if caught {
                    run.passed += 1;
                    println!(
                        "PASS {name}: the harness reported \"{}\" with the console tail ({secs:.1}s)",
                        report.outcome
                    );
                } else {
                    report.print_tail();
                    let failure = format!(
                        "FAIL {name}: expected the harness to catch it, got \"{}\" ({secs:.1}s)",
                        report.outcome
                    );
                    println!("{failure}");
                    run.failures.push(failure);
                }
            }
        }
        run.scenarios = t2.elapsed();
        runs.push(run);
    }
    let (mut passed, mut failed) = (0, 0);
    for run in &runs {
        passed += run.passed;
        failed += run.failures.len();
        match &run.broken {
            Some(why) => {
                failed += 1;
                println!("vm-test: kernel {}: not run: {why}", run.name);
            }
            None => println!(
                "vm-test: kernel {}: {} passed, {} failed; kernel {:.1}s, modules {:.1}s, boots {:.1}s",
                run.name,
                run.passed,
                run.failures.len(),
                run.kernel.as_secs_f64(),
                run.modules.as_secs_f64(),
                run.scenarios.as_secs_f64()
            ),
        }
    }
    for failure in runs.iter().flat_map(|run| &run.failures) {
        println!("vm-test: {failure}");
    }
    println!("vm-test: {:.1}s in all", started.elapsed().as_secs_f64());
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("vm-test: {failed} failed");
    }
    Ok(())
}

/// The scenarios that run on `series`: a scenario whose header has a
/// `# kernels: NAME...` line runs on those kernels only (17-real-modules
/// needs the lab kernels built from source and their real modules).
fn for_kernel(scripts: &[PathBuf], series: Series) -> Result<Vec<PathBuf>> {
    let mut chosen = Vec::new();
    for script in scripts {
        let text = fs::read_to_string(script)
            .with_context(|| format!("cannot read {}", script.display()))?;
        let only = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .find_map(|l| l.strip_prefix("# kernels:"));
        match only {
            Some(names) if !names.split_whitespace().any(|n| n == series.name()) => {}
            _ => chosen.push(script.clone()),
        }
    }
    Ok(chosen)
}

/// `NN-name.sh` files, in order.
fn scenario_scripts(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut scripts: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.ends_with(".sh") && name.as_bytes().first().is_some_and(u8::is_ascii_digit)
        })
        .collect();
    scripts.sort();
    if scripts.is_empty() {
        bail!("no scenarios (NN-name.sh) in {}", dir.display());
    }
    Ok(scripts)
}
