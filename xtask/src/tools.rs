//! Cargo-installed tools that xtask needs (cargo-fuzz, cargo-deb): each
//! built once from crates.io into the cache, keyed by its version, so that
//! nothing is installed on the machine by hand and a fresh clone reuses it.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::cache;

/// The folder holding `crate_name`'s binary (also named `crate_name`), to
/// run it or to put first on PATH; `cargo install --locked` into the cache
/// the first time. `took` says how long that is, for the message.
pub fn cargo_installed(crate_name: &str, version: &str, took: &str) -> Result<PathBuf> {
    let root = cache::dir().join(crate_name).join(version);
    let bin_dir = root.join("bin");
    let binary = bin_dir.join(crate_name);
    if works(&binary) {
        return Ok(bin_dir);
    }
    let started = Instant::now();
    println!("xtask: installing {crate_name} {version} from crates.io into the cache ({took})");
    let status = Command::new("cargo")
        .args(["install", crate_name, "--locked", "--version", version])
        .arg("--root")
        .arg(&root)
        .env_remove("RUSTUP_TOOLCHAIN")
        .status()
        .context("cannot run cargo install")?;
    if !status.success() || !works(&binary) {
        bail!(
            "could not install {crate_name} {version} into {} (needs crates.io); \
             see cargo's output above",
            root.display()
        );
    }
    println!(
        "xtask: {crate_name} installed ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(bin_dir)
}

fn works(binary: &Path) -> bool {
    Command::new(binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}
