//! `cargo xtask real-fixtures`: livepatch modules made by the real tools,
//! kpatch-build and klp-build, from a real source patch
//! (tests/real-patches/), each for a small lab kernel built here from
//! Debian's own kernel source package; the modules (debug info stripped)
//! and what a test needs to know about their kernel are written to
//! livepatch-user/tests/fixtures/real/. The lab kernels boot as
//! `--kernel lab-6.12` and `--kernel lab-7.3` of vm-run and vm-test.
//!
//! Everything is cached under `<cache>/real/`: the source packages
//! (`debs/`), the unpacked trees (`linux-VERSION/`, built in place, so a
//! second run only rebuilds what changed), kpatch-build's package
//! (`kpatch-VERSION/`) and, per recipe, the finished kernel and module
//! (`out/NAME-HASH/`, HASH over the patch and the two scripts). Never part
//! of `cargo xtask test`: each kernel takes half an hour or more on 2 cores.
//!
//! The steps are shell (real_config.sh, real_build.sh), run here with the
//! paths filled in; they also run by hand.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use super::{Series, apt, guest::TEST_DIR};
use crate::{build, cache};

/// Host packages the kernel builds and the tools need.
const HOST_PACKAGES: [&str; 12] = [
    "make",
    "gcc-12",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "pahole",
    // klp-build: its objtool needs xxhash; it diffs patches with these.
    "libxxhash-dev",
    "patchutils",
    "gawk",
    "xz-utils",
];

const CONFIG_SCRIPT: &str = include_str!("real_config.sh");
const BUILD_SCRIPT: &str = include_str!("real_build.sh");

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    KpatchBuild,
    KlpBuild,
}

/// One lab kernel and the module the real tool makes of it.
pub struct Recipe {
    pub series: Series,
    archive: &'static apt::Archive,
    /// Debian's source package of the kernel.
    source: &'static str,
    tool: Tool,
    /// Under tests/real-patches/.
    patch: &'static str,
    /// The module's file name without `.ko`.
    pub module: &'static str,
}

pub const RECIPES: [Recipe; 2] = [
    Recipe {
        series: Series::Lab6_12,
        archive: &apt::BOOKWORM,
        source: "linux-source-6.12",
        tool: Tool::KpatchBuild,
        patch: "pipe-read-6.12-kpatch.patch",
        module: "livepatch-pipe-read-kpatch",
    },
    Recipe {
        series: Series::Lab7_3,
        archive: &apt::TRIXIE_BACKPORTS,
        source: "linux-source-7.3",
        tool: Tool::KlpBuild,
        patch: "pipe-read-7.3-klp-build.patch",
        module: "livepatch-pipe-read-klp",
    },
];

pub fn recipe(series: Series) -> Option<&'static Recipe> {
    RECIPES.iter().find(|r| r.series == series)
}

/// A lab kernel built from source, with its module.
pub struct Built {
    /// `make kernelrelease`, e.g. `6.12.118-klplab`.
    pub release: String,
    /// vmlinuz, config, System.map, release, times, MODULE.ko.
    pub out: PathBuf,
    /// The built tree: the headers that out-of-tree modules build against.
    pub tree: PathBuf,
}

/// The committed real modules a guest of `series` gets, as
/// `/lib/klpscope-test/real/MODULE.ko`: a lab kernel its own, to apply;
/// Debian's kernel of the same series the lab's, which `check --module`
/// must refuse by its vermagic.
pub fn guest_files(series: Series) -> Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    for recipe in RECIPES
        .iter()
        .filter(|r| r.series == series || r.series.neighbour() == series)
    {
        let fixture = fixtures_dir().join(format!("{}.ko", recipe.module));
        if !fixture.is_file() {
            bail!(
                "no {}: `cargo xtask real-fixtures --kernel {}` makes it",
                fixture.display(),
                recipe.series.name()
            );
        }
        files.push((fixture, format!("{TEST_DIR}/real/{}.ko", recipe.module)));
    }
    Ok(files)
}

fn fixtures_dir() -> PathBuf {
    cache::workspace_root().join("livepatch-user/tests/fixtures/real")
}

fn dir() -> PathBuf {
    cache::dir().join("real")
}

impl Recipe {
    fn patch_path(&self) -> PathBuf {
        cache::workspace_root()
            .join("tests/real-patches")
            .join(self.patch)
    }

    /// `out/MODULE-HASH`: a changed patch or script is another build.
    fn out_dir(&self) -> Result<PathBuf> {
        let mut hash = cache::Fnv::default();
        hash.add(
            &fs::read(self.patch_path())
                .with_context(|| format!("no patch at {}", self.patch_path().display()))?,
        );
        hash.add(CONFIG_SCRIPT.as_bytes());
        hash.add(BUILD_SCRIPT.as_bytes());
        Ok(dir()
            .join("out")
            .join(format!("{}-{:016x}", self.module, hash.value())))
    }

    /// The kernel and module if `real-fixtures` has built them.
    pub fn built(&self) -> Result<Built> {
        let out = self.out_dir()?;
        if !out.join(cache::COMPLETE).exists() {
            bail!(
                "the lab kernel {} is built from Debian's {} by `cargo xtask real-fixtures` \
                 (half an hour or more on 2 cores), and has not been built here",
                self.series.name(),
                self.source
            );
        }
        read_built(&out)
    }
}

fn read_built(out: &Path) -> Result<Built> {
    let release = fs::read_to_string(out.join("release"))
        .with_context(|| format!("no release in {}", out.display()))?
        .trim()
        .to_string();
    let tree = PathBuf::from(
        fs::read_to_string(out.join("tree"))
            .with_context(|| format!("no tree in {}", out.display()))?
            .trim(),
    );
    Ok(Built {
        release,
        out: out.to_path_buf(),
        tree,
    })
}

/// A source package: its .deb (kept), version and SHA-256.
struct SourcePackage {
    deb: PathBuf,
    version: String,
    sha256: String,
}

impl SourcePackage {
    /// `6.12.118-1~deb12u1` -> `6.12.118`.
    fn upstream(&self) -> &str {
        self.version
            .split(['-', '+', '~'])
            .next()
            .unwrap_or(&self.version)
    }
}

/// Downloads `package` from `archive` once into `<cache>/real/debs`.
fn fetch_deb(archive: &apt::Archive, package: &str) -> Result<SourcePackage> {
    let debs = dir().join("debs");
    fs::create_dir_all(&debs)?;
    let find = || -> Result<Option<PathBuf>> {
        let prefix = format!("{package}_");
        Ok(fs::read_dir(&debs)?
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with(&prefix) && name.ends_with(".deb")
            })
            .max())
    };
    let deb = match find()? {
        Some(deb) => deb,
        None => {
            println!("real: downloading {package} from Debian {}", archive.name);
            archive
                .download(&[package.to_string()], &debs)
                .with_context(|| format!("cannot have {package} from Debian {}", archive.name))?;
            find()?.with_context(|| format!("apt-get download {package} left no .deb"))?
        }
    };
    let name = deb.file_name().unwrap_or_default().to_string_lossy();
    let version = name
        .split('_')
        .nth(1)
        .with_context(|| format!("no version in the file name {name}"))?
        .replace("%7e", "~")
        .replace("%2b", "+");
    let out = Command::new("sha256sum").arg(&deb).output()?;
    let sha256 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    Ok(SourcePackage {
        deb,
        version,
        sha256,
    })
}

/// The unpacked tree `<cache>/real/linux-UPSTREAM`.
fn source_tree(recipe: &Recipe, package: &SourcePackage) -> Result<PathBuf> {
    let tree = dir().join(format!("linux-{}", package.upstream()));
    if tree.join(cache::COMPLETE).exists() {
        return Ok(tree);
    }
    println!("real: unpacking {} {}", recipe.source, package.version);
    let staging = dir().join(format!("unpack.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    let script = format!(
        "dpkg-deb --fsys-tarfile \"$1\" | tar -xO ./usr/src/{src}.tar.xz | xz -dc | tar -x -C \"$2\"",
        src = recipe.source
    );
    build::checked(
        Command::new("bash")
            .args(["-o", "pipefail", "-c", &script, "sh"])
            .arg(&package.deb)
            .arg(&staging),
        &format!("unpacking {}", recipe.source),
    )?;
    let unpacked = staging.join(recipe.source);
    if !unpacked.join("Makefile").is_file() {
        bail!("{} holds no kernel tree {}", recipe.source, recipe.source);
    }
    cache::publish(&unpacked, &tree)?;
    fs::remove_dir_all(&staging)?;
    Ok(tree)
}

/// Debian trixie's kpatch-build, unpacked into `<cache>/real/kpatch-VERSION`.
/// Its tools (create-diff-object, ...) are checked to run on this host.
fn kpatch_tools() -> Result<PathBuf> {
    let package = fetch_deb(&apt::TRIXIE, "kpatch-build")?;
    let root = dir().join(format!("kpatch-{}", package.upstream()));
    if !root.join(cache::COMPLETE).exists() {
        let staging = dir().join(format!("kpatch.partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging)?;
        build::checked(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(&package.deb)
                .arg(&staging),
            "unpacking kpatch-build",
        )?;
        cache::publish(&staging, &root)?;
    }
    let cdo = root.join("usr/lib/kpatch/create-diff-object");
    let out = Command::new(&cdo)
        .arg("--usage")
        .output()
        .with_context(|| format!("cannot run {}", cdo.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "kpatch-build {}'s create-diff-object does not run on this host: {}",
            package.version,
            stderr.lines().next().unwrap_or("").trim()
        );
    }
    Ok(root)
}

/// Builds (or finds) the recipe's kernel and module.
fn build_recipe(recipe: &Recipe) -> Result<(Built, SourcePackage)> {
    let package = fetch_deb(recipe.archive, recipe.source)?;
    let out = recipe.out_dir()?;
    if out.join(cache::COMPLETE).exists() {
        return Ok((read_built(&out)?, package));
    }
    apt::ensure_installed(&HOST_PACKAGES)?;
    let tree = source_tree(recipe, &package)?;
    let kpatch = match recipe.tool {
        Tool::KpatchBuild => Some(kpatch_tools()?),
        Tool::KlpBuild => None,
    };
    // The scripts run from a folder of their own in the cache, as files,
    // one per build: bash reads a script as it runs, so a build of the
    // other recipe must not rewrite it underneath.
    let scripts = dir()
        .join("scripts")
        .join(out.file_name().unwrap_or_default());
    fs::create_dir_all(&scripts)?;
    for (name, text) in [
        ("real_config.sh", CONFIG_SCRIPT),
        ("real_build.sh", BUILD_SCRIPT),
    ] {
        let path = scripts.join(name);
        if fs::read_to_string(&path).ok().as_deref() != Some(text) {
            fs::write(&path, text)?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        }
    }
    let staging = out.with_file_name(format!(
        "{}.partial-{}",
        out.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    let started = Instant::now();
    println!(
        "real: building {} {} and {}.ko with {} (nice 10; half an hour or more on 2 cores)",
        recipe.source,
        package.version,
        recipe.module,
        match recipe.tool {
            Tool::KpatchBuild => "kpatch-build",
            Tool::KlpBuild => "klp-build",
        }
    );
    let mut cmd = Command::new("nice");
    cmd.args(["-n", "10"])
        .arg(scripts.join("real_build.sh"))
        .arg(match recipe.tool {
            Tool::KpatchBuild => "kpatch",
            Tool::KlpBuild => "klp",
        })
        .arg(&tree)
        .arg(&staging)
        .arg(recipe.patch_path())
        .arg(recipe.module);
    if let Some(kpatch) = &kpatch {
        cmd.arg(kpatch);
    }
    build::checked(
        &mut cmd,
        &format!("building {}.ko (log above)", recipe.module),
    )?;
    // kpatch-build leaves the tree's vmlinux from its own builds, without
    // BTF (it turns BTF off): the lab kernel's own goes back, so that
    // modules built against the tree (the VM lab's) get their BTF.
    if recipe.tool == Tool::KpatchBuild {
        fs::copy(staging.join("vmlinux"), tree.join("vmlinux"))
            .context("cannot put the lab kernel's vmlinux back into its tree")?;
    }
    // kpatch-build's own copy of the build and the vmlinux it read: big,
    // and not needed to boot or to test.
    for big in ["kpatch-cache", "vmlinux"] {
        let path = staging.join(big);
        if path.is_dir() {
            fs::remove_dir_all(&path)?;
        } else if path.exists() {
            fs::remove_file(&path)?;
        }
    }
    fs::write(staging.join("tree"), tree.to_string_lossy().as_bytes())?;
    fs::write(
        staging.join("source"),
        format!(
            "{} {} sha256:{}\n",
            recipe.source, package.version, package.sha256
        ),
    )?;
    cache::publish(&staging, &out)?;
    println!(
        "real: {}.ko built in {:.0}s",
        recipe.module,
        started.elapsed().as_secs_f64()
    );
    Ok((read_built(&out)?, package))
}

/// `times`: one `STEP SECONDS` a line, as real_build.sh writes it.
fn read_times(out: &Path) -> Vec<(String, u64)> {
    fs::read_to_string(out.join("times"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (step, secs) = l.split_once(' ')?;
            Some((step.to_string(), secs.trim().parse().ok()?))
        })
        .collect()
}

/// `cargo xtask real-fixtures`: builds what is missing, then writes the
/// fixtures.
pub fn run(only: Option<Series>) -> Result<()> {
    let fixtures = fixtures_dir();
    fs::create_dir_all(&fixtures)?;
    for recipe in RECIPES
        .iter()
        .filter(|r| only.is_none_or(|s| s == r.series))
    {
        let (built, package) = build_recipe(recipe)?;
        let times = read_times(&built.out);
        let module = built.out.join(format!("{}.ko", recipe.module));
        let fixture = fixtures.join(format!("{}.ko", recipe.module));
        strip_debug(&module, &fixture)?;
        fs::copy(
            built.out.join("config"),
            fixtures.join(format!("{}.config", recipe.series.name())),
        )?;
        let vermagic = modinfo(&fixture, "vermagic")?;
        let times = times
            .iter()
            .map(|(step, secs)| format!("{step}={secs}s"))
            .collect::<Vec<_>>()
            .join(" ");
        fs::write(
            fixtures.join(format!("{}.txt", recipe.module)),
            format!(
                "kernel {}\nrelease {}\nvermagic {vermagic}\nsource {} {} sha256:{}\n\
                 patch tests/real-patches/{}\nconfig {}.config\nremade-by cargo xtask real-fixtures --kernel {}\n\
                 build-times {times}\n",
                recipe.series.name(),
                built.release,
                recipe.source,
                package.version,
                package.sha256,
                recipe.patch,
                recipe.series.name(),
                recipe.series.name(),
            ),
        )?;
        println!("real: {} -> {}", module.display(), fixture.display());
    }
    println!("real: fixtures written to {}", fixtures.display());
    Ok(())
}

/// Copies `from` to `to` without .debug_* sections, and checks that the
/// livepatch relocation sections and symbols all survived.
fn strip_debug(from: &Path, to: &Path) -> Result<()> {
    build::checked(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(from)
            .arg(to),
        &format!("objcopy of {}", from.display()),
    )?;
    let before = klp_parts(from)?;
    let after = klp_parts(to)?;
    if before != after || before.0 == 0 {
        bail!(
            "stripping {} changed its .klp.rela sections / .klp.sym symbols: {before:?} -> {after:?}",
            from.display()
        );
    }
    Ok(())
}

/// (.klp.rela.* sections, .klp.sym.* symbols).
fn klp_parts(file: &Path) -> Result<(usize, usize)> {
    let sections = Command::new("readelf").arg("-SW").arg(file).output()?;
    let symbols = Command::new("readelf").arg("-sW").arg(file).output()?;
    let count = |out: &[u8], what: &str| {
        String::from_utf8_lossy(out)
            .lines()
            .filter(|l| l.contains(what))
            .count()
    };
    Ok((
        count(&sections.stdout, ".klp.rela."),
        count(&symbols.stdout, ".klp.sym."),
    ))
}

/// A field of the module's .modinfo (`modinfo -F`, without needing kmod).
fn modinfo(file: &Path, field: &str) -> Result<String> {
    let out = Command::new("objcopy")
        .args(["-O", "binary", "--only-section=.modinfo"])
        .arg(file)
        .arg("/dev/stdout")
        .output()
        .context("cannot run objcopy")?;
    let prefix = format!("{field}=");
    String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .find_map(|entry| entry.strip_prefix(&prefix).map(str::to_string))
        .with_context(|| format!("no {field} in the .modinfo of {}", file.display()))
}
