//! The VM lab: Debian kernels booted in qemu with klpscope, our test modules
//! and a scenario script; `vm-run`, `vm-test` and `demo`.
pub mod apt;
mod demo;
mod fixtures;
mod guest;
mod initramfs;
mod kernel;
mod lab;
mod modules;
mod producers;
mod qemu;
mod real;
mod scenarios;
mod series;
mod toolchain;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::Args;

pub use demo::{DemoArgs, demo, demo_test};
pub use fixtures::run as fixtures;

/// `cargo xtask real-fixtures`, all lab kernels or one.
pub fn real_fixtures(only: Option<Series>) -> Result<()> {
    if let Some(series) = only
        && real::recipe(series).is_none()
    {
        bail!(
            "real-fixtures builds lab-6.12 and lab-7.3, not {}",
            series.name()
        );
    }
    real::run(only)
}
pub use scenarios::{Kernels, test};
pub use series::Series;

use lab::Lab;

use crate::cache;

#[derive(Args)]
pub struct RunArgs {
    /// Debian kernel series to boot.
    #[arg(long, value_enum, default_value = "6.12")]
    kernel: Series,
    /// Extra file for the guest, HOST[:GUEST] (GUEST defaults to /root/<name>).
    #[arg(long = "file", value_name = "HOST[:GUEST]")]
    files: Vec<String>,
    /// Shell script to run as root in the guest.
    #[arg(long)]
    script: PathBuf,
    /// Seconds before the VM is killed and the run fails.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

fn script_path(script: &Path) -> Result<PathBuf> {
    let path = if script.is_relative() && !script.exists() {
        cache::workspace_root().join(script)
    } else {
        script.to_path_buf()
    };
    if !path.is_file() {
        bail!("no script at {}", script.display());
    }
    Ok(path)
}

fn parse_file(spec: &str) -> Result<(PathBuf, String)> {
    let (host, guest) = match spec.split_once(':') {
        Some((host, guest)) => (PathBuf::from(host), guest.to_string()),
        None => {
            let host = PathBuf::from(spec);
            let name = host.file_name().context("--file needs a file name")?;
            let guest = format!("/root/{}", name.to_string_lossy());
            (host, guest)
        }
    };
    if !host.is_file() {
        bail!("--file {spec}: no file at {}", host.display());
    }
    if !guest.starts_with('/') {
        bail!("--file {spec}: the guest path must be absolute");
    }
    Ok((host, guest))
}

/// Runs `script` in the VM with `files` (HOST:GUEST), as `vm-run` does.
pub fn run_script(kernel: Series, files: Vec<String>, script: PathBuf) -> Result<ExitCode> {
    run(RunArgs {
        kernel,
        files,
        script,
        timeout: 600,
    })
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let script = script_path(&args.script)?;
    let mut files = args
        .files
        .iter()
        .map(|f| parse_file(f))
        .collect::<Result<Vec<_>>>()?;
    let lab = Lab::prepare()?;
    let kernel = kernel::prepare(args.kernel)?;
    files.extend(modules::foreign(args.kernel)?);
    files.extend(real::guest_files(args.kernel)?);
    let machine = lab.machine(&kernel)?;
    println!(
        "vm: booting Debian kernel {} (qemu, {})",
        kernel.release(),
        machine.accel.name()
    );
    let timeout = Duration::from_secs(args.timeout);
    let report = lab.boot(&kernel, &machine, &script, &files, timeout, true)?;
    let secs = report.elapsed.as_secs_f64();
    match &report.outcome {
        &qemu::Outcome::Exited(status) => {
            println!(
                "vm: script exited with status {status} on {} ({secs:.1}s)",
                kernel.release()
            );
            Ok(ExitCode::from(status.clamp(0, 255) as u8))
        }
        outcome => {
            report.print_tail();
            bail!("{} on {} after {secs:.1}s", outcome, kernel.release())
        }
    }
}
