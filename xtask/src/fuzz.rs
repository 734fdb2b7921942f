//! `cargo xtask fuzz`: every fuzz target of livepatch-user/fuzz (cargo-fuzz,
//! libFuzzer, nightly) for a fixed number of executions, from the checked-in
//! seeds. A crash fails the run with the target, the input and libFuzzer's
//! report.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{build, cache, setup, tools};

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Each target and its executions: together about a minute on the 2-core
/// build machines (busy with other builds; less when idle), each in
/// proportion to its speed. The .ko reader, the most exposed, gets the most
/// time.
const TARGETS: &[(&str, u64)] = &[
    ("ko_reader", 60_000),
    ("procfs_patch_state", 300_000),
    ("procfs_stat", 200_000),
    ("procfs_stack", 50_000),
    ("kernel_log_record", 60_000),
    ("kernel_config", 50_000),
    ("attr", 100_000),
    ("sysfs_function_dir", 300_000),
    ("ftrace_enabled_functions", 50_000),
    ("tracer_event", 300_000),
];

fn fuzz_dir() -> PathBuf {
    cache::workspace_root().join("livepatch-user").join("fuzz")
}

/// `runs`: the same number of executions for every target instead of each
/// one's default.
pub fn run(runs: Option<u64>) -> Result<()> {
    let started = Instant::now();
    let bin_dir = tools::cargo_installed(
        "cargo-fuzz",
        CARGO_FUZZ_VERSION,
        "about two minutes on 2 cores",
    )?;
    // livepatch-user embeds the eBPF object: its build script needs it.
    let toolchain = setup::run()?;
    build::ebpf(&toolchain)?;

    let build_started = Instant::now();
    let host = host_triple()?;
    build::checked(
        cargo_fuzz_build(&bin_dir).args(["--target", &host]),
        "building the fuzz targets (cargo +nightly fuzz build)",
    )?;
    // Run as cargo fuzz run would, without its cargo build before each.
    let binaries = fuzz_target_dir().join(&host).join("release");
    println!(
        "fuzz: {} targets built ({:.1}s)",
        TARGETS.len(),
        build_started.elapsed().as_secs_f64()
    );

    let runs_started = Instant::now();
    for &(target, default_runs) in TARGETS {
        let runs = runs.unwrap_or(default_runs);
        let (executed, seconds) = fuzz_target(&binaries.join(target), target, runs)?;
        println!("fuzz: {target}: {executed} executions clean ({seconds:.1}s)");
    }
    println!(
        "fuzz: every target clean (runs {:.1}s, total {:.1}s)",
        runs_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo +nightly fuzz build` of livepatch-user/fuzz: release, with the
/// address sanitizer and debug assertions (overflow checks) on, as in the
/// debug tests.
fn cargo_fuzz_build(bin_dir: &Path) -> Command {
    let mut path = OsString::from(bin_dir);
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    let mut cmd = Command::new("cargo");
    cmd.current_dir(cache::workspace_root().join("livepatch-user"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTFLAGS")
        .env("PATH", path)
        .env("KLPSCOPE_EBPF_OBJECT", build::ebpf_object())
        .args(["+nightly", "fuzz", "build", "--fuzz-dir"])
        .arg(fuzz_dir())
        .arg("--target-dir")
        .arg(fuzz_target_dir())
        .arg("--debug-assertions");
    cmd
}

/// The sanitizer build takes minutes from cold: kept in the cache, so a
/// fresh clone (CI's) reuses what an earlier run built.
fn fuzz_target_dir() -> PathBuf {
    cache::dir().join("fuzz-target")
}

/// The host's target triple, where cargo fuzz builds by default.
fn host_triple() -> Result<String> {
    let out = Command::new("rustc")
        .args(["+nightly", "-vV"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .context("cannot run rustc +nightly -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc +nightly -vV names no host")
}

/// Runs one built target from its seeds; the executions and seconds
/// libFuzzer reports when it ends clean.
fn fuzz_target(binary: &Path, target: &str, runs: u64) -> Result<(u64, f64)> {
    let dir = fuzz_dir();
    // libFuzzer adds what it finds to the first folder: the ignored
    // corpus, never the checked-in seeds.
    let corpus = dir.join("corpus").join(target);
    let seeds = dir.join("seeds").join(target);
    let artifacts = dir.join("artifacts").join(target);
    for folder in [&corpus, &artifacts] {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    let started = Instant::now();
    let output = Command::new(binary)
        .arg(format!("-runs={runs}"))
        // An input that takes this long is a hang: a crash, not a wait.
        .arg("-timeout=10")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&corpus)
        .arg(&seeds)
        .output()
        .with_context(|| format!("cannot run the fuzz target {}", binary.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&output.stderr);
    let log_path = dir.join("artifacts").join(format!("{target}.log"));
    std::fs::write(&log_path, log.as_bytes())
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    if !output.status.success() {
        let input = log
            .lines()
            .find_map(|line| line.split_once("Test unit written to "))
            .map(|(_, path)| path.trim().to_owned())
            .unwrap_or_else(|| "none written".into());
        bail!(
            "fuzz target {target} crashed: {}\n  input: {input}\n  log: {}\n  reproduce: {} <input>",
            crash_reason(&log),
            log_path.display(),
            binary.display()
        );
    }
    // libFuzzer's last words: "Done 60000 runs in 8 second(s)".
    let executed = log
        .lines()
        .filter_map(|line| line.strip_prefix("Done "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back()
        .with_context(|| {
            format!(
                "fuzz target {target}: no \"Done N runs\" line from libFuzzer; see {}",
                log_path.display()
            )
        })?;
    Ok((executed, seconds))
}

/// The panic and its message, or the sanitizer's or libFuzzer's error line.
fn crash_reason(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    if let Some(at) = lines.iter().position(|line| line.contains(" panicked at ")) {
        let place = lines[at]
            .split_once(" panicked at ")
            .map_or("", |(_, place)| place)
            .trim_end_matches(':');
        let message = lines.get(at + 1).copied().unwrap_or_default();
        return format!("panicked at {place}: {message}");
    }
    lines
        .iter()
        .find(|line| line.contains("ERROR: "))
        .or_else(|| lines.iter().find(|line| line.starts_with("SUMMARY: ")))
        .map_or_else(
            || "no reason in the log".into(),
            |line| line.trim().to_owned(),
        )
}
