//! Debian's packaged kernels: the current version of a series resolved at
//! run time from Debian's archive (a private apt configuration per suite),
//! its image, config and build headers extracted into the cache, with what
//! the headers need to build modules on this host (toolchain.rs).
use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use super::{Series, apt, real, toolchain};
use crate::cache;

/// An extracted Debian kernel.
pub struct Kernel {
    /// Debian's ABI name, e.g. `6.12.117+deb12`, `6.1.0-56` or `7.3.4+deb13`;
    /// for a lab build, its release.
    pub abi: String,
    /// The cache folder: `root` (the extracted packages) and `tools`.
    dir: PathBuf,
    root: PathBuf,
    /// A kernel built from source by real.rs instead.
    built: Option<real::Built>,
}

impl Kernel {
    fn new(abi: &str, dir: PathBuf) -> Kernel {
        Kernel {
            abi: abi.to_string(),
            root: dir.join("root"),
            dir,
            built: None,
        }
    }

    fn lab_build(built: real::Built) -> Kernel {
        Kernel {
            abi: built.release.clone(),
            dir: built.out.clone(),
            root: built.out.clone(),
            built: Some(built),
        }
    }

    /// `uname -r` in the guest.
    pub fn release(&self) -> String {
        match &self.built {
            Some(built) => built.release.clone(),
            None => format!("{}-amd64", self.abi),
        }
    }

    /// Up to 6.12 the image package holds /boot/vmlinuz-RELEASE and
    /// /boot/config-RELEASE; from 7.x, linux-binary-ABI holds
    /// /usr/lib/modules/RELEASE/vmlinuz and linux-base-ABI the config there.
    fn split_layout(&self) -> bool {
        self.built.is_none() && self.modules_dir().join("vmlinuz").exists()
    }

    fn modules_dir(&self) -> PathBuf {
        self.root
            .join(format!("usr/lib/modules/{}", self.release()))
    }

    pub fn vmlinuz(&self) -> PathBuf {
        if let Some(built) = &self.built {
            built.out.join("vmlinuz")
        } else if self.split_layout() {
            self.modules_dir().join("vmlinuz")
        } else {
            self.root.join(format!("boot/vmlinuz-{}", self.release()))
        }
    }

    /// The kernel's build configuration.
    pub fn config(&self) -> PathBuf {
        if let Some(built) = &self.built {
            built.out.join("config")
        } else if self.split_layout() {
            self.modules_dir().join("config")
        } else {
            self.root.join(format!("boot/config-{}", self.release()))
        }
    }

    /// Files the guest has where an installed Debian system has them:
    /// the config as /boot/config-RELEASE, and on 7.x also as
    /// /usr/lib/modules/RELEASE/config (host path, guest path).
    pub fn guest_files(&self) -> Vec<(PathBuf, String)> {
        let release = self.release();
        let mut files = vec![(self.config(), format!("/boot/config-{release}"))];
        if self.split_layout() {
            files.push((self.config(), format!("/usr/lib/modules/{release}/config")));
        }
        files
    }

    /// The folder to pass to `make -C` for out-of-tree modules.
    pub fn headers(&self) -> PathBuf {
        if let Some(built) = &self.built {
            return built.tree.clone();
        }
        self.root
            .join(format!("usr/src/linux-headers-{}", self.release()))
    }

    /// Extra `make` arguments the headers need on this host (toolchain.rs).
    pub fn make_args(&self) -> Vec<String> {
        if self.built.is_some() {
            // Built here with this host's gcc-12 and pahole.
            return Vec::new();
        }
        toolchain::make_args(&self.dir)
    }
}

/// The series' current kernel, downloaded and extracted on first use.
pub fn prepare(series: Series) -> Result<Kernel> {
    if let Some(recipe) = real::recipe(series) {
        return Ok(Kernel::lab_build(recipe.built()?));
    }
    let archive = series.archive();
    let abi = resolve(series)?;
    let dir = cache::dir().join("kernels").join(&abi);
    let kernel = Kernel::new(&abi, dir.clone());
    if dir.join(cache::COMPLETE).exists() {
        return Ok(kernel);
    }
    let started = Instant::now();
    let image = format!("linux-image-{abi}-amd64");
    let binary = format!("linux-binary-{abi}-amd64");
    let headers = format!("linux-headers-{abi}-amd64");
    let mut packages = if archive.depends(&image)?.contains(&binary) {
        // 7.x: the image is a metapackage; vmlinuz and config come apart.
        vec![binary, format!("linux-base-{abi}-amd64"), headers.clone()]
    } else {
        vec![format!("{image}-unsigned"), headers.clone()]
    };
    // The arch headers include the -common headers and need kbuild's tools.
    packages.extend(
        archive
            .depends(&headers)?
            .into_iter()
            .filter(|p| p.starts_with("linux-headers-") || p.starts_with("linux-kbuild-")),
    );
    println!(
        "vm: downloading {} (Debian {})",
        packages.join(" "),
        archive.name
    );
    // Staged under a name of our own, then renamed: concurrent runs must
    // not extract into each other's folder.
    let staging = dir.with_file_name(format!("{abi}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let debs = staging.join("debs");
    fs::create_dir_all(&debs)?;
    archive.download(&packages, &debs)?;
    apt::extract(&debs, &staging.join("root"))?;
    fs::remove_dir_all(&debs)?;
    let staged = Kernel::new(&abi, staging.clone());
    if !staged.vmlinuz().is_file() || !staged.config().is_file() {
        bail!(
            "no vmlinuz or config for {} in {}: an unknown package layout",
            kernel.release(),
            packages.join(" ")
        );
    }
    fix_headers_makefile(&staging.join("root"), &kernel)?;
    // The image's own modules (up to 400 MB): the guest loads only ours.
    for modules in ["lib/modules", "usr/lib/modules"] {
        let distro_modules = staging.join(format!("root/{modules}/{}/kernel", kernel.release()));
        if distro_modules.exists() {
            fs::remove_dir_all(&distro_modules)
                .with_context(|| format!("cannot remove {}", distro_modules.display()))?;
        }
    }
    toolchain::adapt(&staging, &dir, &kernel.release())?;
    cache::publish(&staging, &dir)?;
    println!(
        "vm: kernel {} ready in {} ({:.1}s)",
        kernel.release(),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(kernel)
}

/// The ABI name the series' metapackage currently depends on.
fn resolve(series: Series) -> Result<String> {
    let meta = series.metapackage();
    let archive = series.archive();
    archive
        .depends(meta)?
        .iter()
        .filter_map(|p| p.strip_prefix("linux-image-")?.strip_suffix("-amd64"))
        .find(|abi| {
            abi.starts_with(series.prefix()) && abi.starts_with(|c: char| c.is_ascii_digit())
        })
        .map(str::to_string)
        .with_context(|| {
            format!(
                "Debian {}'s {meta} names no {}* kernel image",
                archive.name,
                series.prefix()
            )
        })
}

/// The arch headers' Makefile names the -common headers (and on 7.x its
/// own folder, as KBUILD_OUTPUT) by their absolute, installed paths; point
/// them into the cache instead.
fn fix_headers_makefile(staged_root: &Path, kernel: &Kernel) -> Result<()> {
    let headers = kernel.headers();
    let relative = headers.strip_prefix(&kernel.root)?;
    let makefile = staged_root.join(relative).join("Makefile");
    let text = fs::read_to_string(&makefile)
        .with_context(|| format!("cannot read {}", makefile.display()))?;
    let root = kernel.root.to_str().context("cache path is not UTF-8")?;
    let fixed = text
        .replace("include /usr/src/", &format!("include {root}/usr/src/"))
        .replace("=/usr/src/", &format!("={root}/usr/src/"));
    if !fixed.contains(&format!("include {root}/usr/src/")) {
        bail!(
            "unexpected {}: no `include /usr/src/...` to redirect",
            makefile.display()
        );
    }
    fs::write(&makefile, fixed)?;
    Ok(())
}
