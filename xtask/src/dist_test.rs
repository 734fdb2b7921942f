//! `cargo xtask dist-test`: the package as an administrator gets it. Builds
//! it, installs it on this machine with dpkg, checks what they expect
//! (`klpscope --version`, `man klpscope`, tab completion of the commands,
//! the files in their usual places), then removes it and checks that
//! nothing is left. The package is installed system-wide: this needs root,
//! and runs one at a time per machine.
use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use rustix::fs::{FlockOperation, flock};

use crate::{build, cache, dist, vm::apt};

const PACKAGE: &str = "klpscope";
const BINARY: &str = "/usr/bin/klpscope";
const MAN_DIR: &str = "/usr/share/man/man1";
/// What the package installs besides the binary and the manual pages.
const FILES: &[&str] = &[
    "/usr/share/bash-completion/completions/klpscope",
    "/usr/share/zsh/vendor-completions/_klpscope",
    "/usr/share/fish/vendor_completions.d/klpscope.fish",
    "/usr/share/doc/klpscope/README.md",
    "/usr/share/doc/klpscope/copyright",
    "/usr/share/klpscope/schemas/status.schema.json",
    "/usr/share/klpscope/schemas/check.schema.json",
    "/usr/share/klpscope/schemas/diagnose.schema.json",
    "/usr/share/klpscope/schemas/watch.schema.json",
    "/usr/share/klpscope/schemas/rollout.schema.json",
    "/usr/lib/systemd/system/klpscope-serve.service",
    "/usr/lib/systemd/system/klpscope-metrics.service",
    "/usr/lib/systemd/system/klpscope-metrics.timer",
];
/// Another run may hold dpkg's lock (apt installing the VM lab's tools).
const DPKG_LOCK_WAIT: Duration = Duration::from_secs(300);

pub fn run() -> Result<()> {
    let started = Instant::now();
    if !build::is_root() {
        bail!("dist-test installs the package on this machine with dpkg: run it as root (CI does)");
    }
    let deb = dist::package()?;
    // `man -w` and the completion loader, as on an administrator's machine.
    apt::ensure_installed(&["man-db", "bash-completion"])?;
    let _lock = take_machine_lock()?;
    remove_leftover()?;

    let mut installed = Installation::install(&deb)?;
    let commands = subcommands()?;
    check_files(&installed.files, &commands)?;
    check_version()?;
    check_embeds_ebpf()?;
    check_man_pages(&commands)?;
    check_bash_completion(&commands)?;
    installed.remove()?;
    println!(
        "PASS dist-test: {} installed, klpscope --version, man -w for {} pages, bash completes \
         {} commands, removed without a trace ({:.1}s)",
        deb.file_name().unwrap_or_default().to_string_lossy(),
        pages(&commands).len(),
        commands.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn state_dir() -> PathBuf {
    cache::dir().join("dist-test")
}

/// Written before dpkg installs the package and removed once it is gone:
/// a run killed in between is told apart from the administrator's own
/// installation of klpscope, which dist-test never removes.
fn marker() -> PathBuf {
    state_dir().join("installed")
}

/// One dist-test per machine at a time: another run's install or removal
/// would pull the files from under this one's checks. Held until dropped.
fn take_machine_lock() -> Result<File> {
    let dir = state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("lock");
    let file = File::create(&path).with_context(|| format!("cannot open {}", path.display()))?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        println!(
            "dist-test: waiting for another dist-test on this machine ({})",
            path.display()
        );
        flock(&file, FlockOperation::LockExclusive)
            .with_context(|| format!("cannot lock {}", path.display()))?;
    }
    Ok(file)
}

fn package_version() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", PACKAGE])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.strip_prefix("install ok installed ")?;
    Some(version.trim().to_owned())
}

fn remove_leftover() -> Result<()> {
    let marker = marker();
    if let Some(version) = package_version() {
        if !marker.exists() {
            bail!(
                "{PACKAGE} {version} is already installed on this machine, not by dist-test: \
                 remove it (dpkg -r {PACKAGE}) and run again; dist-test installs and removes its own"
            );
        }
        println!(
            "dist-test: removing {PACKAGE} {version}, left installed by an interrupted dist-test"
        );
        dpkg(&["-r", PACKAGE])?;
    }
    if marker.exists() {
        std::fs::remove_file(&marker).context("cannot remove dist-test's marker")?;
    }
    Ok(())
}

/// The package while installed: removed on drop if a check failed first.
struct Installation {
    /// Every file (not folder) dpkg says the package put on disk.
    files: Vec<PathBuf>,
    removed: bool,
}

impl Installation {
    fn install(deb: &Path) -> Result<Self> {
        std::fs::write(marker(), deb.display().to_string())
            .context("cannot write dist-test's marker")?;
        let mut installed = Installation {
            files: Vec::new(),
            removed: false,
        };
        dpkg(&["-i".as_ref(), deb.as_os_str()])?;
        let listing = dpkg(&["-L", PACKAGE])?;
        installed.files = String::from_utf8_lossy(&listing.stdout)
            .lines()
            .map(PathBuf::from)
            .filter(|path| !path.is_dir())
            .collect();
        println!(
            "dist-test: installed {} ({} files)",
            deb.display(),
            installed.files.len()
        );
        Ok(installed)
    }

    /// `dpkg -r`, then every file the package had is gone, man finds no
    /// page, and dpkg no longer knows the package.
    fn remove(&mut self) -> Result<()> {
        self.removed = true;
        dpkg(&["-r", PACKAGE])?;
        let left: Vec<String> = self
            .files
            .iter()
            .filter(|path| path.exists())
            .map(|path| path.display().to_string())
            .collect();
        if !left.is_empty() {
            bail!("dpkg -r {PACKAGE} left files behind: {}", left.join(", "));
        }
        if let Some(version) = package_version() {
            bail!("dpkg -r {PACKAGE} ran, yet dpkg still has {version} installed");
        }
        let man = man(&["-w", PACKAGE])?;
        if man.status.success() {
            bail!(
                "after dpkg -r, man still finds a page: {}",
                String::from_utf8_lossy(&man.stdout).trim()
            );
        }
        std::fs::remove_file(marker()).context("cannot remove dist-test's marker")?;
        println!("dist-test: removed; no file of the package is left");
        Ok(())
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        eprintln!("dist-test: a check failed; removing the package");
        if dpkg(&["-r", PACKAGE]).is_ok() {
            let _ = std::fs::remove_file(marker());
        }
    }
}

/// dpkg with `args`, waiting while another apt or dpkg holds its lock.
fn dpkg<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Result<Output> {
    let shown = args
        .iter()
        .map(|arg| arg.as_ref().to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let waiting_since = Instant::now();
    loop {
        let out = Command::new("dpkg")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .context("cannot run dpkg: dist-test needs a Debian machine")?;
        if out.status.success() {
            return Ok(out);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("locked by another process") && waiting_since.elapsed() < DPKG_LOCK_WAIT
        {
            thread::sleep(Duration::from_secs(2));
            continue;
        }
        bail!("`dpkg {shown}` failed ({}): {}", out.status, stderr.trim());
    }
}

fn man(args: &[&str]) -> Result<Output> {
    Command::new("man")
        .args(args)
        // The system's own manual path, as a fresh login has it.
        .env_remove("MANPATH")
        .env("MANWIDTH", "80")
        .output()
        .context("cannot run man (man-db)")
}

/// The commands the installed binary lists in its help (`help` too).
fn subcommands() -> Result<Vec<String>> {
    let out = Command::new(BINARY)
        .arg("--help")
        .output()
        .with_context(|| format!("cannot run {BINARY}"))?;
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<String> = help
        .lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    if commands.is_empty() {
        bail!("{BINARY} --help lists no commands:\n{help}");
    }
    Ok(commands)
}

/// The pages of the top command and of each subcommand but `help`.
fn pages(commands: &[String]) -> Vec<String> {
    std::iter::once(PACKAGE.to_owned())
        .chain(
            commands
                .iter()
                .filter(|command| *command != "help")
                .map(|command| format!("{PACKAGE}-{command}")),
        )
        .collect()
}

fn check_files(files: &[PathBuf], commands: &[String]) -> Result<()> {
    let expected = std::iter::once(BINARY.to_owned())
        .chain(
            pages(commands)
                .into_iter()
                .map(|page| format!("{MAN_DIR}/{page}.1.gz")),
        )
        .chain(FILES.iter().map(|file| file.to_string()));
    for path in expected {
        if !files.iter().any(|file| file == Path::new(&path)) {
            bail!("the package does not install {path} (dpkg -L {PACKAGE})");
        }
        if !Path::new(&path).is_file() {
            bail!(
                "{path} is in the package but not on disk: does a path-exclude in \
                 /etc/dpkg/dpkg.cfg.d keep dpkg from installing it?"
            );
        }
    }
    Ok(())
}

fn check_version() -> Result<()> {
    let out = Command::new(BINARY)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {BINARY}"))?;
    let said = String::from_utf8_lossy(&out.stdout);
    let expected = format!("{PACKAGE} {}", env!("CARGO_PKG_VERSION"));
    if !out.status.success() || said.trim() != expected {
        bail!(
            "{BINARY} --version said {:?} ({}), expected {expected:?}",
            said.trim(),
            out.status
        );
    }
    Ok(())
}

/// The installed binary carries the eBPF object this run built, byte for
/// byte (a plain cargo build would embed an empty placeholder).
fn check_embeds_ebpf() -> Result<()> {
    let object_path = build::ebpf_object();
    let object = std::fs::read(&object_path)
        .with_context(|| format!("cannot read {}", object_path.display()))?;
    let binary = std::fs::read(BINARY).with_context(|| format!("cannot read {BINARY}"))?;
    if object.is_empty() || !binary.windows(object.len()).any(|window| window == object) {
        bail!(
            "{BINARY} does not embed the eBPF object {} ({} bytes)",
            object_path.display(),
            object.len()
        );
    }
    Ok(())
}

/// `man -w` finds every page where the package put it, and the top page
/// renders with its NAME line.
fn check_man_pages(commands: &[String]) -> Result<()> {
    for page in pages(commands) {
        let out = man(&["-w", &page])?;
        let found = String::from_utf8_lossy(&out.stdout);
        let expected = format!("{MAN_DIR}/{page}.1.gz");
        if !out.status.success() || found.trim() != expected {
            bail!(
                "man -w {page} said {:?}{}, expected {expected}",
                found.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let out = man(&[PACKAGE])?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains(&format!("{PACKAGE} - ")) {
        bail!(
            "man {PACKAGE} did not render its NAME line ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// What bash offers on TAB at the end of the words given as arguments ($1
/// the command): bash-completion's default handler loads the command's
/// completion from its folder on first use, as in an interactive shell.
const BASH_COMPLETE: &str = r#"
source /usr/share/bash-completion/bash_completion || exit 90
COMP_WORDS=("$@")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="${COMP_WORDS[*]}"
COMP_POINT=${#COMP_LINE}
cur=${COMP_WORDS[COMP_CWORD]}
prev=${COMP_WORDS[COMP_CWORD-1]}
if ! complete -p "$1" >/dev/null 2>&1; then
    default=$(complete -p -D 2>/dev/null) || { echo "bash-completion set no default completion" >&2; exit 91; }
    loader=${default#*-F }
    "${loader%% *}" "$1" "$cur" "$prev"
fi
spec=$(complete -p "$1" 2>/dev/null) || { echo "bash-completion's loader found no completion for $1" >&2; exit 92; }
function=${spec#*-F }
"${function%% *}" "$1" "$cur" "$prev"
printf '%s\n' "${COMPREPLY[@]}"
"#;

fn bash_completes(words: &[&str]) -> Result<Vec<String>> {
    // Where file names, bash's fallback for a command it cannot complete,
    // offer nothing to mistake for a command.
    let empty = state_dir().join("empty");
    std::fs::create_dir_all(&empty)
        .with_context(|| format!("cannot create {}", empty.display()))?;
    let out = Command::new("bash")
        .current_dir(&empty)
        .args(["--norc", "--noprofile", "-c", BASH_COMPLETE, "bash"])
        .args(words)
        .output()
        .context("cannot run bash")?;
    if !out.status.success() {
        bail!(
            "bash completion of {:?} failed ({}): {}",
            words.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect())
}

/// `klpscope <TAB>` offers every command, and `klpscope status --<TAB>`
/// that command's own option.
fn check_bash_completion(commands: &[String]) -> Result<()> {
    let offered = bash_completes(&[PACKAGE, ""])?;
    let missing: Vec<&String> = commands
        .iter()
        .filter(|command| !offered.contains(command))
        .collect();
    if !missing.is_empty() {
        bail!("bash completion of `{PACKAGE} <TAB>` offers {offered:?}, without {missing:?}");
    }
    let options = bash_completes(&[PACKAGE, "status", "--"])?;
    if !options.iter().any(|option| option == "--json") {
        bail!("bash completion of `{PACKAGE} status --<TAB>` offers {options:?}, without --json");
    }
    Ok(())
}
