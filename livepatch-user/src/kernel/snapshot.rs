//! One `Snapshot` from all readers, with the transition worked out.
use std::{collections::HashMap, path::Path};

use super::{
    ReadError,
    kernel_facts::read_kernel,
    kernel_log::{LogEntry, logged_direction, read_livepatch_log},
    procfs_tasks::{Stacks, ThreadId},
    sysfs_livepatch::{read_patch, read_patches},
    task_reader::{ProcfsTasks, TaskReader},
};
use crate::model::{Direction, Known, Patch, PatchState, Snapshot, Transition};

/// Kernel facts, patches and every thread. Kernel stacks are read only for
/// the threads a transition is waiting for: they are what diagnose needs,
/// and reading all of them is slow.
pub fn read_snapshot(root: &Path) -> Result<Snapshot, ReadError> {
    read_snapshot_from(root, &mut ProcfsTasks::new(root))
}

/// `read_snapshot` with the threads from `reader`.
pub fn read_snapshot_from(
    root: &Path,
    reader: &mut impl TaskReader,
) -> Result<Snapshot, ReadError> {
    let kernel = read_kernel(root);
    let patches = read_patches(root)
        .map_err(|source| ReadError::new(root, "sys/kernel/livepatch", source))?;
    let mut tasks = reader
        .tasks(Stacks::Skip)
        .map_err(|source| ReadError::new(root, "proc", source))?;
    let patches = reread_in_transition(root, patches);
    let log = read_livepatch_log(root);
    let log = log.value().map(Vec::as_slice);
    if let Some(target) = transition_target(&patches, log) {
        let pending: Vec<ThreadId> = tasks
            .iter()
            .filter(|task| task.patch_state != Known::Value(target))
            .map(|task| ThreadId {
                pid: task.pid,
                tid: task.tid,
            })
            .collect();
        let mut fresh: HashMap<u32, _> = reader
            .tasks_of(&pending, Stacks::Read)
            .map_err(|source| ReadError::new(root, "proc", source))?
            .into_iter()
            .map(|task| (task.tid, task))
            .collect();
        tasks.retain_mut(|task| {
            if task.patch_state == Known::Value(target) {
                return true;
            }
            // A pending thread that exited since the scan no longer blocks.
            match fresh.remove(&task.tid) {
                Some(refreshed) => {
                    *task = refreshed;
                    true
                }
                None => false,
            }
        });
    }
    // Counted after the refresh, so that counts and stacks agree.
    let transition = transition(&patches, log, tasks.iter().map(|task| &task.patch_state));
    Ok(Snapshot {
        kernel,
        patches,
        tasks,
        transition,
    })
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

/// The patch in transition (its `transition` reads 1) and the patch_state
/// every thread must reach.
fn in_transition<'a>(
    patches: &'a [Patch],
    log: Option<&[LogEntry]>,
) -> Option<(&'a Patch, Direction)> {
    let patch = patches
        .iter()
        .find(|patch| !patch.gone && patch.transition == Known::Value(true))?;
    // The kernel logs the direction before any task can switch; `enabled`
    // follows the goal only once the tasks may have started switching
    // (after code patching that can take a while). So the log decides when
    // it tells; `enabled` otherwise, and without either no transition is
    // claimed.
    if let Some(direction) = log.and_then(|log| logged_direction(log, &patch.name)) {
        return Some((patch, direction));
    }
    let direction = match patch.enabled.value()? {
        true => Direction::Patching,
        false => Direction::Unpatching,
    };
    Some((patch, direction))
}

fn transition_target(patches: &[Patch], log: Option<&[LogEntry]>) -> Option<PatchState> {
    in_transition(patches, log).map(|(_, direction)| direction.target())
}

/// The transition in progress with its counts, from the patches, the
/// kernel's livepatch log when it could be read, and every thread's
/// patch_state (from a full or a fast scan). A thread whose patch_state is
/// unknown counts as pending: nothing says it has switched.
pub fn transition<'a>(
    patches: &[Patch],
    log: Option<&[LogEntry]>,
    patch_states: impl IntoIterator<Item = &'a Known<PatchState>>,
) -> Option<Transition> {
    let (patch, direction) = in_transition(patches, log)?;
    let target = Known::Value(direction.target());
    let (mut tasks_total, mut tasks_pending) = (0, 0);
    for state in patch_states {
        tasks_total += 1;
        if *state != target {
            tasks_pending += 1;
        }
    }
    Some(Transition {
        patch: patch.name.clone(),
        direction,
        tasks_total,
        tasks_pending,
    })
}
