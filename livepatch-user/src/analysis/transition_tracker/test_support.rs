//! Polls, patches and tasks the tracker's tests replay.
//! Glob-imported by every test module beside the tracker: the types the
//! replayed observations are made of come with it.
pub(super) use super::{TransitionEvent, TransitionTracker};
use crate::testing::{frame, patch_of, task, thread};
pub(super) use crate::{
    analysis::observation::{KernelPoll, Observation},
    model::{
        BlockReason, Direction, LivepatchMessage, LogEntry, Patch, PatchState, Task, TaskVerdict,
        TraceEvent,
    },
};

pub(super) const SEC: u64 = 1_000_000_000;

pub(super) const THREADS: u32 = 100;

/// The watched patch `p`, replacing cmdline_proc_show.
pub(super) fn patch(name: &str, enabled: bool, transition: bool) -> Patch {
    patch_of(name, enabled, transition, "vmlinux", &["cmdline_proc_show"])
}

/// A pending task that blocks for `reason`: asleep in the patched
/// function, running on a CPU, or (only the kernel can tell) with an
/// unreliable stack.
pub(super) fn pending_task(tid: u32, reason: BlockReason) -> Task {
    match reason {
        BlockReason::FunctionOnStack => task(
            tid,
            'S',
            PatchState::Unpatched,
            vec![frame("__schedule", None), frame("cmdline_proc_show", None)],
        ),
        BlockReason::Running => task(tid, 'R', PatchState::Unpatched, vec![]),
        _ => task(
            tid,
            'S',
            PatchState::Unpatched,
            vec![frame("__schedule", None)],
        ),
    }
}

pub(super) fn verdict(tid: u32, reason: BlockReason, at_ns: u64) -> TaskVerdict {
    TaskVerdict {
        tid,
        tgid: tid,
        comm: format!("task{tid}"),
        kthread: false,
        reason: Some(reason),
        function: None,
        failed_checks: 1,
        failed_rounds: 1,
        first_failure_ns: at_ns,
        last_failure_ns: at_ns,
    }
}

/// A raw poll of `THREADS` threads: with `transition`, that many still
/// short of its direction's target (a kernel log line tells the
/// direction where `enabled` does not yet), and `blockers` among them.
/// Without, every thread idle.
pub(super) fn poll(
    at: u64,
    patches: Vec<Patch>,
    transition: Option<(Direction, usize)>,
    blockers: Vec<(u32, BlockReason)>,
) -> Observation {
    let at_ns = at * SEC;
    let threads = (0..THREADS)
        .map(|i| {
            let state = match transition {
                Some((direction, pending)) if (i as usize) < pending => {
                    direction.opposite().target()
                }
                Some((direction, _)) => direction.target(),
                None => PatchState::Idle,
            };
            thread(1000 + i, state)
        })
        .collect();
    let enabled_says = patches
        .iter()
        .find(|p| p.name == "p")
        .and_then(|p| p.enabled.value().copied())
        .map(|enabled| match enabled {
            true => Direction::Patching,
            false => Direction::Unpatching,
        });
    let log = match transition {
        Some((direction, _)) if Some(direction) != enabled_says => vec![LogEntry {
            timestamp_us: at_ns / 1000,
            message: LivepatchMessage::Starting {
                patch: "p".into(),
                unpatching: direction == Direction::Unpatching,
            },
        }],
        _ => Vec::new(),
    };
    let kernel_told = blockers
        .iter()
        .any(|(_, reason)| *reason == BlockReason::UnreliableStack);
    Observation::Poll(KernelPoll {
        at_ns,
        read_ns: at_ns,
        patches,
        threads: Some(threads),
        pending: blockers
            .iter()
            .map(|&(tid, reason)| pending_task(tid, reason))
            .collect(),
        verdicts: kernel_told.then(|| {
            blockers
                .iter()
                .map(|&(tid, reason)| verdict(tid, reason, at_ns))
                .collect()
        }),
        log: Some(log),
    })
}

pub(super) fn patching(at: u64, pending: usize, blockers: Vec<(u32, BlockReason)>) -> Observation {
    poll(
        at,
        vec![patch("p", true, true)],
        Some((Direction::Patching, pending)),
        blockers,
    )
}

pub(super) fn tracker() -> TransitionTracker {
    TransitionTracker::new(None)
}

pub(super) fn names(events: &[TransitionEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            serde_json::to_value(e).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}
