//! /sys/kernel/livepatch: the loaded patches, their objects and functions.
//!
//! Layout (kernel/livepatch/core.c): `<patch>/{enabled,transition,force}`,
//! `<patch>/replace` since 6.11, `<patch>/stack_order` since 7.x,
//! `<patch>/<object>/patched` and one directory
//! per function named `<function>,<sympos>`.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::attr::{Attr, parse_flag, read_attr};
use crate::model::{Known, Patch, PatchFunction, PatchObject};

pub fn livepatch_dir(root: &Path) -> PathBuf {
    root.join("sys/kernel/livepatch")
}

/// Every patch under /sys/kernel/livepatch, sorted by name. No directory
/// means no livepatch support: an empty list, not an error.
pub fn read_patches(root: &Path) -> io::Result<Vec<Patch>> {
    let mut names = match subdirectories(&livepatch_dir(root)) {
        Ok(names) => names,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    names.sort();
    Ok(names.iter().map(|name| read_patch(root, name)).collect())
}

/// One patch by name. A patch unloaded while we read it comes back with
/// `gone` set and whatever was read before it went.
pub fn read_patch(root: &Path, name: &str) -> Patch {
    let dir = livepatch_dir(root).join(name);
    let flag = |file: &str| {
        let path = dir.join(file);
        read_attr(&path).parse(&path, "0 or 1", parse_flag)
    };
    let enabled_path = dir.join("enabled");
    let enabled_attr = read_attr(&enabled_path);
    // The kernel removes a freed patch's attribute files before its
    // directory: without `enabled`, the patch is on its way out.
    let being_freed = matches!(enabled_attr, Attr::Missing);
    let enabled = enabled_attr.parse(&enabled_path, "0 or 1", parse_flag);
    let transition = flag("transition");
    let force = read_force(&dir);
    let replace = match read_attr(&dir.join("replace")) {
        // Kernels before 6.11 have no such file; a vanished patch is caught
        // below by `gone`.
        Attr::Missing => None,
        attr => Some(attr.parse(&dir.join("replace"), "0 or 1", parse_flag)),
    };
    let stack_order = match read_attr(&dir.join("stack_order")) {
        Attr::Missing => None,
        attr => Some(
            attr.parse(&dir.join("stack_order"), "a number from 1", |text| {
                text.parse::<u32>().ok().filter(|&order| order >= 1)
            }),
        ),
    };
    let objects = match subdirectories(&dir) {
        Ok(mut objects) => {
            objects.sort();
            objects
                .iter()
                .map(|object| read_object(&dir, object))
                .collect()
        }
        Err(_) => Vec::new(),
    };
    Patch {
        name: name.to_owned(),
        enabled,
        transition,
        force,
        replace,
        stack_order,
        objects,
        // Checked last: a directory that vanished at any point above is gone.
        // A symlink is no patch of the kernel's, as the listing has it.
        gone: being_freed || !fs::symlink_metadata(&dir).is_ok_and(|dir| dir.is_dir()),
    }
}

/// `force` is write-only (mode 0200): sysfs refuses reads with EACCES, even
/// to root, so on a real kernel whether a transition was forced is unknown;
/// say so instead of passing on a bare EACCES.
fn read_force(dir: &Path) -> Known<bool> {
    let path = dir.join("force");
    match read_attr(&path) {
        Attr::Unreadable(_) => Known::unknown(format!(
            "{}: write-only, the kernel does not tell whether the transition was forced",
            path.display()
        )),
        attr => attr.parse(&path, "0 or 1", parse_flag),
    }
}

fn read_object(patch_dir: &Path, name: &str) -> PatchObject {
    let dir = patch_dir.join(name);
    let patched_path = dir.join("patched");
    let patched = read_attr(&patched_path).parse(&patched_path, "0 or 1", parse_flag);
    let mut functions: Vec<PatchFunction> = subdirectories(&dir)
        .unwrap_or_default()
        .iter()
        .map(|entry| parse_function_dir(entry))
        .collect();
    functions.sort_by(|a, b| (&a.name, a.sympos).cmp(&(&b.name, b.sympos)));
    PatchObject {
        name: name.to_owned(),
        patched,
        functions,
    }
}

/// Reads the patches in transition again, after a scan of the tasks. The
/// kernel marks a transition, patches the objects, lets tasks switch, and
/// only then sets `enabled` to the transition's goal; a scan that saw tasks
/// switch must be read with the `enabled` set after it, or the direction
/// comes out backwards.
pub fn reread_in_transition(root: &Path, patches: Vec<Patch>) -> Vec<Patch> {
    patches
        .into_iter()
        .map(|patch| {
            if patch.transition == Known::Value(true) {
                read_patch(root, &patch.name)
            } else {
                patch
            }
        })
        .collect()
}

/// `<function>,<sympos>`: the kernel writes 1 for a unique symbol (sympos 0
/// asked), so sysfs never shows 0. A name without a valid sympos is kept
/// whole with sympos 0 rather than dropped.
pub fn parse_function_dir(entry: &str) -> PatchFunction {
    match entry.rsplit_once(',') {
        Some((name, sympos)) if !name.is_empty() => match sympos.parse() {
            Ok(sympos) => PatchFunction {
                name: name.to_owned(),
                sympos,
            },
            Err(_) => PatchFunction {
                name: entry.to_owned(),
                sympos: 0,
            },
        },
        _ => PatchFunction {
            name: entry.to_owned(),
            sympos: 0,
        },
    }
}

fn subdirectories(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        // An entry that vanishes between readdir and file_type is skipped:
        // it is gone, and its parent's reader reports that.
        let Ok(entry) = entry else { continue };
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_dirs_split_at_the_last_comma() {
        let f = parse_function_dir("cmdline_proc_show,1");
        assert_eq!((f.name.as_str(), f.sympos), ("cmdline_proc_show", 1));
        let f = parse_function_dir("odd,name,2");
        assert_eq!((f.name.as_str(), f.sympos), ("odd,name", 2));
    }

    #[test]
    fn malformed_function_dirs_are_kept_whole() {
        for entry in ["nocomma", ",3", "f,", "f,x", "f,99999999999999999999"] {
            let f = parse_function_dir(entry);
            assert_eq!((f.name.as_str(), f.sympos), (entry, 0), "{entry}");
        }
    }
}
