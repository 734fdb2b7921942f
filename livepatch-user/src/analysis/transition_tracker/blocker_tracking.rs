//! Which blockers to show, and when they clear: the kernel's verdicts as
//! they come, klpscope's own only once they persist.
use std::collections::BTreeMap;

use super::{
    events::{TransitionEvent, cleared},
    state::{Candidate, TaskKey, TransitionTracker, secs_between},
};
use crate::{
    analysis::blockers::{Blocker, VerdictSource},
    model::BlockReason,
};

fn key(blocker: &Blocker) -> TaskKey {
    (blocker.tid, blocker.comm.clone())
}

/// Caught running with no stack to read (the unwinder does not walk a task
/// on a CPU), a task shown blocking with a patched function on its stack:
/// nothing says it has left that function. A kthread that wakes in a loop
/// inside one is caught so now and then, and must not flap between the
/// two reasons, nor lose the function that keeps it from switching.
fn stack_unwalked(now: &Blocker, shown: &Blocker) -> bool {
    now.reason == BlockReason::Running
        && now.stack.is_empty()
        && shown.reason == BlockReason::FunctionOnStack
}

/// What was seen of a blocker's stack, with what is known of it now.
fn still_as_seen(now: Blocker, seen: &Blocker) -> Blocker {
    Blocker {
        reason: seen.reason,
        function: seen.function.clone(),
        version: seen.version.clone(),
        stack: seen.stack.clone(),
        marked_frame: seen.marked_frame,
        ..now
    }
}

/// Where klpscope infers the verdicts: how long a running task or an
/// unreliable stack goes on blocking before it shows. Far more than a task
/// caught running takes to switch itself on its way to user space.
const PERSISTS_AFTER_NS: u64 = 400_000_000;

impl TransitionTracker {
    /// Which blockers to show. The kernel's own verdicts come already
    /// judged: a task it failed in two retry rounds in a row
    /// (`find_blockers`). Where klpscope infers them, a function on the
    /// stack blocks for sure, and a running task or an unreliable stack
    /// shows once seen in polls `PERSISTS_AFTER_NS` apart.
    pub(super) fn track_blockers(
        &mut self,
        blockers: Vec<Blocker>,
        at_ns: u64,
        events: &mut Vec<TransitionEvent>,
    ) {
        let Some(transition) = self.transition.as_mut() else {
            return;
        };
        let mut shown = Vec::new();
        let mut candidates = BTreeMap::new();
        for mut blocker in blockers {
            let previous = transition.blockers.iter().find(|b| key(b) == key(&blocker));
            if let Some(seen) = previous.filter(|p| stack_unwalked(&blocker, p)) {
                blocker = still_as_seen(blocker, seen);
            }
            let candidate = self.candidates.remove(&key(&blocker)).unwrap_or(Candidate {
                first_seen_ns: at_ns,
            });
            let persistent = blocker.source == VerdictSource::Kernel
                || blocker.reason == BlockReason::FunctionOnStack
                || at_ns.saturating_sub(candidate.first_seen_ns) >= PERSISTS_AFTER_NS;
            if persistent {
                blocker
                    .blocked_secs
                    .get_or_insert(secs_between(candidate.first_seen_ns, at_ns));
                if previous
                    .is_none_or(|p| p.reason != blocker.reason || p.function != blocker.function)
                {
                    events.push(TransitionEvent::Blocker {
                        pid: blocker.pid,
                        tid: blocker.tid,
                        comm: blocker.comm.clone(),
                        kthread: blocker.kthread,
                        state: blocker.state,
                        reason: blocker.reason,
                        function: blocker.function.clone(),
                        version: blocker.version.clone(),
                    });
                }
                shown.push(blocker.clone());
            }
            candidates.insert(key(&blocker), candidate);
        }
        for old in &transition.blockers {
            if !shown.iter().any(|b| key(b) == key(old)) {
                events.push(cleared(old));
            }
        }
        transition.blockers = shown;
        self.candidates = candidates;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    /// The per-CPU idle tasks all have tid 0: each is a blocker of its own.
    #[test]
    fn two_cpus_idle_tasks_block_apart() {
        let mut state = tracker();
        state.apply(patching(0, 2, vec![]));
        let idle = |cpu: u32| TaskVerdict {
            comm: format!("swapper/{cpu}"),
            failed_checks: 2,
            failed_rounds: 2,
            ..verdict(0, BlockReason::Running, 0)
        };
        let Observation::Poll(mut poll) = patching(1, 2, vec![]) else {
            unreachable!()
        };
        poll.verdicts = Some(vec![idle(0), idle(1)]);
        let events = state.apply(Observation::Poll(poll));
        let comms: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                TransitionEvent::Blocker { comm, .. } => Some(comm.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(comms, ["swapper/0", "swapper/1"], "{events:?}");
        assert_eq!(state.transition.as_ref().unwrap().blockers.len(), 2);
    }

    #[test]
    fn a_function_on_the_stack_blocks_at_once_a_running_task_only_when_it_persists() {
        let mut state = tracker();
        state.apply(poll(
            0,
            vec![patch("p", true, true)],
            Some((Direction::Patching, 2)),
            vec![],
        ));
        let first = state.apply(patching(
            1,
            2,
            vec![
                (10, BlockReason::FunctionOnStack),
                (11, BlockReason::Running),
            ],
        ));
        assert!(
            matches!(first.as_slice(), [TransitionEvent::Blocker { tid: 10, .. }]),
            "{first:?}"
        );
        let second = state.apply(patching(
            3,
            2,
            vec![
                (10, BlockReason::FunctionOnStack),
                (11, BlockReason::Running),
            ],
        ));
        assert!(
            matches!(
                second.as_slice(),
                [TransitionEvent::Blocker { tid: 11, .. }]
            ),
            "{second:?}"
        );
        let shown = &state.transition.as_ref().unwrap().blockers;
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0].blocked_secs, Some(2.0), "blocked since first seen");
        let cleared = state.apply(patching(4, 1, vec![(10, BlockReason::FunctionOnStack)]));
        assert_eq!(names(&cleared), ["progress", "blocker_cleared"]);
    }

    /// A kthread that wakes now and then in a loop inside the patched
    /// function: a poll that catches it on a CPU reads no stack.
    #[test]
    fn a_blocker_caught_running_keeps_the_function_its_stack_last_showed() {
        let mut state = tracker();
        state.apply(patching(0, 2, vec![]));
        let events = state.apply(patching(1, 2, vec![(11, BlockReason::FunctionOnStack)]));
        assert_eq!(names(&events), ["blocker"]);
        let events = state.apply(patching(2, 2, vec![(11, BlockReason::Running)]));
        assert!(events.is_empty(), "{events:?}");
        let shown = &state.transition.as_ref().unwrap().blockers;
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].reason, BlockReason::FunctionOnStack);
        assert_eq!(shown[0].function.as_deref(), Some("cmdline_proc_show"));
        assert_eq!(shown[0].state, 'R', "what it does now");
        assert_eq!(shown[0].blocked_secs, Some(1.0), "blocked since first seen");

        // Running with a stack that shows it left the function: running.
        let Observation::Poll(mut poll) = patching(3, 2, vec![]) else {
            unreachable!("patching is a poll");
        };
        poll.pending = vec![crate::testing::task(
            11,
            'R',
            PatchState::Unpatched,
            vec![crate::testing::frame("do_nanosleep", None)],
        )];
        let events = state.apply(Observation::Poll(poll));
        assert_eq!(names(&events), ["blocker"], "{events:?}");
        let shown = &state.transition.as_ref().unwrap().blockers;
        assert_eq!(shown[0].reason, BlockReason::Running);
        assert_eq!(shown[0].function, None);
    }

    /// `patching` at `at_ms` milliseconds.
    fn patching_ms(at_ms: u64, pending: usize, blockers: Vec<(u32, BlockReason)>) -> Observation {
        let Observation::Poll(mut poll) = patching(0, pending, blockers) else {
            unreachable!("patching is a poll");
        };
        poll.at_ns = at_ms * 1_000_000;
        Observation::Poll(poll)
    }

    #[test]
    fn polls_close_together_do_not_make_a_passing_task_a_blocker() {
        let mut state = tracker();
        state.apply(patching_ms(0, 3, vec![]));
        let blockers = |events: &[TransitionEvent]| {
            events
                .iter()
                .filter_map(|e| match e {
                    TransitionEvent::Blocker { tid, .. } => Some(*tid),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let running = vec![(11, BlockReason::Running), (12, BlockReason::Running)];
        // Woken by the tracer: polls 20 ms apart.
        for at in [100, 120, 140] {
            let events = state.apply(patching_ms(at, 3, running.clone()));
            assert_eq!(
                blockers(&events),
                Vec::<u32>::new(),
                "at {at} ms: {events:?}"
            );
        }
        // 12 switched; 11 still runs 400 ms after it was first seen.
        let events = state.apply(patching_ms(500, 2, vec![(11, BlockReason::Running)]));
        assert_eq!(blockers(&events), [11], "{events:?}");
        // 12 comes back: seen afresh, it waits its 400 ms again.
        let events = state.apply(patching_ms(520, 2, running.clone()));
        assert_eq!(blockers(&events), Vec::<u32>::new(), "{events:?}");
        let events = state.apply(patching_ms(930, 2, running));
        assert_eq!(blockers(&events), [12], "{events:?}");
    }

    /// A poll at `at_ms` of a patching transition where task 11 is pending
    /// and the kernel failed it for an unreliable stack `failed_checks`
    /// times in `failed_rounds` retry rounds in a row.
    fn unreliable_stack_checked(at_ms: u64, failed_checks: u32, failed_rounds: u32) -> Observation {
        let Observation::Poll(mut poll) = patching_ms(at_ms, 2, vec![]) else {
            unreachable!("patching is a poll");
        };
        poll.pending = vec![pending_task(11, BlockReason::UnreliableStack)];
        poll.verdicts = Some(vec![TaskVerdict {
            failed_checks,
            failed_rounds,
            ..verdict(11, BlockReason::UnreliableStack, 10_000_000)
        }]);
        Observation::Poll(poll)
    }

    fn names_a_blocker(events: &[TransitionEvent]) -> bool {
        events
            .iter()
            .any(|e| matches!(e, TransitionEvent::Blocker { tid: 11, .. }))
    }

    /// A task checks itself on its way through cond_resched, many times a
    /// millisecond, and the tracer wakes the feed within milliseconds of a
    /// check: neither the count of checks nor how often or how long polls
    /// read a verdict tells a blocker from a kworker caught in passing.
    /// Only the kernel's next round does.
    #[test]
    fn failed_checks_in_one_round_are_no_blocker_however_long_they_are_read() {
        let mut state = tracker();
        state.apply(patching_ms(0, 2, vec![]));
        for at_ms in [20, 40, 300, 600, 900, 1500] {
            let events = state.apply(unreliable_stack_checked(at_ms, 9, 1));
            assert!(!names_a_blocker(&events), "at {at_ms} ms: {events:?}");
        }
    }

    #[test]
    fn failing_the_next_round_too_makes_a_blocker_at_once() {
        let mut state = tracker();
        state.apply(patching_ms(0, 2, vec![]));
        assert!(!names_a_blocker(
            &state.apply(unreliable_stack_checked(20, 1, 1))
        ));
        let events = state.apply(unreliable_stack_checked(1010, 2, 2));
        assert!(names_a_blocker(&events), "{events:?}");
    }

    #[test]
    fn a_transient_verdict_never_shows() {
        let mut state = tracker();
        state.apply(patching(0, 2, vec![]));
        assert!(
            state
                .apply(patching(1, 2, vec![(11, BlockReason::UnreliableStack)]))
                .is_empty()
        );
        assert!(state.apply(patching(2, 2, vec![])).is_empty());
        assert!(state.transition.unwrap().blockers.is_empty());
    }
}
