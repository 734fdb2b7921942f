//! What a kernel's build headers need to build our modules on this host
//! (Debian 12: glibc 2.36, gcc-12, pahole 1.24), set up once per kernel in
//! its cache folder, under `tools/`:
//!
//! - kbuild tools linked against a newer glibc (7.x: modpost, objtool,
//!   resolve_btfids; sid also genksyms, conf, kallsyms, ...) are wrapped in
//!   place: the binary moves to `NAME.glibc` and NAME runs it with Debian
//!   trixie's own loader and libc, extracted from libc6/trixie;
//! - a compiler the headers name but the host lacks (5.10: gcc-10, 7.x:
//!   gcc-14, sid: gcc-16) is replaced by the host's gcc-12 through
//!   `tools/cc`, which spells gcc-14's `-fmin-function-alignment=N` as
//!   `-falign-functions=N`; Debian's headers skip kbuild's compiler check;
//! - a pahole older than the kernel's CONFIG_PAHOLE_VERSION (module BTF
//!   needs its `--btf_features`) is replaced by trixie's pahole and libbpf1
//!   through `tools/pahole`, run by the same loader.
//!
//! `make_args` then hands `CC=` and `PAHOLE=` to kbuild.
use std::{
    fs,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::apt;

/// The host compiler, one of the lab's host packages.
const HOST_CC: &str = "gcc-12";
/// Where trixie's packages are extracted, under `tools/`.
const TRIXIE_ROOT: &str = "trixie";
const LOADER: &str = "usr/lib64/ld-linux-x86-64.so.2";
const TRIXIE_LIBS: &str = "usr/lib/x86_64-linux-gnu";
const HOST_LIBS: &str = "/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu";

/// `make` arguments for the kernel cached in `dir`.
pub fn make_args(dir: &Path) -> Vec<String> {
    let tools = dir.join("tools");
    let mut args = Vec::new();
    if tools.join("cc").exists() {
        args.push(format!("CC={}", tools.join("cc").display()));
    }
    if tools.join("pahole").exists() {
        args.push(format!("PAHOLE={}", tools.join("pahole").display()));
    }
    args
}

/// Sets up `staging/tools` for the kernel `release` extracted in
/// `staging/root`; scripts name the paths it will have once published at
/// `dir`.
pub fn adapt(staging: &Path, dir: &Path, release: &str) -> Result<()> {
    let root = staging.join("root");
    let headers = root.join(format!("usr/src/linux-headers-{release}"));
    let kbuild = kbuild_dir(&root)?;
    let host_glibc = host_glibc()?;
    let mut too_new = Vec::new();
    for binary in executables(&kbuild)? {
        match glibc_needed(&binary)? {
            Some(needs) if needs > host_glibc => too_new.push((binary, needs)),
            _ => {}
        }
    }
    let config = fs::read_to_string(headers.join(".config"))
        .with_context(|| format!("cannot read {}/.config", headers.display()))?;
    let pahole_needed = config_number(&config, "CONFIG_PAHOLE_VERSION").unwrap_or(0);
    let host_pahole = host_pahole()?;
    let pahole_too_old = pahole_needed > host_pahole;
    let tools = staging.join("tools");
    fs::create_dir_all(&tools)?;
    let final_tools = dir.join("tools");

    if !too_new.is_empty() || pahole_too_old {
        let mut packages = vec!["libc6".to_string()];
        if pahole_too_old {
            packages.extend(["pahole".to_string(), "libbpf1".to_string()]);
        }
        let needs = too_new.iter().map(|(_, v)| *v).max().unwrap_or(host_glibc);
        let mut why = Vec::new();
        if !too_new.is_empty() {
            why.push(format!(
                "glibc {} for {} of its kbuild tools (this host has {})",
                glibc_text(needs),
                too_new.len(),
                glibc_text(host_glibc)
            ));
        }
        if pahole_too_old {
            why.push(format!(
                "pahole {} for module BTF (this host has {})",
                version_text(pahole_needed),
                version_text(host_pahole)
            ));
        }
        let why = why.join(" and ");
        println!(
            "vm: {release} needs {why}: fetching {} from Debian trixie",
            packages.join(" ")
        );
        let debs = tools.join("debs");
        fs::create_dir_all(&debs)?;
        apt::TRIXIE.download(&packages, &debs).with_context(|| {
            format!(
                "{release} needs {why}, and Debian trixie's {} cannot be had",
                packages.join(" ")
            )
        })?;
        let trixie = tools.join(TRIXIE_ROOT);
        apt::extract(&debs, &trixie)?;
        fs::remove_dir_all(&debs)?;
        let trixie_glibc = glibc_needed(&trixie.join(TRIXIE_LIBS).join("libc.so.6"))?
            .context("trixie's libc.so.6 defines no GLIBC_ version")?;
        if trixie_glibc < needs {
            bail!(
                "{release}'s kbuild tools need glibc {}, and Debian trixie has only {}",
                glibc_text(needs),
                glibc_text(trixie_glibc)
            );
        }
        let loader = final_tools.join(TRIXIE_ROOT).join(LOADER);
        let libs = format!(
            "{}:{HOST_LIBS}",
            final_tools.join(TRIXIE_ROOT).join(TRIXIE_LIBS).display()
        );
        let run = |real: &Path| {
            format!(
                "exec {} --library-path {libs} --argv0 \"$0\" {} \"$@\"\n",
                loader.display(),
                real.display()
            )
        };
        for (binary, needs) in &too_new {
            // The wrapper keeps the binary's name: scripts and other tools
            // call it by its path.
            let mut real = binary.clone().into_os_string();
            real.push(".glibc");
            let real = PathBuf::from(real);
            fs::rename(binary, &real)?;
            let final_real = dir.join(real.strip_prefix(staging)?);
            script(
                binary,
                &format!(
                    "# cargo xtask: this tool needs glibc {}; run it with Debian trixie's.\n{}",
                    glibc_text(*needs),
                    run(&final_real)
                ),
            )?;
        }
        if !too_new.is_empty() {
            println!(
                "vm: {release}: {} kbuild tools wrapped to run with trixie's glibc {}",
                too_new.len(),
                glibc_text(trixie_glibc)
            );
        }
        if pahole_too_old {
            let pahole = final_tools.join(TRIXIE_ROOT).join("usr/bin/pahole");
            script(
                &tools.join("pahole"),
                &format!(
                    "# cargo xtask: the kernel's BTF needs pahole >= {}; Debian trixie's.\n{}",
                    version_text(pahole_needed),
                    run(&pahole)
                ),
            )?;
            println!("vm: {release}: module BTF by trixie's pahole");
        }
    }

    if let Some(compiler) = missing_compiler(&headers)? {
        script(
            &tools.join("cc"),
            &format!(
                "# cargo xtask: the kernel was built with {compiler}, which this host lacks.\n\
                 # {HOST_CC} builds modules once -fmin-function-alignment=N (gcc 14)\n\
                 # is spelt -falign-functions=N.\n\
                 for arg do\n    \
                     shift\n    \
                     case $arg in\n        \
                         -fmin-function-alignment=*) arg=-falign-functions=${{arg#*=}} ;;\n    \
                     esac\n    \
                     set -- \"$@\" \"$arg\"\n\
                 done\n\
                 exec {HOST_CC} \"$@\"\n"
            ),
        )?;
        println!("vm: {release}: built with {compiler}, which this host lacks: using {HOST_CC}");
    }
    Ok(())
}

fn script(path: &Path, body: &str) -> Result<()> {
    fs::write(path, format!("#!/bin/sh\n{body}"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// `usr/lib/linux-kbuild-*`, the headers' tools.
fn kbuild_dir(root: &Path) -> Result<PathBuf> {
    let lib = root.join("usr/lib");
    fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("linux-kbuild-"))
        })
        .with_context(|| format!("no linux-kbuild-* in {}", lib.display()))
}

/// Executable ELF files under `dir`.
fn executables(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file()
                && entry.metadata()?.permissions().mode() & 0o111 != 0
                && is_elf(&path)?
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn is_elf(path: &Path) -> Result<bool> {
    let mut magic = [0; 4];
    let mut file = fs::File::open(path)?;
    Ok(file.read_exact(&mut magic).is_ok() && &magic == b"\x7fELF")
}

/// The newest `GLIBC_x.y` symbol version an ELF file refers to (or, for
/// libc itself, defines), per `objdump -T`.
fn glibc_needed(binary: &Path) -> Result<Option<(u32, u32)>> {
    let out = Command::new("objdump")
        .arg("-T")
        .arg(binary)
        .output()
        .context("cannot run objdump (binutils)")?;
    if !out.status.success() {
        bail!("objdump -T {} failed", binary.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|word| parse_glibc(word.strip_prefix("GLIBC_")?))
        .max())
}

fn parse_glibc(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn glibc_text((major, minor): (u32, u32)) -> String {
    format!("{major}.{minor}")
}

fn host_glibc() -> Result<(u32, u32)> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .context("cannot run getconf")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .last()
        .and_then(parse_glibc)
        .with_context(|| format!("getconf GNU_LIBC_VERSION said {:?}", text.trim()))
}

/// pahole's version as the kernel's config writes it: v1.24 is 124.
fn host_pahole() -> Result<u32> {
    let out = Command::new("pahole")
        .arg("--version")
        .output()
        .context("cannot run pahole")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .trim_start_matches('v')
        .split_once('.')
        .and_then(|(major, minor)| {
            Some(major.parse::<u32>().ok()? * 100 + minor.parse::<u32>().ok()?)
        })
        .with_context(|| format!("pahole --version said {:?}", text.trim()))
}

fn version_text(version: u32) -> String {
    format!("{}.{}", version / 100, version % 100)
}

fn config_number(config: &str, key: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .and_then(|value| value.trim().parse().ok())
}

/// The compiler the headers' `.kernelvariables` name (`CC = ...gcc-14`
/// after `CROSS_COMPILE`), if the host has no such command.
fn missing_compiler(headers: &Path) -> Result<Option<String>> {
    let Ok(variables) = fs::read_to_string(headers.join(".kernelvariables")) else {
        return Ok(None);
    };
    let value = |key: &str| {
        variables.lines().find_map(|line| {
            let line = line.trim().strip_prefix("override ").unwrap_or(line.trim());
            let (name, value) = line.split_once('=')?;
            (name.trim_end_matches([':', '?', ' ']) == key).then(|| value.trim().to_string())
        })
    };
    let Some(cc) = value("CC") else {
        return Ok(None);
    };
    // `$(if $(DEBIAN_KERNEL_USE_CCACHE),$(CCACHE)) $(CROSS_COMPILE)gcc-14`
    let name = cc
        .rsplit(['(', ')', ' '])
        .next()
        .unwrap_or_default()
        .to_string();
    // 5.10 sets CROSS_COMPILE only for cross builds, from make variables.
    let prefix = if cc.contains("$(CROSS_COMPILE)") {
        value("CROSS_COMPILE")
            .filter(|prefix| !prefix.contains('$'))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let command = format!("{prefix}{name}");
    if name.is_empty() || on_path(&command) {
        return Ok(None);
    }
    Ok(Some(command))
}

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(command).is_file()))
}
