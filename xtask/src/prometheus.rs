//! Debian's Prometheus tools for the metrics tests and the serve
//! benchmark: promtool (`check metrics`, `test rules`), the Prometheus
//! server and node_exporter's textfile collector, installed once like the
//! VM lab's tools.
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

use crate::{build, cache, vm};

/// Packages and what the tests run from them.
const PACKAGES: [&str; 2] = [
    // promtool and prometheus.
    "prometheus",
    // prometheus-node-exporter, for the textfile collector.
    "prometheus-node-exporter",
];

/// Installs whichever of the packages is missing.
pub fn ensure_installed() -> Result<()> {
    vm::apt::ensure_installed(&PACKAGES).context(
        "the metrics tests need promtool, prometheus and node_exporter from Debian's \
         prometheus and prometheus-node-exporter packages",
    )
}

/// The alert rules: valid, and their unit tests pass.
pub fn test_rules() -> Result<()> {
    ensure_installed()?;
    let dir = cache::workspace_root().join("contrib/prometheus");
    build::checked(
        Command::new("promtool")
            .current_dir(&dir)
            .args(["check", "rules", "klpscope.rules.yml"]),
        "promtool check rules",
    )?;
    build::checked(
        Command::new("promtool").current_dir(&dir).args([
            "test",
            "rules",
            "klpscope.rules.test.yml",
        ]),
        "promtool test rules",
    )?;
    println!("prometheus: alert rules checked and tested");
    Ok(())
}

/// `klpscope serve` idle: with 10k more threads, beside node_exporter, on
/// this host (no livepatch, no fentry here: it polls); then with eBPF and
/// an applied patch in the VM.
pub fn bench_serve_idle() -> Result<()> {
    println!("bench: klpscope serve idle with 10k threads, beside node_exporter (host)");
    ensure_installed()?;
    build::checked(
        build::user_cargo("bench").args(["--package", "livepatch-user", "--bench", "serve_idle"]),
        "the serve idle benchmark",
    )?;
    println!("bench: klpscope serve idle with eBPF (VM)");
    let script = cache::workspace_root().join("livepatch-user/benches/serve_idle_vm.sh");
    let code = vm::run_script(vm::Series::V6_12, Vec::new(), script)?;
    if code != ExitCode::SUCCESS {
        anyhow::bail!("the serve idle benchmark in the VM failed");
    }
    Ok(())
}
