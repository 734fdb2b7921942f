//! Builds the eBPF object (nightly, bpf target, bpf-linker) and the klpscope
//! binary that embeds it.
use std::{
    ffi::OsString,
    path::PathBuf,
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{cache, setup};

pub const EBPF_TARGET: &str = "bpfel-unknown-none";

/// Where cargo puts what it builds: CARGO_TARGET_DIR when set (a relative
/// one is read from the workspace root, as cargo reads it), else target/.
pub fn target_dir() -> PathBuf {
    let root = cache::workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// The linked eBPF object that `klpscope` embeds.
pub fn ebpf_object() -> PathBuf {
    target_dir()
        .join(EBPF_TARGET)
        .join("release")
        .join("livepatch-ebpf")
}

/// The klpscope binary of a build profile.
pub fn klpscope_binary(release: bool) -> PathBuf {
    let profile = if release { "release" } else { "debug" };
    target_dir().join(profile).join("klpscope")
}

/// An example of livepatch-user built with `--release`.
pub fn release_example(name: &str) -> PathBuf {
    target_dir().join("release/examples").join(name)
}

/// A nightly cargo command for the eBPF crate, with bpf-linker on PATH.
pub fn ebpf_cargo(toolchain: &setup::Toolchain, subcommand: &str) -> Command {
    let mut path = OsString::from(&toolchain.bpf_linker_dir);
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    let mut cmd = Command::new("cargo");
    cmd.current_dir(cache::workspace_root())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTFLAGS")
        .env("PATH", path)
        .env("LD_LIBRARY_PATH", &toolchain.llvm_lib_dir)
        // BTF in the object: aya needs it to load fentry/fexit programs.
        .env(
            "CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS",
            "-C debuginfo=2 -C link-arg=--btf",
        )
        .args(["+nightly", subcommand, "--package", "livepatch-ebpf"])
        .args(["--target", EBPF_TARGET, "-Z", "build-std=core", "--release"]);
    cmd
}

pub fn ebpf(toolchain: &setup::Toolchain) -> Result<PathBuf> {
    let started = Instant::now();
    let mut cmd = ebpf_cargo(toolchain, "build");
    cmd.args(["--bin", "livepatch-ebpf"]);
    checked(&mut cmd, "building the eBPF object")?;
    let object = ebpf_object();
    println!(
        "build: eBPF object {} ({:.1}s)",
        object.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(object)
}

/// A stable cargo command for the user-space crates, pointed at the eBPF
/// object to embed.
pub fn user_cargo(subcommand: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(cache::workspace_root())
        .env("KLPSCOPE_EBPF_OBJECT", ebpf_object())
        .arg(subcommand);
    cmd
}

pub fn all(release: bool) -> Result<()> {
    let toolchain = setup::run()?;
    ebpf(&toolchain)?;
    let mut cmd = user_cargo("build");
    cmd.args(["--package", "livepatch-user"]);
    if release {
        cmd.arg("--release");
    }
    checked(&mut cmd, "building klpscope")?;
    println!("build: {}", klpscope_binary(release).display());
    Ok(())
}

pub fn run(release: bool, args: &[String]) -> Result<ExitCode> {
    all(release)?;
    let binary = klpscope_binary(release);
    let mut cmd = if is_root() {
        Command::new(&binary)
    } else if which("sudo") {
        eprintln!("xtask: klpscope reads root-only kernel state; running it with sudo");
        let mut cmd = Command::new("sudo");
        cmd.arg(&binary);
        cmd
    } else {
        eprintln!(
            "xtask: not root and no sudo: klpscope runs, but kernel stacks and eBPF need root"
        );
        Command::new(&binary)
    };
    let status = cmd
        .args(args)
        .status()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}

/// Effective root, as klpscope needs it for kernel stacks and eBPF.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

pub fn checked(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
