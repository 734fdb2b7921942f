//! Debian packages through apt: host tools installed once; kernel packages
//! and helpers downloaded (never installed) from Debian's archive through
//! private apt configurations in the cache, for extraction into the cache.
use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::{Context, Result, bail};

use crate::{build, cache};

static UPDATED: AtomicBool = AtomicBool::new(false);

fn apt(program: &str, args: &[&str], cwd: Option<&Path>) -> Result<Output> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    output(cmd, program, args, cwd)
}

/// Runs `cmd` (`program args`, perhaps behind a wrapper); a failure names
/// the apt command and its last line on stderr.
fn output(mut cmd: Command, program: &str, args: &[&str], cwd: Option<&Path>) -> Result<Output> {
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
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

const DEBIAN: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";

/// A private apt configuration kept in the cache (`<cache>/apt/<name>`):
/// its own sources.list, package lists and apt cache, so that the machine's
/// own apt sources stay untouched. Only Debian's archive keyring is trusted.
pub struct Archive {
    /// The folder's name, and how messages name the archive.
    pub name: &'static str,
    /// (URI, suite) pairs, component main.
    suites: &'static [(&'static str, &'static str)],
}

/// Debian 11: Linux 5.10 (its updates come through bullseye-security).
pub const BULLSEYE: Archive = Archive {
    name: "bullseye",
    suites: &[
        (DEBIAN, "bullseye"),
        (DEBIAN, "bullseye-updates"),
        (SECURITY, "bullseye-security"),
    ],
};

/// Debian 12: Linux 6.1, and 6.12 (linux-image-6.12-amd64).
pub const BOOKWORM: Archive = Archive {
    name: "bookworm",
    suites: &[
        (DEBIAN, "bookworm"),
        (DEBIAN, "bookworm-updates"),
        (SECURITY, "bookworm-security"),
    ],
};

/// Debian 13: the helpers that newer kbuild tools need on this host (glibc,
/// pahole).
pub const TRIXIE: Archive = Archive {
    name: "trixie",
    suites: &[(DEBIAN, "trixie")],
};

/// Debian 13's backports: Linux 7.x. Alone in its configuration, so that
/// its linux-image-amd64 is the candidate, not trixie's.
pub const TRIXIE_BACKPORTS: Archive = Archive {
    name: "trixie-backports",
    suites: &[(DEBIAN, "trixie-backports")],
};

/// Debian unstable.
pub const SID: Archive = Archive {
    name: "sid",
    suites: &[(DEBIAN, "sid")],
};

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// How long an apt command waits for another run's update of the same lists.
const LOCK_WAIT_SECS: &str = "900";

/// The archives whose lists this run has refreshed.
static REFRESHED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

impl Archive {
    fn dir(&self) -> PathBuf {
        cache::dir().join("apt").join(self.name)
    }

    fn sources(&self) -> String {
        self.suites
            .iter()
            .map(|(uri, suite)| {
                // Packages only: no translations, no AppStream metadata.
                format!("deb [target=Packages signed-by={KEYRING}] {uri} {suite} main\n")
            })
            .collect()
    }

    /// The `-o` options that point apt at this configuration alone.
    fn options(&self) -> Vec<String> {
        let dir = self.dir();
        let dir = dir.display();
        [
            format!("Dir::Etc::sourcelist={dir}/sources.list"),
            "Dir::Etc::sourceparts=-".to_string(),
            format!("Dir::State::Lists={dir}/lists"),
            format!("Dir::Cache={dir}/cache"),
            "APT::Sandbox::User=root".to_string(),
        ]
        .into_iter()
        .flat_map(|option| ["-o".to_string(), option])
        .collect()
    }

    /// `program options args` under the archive's lock: shared for readers,
    /// exclusive for `apt-get update`, so that concurrent runs never read
    /// lists half replaced nor update them together.
    fn run(
        &self,
        program: &str,
        args: &[&str],
        cwd: Option<&Path>,
        exclusive: bool,
    ) -> Result<Output> {
        let mut cmd = Command::new("flock");
        cmd.arg(if exclusive { "--exclusive" } else { "--shared" })
            .args(["--wait", LOCK_WAIT_SECS])
            .arg(self.dir().join("lock"))
            .arg(program)
            .args(self.options())
            .args(args);
        output(cmd, program, args, cwd)
    }

    /// Writes the configuration and refreshes its lists, once per xtask
    /// run: Debian rotates kernel versions. Offline, lists fetched before
    /// still serve (with a note); with none, a one-line error.
    pub fn update(&self) -> Result<()> {
        {
            let mut refreshed = REFRESHED.lock().unwrap_or_else(|e| e.into_inner());
            if !refreshed.get_or_insert_with(HashSet::new).insert(self.name) {
                return Ok(());
            }
        }
        let dir = self.dir();
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        let sources = dir.join("sources.list");
        if fs::read_to_string(&sources).ok().as_deref() != Some(self.sources().as_str()) {
            // Renamed into place: a concurrent run reads the old or the new.
            let staged = dir.join(format!("sources.list.{}", std::process::id()));
            fs::write(&staged, self.sources())?;
            fs::rename(&staged, &sources)?;
        }
        println!(
            "vm: apt-get update ({}, private lists in {})",
            self.name,
            dir.display()
        );
        match self.run("apt-get", &["update", "-q"], None, true) {
            Ok(_) => Ok(()),
            Err(error) if self.has_lists() => {
                println!(
                    "vm: {error:#}; using the {} lists fetched before",
                    self.name
                );
                Ok(())
            }
            Err(error) => Err(error.context(format!(
                "cannot fetch Debian's {} package lists from deb.debian.org",
                self.name
            ))),
        }
    }

    fn has_lists(&self) -> bool {
        fs::read_dir(self.dir().join("lists")).is_ok_and(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
    }

    /// What `package` depends on, by name (`apt-cache depends`).
    pub fn depends(&self, package: &str) -> Result<Vec<String>> {
        self.update()?;
        let out = self
            .run("apt-cache", &["depends", package], None, false)
            .with_context(|| format!("{package} is not in Debian {}", self.name))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends: "))
            .map(str::to_string)
            .collect())
    }

    /// Downloads the .deb files of `packages` into `dir`.
    pub fn download(&self, packages: &[String], dir: &Path) -> Result<()> {
        self.update()?;
        let args: Vec<&str> = std::iter::once("download")
            .chain(packages.iter().map(String::as_str))
            .collect();
        self.run("apt-get", &args, Some(dir), false)
            .with_context(|| format!("cannot download from Debian {}", self.name))
            .map(|_| ())
    }
}

/// Extracts every .deb of `debs` into `root`.
pub fn extract(debs: &Path, root: &Path) -> Result<()> {
    for deb in fs::read_dir(debs)? {
        let deb = deb?.path();
        build::checked(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root),
            &format!("extracting {}", deb.display()),
        )?;
    }
    Ok(())
}
