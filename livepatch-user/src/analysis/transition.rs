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
    // claimed. A patch being set up (enabled, not yet started: its
    // callbacks may still refuse it) is in no transition yet, though sysfs
    // says `transition` from the first step of its set-up on.
    match log.and_then(|log| logged_step(log, &patch.name)) {
        Some(Logged::SettingUp) => return None,
        Some(Logged::Started(direction)) => return Some((patch, direction)),
        None => {}
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

/// Where the patch's latest transition stands by the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Logged {
    /// "enabling patch" with no "starting" since.
    SettingUp,
    /// Its latest "starting ... transition" line: the kernel logs it (again
    /// on a reversal) before any task can switch, while `enabled` follows
    /// only afterwards.
    Started(Direction),
}

fn logged_step(log: &[LogEntry], patch: &str) -> Option<Logged> {
    log.iter().rev().find_map(|entry| match &entry.message {
        LivepatchMessage::Starting {
            patch: p,
            unpatching,
        } if p == patch => Some(Logged::Started(if *unpatching {
            Direction::Unpatching
        } else {
            Direction::Patching
        })),
        LivepatchMessage::Enabling { patch: p } if p == patch => Some(Logged::SettingUp),
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

    fn enabling(timestamp_us: u64, patch: &str) -> LogEntry {
        LogEntry {
            timestamp_us,
            message: LivepatchMessage::Enabling {
                patch: patch.into(),
            },
        }
    }

    #[test]
    fn the_latest_start_line_gives_the_direction() {
        let log = [
            enabling(0, "p"),
            starting(1, "p", false),
            starting(2, "q", false),
            starting(3, "p", true),
        ];
        assert_eq!(
            logged_step(&log, "p"),
            Some(Logged::Started(Direction::Unpatching))
        );
        assert_eq!(
            logged_step(&log, "q"),
            Some(Logged::Started(Direction::Patching))
        );
        assert_eq!(logged_step(&log, "r"), None);
    }

    /// sysfs shows `transition` 1 from the set-up's first step; the
    /// transition starts only with the kernel's "starting" line.
    #[test]
    fn a_patch_being_set_up_is_in_no_transition_yet() {
        let patches = [crate::testing::patch("p", false, true)];
        let log = vec![starting(1, "p", true), enabling(2, "p")];
        assert!(in_transition(&patches, Some(&log)).is_none());
        let log = vec![enabling(2, "p"), starting(3, "p", false)];
        assert_eq!(
            in_transition(&patches, Some(&log)).map(|(_, d)| d),
            Some(Direction::Patching)
        );
        // No log to tell: `enabled` decides, as ever.
        assert_eq!(
            in_transition(&patches, None).map(|(_, d)| d),
            Some(Direction::Unpatching)
        );
    }
}
