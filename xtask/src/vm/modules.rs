//! Our test kernel modules (tests/modules, with the producers' init code
//! of producers.rs), built against a kernel's cached headers and cached by
//! kernel release and source hash.
use std::{fs, path::PathBuf, process::Command, time::Instant};

use anyhow::{Context, Result, bail};

use super::{
    Series,
    guest::TEST_DIR,
    kernel::{self, Kernel},
};
use crate::cache;

/// The module of another series' build that guests get, and where.
const FOREIGN_MODULE: &str = "klp_test_patch_cmdline.ko";

/// A test module built for `series`' neighbour (another kernel of the lab),
/// as a guest file: `/lib/klpscope-test/foreign/klp_test_patch_cmdline.ko`.
/// Prepares that kernel's headers and modules on first use (cached).
pub fn foreign(series: Series) -> Result<Vec<(PathBuf, String)>> {
    let other = kernel::prepare(series.neighbour())?;
    let module = build(&other)?
        .into_iter()
        .find(|m| m.file_name().is_some_and(|n| n == FOREIGN_MODULE))
        .with_context(|| {
            format!(
                "no {FOREIGN_MODULE} among the modules built for {}",
                other.release()
            )
        })?;
    Ok(vec![(
        module,
        format!("{TEST_DIR}/foreign/{FOREIGN_MODULE}"),
    )])
}

/// Builds (or reuses) the modules; returns the .ko files.
pub fn build(kernel: &Kernel) -> Result<Vec<PathBuf>> {
    let sources = cache::workspace_root().join("tests/modules");
    let mut files = source_files(&sources)?;
    // The producers' own init code, linked into klp_test_kpatch and
    // klp_test_klpbuild.
    files.extend(super::producers::sources()?);
    let mut hash = cache::Fnv::default();
    for file in &files {
        hash.add(file.file_name().unwrap_or_default().as_encoded_bytes());
        hash.add(&fs::read(file)?);
    }
    // CC= and PAHOLE= (toolchain.rs): a different compiler, different modules.
    let make_args = kernel.make_args();
    for arg in &make_args {
        hash.add(arg.as_bytes());
    }
    let name = format!("{}-{:016x}", kernel.release(), hash.value());
    let dir = cache::dir().join("modules").join(&name);
    if !dir.join(cache::COMPLETE).exists() {
        let started = Instant::now();
        // Built under a name of our own, then published: concurrent runs
        // must not build in each other's folder.
        let staging = dir.with_file_name(format!("{name}.partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging)?;
        for file in &files {
            fs::copy(file, staging.join(file.file_name().unwrap_or_default()))?;
        }
        let out = Command::new("make")
            .arg("-C")
            .arg(kernel.headers())
            .arg(format!("M={}", staging.display()))
            .args(&make_args)
            .args(["-j2", "modules"])
            .output()
            .context("cannot run make: is it installed?")?;
        if !out.status.success() {
            let log = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            for line in tail.iter().rev() {
                eprintln!("  {line}");
            }
            // The one line that says what broke: the first error, else
            // the last line.
            let cause = log
                .lines()
                .find(|l| l.contains("error:") || l.contains("Error ") || l.contains("not found"))
                .or_else(|| log.lines().rfind(|l| !l.trim().is_empty()))
                .unwrap_or("")
                .trim();
            bail!(
                "building the test modules against {} failed: {cause}",
                kernel.release()
            );
        }
        cache::publish(&staging, &dir)?;
        println!(
            "vm: test modules built for {} ({:.1}s)",
            kernel.release(),
            started.elapsed().as_secs_f64()
        );
    }
    let mut modules: Vec<PathBuf> = fs::read_dir(&dir)?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ko"))
        .collect();
    modules.sort();
    Ok(modules)
}

fn source_files(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}
