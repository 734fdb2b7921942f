//! One-shot readings for `status`, `diagnose` and `metrics`: the patches
//! and the threads, read in the one order that makes them agree.
use std::{collections::HashMap, io, path::Path};

use crate::{
    analysis::transition::transition_target,
    kernel::{
        ReadError, Stacks, ThreadId, kernel_log::read_livepatch_log, read_kernel, read_patches,
        reread_in_transition,
    },
    model::{Known, Patch, PatchState, Snapshot, Task},
    probes::TaskSource,
};

/// The patches and, while one is in transition (or when `scan_anyway` says
/// so of the patches read), every thread as `scan` reads it; then the
/// patches in transition again, so that the direction agrees with the scan
/// (see `reread_in_transition`).
pub fn read_patches_and_threads<T>(
    root: &Path,
    scan_anyway: impl FnOnce(&[Patch]) -> bool,
    scan: impl FnOnce() -> io::Result<Vec<T>>,
) -> Result<(Vec<Patch>, Option<Vec<T>>), ReadError> {
    let patches = read_patches(root)
        .map_err(|source| ReadError::new(root, "sys/kernel/livepatch", source))?;
    let anyway = scan_anyway(&patches);
    let in_transition = patches
        .iter()
        .any(|patch| patch.transition == Known::Value(true));
    if !in_transition && !anyway {
        return Ok((patches, None));
    }
    let threads = scan().map_err(|source| ReadError::new(root, "proc", source))?;
    Ok((reread_in_transition(root, patches), Some(threads)))
}

/// Kernel facts, patches, every thread and the kernel's livepatch log.
/// Kernel stacks are read only for the threads a transition is waiting
/// for: they are what diagnose needs, and reading all of them is slow.
pub fn read_snapshot(root: &Path) -> Result<Snapshot, ReadError> {
    read_snapshot_from(root, &mut TaskSource::procfs(root))
}

/// `read_snapshot` with the threads from `source`.
pub fn read_snapshot_from(root: &Path, source: &mut TaskSource) -> Result<Snapshot, ReadError> {
    let kernel = read_kernel(root);
    let log = read_livepatch_log(root);
    let (patches, tasks) = read_patches_and_threads(root, |_| true, || source.tasks(Stacks::Skip))?;
    let mut tasks = tasks.unwrap_or_default();
    if let Some(target) = transition_target(&patches, log.value().map(Vec::as_slice)) {
        refresh_pending(source, &mut tasks, target)
            .map_err(|error| ReadError::new(root, "proc", error))?;
    }
    Ok(Snapshot {
        kernel,
        patches,
        tasks,
        log,
    })
}

/// Pending tasks read again with their stacks, so that the counts and the
/// stacks agree.
fn refresh_pending(
    source: &mut TaskSource,
    tasks: &mut Vec<Task>,
    target: PatchState,
) -> io::Result<()> {
    let pending = |task: &Task| task.patch_state != Known::Value(target);
    let ids: Vec<ThreadId> = tasks
        .iter()
        .filter(|task| pending(task))
        .map(|task| ThreadId {
            pid: task.pid,
            tid: task.tid,
        })
        .collect();
    let mut fresh: HashMap<u32, Task> = source
        .tasks_of(&ids, Stacks::Read)?
        .into_iter()
        .map(|task| (task.tid, task))
        .collect();
    tasks.retain_mut(|task| {
        if !pending(task) {
            return true;
        }
        match fresh.remove(&task.tid) {
            Some(f) => {
                *task = f;
                true
            }
            None => false,
        }
    });
    Ok(())
}
