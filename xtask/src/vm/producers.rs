//! The livepatch producers' own init code, which tests/modules'
//! klp_test_kpatch and klp_test_klpbuild link with: taken from Debian's
//! packages into `<cache>/producers/` on first use, never copied into the
//! repository.
//!
//! - kpatch-build (Debian trixie's `kpatch-build` package):
//!   /usr/share/kpatch/patch/{patch-hook.c, livepatch-patch-hook.c,
//!   kpatch-patch.h, kpatch.lds.S};
//! - klp-build (Debian trixie-backports' `linux-source-7.x`, the package
//!   `linux-source` depends on): scripts/livepatch/init.c, as
//!   `klp-build-init.c`.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::apt;
use crate::{build, cache};

const KPATCH_PACKAGE: &str = "kpatch-build";
const KPATCH_DIR: &str = "usr/share/kpatch/patch";
const KPATCH_FILES: [&str; 4] = [
    "patch-hook.c",
    "livepatch-patch-hook.c",
    "kpatch-patch.h",
    "kpatch.lds.S",
];
const KLP_BUILD_INIT: &str = "scripts/livepatch/init.c";
const KLP_BUILD_INIT_AS: &str = "klp-build-init.c";

/// The producers' files, to build next to tests/modules' own.
pub fn sources() -> Result<Vec<PathBuf>> {
    let kpatch = kpatch_build()?;
    let klp_build = klp_build()?;
    let mut files: Vec<PathBuf> = KPATCH_FILES.iter().map(|f| kpatch.join(f)).collect();
    files.push(klp_build.join(KLP_BUILD_INIT_AS));
    Ok(files)
}

fn kpatch_build() -> Result<PathBuf> {
    let dir = cache::dir().join("producers").join(KPATCH_PACKAGE);
    fetch_once(&dir, |staging| {
        let debs = staging.join("debs");
        fs::create_dir_all(&debs)?;
        apt::TRIXIE
            .download(&[KPATCH_PACKAGE.to_string()], &debs)
            .context("kpatch's init code comes from Debian trixie's kpatch-build")?;
        let root = staging.join("root");
        apt::extract(&debs, &root)?;
        for file in KPATCH_FILES {
            fs::copy(root.join(KPATCH_DIR).join(file), staging.join(file))
                .with_context(|| format!("no {KPATCH_DIR}/{file} in {KPATCH_PACKAGE}"))?;
        }
        fs::remove_dir_all(&debs)?;
        fs::remove_dir_all(&root)?;
        Ok(())
    })?;
    Ok(dir)
}

fn klp_build() -> Result<PathBuf> {
    let archive = &apt::TRIXIE_BACKPORTS;
    let package = archive
        .depends("linux-source")?
        .into_iter()
        .find(|p| p.starts_with("linux-source-"))
        .context("Debian trixie-backports' linux-source depends on no linux-source-X.Y")?;
    let dir = cache::dir().join("producers").join(&package);
    fetch_once(&dir, |staging| {
        let debs = staging.join("debs");
        fs::create_dir_all(&debs)?;
        println!("vm: fetching {package} for klp-build's init code (about 170 MB, once)");
        archive.download(std::slice::from_ref(&package), &debs)?;
        let deb = fs::read_dir(&debs)?
            .filter_map(|e| Some(e.ok()?.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| format!("apt-get download {package} left no .deb"))?;
        extract_from_source(&deb, &package, staging)?;
        fs::remove_dir_all(&debs)?;
        Ok(())
    })?;
    Ok(dir)
}

/// `scripts/livepatch/init.c` out of the source tarball in `deb`, without
/// unpacking the rest (about 1.5 GB).
fn extract_from_source(deb: &Path, package: &str, staging: &Path) -> Result<()> {
    let script = format!(
        "dpkg-deb --fsys-tarfile \"$1\" | tar -xO ./usr/src/{package}.tar.xz | xz -dc \
         | tar -x -C \"$2\" {package}/{KLP_BUILD_INIT}"
    );
    build::checked(
        Command::new("bash")
            .args(["-o", "pipefail", "-c", &script, "sh"])
            .arg(deb)
            .arg(staging),
        &format!("extracting {KLP_BUILD_INIT} from {package}"),
    )?;
    let extracted = staging.join(package).join(KLP_BUILD_INIT);
    if !extracted.is_file() {
        bail!("{package} has no {KLP_BUILD_INIT}");
    }
    fs::rename(&extracted, staging.join(KLP_BUILD_INIT_AS))?;
    fs::remove_dir_all(staging.join(package))?;
    Ok(())
}

/// Runs `fetch` into a staging folder and publishes it as `dir`, unless a
/// complete `dir` is there already.
fn fetch_once(dir: &Path, fetch: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if dir.join(cache::COMPLETE).exists() {
        return Ok(());
    }
    let staging = dir.with_file_name(format!(
        "{}.partial-{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    fetch(&staging)?;
    cache::publish(&staging, dir)
}
