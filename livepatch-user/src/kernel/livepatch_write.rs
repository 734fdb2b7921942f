//! The only writes klpscope makes to the kernel: turning a transition
//! around (`enabled`), forcing it (`force`), disabling an applied patch,
//! and loading and unloading a livepatch module. Each is made only if the
//! kernel is still in the state the user (or apply) decided on: for a
//! transition, same patch, still in transition, same direction. Between the
//! question and the answer the transition may have completed, reversed or
//! gone; writing then would do something nobody agreed to (0 to `enabled`
//! of an applied patch starts disabling it).
use std::{
    ffi::CString,
    fmt,
    fs::File,
    io::{self, Write},
    os::unix::fs::FileExt,
    path::Path,
};

use rustix::fs::{Mode, OFlags};

use super::{
    attr::not_regular,
    livepatch_module::ModuleImage,
    sysfs_livepatch::{livepatch_dir, read_patch},
};
use crate::model::{Direction, Known};

/// A write the user confirmed, with the transition it was confirmed
/// against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransitionWrite {
    /// Write the opposite goal to `enabled`: the transition that was going
    /// `from` turns around.
    Reverse { patch: String, from: Direction },
    /// Write 1 to `force`: every remaining task is marked switched.
    Force { patch: String, direction: Direction },
}

impl TransitionWrite {
    pub fn patch(&self) -> &str {
        match self {
            TransitionWrite::Reverse { patch, .. } | TransitionWrite::Force { patch, .. } => patch,
        }
    }

    /// The direction of the transition the user saw when confirming.
    pub fn confirmed_direction(&self) -> Direction {
        match self {
            TransitionWrite::Reverse { from, .. } => *from,
            TransitionWrite::Force { direction, .. } => *direction,
        }
    }

    fn file_and_value(&self) -> (&'static str, &'static str) {
        match self {
            TransitionWrite::Reverse { from, .. } => match from.opposite() {
                Direction::Patching => ("enabled", "1"),
                Direction::Unpatching => ("enabled", "0"),
            },
            TransitionWrite::Force { .. } => ("force", "1"),
        }
    }
}

/// What was written, as one line for the user.
#[derive(Debug, PartialEq, Eq)]
pub struct Written(pub String);

/// Why nothing was written.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefused {
    #[error("nothing written: patch {patch} is gone")]
    PatchGone { patch: String },
    #[error("nothing written: {patch}'s transition has ended ({state})")]
    TransitionEnded { patch: String, state: String },
    #[error(
        "nothing written: {patch}'s transition turned around (now {now}, confirmed {confirmed})"
    )]
    DirectionChanged {
        patch: String,
        now: Direction,
        confirmed: Direction,
    },
    #[error("nothing written: {patch} is not an applied patch ({state})")]
    NotApplied { patch: String, state: &'static str },
    #[error("nothing written: cannot tell {patch}'s state ({why})")]
    Unknown { patch: String, why: String },
    #[error("cannot write {value} to {path}: {error}")]
    Io {
        value: &'static str,
        path: String,
        error: String,
    },
}

/// Re-reads the patch and writes only if it is still in the confirmed
/// transition.
pub fn write_confirmed(root: &Path, write: &TransitionWrite) -> Result<Written, WriteRefused> {
    let name = write.patch();
    let patch = read_patch(root, name);
    let unknown = |why: &str| WriteRefused::Unknown {
        patch: name.to_owned(),
        why: why.to_owned(),
    };
    if patch.gone {
        return Err(WriteRefused::PatchGone {
            patch: name.to_owned(),
        });
    }
    match &patch.transition {
        Known::Value(true) => {}
        Known::Value(false) => {
            let state = match patch.enabled {
                Known::Value(true) => "the patch is applied",
                Known::Value(false) => "the patch is disabled",
                Known::Unknown { .. } => "no transition in progress",
            };
            return Err(WriteRefused::TransitionEnded {
                patch: name.to_owned(),
                state: state.to_owned(),
            });
        }
        Known::Unknown { unknown: reason } => return Err(unknown(reason)),
    }
    // While in transition, `enabled` holds the transition's goal.
    let now = match &patch.enabled {
        Known::Value(true) => Direction::Patching,
        Known::Value(false) => Direction::Unpatching,
        Known::Unknown { unknown: reason } => return Err(unknown(reason)),
    };
    let confirmed = write.confirmed_direction();
    if now != confirmed {
        return Err(WriteRefused::DirectionChanged {
            patch: name.to_owned(),
            now,
            confirmed,
        });
    }
    let (file, value) = write.file_and_value();
    write_attribute(root, name, file, value)
}

/// Writes 0 to an applied patch's `enabled`: its unpatching transition
/// starts. Only if it is enabled and in no transition now.
pub fn disable_patch(root: &Path, name: &str) -> Result<Written, WriteRefused> {
    let patch = read_patch(root, name);
    if patch.gone {
        return Err(WriteRefused::PatchGone {
            patch: name.to_owned(),
        });
    }
    let state = match (&patch.enabled, &patch.transition) {
        (Known::Value(true), Known::Value(false)) => None,
        (Known::Value(false), _) => Some("the patch is disabled already"),
        (_, Known::Value(true)) => Some("it is in transition"),
        (Known::Unknown { unknown }, _) | (_, Known::Unknown { unknown }) => {
            return Err(WriteRefused::Unknown {
                patch: name.to_owned(),
                why: unknown.to_string(),
            });
        }
    };
    if let Some(state) = state {
        return Err(WriteRefused::NotApplied {
            patch: name.to_owned(),
            state,
        });
    }
    write_attribute(root, name, "enabled", "0")
}

fn write_attribute(
    root: &Path,
    patch: &str,
    file: &str,
    value: &'static str,
) -> Result<Written, WriteRefused> {
    let dir = livepatch_dir(root).join(patch);
    let path = dir.join(file);
    open_attribute(&dir, file)
        .and_then(|mut attribute| attribute.write_all(value.as_bytes()))
        .map_err(|error| WriteRefused::Io {
            value,
            path: path.display().to_string(),
            error: error.to_string(),
        })?;
    Ok(Written(format!("wrote {value} to {}", path.display())))
}

/// Opens `file` of the patch folder `dir` to write, as sysfs has them: the
/// folder itself (no symlink to elsewhere), then a regular file in it (no
/// symlink, FIFO or device). No create, no truncate: a sysfs attribute takes
/// one write; a file that is not there must not be made.
fn open_attribute(dir: &Path, file: &str) -> io::Result<File> {
    let flags = OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = rustix::fs::open(dir, flags | OFlags::DIRECTORY, Mode::empty())?;
    // NONBLOCK: opening a FIFO to write would wait for a reader.
    let attribute = File::from(rustix::fs::openat(
        &dir,
        file,
        flags | OFlags::WRONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    )?);
    if attribute.metadata()?.file_type().is_file() {
        Ok(attribute)
    } else {
        Err(not_regular())
    }
}

/// Why the kernel did not load a module: the errno, said as its cause and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadRefused {
    #[error("{path} changed on disk after it was checked: nothing loaded; check it again")]
    Changed { path: String },
    #[error("the kernel refused to load {module}: {why}")]
    Kernel { module: String, why: String },
}

/// Loads the checked module image with finit_module(2), as insmod does,
/// after making sure the file still holds the bytes that were checked. The
/// kernel enables the patch in the module's init: on success its
/// transition has started.
pub fn load_module(root: &Path, image: &ModuleImage, name: &str) -> Result<(), LoadRefused> {
    if let Some(why) = not_this_kernel(root) {
        return Err(LoadRefused::Kernel {
            module: name.to_owned(),
            why,
        });
    }
    let mut now = vec![0; image.bytes.len()];
    let same = image.file.read_exact_at(&mut now, 0).is_ok()
        && now == image.bytes
        && image
            .file
            .metadata()
            .is_ok_and(|m| m.len() == now.len() as u64);
    if !same {
        return Err(LoadRefused::Changed {
            path: image.path.clone(),
        });
    }
    rustix::system::finit_module(&image.file, c"", 0).map_err(|errno| LoadRefused::Kernel {
        module: name.to_owned(),
        why: load_error(name, io::Error::from(errno)),
    })
}

fn load_error(name: &str, error: io::Error) -> String {
    match error.raw_os_error().unwrap_or(0) {
        libc::EEXIST => format!("a module named {name} is loaded already (EEXIST)"),
        libc::ENOEXEC => "invalid module format (ENOEXEC): it was built for another kernel \
                          (see its vermagic in klpscope check --module)"
            .to_owned(),
        libc::EKEYREJECTED | libc::ENOKEY | libc::EBADMSG => format!(
            "its signature is missing or not trusted ({error}): signatures are enforced \
             (module.sig_enforce or lockdown); sign it with a key the kernel trusts"
        ),
        libc::EBUSY => "another livepatch transition is in progress (EBUSY): only one runs at a \
                        time; wait for it (klpscope watch) and try again"
            .to_owned(),
        libc::EPERM => "not permitted (EPERM): loading modules needs root, and is off with \
                        kernel.modules_disabled=1 or refused by lockdown for unsigned modules"
            .to_owned(),
        libc::ENOENT => {
            "it uses a symbol this kernel does not export (ENOENT, see dmesg)".to_owned()
        }
        libc::EINVAL => "the patch did not initialise (EINVAL): a patched function or object \
                         was not found or is ambiguous, or the patch stacks badly on the loaded \
                         ones (see dmesg)"
            .to_owned(),
        _ => format!("{error} (see dmesg: a pre-patch callback may have failed)"),
    }
}

/// Modules go into the running kernel whatever the root: with another tree
/// (a fixture) they must not go anywhere.
fn not_this_kernel(root: &Path) -> Option<String> {
    (root != Path::new("/")).then(|| {
        format!(
            "--root points at {}, not this kernel: modules are loaded and unloaded only with /",
            root.display()
        )
    })
}

/// Why a module was not unloaded.
#[derive(Debug, thiserror::Error)]
pub enum UnloadRefused {
    #[error("module {module} not unloaded: its patch is still {state}")]
    PatchActive { module: String, state: &'static str },
    #[error("cannot unload module {module}: {error}")]
    Kernel { module: String, error: io::Error },
}

/// Unloads a livepatch module whose patch has left sysfs (disabled and
/// freed, which the kernel does just after the unpatching transition):
/// an enabled patch's module must never go.
pub fn unload_module(root: &Path, name: &str) -> Result<(), UnloadRefused> {
    if let Some(why) = not_this_kernel(root) {
        return Err(UnloadRefused::Kernel {
            module: name.to_owned(),
            error: io::Error::other(why),
        });
    }
    if livepatch_dir(root).join(name).exists() {
        let patch = read_patch(root, name);
        let state = match (&patch.enabled, &patch.transition) {
            (_, Known::Value(true)) => Some("in transition"),
            (Known::Value(true), _) => Some("enabled"),
            (Known::Value(false), Known::Value(false)) => None,
            _ => Some("in a state that cannot be read"),
        };
        if let Some(state) = state.filter(|_| !patch.gone) {
            return Err(UnloadRefused::PatchActive {
                module: name.to_owned(),
                state,
            });
        }
    }
    let kernel = |error| UnloadRefused::Kernel {
        module: name.to_owned(),
        error,
    };
    let name_c = CString::new(name).map_err(|_| kernel(io::ErrorKind::InvalidInput.into()))?;
    rustix::system::delete_module(&name_c, libc::O_NONBLOCK)
        .map_err(|errno| kernel(io::Error::from(errno)))
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each refusal reads as one sentence: the source's line breaks leave
    /// no run of spaces behind.
    #[test]
    fn load_errors_are_single_spaced_and_name_the_errno() {
        for (errno, name) in [
            (libc::EEXIST, "EEXIST"),
            (libc::ENOEXEC, "ENOEXEC"),
            (libc::EBUSY, "EBUSY"),
            (libc::EPERM, "EPERM"),
            (libc::ENOENT, "ENOENT"),
            (libc::EINVAL, "EINVAL"),
        ] {
            let said = load_error("klp_x", io::Error::from_raw_os_error(errno));
            assert!(said.contains(name), "{said}");
            assert!(!said.contains("  "), "{said}");
        }
        let said = load_error("klp_x", io::Error::from_raw_os_error(libc::EKEYREJECTED));
        assert!(!said.contains("  ") && said.contains("signature"), "{said}");
    }
}
