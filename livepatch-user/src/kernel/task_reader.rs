//! Every thread's state through one interface, whatever reads it: procfs
//! here, or the BPF task iterator (`probes::TaskSource`), which yields the
//! same records in one pass. Readers that compose others (the snapshot)
//! take any of them.
use std::{
    io,
    path::{Path, PathBuf},
};

use super::{
    patch_state_scanner::PatchStateScanner,
    procfs_tasks::{Stacks, ThreadId, read_task, read_tasks, scan_patch_states},
};
use crate::model::{Task, ThreadPatchState};

pub trait TaskReader {
    /// Every thread's patch_state and nothing else: the polled hot path.
    fn patch_states(&mut self) -> io::Result<Vec<ThreadPatchState>>;

    /// Every thread, with its kernel stack if asked.
    fn tasks(&mut self, stacks: Stacks) -> io::Result<Vec<Task>>;

    /// These threads read again; those that exited are left out.
    fn tasks_of(&mut self, threads: &[ThreadId], stacks: Stacks) -> io::Result<Vec<Task>>;

    /// One thread; None if it exited.
    fn task(&mut self, thread: ThreadId, stacks: Stacks) -> Option<Task>;
}

/// The procfs readers under `root`. A patch_state scan asked for again is
/// being polled: from the second one on, the scanner keeps its descriptors
/// open between scans.
pub struct ProcfsTasks {
    root: PathBuf,
    scanner: Option<PatchStateScanner>,
    scanned: bool,
}

impl ProcfsTasks {
    pub fn new(root: &Path) -> Self {
        ProcfsTasks {
            root: root.to_owned(),
            scanner: None,
            scanned: false,
        }
    }
}

impl TaskReader for ProcfsTasks {
    fn patch_states(&mut self) -> io::Result<Vec<ThreadPatchState>> {
        if !std::mem::replace(&mut self.scanned, true) {
            return scan_patch_states(&self.root);
        }
        let scanner = match &mut self.scanner {
            Some(scanner) => scanner,
            None => self.scanner.insert(PatchStateScanner::new(&self.root)?),
        };
        scanner.scan()
    }

    fn tasks(&mut self, stacks: Stacks) -> io::Result<Vec<Task>> {
        read_tasks(&self.root, stacks)
    }

    fn tasks_of(&mut self, threads: &[ThreadId], stacks: Stacks) -> io::Result<Vec<Task>> {
        Ok(threads
            .iter()
            .filter_map(|&thread| read_task(&self.root, thread, stacks))
            .collect())
    }

    fn task(&mut self, thread: ThreadId, stacks: Stacks) -> Option<Task> {
        read_task(&self.root, thread, stacks)
    }
}
