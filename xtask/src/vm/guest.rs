//! What goes into the guest: busybox, /init, klpscope with its shared
//! libraries, the test modules, the scenario library and the script.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::initramfs::Initramfs;

/// Where scenarios find the test modules, lib.sh and (as run.sh) the script.
pub const TEST_DIR: &str = "/lib/klpscope-test";
const BUSYBOX: &str = "/bin/busybox";
const JQ: &str = "/usr/bin/jq";
/// Debian's bpftool (package bpftool), installed on the host by the lab.
const BPFTOOL: &str = "/usr/sbin/bpftool";
/// Host tools too large for every boot (promtool is 48 MB): a script that
/// needs one says so in a line `# lab-tools: NAME...`, and gets it in /bin.
const OPTIONAL_TOOLS: [(&str, &str); 1] = [
    // Debian's prometheus package, installed on the host by the lab.
    ("promtool", "/usr/bin/promtool"),
];

pub struct Guest<'a> {
    pub klpscope: &'a Path,
    /// Validates klpscope's JSON against its schemas (`ks_schema`).
    pub json_check: &'a Path,
    pub modules: &'a [PathBuf],
    pub script: &'a Path,
    /// Extra host files and their guest paths.
    pub files: &'a [(PathBuf, String)],
    /// The kernel's own files (its config), where Debian installs them.
    pub kernel_files: &'a [(PathBuf, String)],
}

impl Guest<'_> {
    pub fn pack(&self, out: &Path) -> Result<()> {
        let mut image = Initramfs::default();
        image.bytes("init", include_str!("init.sh"), 0o755);
        image.char_device("dev/console", 5, 1);
        for dir in ["proc", "sys", "dev", "tmp", "root"] {
            image.dir(dir);
        }
        image.file(BUSYBOX, Path::new(BUSYBOX), 0o755);
        image.file("/bin/klpscope", self.klpscope, 0o755);
        image.file("/bin/klpscope-json-check", self.json_check, 0o755);
        // Scenarios check klpscope's JSON with jq.
        image.file("/bin/jq", Path::new(JQ), 0o755);
        // Scenarios list the kernel's eBPF programs with bpftool.
        if !Path::new(BPFTOOL).is_file() {
            bail!("no {BPFTOOL} on the host: install Debian's bpftool package");
        }
        image.file("/bin/bpftool", Path::new(BPFTOOL), 0o755);
        let mut binaries = vec![
            self.klpscope,
            self.json_check,
            Path::new(JQ),
            Path::new(BPFTOOL),
        ];
        for (name, host) in requested_tools(self.script)? {
            image.file(&format!("/bin/{name}"), Path::new(host), 0o755);
            binaries.push(Path::new(host));
        }
        for binary in binaries {
            for lib in shared_libraries(binary)? {
                image.file(&lib, Path::new(&lib), 0o755);
            }
        }
        for module in self.modules {
            let name = module.file_name().unwrap_or_default().to_string_lossy();
            image.file(&format!("{TEST_DIR}/{name}"), module, 0o644);
        }
        let scenarios = crate::cache::workspace_root().join("tests/scenarios");
        image.file(
            &format!("{TEST_DIR}/lib.sh"),
            &scenarios.join("lib.sh"),
            0o644,
        );
        image.file(&format!("{TEST_DIR}/run.sh"), self.script, 0o755);
        for (host, guest) in self.kernel_files {
            image.file(guest, host, 0o644);
        }
        for (host, guest) in self.files {
            image.file(guest, host, 0o755);
        }
        image.write(out)
    }
}

/// The optional tools `script` asks for, by name and host path.
fn requested_tools(script: &Path) -> Result<Vec<(&'static str, &'static str)>> {
    let text = std::fs::read_to_string(script)
        .with_context(|| format!("cannot read {}", script.display()))?;
    let mut tools = Vec::new();
    for line in text.lines() {
        let Some(names) = line.strip_prefix("# lab-tools:") else {
            continue;
        };
        for name in names.split_whitespace() {
            let Some(&tool) = OPTIONAL_TOOLS.iter().find(|(known, _)| *known == name) else {
                bail!("{}: no lab tool named {name}", script.display());
            };
            if !Path::new(tool.1).is_file() {
                bail!(
                    "no {} on the host: the lab installs it from Debian's packages",
                    tool.1
                );
            }
            tools.push(tool);
        }
    }
    Ok(tools)
}

/// The absolute paths `ldd` lists for a dynamically linked binary.
fn shared_libraries(binary: &Path) -> Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd")?;
    if !out.status.success() {
        bail!("ldd {} failed", binary.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(str::to_string)
        .collect())
}
