//! Which modules are loaded, from /proc/modules: a livepatch for a module
//! that is not loaded waits for it, and nothing of it can be checked now.
use std::{collections::BTreeSet, io, path::Path};

use super::attr::read_text_capped;

/// None when the kernel has no module support (no /proc/modules).
pub fn read_loaded_modules(root: &Path) -> io::Result<Option<BTreeSet<String>>> {
    // A line per module, a few thousand at most.
    match read_text_capped(&root.join("proc/modules"), 4 << 20) {
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
