//! One `Snapshot` from all readers, with the transition worked out.
use std::path::Path;

use super::{
    ReadError,
    kernel_facts::read_kernel,
    procfs_tasks::{Stacks, ThreadId, read_task, read_tasks},
    sysfs_livepatch::read_patches,
};
use crate::model::{Direction, Known, Patch, PatchState, Snapshot, Transition};

/// Kernel facts, patches and every thread. Kernel stacks are read only for
/// the threads a transition is waiting for: they are what diagnose needs,
/// and reading all of them is slow.
pub fn read_snapshot(root: &Path) -> Result<Snapshot, ReadError> {
    let kernel = read_kernel(root);
    let patches = read_patches(root)
        .map_err(|source| ReadError::new(root, "sys/kernel/livepatch", source))?;
    let mut tasks =
        read_tasks(root, Stacks::Skip).map_err(|source| ReadError::new(root, "proc", source))?;
    if let Some(target) = transition_target(&patches) {
        tasks.retain_mut(|task| {
            if task.patch_state == Known::Value(target) {
                return true;
            }
            let thread = ThreadId {
                pid: task.pid,
                tid: task.tid,
            };
            // A pending thread that exited since the scan no longer blocks.
            match read_task(root, thread, Stacks::Read) {
                Some(fresh) => {
                    *task = fresh;
                    true
                }
                None => false,
            }
        });
    }
    // Counted after the refresh, so that counts and stacks agree.
    let transition = transition(&patches, tasks.iter().map(|task| &task.patch_state));
    Ok(Snapshot {
        kernel,
        patches,
        tasks,
        transition,
    })
}

/// The patch in transition (its `transition` reads 1) and the patch_state
/// every thread must reach.
fn in_transition(patches: &[Patch]) -> Option<(&Patch, Direction)> {
    let patch = patches
        .iter()
        .find(|patch| !patch.gone && patch.transition == Known::Value(true))?;
    // The kernel sets `enabled` to the transition's goal right after starting
    // it (and flips it on reversal), so it names the direction. Without it the
    // direction is unknown and no transition is claimed.
    let direction = match patch.enabled.value()? {
        true => Direction::Patching,
        false => Direction::Unpatching,
    };
    Some((patch, direction))
}

fn transition_target(patches: &[Patch]) -> Option<PatchState> {
    in_transition(patches).map(|(_, direction)| direction.target())
}

/// The transition in progress with its counts, from the patches and every
/// thread's patch_state (from a full or a fast scan). A thread whose
/// patch_state is unknown counts as pending: nothing says it has switched.
pub fn transition<'a>(
    patches: &[Patch],
    patch_states: impl IntoIterator<Item = &'a Known<PatchState>>,
) -> Option<Transition> {
    let (patch, direction) = in_transition(patches)?;
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
