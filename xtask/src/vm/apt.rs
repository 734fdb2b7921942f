//! Debian packages through apt: host tools installed once, kernel packages
//! downloaded (never installed) for extraction into the cache.
use std::{
    path::Path,
    process::{Command, Output},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context, Result, bail};

static UPDATED: AtomicBool = AtomicBool::new(false);

fn apt(program: &str, args: &[&str], cwd: Option<&Path>) -> Result<Output> {
    let mut cmd = Command::new(program);
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{program}`: the VM lab needs a Debian host"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        bail!("`{program} {}` failed: {}", args.join(" "), last.trim());
    }
    Ok(out)
}

/// `apt-get update`, at most once per xtask run: package lists go stale as
/// Debian rotates kernel versions.
pub fn update() -> Result<()> {
    if UPDATED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    println!("vm: apt-get update");
    apt("apt-get", &["update", "-q"], None).map(|_| ())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| o.stdout.ends_with(b" installed"))
}

/// Installs whichever of `packages` is missing.
pub fn ensure_installed(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("vm: installing {}", missing.join(" "));
    update()?;
    // Another run (CI, a second xtask) may hold dpkg's lock for a while.
    let mut args = vec![
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-o",
        "DPkg::Lock::Timeout=300",
    ];
    args.extend(&missing);
    apt("apt-get", &args, None).with_context(|| {
        format!(
            "cannot install {} (root and apt access needed)",
            missing.join(" ")
        )
    })?;
    Ok(())
}

/// What `package` depends on, by name (`apt-cache depends`).
pub fn depends(package: &str) -> Result<Vec<String>> {
    let out = match apt("apt-cache", &["depends", package], None) {
        Ok(out) => out,
        Err(_) => {
            update()?;
            apt("apt-cache", &["depends", package], None)?
        }
    };
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends: "))
        .map(str::to_string)
        .collect())
}

/// Downloads the .deb files of `packages` into `dir`.
pub fn download(packages: &[String], dir: &Path) -> Result<()> {
    let args: Vec<&str> = std::iter::once("download")
        .chain(packages.iter().map(String::as_str))
        .collect();
    if apt("apt-get", &args, Some(dir)).is_ok() {
        return Ok(());
    }
    // Stale lists name versions the mirror no longer has.
    update()?;
    apt("apt-get", &args, Some(dir)).map(|_| ())
}
