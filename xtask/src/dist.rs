//! `cargo xtask dist`: the Debian package an administrator installs. The
//! release binary with its eBPF object embedded, a manual page per command
//! and the bash, zsh and fish completions, all generated from the clap
//! definitions by `klpscope-dist-docs`, packaged by cargo-deb as
//! livepatch-user's `[package.metadata.deb]` lays them out.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{build, cache, tools};

const CARGO_DEB_VERSION: &str = "3.8.0";

/// Where klpscope-dist-docs writes the pages and scripts: the assets'
/// `target/release/dist` in livepatch-user's Cargo.toml.
fn docs_dir() -> PathBuf {
    build::klpscope_binary(true)
        .parent()
        .expect("the binary lives in a profile folder")
        .join("dist")
}

fn deb_dir() -> PathBuf {
    build::target_dir().join("debian")
}

/// Builds the package; its path.
pub fn package() -> Result<PathBuf> {
    let started = Instant::now();
    build::all(true)?;
    let generator = build::klpscope_binary(true).with_file_name("klpscope-dist-docs");
    build::checked(
        Command::new(&generator).arg(docs_dir()),
        "writing the manual pages and completions (klpscope-dist-docs)",
    )?;
    let cargo_deb = tools::cargo_installed(
        "cargo-deb",
        CARGO_DEB_VERSION,
        "about four minutes on 2 cores",
    )?;

    // One package in the folder: the one this run made.
    let out = deb_dir();
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    build::checked(
        Command::new(cargo_deb.join("cargo-deb"))
            .current_dir(cache::workspace_root())
            .env_remove("RUSTUP_TOOLCHAIN")
            // Built above, with the eBPF object that cargo-deb would not
            // know to build first.
            .args(["--no-build", "--package", "livepatch-user", "--output"])
            .arg(&out),
        "packaging with cargo-deb",
    )?;
    let deb = only_deb(&out)?;
    println!(
        "dist: {} ({:.1}s)",
        deb.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(deb)
}

fn only_deb(dir: &Path) -> Result<PathBuf> {
    let debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    match debs.as_slice() {
        [deb] => Ok(deb.clone()),
        _ => bail!(
            "cargo-deb left {} .deb files in {}, expected one",
            debs.len(),
            dir.display()
        ),
    }
}
