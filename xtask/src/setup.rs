//! Installs, once, what building eBPF needs: nightly's rust-src and a
//! bpf-linker built against the nightly toolchain's own LLVM.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::cache;

const BPF_LINKER_VERSION: &str = "0.13.0";

/// What the eBPF build needs from setup.
pub struct Toolchain {
    /// Folder holding `bpf-linker`, to put first on PATH.
    pub bpf_linker_dir: PathBuf,
    /// Folder holding nightly's libLLVM, which bpf-linker loads at run time.
    pub llvm_lib_dir: PathBuf,
}

pub fn run() -> Result<Toolchain> {
    let started = Instant::now();
    ensure_nightly()?;
    ensure_rust_src()?;
    let toolchain = ensure_bpf_linker()?;
    println!("setup: ready ({:.1}s)", started.elapsed().as_secs_f64());
    Ok(toolchain)
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .with_context(|| format!("cannot run `{program}`: is it installed and on PATH?"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ensure_nightly() -> Result<()> {
    let toolchains = output("rustup", &["toolchain", "list"]).context(
        "rustup is needed to build eBPF (nightly with rust-src); install it from rustup.rs",
    )?;
    if toolchains.lines().any(|l| l.starts_with("nightly")) {
        return Ok(());
    }
    println!("setup: installing the nightly toolchain");
    output(
        "rustup",
        &["toolchain", "install", "nightly", "--profile", "minimal"],
    )
    .context("the nightly toolchain is missing and could not be installed")?;
    Ok(())
}

fn ensure_rust_src() -> Result<()> {
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    let started = Instant::now();
    println!("setup: adding rust-src to nightly (needed by -Z build-std=core)");
    output(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    )
    .context("could not add rust-src to the nightly toolchain")?;
    println!(
        "setup: rust-src added ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// nightly's libLLVM, e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`, and its
/// major version.
fn nightly_llvm() -> Result<(PathBuf, String, u32)> {
    let sysroot = output("rustc", &["+nightly", "--print", "sysroot"])?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let name = std::fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let major = name
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot read the LLVM version from {name}"))?;
    Ok((lib.join(&name), name, major))
}

fn ensure_bpf_linker() -> Result<Toolchain> {
    let (llvm, llvm_name, major) = nightly_llvm()?;
    // Keyed by nightly's LLVM build: a new nightly needs a new linker.
    let root = cache::dir().join("bpf-linker").join(&llvm_name);
    let prefix = root.join("llvm");
    let llvm_lib_dir = prefix.join("lib");
    let bin_dir = root.join("bin");
    let linker = bin_dir.join("bpf-linker");
    let toolchain = Toolchain {
        bpf_linker_dir: bin_dir.clone(),
        llvm_lib_dir: llvm_lib_dir.clone(),
    };
    if works(&linker, &llvm_lib_dir) {
        return Ok(toolchain);
    }
    let started = Instant::now();
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} from crates.io against nightly's LLVM {major} (about 2 minutes on 2 cores)"
    );
    std::fs::create_dir_all(&llvm_lib_dir)?;
    for link in ["libLLVM.so".to_string(), llvm_name.clone()] {
        let path = llvm_lib_dir.join(link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&llvm, &path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    let status = Command::new("cargo")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{major}"))
        .arg("--root")
        .arg(&root)
        .env("LLVM_PREFIX", &prefix)
        .env_remove("RUSTUP_TOOLCHAIN")
        .status()
        .context("cannot run cargo install")?;
    if !status.success() || !works(&linker, &llvm_lib_dir) {
        bail!(
            "could not build bpf-linker {BPF_LINKER_VERSION} with feature llvm-{major} \
             (needs crates.io and nightly's {llvm_name}); see cargo's output above"
        );
    }
    println!(
        "setup: bpf-linker built ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(toolchain)
}

fn works(linker: &Path, llvm_lib_dir: &Path) -> bool {
    Command::new(linker)
        .arg("--version")
        .env("LD_LIBRARY_PATH", llvm_lib_dir)
        .output()
        .is_ok_and(|o| o.status.success())
}
