//! Debian's packaged kernels: the current version of a series resolved at
//! run time, its image and build headers extracted into the cache.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use super::apt;
use crate::{build, cache};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Series {
    #[value(name = "6.12")]
    V6_12,
    #[value(name = "6.1")]
    V6_1,
}

impl Series {
    pub const ALL: [Series; 2] = [Series::V6_12, Series::V6_1];

    /// The metapackage that always depends on the series' current image.
    fn metapackage(self) -> &'static str {
        match self {
            Series::V6_12 => "linux-image-6.12-amd64",
            Series::V6_1 => "linux-image-amd64",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Series::V6_12 => "6.12.",
            Series::V6_1 => "6.1.",
        }
    }
}

/// An extracted Debian kernel.
pub struct Kernel {
    /// Debian's ABI name, e.g. `6.12.117+deb12` or `6.1.0-56`.
    pub abi: String,
    root: PathBuf,
}

impl Kernel {
    /// `uname -r` in the guest.
    pub fn release(&self) -> String {
        format!("{}-amd64", self.abi)
    }

    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release()))
    }

    /// The folder to pass to `make -C` for out-of-tree modules.
    pub fn headers(&self) -> PathBuf {
        self.root
            .join(format!("usr/src/linux-headers-{}", self.release()))
    }
}

/// The series' current kernel, downloaded and extracted on first use.
pub fn prepare(series: Series) -> Result<Kernel> {
    let abi = resolve(series)?;
    let dir = cache::dir().join("kernels").join(&abi);
    let kernel = Kernel {
        abi: abi.clone(),
        root: dir.join("root"),
    };
    if dir.join(super::lab::COMPLETE).exists() {
        return Ok(kernel);
    }
    let started = Instant::now();
    let headers = format!("linux-headers-{abi}-amd64");
    let mut packages = vec![format!("linux-image-{abi}-amd64-unsigned"), headers.clone()];
    // The arch headers include the -common headers and need kbuild's tools.
    packages.extend(
        apt::depends(&headers)?
            .into_iter()
            .filter(|p| p.starts_with("linux-headers-") || p.starts_with("linux-kbuild-")),
    );
    println!("vm: downloading {}", packages.join(" "));
    // Staged under a name of our own, then renamed: concurrent runs must
    // not extract into each other's folder.
    let staging = dir.with_file_name(format!("{abi}.partial-{}", std::process::id()));
    let debs = staging.join("debs");
    fs::create_dir_all(&debs)?;
    apt::download(&packages, &debs)?;
    for deb in fs::read_dir(&debs)? {
        let deb = deb?.path();
        build::checked(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(staging.join("root")),
            &format!("extracting {}", deb.display()),
        )?;
    }
    fix_headers_makefile(&staging.join("root"), &kernel)?;
    // The image's own modules (up to 400 MB): the guest loads only ours.
    let distro_modules = staging.join(format!("root/lib/modules/{}/kernel", kernel.release()));
    fs::remove_dir_all(&distro_modules)
        .with_context(|| format!("cannot remove {}", distro_modules.display()))?;
    fs::remove_dir_all(&debs)?;
    super::lab::publish(&staging, &dir)?;
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
    apt::depends(meta)?
        .iter()
        .filter_map(|p| p.strip_prefix("linux-image-")?.strip_suffix("-amd64"))
        .find(|abi| abi.starts_with(series.prefix()))
        .map(str::to_string)
        .with_context(|| {
            format!(
                "apt-cache names no {}* kernel image for {meta}",
                series.prefix()
            )
        })
}

/// The arch headers' Makefile includes the -common one by its absolute,
/// installed path; point it into the cache instead.
fn fix_headers_makefile(staged_root: &Path, kernel: &Kernel) -> Result<()> {
    let headers = kernel.headers();
    let relative = headers.strip_prefix(&kernel.root)?;
    let makefile = staged_root.join(relative).join("Makefile");
    let text = fs::read_to_string(&makefile)
        .with_context(|| format!("cannot read {}", makefile.display()))?;
    let root = kernel.root.to_str().context("cache path is not UTF-8")?;
    let fixed = text.replace("include /usr/src/", &format!("include {root}/usr/src/"));
    if fixed == text {
        bail!(
            "unexpected {}: no `include /usr/src/...` to redirect",
            makefile.display()
        );
    }
    fs::write(&makefile, fixed)?;
    Ok(())
}
