//! Which modules are loaded, from /proc/modules: a livepatch for a module
//! that is not loaded waits for it, and nothing of it can be checked now.
use std::{collections::BTreeSet, fs, io, path::Path};

/// None when the kernel has no module support (no /proc/modules).
pub fn read_loaded_modules(root: &Path) -> io::Result<Option<BTreeSet<String>>> {
    match fs::read_to_string(root.join("proc/modules")) {
        Ok(text) => Ok(Some(
            text.lines()
                .filter_map(|line| line.split_ascii_whitespace().next())
                .map(str::to_owned)
                .collect(),
        )),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}
