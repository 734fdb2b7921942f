//! Which patch is in transition, in which direction, and how many tasks it
//! still waits for: from the patches, the kernel's livepatch log and every
//! thread's patch_state, however they were read.
use crate::model::{Direction, Known, LivepatchMessage, LogEntry, Patch, PatchState, Transition};

/// The patch in transition (its `transition` reads 1) and its direction.
pub fn in_transition<'a>(
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

/// The patch_state every thread must reach, while a transition runs.
pub fn transition_target(patches: &[Patch], log: Option<&[LogEntry]>) -> Option<PatchState> {
    in_transition(patches, log).map(|(_, direction)| direction.target())
}

/// The transition in progress with its counts. A thread whose patch_state
/// is unknown counts as pending: nothing says it has switched.
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

/// The direction of the patch's latest transition, from its latest
/// "starting ... transition" line: the kernel logs it (again on a reversal)
/// before any task can switch, while `enabled` follows only afterwards.
pub fn logged_direction(log: &[LogEntry], patch: &str) -> Option<Direction> {
    log.iter().rev().find_map(|entry| match &entry.message {
        LivepatchMessage::Starting {
            patch: p,
            unpatching,
        } if p == patch => Some(if *unpatching {
            Direction::Unpatching
        } else {
            Direction::Patching
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starting(timestamp_us: u64, patch: &str, unpatching: bool) -> LogEntry {
        LogEntry {
            timestamp_us,
            message: LivepatchMessage::Starting {
                patch: patch.into(),
                unpatching,
            },
        }
    }

    #[test]
    fn the_latest_start_line_gives_the_direction() {
        let log = [
            starting(1, "p", false),
            starting(2, "q", false),
            starting(3, "p", true),
        ];
        assert_eq!(logged_direction(&log, "p"), Some(Direction::Unpatching));
        assert_eq!(logged_direction(&log, "q"), Some(Direction::Patching));
        assert_eq!(logged_direction(&log, "r"), None);
    }
}
