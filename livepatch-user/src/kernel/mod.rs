//! Readers of the kernel's state: the only code (with `probes`) that touches
//! the kernel. Each takes a root path, so tests can point it at a fixture tree.
//! The one exception to reading is `livepatch_write`: the two writes a user
//! can confirm in `watch`, re-checked against sysfs at the moment of writing.
pub mod attr;
pub mod clock;
pub mod ftrace_users;
pub mod kallsyms;
pub mod kallsyms_near;
pub mod kernel_config;
pub mod kernel_facts;
pub mod kernel_log;
pub mod livepatch_module;
pub mod livepatch_write;
pub mod loaded_modules;
pub mod patch_state_scanner;
pub mod procfs_tasks;
pub mod sysfs_livepatch;
mod taint;

use std::{io, path::Path};

pub use kallsyms::{read_filter_functions, read_kallsyms, read_kallsyms_with_extents};
// The table is model data; check names it from here.
pub use crate::model::SymbolTable;
pub use kernel_facts::{read_kernel, tracefs_mount};
pub use patch_state_scanner::PatchStateScanner;
pub use procfs_tasks::{
    Stacks, ThreadFile, ThreadFileReader, ThreadId, list_threads, read_task, read_tasks,
    scan_patch_states,
};
pub use sysfs_livepatch::{read_patch, read_patches, reread_in_transition};

/// A listing the readers cannot do without (/proc, /sys/kernel/livepatch)
/// failed for a reason other than absence.
#[derive(Debug, thiserror::Error)]
// The cause follows in the error chain: naming it here too would print it twice.
#[error("cannot read {path}")]
pub struct ReadError {
    pub path: String,
    #[source]
    pub source: io::Error,
}

impl ReadError {
    pub(crate) fn new(root: &Path, path: &str, source: io::Error) -> Self {
        ReadError {
            path: root.join(path).display().to_string(),
            source,
        }
    }
}
