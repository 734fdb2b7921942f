//! The host side of a boot: tools installed, klpscope built, initramfs
//! packed, accelerator chosen.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;

use super::{apt, guest, kernel, modules, qemu};
use crate::{build, cache};

/// A KVM guest that works reaches /init in seconds.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Host packages the lab needs: the emulator, the guest's userland and
/// pahole, without which kbuild cannot finish a module (BTF).
const HOST_PACKAGES: [&str; 8] = [
    "qemu-system-x86",
    "busybox-static",
    "pahole",
    "make",
    "gcc-12",
    // Scenarios assert on klpscope's JSON with it.
    "jq",
    // Scenarios list the kernel's eBPF programs with it (06-ebpf-detach).
    "bpftool",
    // promtool checks klpscope metrics' expositions (02-sleeper-blocks).
    "prometheus",
];

/// livepatch-user's example that validates klpscope's JSON in the guest.
const JSON_CHECK: &str = "json_check";

/// Everything a boot needs on the host, built or fetched once per xtask run.
pub struct Lab {
    klpscope: PathBuf,
    /// Holds the scenarios' JSON to the checked-in schemas, in the guest.
    json_check: PathBuf,
}

impl Lab {
    pub fn prepare() -> Result<Lab> {
        apt::ensure_installed(&HOST_PACKAGES)?;
        // The release build, as an administrator runs it: under TCG a debug
        // build spends many seconds parsing BTF before watch is ready.
        build::all(true)?;
        let mut json_check = build::user_cargo("build");
        json_check.args([
            "--release",
            "--package",
            "livepatch-user",
            "--example",
            JSON_CHECK,
        ]);
        build::checked(&mut json_check, "building the lab's JSON Schema checker")?;
        Ok(Lab {
            klpscope: build::klpscope_binary(true),
            json_check: build::release_example(JSON_CHECK),
        })
    }

    /// Packs an initramfs for `script` on `kernel` and returns its path.
    pub fn initramfs(
        &self,
        kernel: &kernel::Kernel,
        script: &Path,
        files: &[(PathBuf, String)],
    ) -> Result<PathBuf> {
        let modules = modules::build(kernel)?;
        let dir = cache::dir().join("vm");
        std::fs::create_dir_all(&dir)?;
        // Per process and boot: concurrent runs and boots must not
        // overwrite each other's image.
        static BOOTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let boot = BOOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = dir.join(format!("initramfs-{}-{boot}.cpio", std::process::id()));
        guest::Guest {
            klpscope: &self.klpscope,
            json_check: &self.json_check,
            modules: &modules,
            script,
            files,
            kernel_files: &kernel.guest_files(),
        }
        .pack(&out)?;
        Ok(out)
    }

    /// Boots `script` on `machine` with a fresh initramfs.
    pub fn boot(
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
    pub fn machine(&self, kernel: &kernel::Kernel) -> Result<qemu::Machine> {
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
                        format!("{}; using TCG", report.outcome)
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
