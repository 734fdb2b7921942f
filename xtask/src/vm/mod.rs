//! The VM lab: Debian kernels booted in qemu with klpscope, our test modules
//! and a scenario script; `vm-run`, `vm-test` and `demo`.
mod apt;
mod guest;
mod initramfs;
mod kernel;
mod modules;
mod qemu;
mod scenarios;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::Args;

pub use kernel::Series;
pub use scenarios::{Kernels, test};

use crate::{build, cache};

/// Host packages the lab needs: the emulator, the guest's userland and
/// pahole, without which kbuild cannot finish a module (BTF).
/// A KVM guest that works reaches /init in seconds.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

const HOST_PACKAGES: [&str; 5] = [
    "qemu-system-x86",
    "busybox-static",
    "pahole",
    "make",
    "gcc-12",
];

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

#[derive(Args)]
pub struct DemoArgs {
    #[arg(long, value_enum, default_value = "6.12")]
    kernel: Series,
    /// Script to run before the interactive shell.
    #[arg(long, default_value = "tests/scenarios/demo.sh")]
    script: PathBuf,
}

/// Everything a boot needs on the host, built or fetched once per xtask run.
struct Lab {
    klpscope: PathBuf,
}

impl Lab {
    fn prepare() -> Result<Lab> {
        apt::ensure_installed(&HOST_PACKAGES)?;
        build::all(false)?;
        Ok(Lab {
            klpscope: build::klpscope_binary(false),
        })
    }

    /// Packs an initramfs for `script` on `kernel` and returns its path.
    fn initramfs(
        &self,
        kernel: &kernel::Kernel,
        script: &Path,
        files: &[(PathBuf, String)],
    ) -> Result<PathBuf> {
        let modules = modules::build(kernel)?;
        let dir = cache::dir().join("vm");
        std::fs::create_dir_all(&dir)?;
        // Per process: concurrent runs must not overwrite each other's image.
        let out = dir.join(format!("initramfs-{}.cpio", std::process::id()));
        guest::Guest {
            klpscope: &self.klpscope,
            modules: &modules,
            script,
            files,
        }
        .pack(&out)?;
        Ok(out)
    }

    /// Boots `script` on `machine` with a fresh initramfs.
    fn boot(
        &self,
        kernel: &kernel::Kernel,
        machine: &qemu::Machine,
        script: &Path,
        files: &[(PathBuf, String)],
        timeout: Duration,
        echo: bool,
    ) -> Result<qemu::Report> {
        let initramfs = self.initramfs(kernel, script, files)?;
        let report = machine.boot(&initramfs, timeout, echo);
        let _ = std::fs::remove_file(&initramfs);
        report
    }

    /// How to boot `kernel`: KVM if a probe boot under it once reached /init
    /// and exited cleanly, else TCG. The verdict is cached per kernel; delete
    /// `<cache>/vm/kvm-<release>` to probe again.
    fn machine(&self, kernel: &kernel::Kernel) -> Result<qemu::Machine> {
        let mut machine = qemu::Machine {
            vmlinuz: kernel.vmlinuz(),
            accel: qemu::Accel::Kvm,
        };
        let kvm_usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let dir = cache::dir().join("vm");
        let verdict = dir.join(format!("kvm-{}", kernel.release()));
        let works = match std::fs::read_to_string(&verdict) {
            _ if !kvm_usable => false,
            Ok(text) => text.trim() == "works",
            Err(_) => {
                std::fs::create_dir_all(&dir)?;
                let probe = dir.join(format!("kvm-probe-{}.sh", std::process::id()));
                std::fs::write(&probe, "exit 0\n")?;
                let report = self.boot(kernel, &machine, &probe, &[], KVM_PROBE_TIMEOUT, false);
                let _ = std::fs::remove_file(&probe);
                let report = report?;
                let works = matches!(report.outcome, qemu::Outcome::Exited(0));
                println!(
                    "vm: KVM probe on {}: {}",
                    kernel.release(),
                    if works {
                        "the guest boots; using KVM".to_string()
                    } else {
                        format!("{}; using TCG", scenarios::describe(&report.outcome))
                    }
                );
                std::fs::write(&verdict, if works { "works" } else { "fails" })?;
                works
            }
        };
        if !works {
            machine.accel = qemu::Accel::Tcg;
        }
        Ok(machine)
    }
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

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let script = script_path(&args.script)?;
    let files = args
        .files
        .iter()
        .map(|f| parse_file(f))
        .collect::<Result<Vec<_>>>()?;
    let lab = Lab::prepare()?;
    let kernel = kernel::prepare(args.kernel)?;
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
            bail!(
                "{} on {} after {secs:.1}s",
                scenarios::describe(outcome),
                kernel.release()
            )
        }
    }
}

pub fn demo(args: DemoArgs) -> Result<ExitCode> {
    let script = script_path(&args.script)?;
    let lab = Lab::prepare()?;
    let kernel = kernel::prepare(args.kernel)?;
    let machine = lab.machine(&kernel)?;
    let initramfs = lab.initramfs(&kernel, &script, &[])?;
    println!(
        "vm: booting Debian kernel {} (qemu, {}) with the console here; Ctrl-A X quits qemu",
        kernel.release(),
        machine.accel.name()
    );
    let status = machine.interactive(&initramfs);
    let _ = std::fs::remove_file(&initramfs);
    Ok(if status?.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The file that marks a cache folder as finished.
const COMPLETE: &str = "complete";

/// Moves a finished `staging` folder to `dir`, marking it complete. When
/// another run published the same work first, keeps theirs.
fn publish(staging: &Path, dir: &Path) -> Result<()> {
    std::fs::write(staging.join(COMPLETE), "")?;
    if dir.exists() && !dir.join(COMPLETE).exists() {
        // Left by an interrupted run of an older layout.
        std::fs::remove_dir_all(dir)?;
    }
    if std::fs::rename(staging, dir).is_err() {
        std::fs::remove_dir_all(staging)?;
        if !dir.join(COMPLETE).exists() {
            bail!("cannot move {} to {}", staging.display(), dir.display());
        }
    }
    Ok(())
}
