//! What the running kernel offers livepatching and klpscope: release,
//! livepatch support, ftrace, lockdown, taint, BTF, module signatures and
//! tracefs. Each missing piece becomes one line in `problems`.
use std::path::Path;

use super::{
    attr::{Attr, read_attr, read_text_capped},
    kernel_config::{KernelConfig, read_kernel_config},
    sysfs_livepatch::livepatch_dir,
    taint::decode_taint,
};
use crate::model::{Kernel, LivepatchSupport};

pub fn read_kernel(root: &Path) -> Kernel {
    let mut problems = Vec::new();
    let release = match read_attr(&root.join("proc/sys/kernel/osrelease")) {
        Attr::Text(text) if !text.is_empty() => Some(text),
        _ => {
            problems
                .push("kernel release unknown: /proc/sys/kernel/osrelease unreadable".to_owned());
            None
        }
    };
    let config = read_kernel_config(root, release.as_deref());
    let livepatch = livepatch_support(root, &config, &mut problems);
    let reliable_stacktrace = config
        .as_ref()
        .ok()
        .map(|config| config.enabled("CONFIG_HAVE_RELIABLE_STACKTRACE"));
    if livepatch.is_supported() && reliable_stacktrace == Some(false) {
        problems.push(
            "no reliable stacktrace (CONFIG_HAVE_RELIABLE_STACKTRACE): tasks switch only on their own, \
             transitions may never complete"
                .to_owned(),
        );
    }

    let ftrace_enabled = read_yes_no(root, "proc/sys/kernel/ftrace_enabled", "1", "0");
    if ftrace_enabled == Some(false) {
        problems.push(
            "ftrace is disabled (kernel.ftrace_enabled=0): livepatches cannot be enabled"
                .to_owned(),
        );
    }
    let lockdown = read_lockdown(root);
    if let Some(mode) = lockdown.as_deref().filter(|mode| *mode != "none") {
        problems.push(format!(
            "lockdown is {mode}: unsigned livepatch modules are refused"
        ));
    }
    let module_sig_enforce =
        read_yes_no(root, "sys/module/module/parameters/sig_enforce", "Y", "N");
    if module_sig_enforce == Some(true) {
        problems
            .push("module signatures are enforced: a livepatch module must be signed".to_owned());
    }
    let taint = match read_attr(&root.join("proc/sys/kernel/tainted")) {
        Attr::Text(text) => match text.parse() {
            Ok(mask) => decode_taint(mask),
            Err(_) => {
                problems.push(format!(
                    "taint unknown: /proc/sys/kernel/tainted holds {text:?}"
                ));
                Vec::new()
            }
        },
        _ => {
            problems.push("taint unknown: /proc/sys/kernel/tainted unreadable".to_owned());
            Vec::new()
        }
    };
    let btf = root.join("sys/kernel/btf/vmlinux").is_file();
    if !btf {
        problems.push(
            "no BTF (/sys/kernel/btf/vmlinux): klpscope's eBPF tracing is unavailable".to_owned(),
        );
    }
    let tracefs = tracefs_mount(root);
    if tracefs.is_none() {
        problems.push(
            "tracefs is not mounted: no ftrace function list (mount -t tracefs nodev /sys/kernel/tracing)"
                .to_owned(),
        );
    }
    Kernel {
        release: release.unwrap_or_default(),
        livepatch,
        problems,
        reliable_stacktrace,
        ftrace_enabled,
        lockdown,
        taint,
        btf,
        module_sig_enforce,
        tracefs,
    }
}

/// The sysfs directory is the kernel's own word; the config explains its
/// absence.
fn livepatch_support(
    root: &Path,
    config: &Result<KernelConfig, String>,
    problems: &mut Vec<String>,
) -> LivepatchSupport {
    let sysfs = livepatch_dir(root).is_dir();
    match config {
        Ok(config) if config.enabled("CONFIG_LIVEPATCH") => {
            if !sysfs {
                problems.push(format!(
                    "CONFIG_LIVEPATCH=y in {} but /sys/kernel/livepatch is missing (is sysfs mounted?)",
                    config.source
                ));
            }
            LivepatchSupport::Supported
        }
        Ok(_) if sysfs => LivepatchSupport::Supported,
        Ok(config) => {
            let mut reason = format!(
                "livepatch unsupported: CONFIG_LIVEPATCH is not set in {}",
                config.source
            );
            if !config.enabled("CONFIG_MODULES") {
                reason.push_str(" (it needs CONFIG_MODULES, which is not set either)");
            }
            unsupported(reason, problems)
        }
        Err(_) if sysfs => LivepatchSupport::Supported,
        Err(why) => unsupported(
            format!("livepatch unsupported: no /sys/kernel/livepatch, and {why}"),
            problems,
        ),
    }
}

fn unsupported(why: String, problems: &mut Vec<String>) -> LivepatchSupport {
    problems.push(why.clone());
    LivepatchSupport::Unsupported { why }
}

/// A two-valued file; None when absent, unreadable or neither value.
fn read_yes_no(root: &Path, file: &str, yes: &str, no: &str) -> Option<bool> {
    match read_attr(&root.join(file)) {
        Attr::Text(text) if text == yes => Some(true),
        Attr::Text(text) if text == no => Some(false),
        _ => None,
    }
}

/// `none [integrity] confidentiality`: the bracketed mode is active. None
/// when securityfs is not mounted or the kernel has no lockdown LSM.
fn read_lockdown(root: &Path) -> Option<String> {
    match read_attr(&root.join("sys/kernel/security/lockdown")) {
        Attr::Text(text) => {
            let start = text.find('[')? + 1;
            let end = start + text[start..].find(']')?;
            Some(text[start..end].to_owned())
        }
        _ => None,
    }
}

/// Where tracefs is mounted, from /proc/mounts: its own mount, or the
/// `tracing` folder of a debugfs mount on older setups.
pub fn tracefs_mount(root: &Path) -> Option<String> {
    // A host with many containers has thousands of mounts, not millions.
    let mounts = read_text_capped(&root.join("proc/mounts"), 16 << 20).ok()?;
    let mut debugfs = None;
    for line in mounts.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(_), Some(point), Some(kind)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        match kind {
            "tracefs" => return Some(point.to_owned()),
            "debugfs" => debugfs = Some(format!("{}/tracing", point.trim_end_matches('/'))),
            _ => {}
        }
    }
    debugfs.filter(|tracing| root.join(tracing.trim_start_matches('/')).is_dir())
}
