//! What happened between two polls, told from what it left: a transition
//! too quick to poll, one that came and went before the next, the
//! completion a poll read past, the tail of a completion still in sysfs,
//! and a transition seen before its direction can be told.
use super::{
    events::{Outcome, TransitionEvent, complete},
    progress::Assessed,
    state::{Completing, Lifecycle, TransitionProgress, TransitionTracker},
};
use crate::model::{Direction, Known, LivepatchMessage, LogEntry, Patch, Transition};

/// How long after a completion a poll may still see its tail: far longer
/// than klp_complete_transition takes, far shorter than unloading the
/// patch and loading it again.
const COMPLETION_TAIL_NS: u64 = 300_000_000;

impl TransitionTracker {
    /// Ends what completed before this poll read sysfs, in the order the
    /// tracer timed it (or, without the tracer, as the kernel log tells):
    /// the transition under way, then any transition of its patch that
    /// started and completed after it (its direction the opposite of the
    /// one before). Whatever the poll shows of the patch then is a
    /// transition of its own. True when a transition ended.
    pub(super) fn end_completed(
        &mut self,
        poll: &Assessed,
        events: &mut Vec<TransitionEvent>,
    ) -> bool {
        if !self.traced {
            let logged = self
                .transition
                .as_ref()
                .and_then(|current| logged_completion(poll.log.as_deref(), current, poll.read_ns));
            let Some((direction, at_ns)) = logged else {
                return false;
            };
            let ended = self.transition.take().expect("completed above");
            let name = ended.patch.clone();
            self.end(ended, Some(direction), &poll.patches, events);
            self.settle(&name, direction);
            self.completing = Some(Completing {
                patch: name,
                direction,
                at_ns,
            });
            return true;
        }
        let (mut before, after): (Vec<_>, Vec<_>) = std::mem::take(&mut self.lifecycle)
            .into_iter()
            .partition(|&(at, _)| at <= poll.read_ns);
        self.lifecycle = after;
        before.sort_by_key(|&(at, _)| at);
        let mut ended_any = false;
        // The transition that ended last: one completing after it without
        // a poll seeing it went the other way.
        let mut last = self
            .last_outcome
            .as_ref()
            .map(|outcome| (outcome.patch.clone(), outcome.direction));
        let mut completed_ns = 0;
        for (at_ns, what) in before {
            match what {
                Lifecycle::Start => self.started_since_completion = true,
                Lifecycle::Complete => {
                    let started_since = std::mem::take(&mut self.started_since_completion);
                    if let Some(ended) = self.transition.take() {
                        let (name, direction) = (ended.patch.clone(), ended.direction);
                        self.end(ended, Some(direction), &poll.patches, events);
                        last = Some((name, direction));
                    } else if let Some((name, previous)) = last.take().filter(|_| started_since) {
                        let direction = previous.opposite();
                        let outcome = Outcome {
                            patch: name.clone(),
                            direction,
                            reversed: false,
                            forced: false,
                            secs: None,
                        };
                        events.push(TransitionEvent::Start {
                            patch: name.clone(),
                            direction,
                            tasks_total: poll.threads.unwrap_or(0),
                        });
                        events.push(complete(&outcome));
                        self.last_outcome = Some(outcome);
                        // Reported here: no poll's view of it is left to tell.
                        if self.unbegun.as_deref() == Some(name.as_str()) {
                            self.unbegun = None;
                        }
                        last = Some((name, direction));
                    } else {
                        continue;
                    }
                    ended_any = true;
                    completed_ns = at_ns;
                    if let Some((name, direction)) = &last {
                        self.settle(name, *direction);
                    }
                }
            }
        }
        // The tail of a completion is no new transition, unless one
        // started since.
        if ended_any || self.started_since_completion {
            self.completing = last
                .filter(|_| ended_any && !self.started_since_completion)
                .map(|(patch, direction)| Completing {
                    patch,
                    direction,
                    at_ns: completed_ns,
                });
        }
        ended_any
    }

    /// A completed transition's patch, seen still in transition the same
    /// way (or with no task left to tell the way) by a poll that read
    /// sysfs right after the completion, is that transition's end under
    /// way, not a new one. Later, it is the patch loaded again.
    pub(super) fn ignore_completion_tail(&mut self, poll: &mut Assessed) {
        let Some(tail) = &self.completing else {
            return;
        };
        match &poll.transition {
            Some(seen)
                if seen.patch == tail.patch
                    && (seen.direction == tail.direction || seen.tasks_pending == 0)
                    && poll.read_ns <= tail.at_ns + COMPLETION_TAIL_NS =>
            {
                poll.transition = None;
            }
            _ => self.completing = None,
        }
    }

    /// A patch never goes the same way twice in a row: one seen starting
    /// the way its last transition ended went the other way unseen in
    /// between (disabled, unpatched in milliseconds, unloaded and loaded
    /// again between two polls, where the tracer hears no start of it).
    pub(super) fn came_and_went_before(
        &mut self,
        seen: &Transition,
        threads: Option<usize>,
        events: &mut Vec<TransitionEvent>,
    ) {
        let Some(last) = self
            .last_outcome
            .as_ref()
            .filter(|last| last.patch == seen.patch && last.direction == seen.direction)
        else {
            return;
        };
        let outcome = Outcome {
            patch: last.patch.clone(),
            direction: last.direction.opposite(),
            reversed: false,
            forced: false,
            secs: None,
        };
        events.push(TransitionEvent::Start {
            patch: outcome.patch.clone(),
            direction: outcome.direction,
            tasks_total: threads.unwrap_or(0),
        });
        events.push(complete(&outcome));
        self.last_outcome = Some(outcome);
    }

    /// Records `patch` as its completed transition left it: the state the
    /// next transition of it starts from.
    fn settle(&mut self, patch: &str, direction: Direction) {
        let record = self.patches.iter().position(|p| p.name == patch && !p.gone);
        let record = record.or_else(|| self.patches.iter().position(|p| p.name == patch));
        if let Some(before) = record.map(|i| &mut self.patches[i]) {
            // A patch unpatched is freed: the next poll finds it gone.
            before.gone = false;
            before.enabled = Known::Value(direction == Direction::Patching);
            before.transition = Known::Value(false);
        }
    }

    /// A transition that began and ended between two polls (it may take
    /// only milliseconds) is seen only in what it left: a patch that
    /// appeared enabled, a known patch whose `enabled` flipped, or an
    /// applied patch that is gone. Report it, so that scripts waiting for
    /// it end.
    ///
    /// `ended` is the patch whose transition this poll saw end: already
    /// reported. A patch that turned disabled while another transition
    /// came or went is left alone: an atomic replace disables the patches
    /// it replaces as part of its own transition.
    pub(super) fn quick_transitions(
        &mut self,
        poll: &Assessed,
        ended: Option<&str>,
        events: &mut Vec<TransitionEvent>,
    ) {
        let mut quick: Vec<(String, Direction)> = poll
            .patches
            .iter()
            .filter(|patch| Some(patch.name.as_str()) != ended)
            .filter_map(|patch| Some((patch.name.clone(), self.settled_since_last_poll(patch)?)))
            .collect();
        // A patch that left sysfs after it was seen applied, or in a
        // transition no poll could tell the direction of, was unpatched and
        // freed between the polls: the kernel frees a patch as soon as its
        // unpatching transition completes.
        let present = |name: &str| poll.patches.iter().any(|p| p.name == name && !p.gone);
        let applied = |patch: &Patch| {
            patch.enabled == Known::Value(true) && patch.transition == Known::Value(false)
        };
        let unbegun = |patch: &Patch| self.unbegun.as_deref() == Some(patch.name.as_str());
        quick.extend(
            self.patches
                .iter()
                .filter(|before| Some(before.name.as_str()) != ended && !present(&before.name))
                .filter(|before| !before.gone && (applied(before) || unbegun(before)))
                .map(|before| (before.name.clone(), Direction::Unpatching)),
        );
        let patching = quick.iter().any(|(_, d)| *d == Direction::Patching);
        for (patch, direction) in quick {
            if direction == Direction::Unpatching && (patching || ended.is_some()) {
                continue;
            }
            events.push(TransitionEvent::Start {
                patch: patch.clone(),
                direction,
                tasks_total: poll.threads.unwrap_or(0),
            });
            let outcome = Outcome {
                patch,
                direction,
                reversed: false,
                forced: false,
                secs: None,
            };
            events.push(complete(&outcome));
            self.last_outcome = Some(outcome);
            self.unbegun = None;
        }
    }

    /// The direction of a transition `patch` went through unseen, if its
    /// settled state differs from the last poll's.
    fn settled_since_last_poll(&self, patch: &Patch) -> Option<Direction> {
        let Known::Value(enabled) = patch.enabled else {
            return None;
        };
        if patch.gone || patch.transition != Known::Value(false) {
            return None;
        }
        let direction = if enabled {
            Direction::Patching
        } else {
            Direction::Unpatching
        };
        let before = self
            .patches
            .iter()
            .find(|p| p.name == patch.name && !p.gone);
        match before {
            // New: loaded and applied between polls. A disabled newcomer is
            // only being set up (sysfs shows it before its transition).
            None => enabled.then_some(direction),
            // Seen before its transition began, enabled now.
            Some(_) if self.unbegun.as_deref() == Some(patch.name.as_str()) => {
                enabled.then_some(direction)
            }
            Some(before) => match before.enabled {
                Known::Value(was) if was != enabled => Some(direction),
                _ => None,
            },
        }
    }

    /// A transition with no task pending says nothing about its direction.
    /// The kernel marks the transition before it sets `enabled` to its goal
    /// (and patches the objects in between), so for a while `enabled` names
    /// the opposite direction, and every task, still at the initial state,
    /// looks switched to that direction's target. Such a poll keeps the
    /// direction already known, and does not start a transition.
    pub(super) fn settle_direction(&mut self, poll: &mut Assessed) {
        let Some(seen) = poll.transition.as_mut() else {
            return;
        };
        if seen.tasks_pending > 0 {
            return;
        }
        match &self.transition {
            Some(current) if current.patch == seen.patch => seen.direction = current.direction,
            _ => {
                // Should it end before a poll tells its direction, it is
                // reported as a transition that came and went between polls;
                // unless it is the patch the kernel just backed out of.
                if !self.backed_out {
                    self.unbegun = Some(seen.patch.clone());
                }
                poll.transition = None;
            }
        }
    }
}

/// Where and when the kernel log says `current` completed, if it logged
/// that after the transition began and before `read_ns`.
fn logged_completion(
    log: Option<&[LogEntry]>,
    current: &TransitionProgress,
    read_ns: u64,
) -> Option<(Direction, u64)> {
    log?.iter().rev().find_map(|entry| {
        let at_ns = entry.timestamp_us * 1000;
        match &entry.message {
            LivepatchMessage::Complete { patch, unpatching }
                if *patch == current.patch && (current.started_ns..=read_ns).contains(&at_ns) =>
            {
                let direction = if *unpatching {
                    Direction::Unpatching
                } else {
                    Direction::Patching
                };
                Some((direction, at_ns))
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn watching_from_before_the_load_sees_a_transition_too_quick_to_poll() {
        let mut state = tracker();
        state.apply(poll(0, vec![], None, vec![]));
        let events = state.apply(poll(1, vec![patch("p", true, false)], None, vec![]));
        assert_eq!(names(&events), ["start", "complete"]);
        // A patch already settled when watch starts is not a transition.
        let mut state = tracker();
        assert!(
            state
                .apply(poll(0, vec![patch("p", true, false)], None, vec![]))
                .is_empty()
        );
    }

    #[test]
    fn a_disable_too_quick_to_poll_is_an_unpatching_transition() {
        let mut state = tracker();
        state.apply(poll(0, vec![patch("p", true, false)], None, vec![]));
        let events = state.apply(poll(1, vec![patch("p", false, false)], None, vec![]));
        assert_eq!(names(&events), ["start", "complete"]);
        assert!(matches!(
            events[1],
            TransitionEvent::Complete {
                direction: Direction::Unpatching,
                reversed: false,
                ..
            }
        ));
        let again = state.apply(poll(2, vec![patch("p", true, false)], None, vec![]));
        assert_eq!(names(&again), ["start", "complete"], "enabled again");
        assert!(
            state
                .apply(poll(3, vec![patch("p", true, false)], None, vec![]))
                .is_empty(),
            "nothing changed"
        );
    }

    /// A disabled patch is freed as soon as it is unpatched: seen applied,
    /// then gone, it went through an unpatching transition.
    #[test]
    fn an_applied_patch_gone_between_polls_was_unpatched() {
        let mut state = tracker();
        state.apply(poll(0, vec![patch("p", true, false)], None, vec![]));
        let events = state.apply(poll(1, vec![], None, vec![]));
        assert_eq!(names(&events), ["start", "complete", "gone"], "{events:?}");
        assert!(matches!(
            events[1],
            TransitionEvent::Complete {
                direction: Direction::Unpatching,
                reversed: false,
                ..
            }
        ));
        // Seen in a transition of no telling direction (every task at the
        // target already), then gone: it was unpatched.
        let mut state = tracker();
        state.apply(poll(0, vec![patch("p", true, false)], None, vec![]));
        let settling = poll(
            1,
            vec![patch("p", false, true)],
            Some((Direction::Unpatching, 0)),
            vec![],
        );
        assert!(state.apply(settling).is_empty());
        let events = state.apply(poll(2, vec![], None, vec![]));
        assert_eq!(names(&events), ["start", "complete", "gone"], "{events:?}");
        // Gone while disabled: nothing more to report than that.
        let mut state = tracker();
        state.apply(poll(0, vec![patch("p", false, false)], None, vec![]));
        let events = state.apply(poll(1, vec![], None, vec![]));
        assert_eq!(names(&events), ["gone"]);
    }

    /// An atomic replace disables the patch it replaces inside its own
    /// transition: one transition, not two.
    #[test]
    fn a_replaced_patch_turning_disabled_is_not_a_transition_of_its_own() {
        let mut state = tracker();
        state.apply(poll(0, vec![patch("old", true, false)], None, vec![]));
        let events = state.apply(poll(
            1,
            vec![patch("new", true, false), patch("old", false, false)],
            None,
            vec![],
        ));
        assert_eq!(names(&events), ["start", "complete"], "{events:?}");
        assert!(matches!(&events[0], TransitionEvent::Start { patch, .. } if patch == "new"));
    }

    /// A transition polled while it ran ends once, even if `enabled` read
    /// its old value at the start (it lags during code patching).
    #[test]
    fn a_polled_transition_is_not_reported_again_as_a_quick_one() {
        let mut state = tracker();
        state.apply(poll(0, vec![patch("p", false, false)], None, vec![]));
        state.apply(poll(
            1,
            vec![patch("p", false, true)],
            Some((Direction::Patching, 5)),
            vec![],
        ));
        let end = state.apply(poll(2, vec![patch("p", true, false)], None, vec![]));
        assert_eq!(names(&end), ["complete"], "{end:?}");
    }

    #[test]
    fn a_transition_caught_before_enabled_flips_does_not_start_backwards() {
        let mut state = tracker();
        state.apply(poll(0, vec![], None, vec![]));
        // Marked in transition, `enabled` not yet 1: looks like unpatching
        // with every task already at the target.
        let window = poll(
            1,
            vec![patch("p", false, true)],
            Some((Direction::Unpatching, 0)),
            vec![],
        );
        assert!(state.apply(window).is_empty());
        let events = state.apply(patching(2, 5, vec![]));
        assert!(
            matches!(
                events.as_slice(),
                [TransitionEvent::Start {
                    direction: Direction::Patching,
                    ..
                }]
            ),
            "{events:?}"
        );
        // The last poll before completion, with nothing pending, keeps it
        // patching: no reversal.
        let events = state.apply(poll(
            3,
            vec![patch("p", true, true)],
            Some((Direction::Unpatching, 0)),
            vec![],
        ));
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, TransitionEvent::Reverse { .. })),
            "{events:?}"
        );
    }

    #[test]
    fn a_transition_never_seen_with_pending_tasks_is_still_reported() {
        let mut state = tracker();
        state.apply(poll(0, vec![], None, vec![]));
        // Every task already switched; the kernel has not completed yet.
        let end = poll(
            1,
            vec![patch("p", true, true)],
            Some((Direction::Patching, 0)),
            vec![],
        );
        assert!(state.apply(end).is_empty());
        let events = state.apply(poll(2, vec![patch("p", true, false)], None, vec![]));
        assert!(
            matches!(
                events.as_slice(),
                [
                    TransitionEvent::Start { .. },
                    TransitionEvent::Complete { .. }
                ]
            ),
            "{events:?}"
        );
    }

    #[test]
    fn a_patch_seen_before_its_transition_then_settled_is_reported() {
        let mut state = tracker();
        state.apply(poll(0, vec![], None, vec![]));
        // The patch's sysfs folder exists before the kernel starts patching.
        assert!(
            state
                .apply(poll(1, vec![patch("p", false, false)], None, vec![]))
                .is_empty()
        );
        let events = state.apply(poll(2, vec![patch("p", true, false)], None, vec![]));
        assert!(
            matches!(
                events.as_slice(),
                [
                    TransitionEvent::Start { .. },
                    TransitionEvent::Complete { .. }
                ]
            ),
            "{events:?}"
        );
        assert!(
            state
                .apply(poll(3, vec![patch("p", true, false)], None, vec![]))
                .is_empty(),
            "reported once"
        );
    }

    /// A refused load: sysfs shows the patch being set up (in transition,
    /// disabled, every task at the start) until the kernel backs out and
    /// frees it. Polled in that moment, it is still no transition.
    #[test]
    fn a_refused_patch_seen_being_set_up_is_no_transition() {
        // The round read sysfs before the log: the refusal comes first.
        for told_first in ["log", "tracer"] {
            let mut state = tracker();
            state.apply(poll(0, vec![], None, vec![]));
            let backed_out = match told_first {
                "log" => Observation::KernelLog(LivepatchMessage::Refused {
                    patch: "p".into(),
                    incompatible_states: false,
                }),
                _ => Observation::Trace(TraceEvent::Cancel { timestamp_ns: 0 }),
            };
            state.apply(backed_out);
            let setting_up = poll(
                1,
                vec![patch("p", false, true)],
                Some((Direction::Unpatching, 0)),
                vec![],
            );
            assert!(state.apply(setting_up).is_empty());
            let events = state.apply(poll(2, vec![], None, vec![]));
            assert_eq!(names(&events), ["gone"], "told first by the {told_first}");
        }
        for told in ["log", "tracer"] {
            let mut state = tracker();
            state.apply(poll(0, vec![], None, vec![]));
            let setting_up = poll(
                1,
                vec![patch("p", false, true)],
                Some((Direction::Unpatching, 0)),
                vec![],
            );
            assert!(state.apply(setting_up).is_empty());
            let refused = LivepatchMessage::Refused {
                patch: "p".into(),
                incompatible_states: false,
            };
            let events = match told {
                "log" => state.apply(Observation::KernelLog(refused)),
                _ => state.apply(Observation::Trace(TraceEvent::Cancel { timestamp_ns: 0 })),
            };
            assert!(
                events
                    .iter()
                    .all(|e| matches!(e, TransitionEvent::Refused { .. })),
                "{events:?}"
            );
            // It was in sysfs, and is gone: that much is so.
            let events = state.apply(poll(2, vec![], None, vec![]));
            assert_eq!(names(&events), ["gone"], "told by the {told}");
        }
    }

    /// `poll`, read at `read_ms`, after the transition of "p" under way
    /// completed at `completed_ms` (towards `direction`) as the tracer or
    /// the kernel log `told`: the tracer's event comes before the poll that
    /// read sysfs after it, the log is part of every poll.
    fn after_completion(
        state: &mut TransitionTracker,
        told: &str,
        completed_ms: u64,
        direction: Direction,
        read_ms: u64,
        poll: Observation,
    ) -> Vec<TransitionEvent> {
        let Observation::Poll(mut poll) = poll else {
            unreachable!("a poll")
        };
        poll.read_ns = read_ms * 1_000_000;
        match told {
            "tracer" => {
                state.apply(Observation::Trace(TraceEvent::Complete {
                    timestamp_ns: completed_ms * 1_000_000,
                }));
            }
            _ => poll.log.get_or_insert_with(Vec::new).push(LogEntry {
                timestamp_us: completed_ms * 1000,
                message: LivepatchMessage::Complete {
                    patch: "p".into(),
                    unpatching: direction == Direction::Unpatching,
                },
            }),
        }
        state.apply(Observation::Poll(poll))
    }

    fn complete_event(events: &[TransitionEvent]) -> Option<(Direction, bool)> {
        events.iter().find_map(|e| match e {
            TransitionEvent::Complete {
                direction,
                reversed,
                ..
            } => Some((*direction, *reversed)),
            _ => None,
        })
    }

    /// The patching transition completed and a disable began unpatching
    /// before the next poll read sysfs, which finds the same patch in
    /// transition again: two transitions, no reversal.
    #[test]
    fn a_completion_then_a_disable_between_polls_is_no_reversal() {
        for told in ["tracer", "log"] {
            let mut state = tracker();
            state.apply(patching(0, 5, vec![]));
            let unpatching = poll(
                2,
                vec![patch("p", false, true)],
                Some((Direction::Unpatching, 5)),
                vec![],
            );
            let events = after_completion(
                &mut state,
                told,
                1500,
                Direction::Patching,
                2000,
                unpatching,
            );
            assert_eq!(names(&events), ["complete", "start"], "{told}: {events:?}");
            assert_eq!(
                complete_event(&events),
                Some((Direction::Patching, false)),
                "{told}"
            );
            assert!(matches!(
                events[1],
                TransitionEvent::Start {
                    direction: Direction::Unpatching,
                    ..
                }
            ));
            let events = state.apply(poll(3, vec![], None, vec![]));
            assert_eq!(
                complete_event(&events),
                Some((Direction::Unpatching, false)),
                "{told}: {events:?}"
            );
        }
    }

    /// A poll that read sysfs before the completion still shows the
    /// transition it ended: the next one ends it.
    #[test]
    fn a_poll_read_before_the_completion_keeps_the_transition() {
        for told in ["tracer", "log"] {
            let mut state = tracker();
            state.apply(patching(0, 5, vec![]));
            let events = after_completion(
                &mut state,
                told,
                1500,
                Direction::Patching,
                1000,
                patching(2, 1, vec![]),
            );
            assert_eq!(names(&events), ["progress"], "{told}");
            let Observation::Poll(mut settled) =
                poll(3, vec![patch("p", true, false)], None, vec![])
            else {
                unreachable!("a poll")
            };
            if told == "log" {
                settled.log = Some(vec![LogEntry {
                    timestamp_us: 1_500_000,
                    message: LivepatchMessage::Complete {
                        patch: "p".into(),
                        unpatching: false,
                    },
                }]);
            }
            let events = state.apply(Observation::Poll(settled));
            assert_eq!(
                complete_event(&events),
                Some((Direction::Patching, false)),
                "{told}: {events:?}"
            );
        }
    }

    /// The tracer hears a completion as klp_complete_transition begins;
    /// sysfs shows the patch in transition until it ends. A poll between
    /// sees the completed transition's tail, not a new one.
    #[test]
    fn the_tail_of_a_completed_transition_is_no_transition_of_its_own() {
        let mut state = tracker();
        let unpatching = |at, pending| {
            poll(
                at,
                vec![patch("p", false, true)],
                Some((Direction::Unpatching, pending)),
                vec![],
            )
        };
        state.apply(unpatching(0, 5));
        let events = after_completion(
            &mut state,
            "tracer",
            1900,
            Direction::Unpatching,
            2000,
            unpatching(2, 0),
        );
        assert_eq!(
            complete_event(&events),
            Some((Direction::Unpatching, false)),
            "{events:?}"
        );
        assert_eq!(names(&events), ["complete"], "{events:?}");
        let Observation::Poll(mut tail) = unpatching(2, 0) else {
            unreachable!("a poll")
        };
        tail.read_ns = 2100 * 1_000_000;
        assert!(state.apply(Observation::Poll(tail)).is_empty());
        let events = state.apply(poll(4, vec![], None, vec![]));
        assert_eq!(names(&events), ["gone"], "{events:?}");
    }

    /// The tail lasts milliseconds: the same patch seen patching again a
    /// while after its patching completed (polled alone, the unpatching
    /// between unseen) is a transition of its own, however long it lasts.
    #[test]
    fn a_tail_rule_never_hides_the_patchs_next_transition() {
        let mut state = tracker();
        state.apply(patching(0, 5, vec![]));
        let events = after_completion(
            &mut state,
            "log",
            1900,
            Direction::Patching,
            2000,
            poll(
                2,
                vec![patch("p", false, true)],
                Some((Direction::Unpatching, 0)),
                vec![],
            ),
        );
        assert_eq!(complete_event(&events), Some((Direction::Patching, false)));
        let events = state.apply(patching(3, 5, vec![]));
        assert_eq!(names(&events), ["start", "complete", "start"], "{events:?}");
        assert!(state.apply(patching(4, 5, vec![])).is_empty());
        assert!(state.transition.is_some(), "the new patching is followed");
    }

    fn traced(state: &mut TransitionTracker, event: TraceEvent) {
        state.apply(Observation::Trace(event));
    }

    /// A tracker that saw "p" start patching (traced and polled) and its
    /// completion traced, but no poll since.
    fn patching_completed_as_traced() -> TransitionTracker {
        let mut state = tracker();
        traced(&mut state, TraceEvent::Start { timestamp_ns: 0 });
        state.apply(patching(0, 5, vec![]));
        traced(&mut state, TraceEvent::Complete { timestamp_ns: SEC });
        state
    }

    /// `events` told an unpatching that came and went unseen by the polls,
    /// then the patching that followed it.
    fn assert_unpatched_between_then_patching(events: &[TransitionEvent]) {
        assert_eq!(names(events), ["start", "complete", "start"], "{events:?}");
        assert!(
            matches!(
                events,
                [
                    TransitionEvent::Start {
                        direction: Direction::Unpatching,
                        ..
                    },
                    TransitionEvent::Complete {
                        direction: Direction::Unpatching,
                        reversed: false,
                        ..
                    },
                    TransitionEvent::Start {
                        direction: Direction::Patching,
                        ..
                    },
                ]
            ),
            "{events:?}"
        );
    }

    /// An unpatching may take milliseconds: between two polls the patch was
    /// disabled, unpatched, unloaded, loaded again and is patching anew.
    /// The tracer's starts and completions, in order, tell each one.
    #[test]
    fn transitions_that_came_and_went_between_polls_are_told_by_the_tracer() {
        let mut state = patching_completed_as_traced();
        let events = state.apply(poll(2, vec![patch("p", true, false)], None, vec![]));
        assert_eq!(complete_event(&events), Some((Direction::Patching, false)));
        for (at_ms, event) in [(2100, "start"), (2105, "complete"), (2600, "start")] {
            let timestamp_ns = at_ms * 1_000_000;
            traced(
                &mut state,
                match event {
                    "start" => TraceEvent::Start { timestamp_ns },
                    _ => TraceEvent::Complete { timestamp_ns },
                },
            );
        }
        assert_unpatched_between_then_patching(&state.apply(patching(3, 5, vec![])));
    }

    /// A transition's start is read by one poll, which sees it with no
    /// task left to tell its way, and its completion by the next, which
    /// already sees the patch's next transition: the start still counts.
    #[test]
    fn a_start_and_its_completion_read_by_two_polls_are_one_transition() {
        let mut state = patching_completed_as_traced();
        state.apply(poll(2, vec![patch("p", true, false)], None, vec![]));
        traced(
            &mut state,
            TraceEvent::Start {
                timestamp_ns: 2_100_000_000,
            },
        );
        let unpatching = poll(
            3,
            vec![patch("p", false, true)],
            Some((Direction::Unpatching, 0)),
            vec![],
        );
        assert!(state.apply(unpatching).is_empty());
        for timestamp_ns in [3100 * 1_000_000, 3500 * 1_000_000] {
            let event = match timestamp_ns {
                3_100_000_000 => TraceEvent::Complete { timestamp_ns },
                _ => TraceEvent::Start { timestamp_ns },
            };
            traced(&mut state, event);
        }
        let events = state.apply(patching(4, 5, vec![]));
        assert_unpatched_between_then_patching(&events);
    }

    /// Polled alone (or where the tracer hears no start of it): a patch
    /// seen patching again after its patching completed was unpatched and
    /// loaded again between the polls.
    #[test]
    fn a_patch_seen_going_the_same_way_twice_went_the_other_way_between() {
        let mut state = tracker();
        state.apply(patching(0, 5, vec![]));
        let events = state.apply(poll(1, vec![patch("p", true, false)], None, vec![]));
        assert_eq!(complete_event(&events), Some((Direction::Patching, false)));
        let events = state.apply(patching(2, 5, vec![]));
        assert_unpatched_between_then_patching(&events);
    }

    /// A poll whose sysfs read began before a quick unpatching and ended
    /// after its patch's folder was gone tells that unpatching from sysfs;
    /// the tracer's start and completion of it, timed after the read began,
    /// do not tell it again at the next poll.
    #[test]
    fn a_transition_told_from_sysfs_is_not_told_again_by_the_tracer() {
        let mut state = patching_completed_as_traced();
        state.apply(poll(2, vec![patch("p", true, false)], None, vec![]));
        traced(
            &mut state,
            TraceEvent::Start {
                timestamp_ns: 2_500_000_000,
            },
        );
        traced(
            &mut state,
            TraceEvent::Complete {
                timestamp_ns: 2550 * 1_000_000,
            },
        );
        let Observation::Poll(mut slow) = poll(3, vec![], None, vec![]) else {
            unreachable!("a poll")
        };
        slow.read_ns = 2400 * 1_000_000;
        let events = state.apply(Observation::Poll(slow));
        assert_eq!(names(&events), ["start", "complete", "gone"], "{events:?}");
        assert_eq!(
            complete_event(&events),
            Some((Direction::Unpatching, false))
        );
        let events = state.apply(poll(4, vec![], None, vec![]));
        assert!(events.is_empty(), "{events:?}");
    }

    /// Completed, then disabled and gone within one poll interval (an
    /// unpatching may take milliseconds): the patching completed, and the
    /// unpatching came and went.
    #[test]
    fn a_completion_then_a_quick_unpatching_is_two_transitions() {
        for told in ["tracer", "log"] {
            let mut state = tracker();
            state.apply(patching(0, 5, vec![]));
            let gone = poll(1, vec![], None, vec![]);
            let events = after_completion(&mut state, told, 500, Direction::Patching, 1000, gone);
            assert_eq!(
                names(&events),
                ["complete", "start", "complete", "gone"],
                "{told}: {events:?}"
            );
            assert_eq!(
                complete_event(&events),
                Some((Direction::Patching, false)),
                "{told}"
            );
            assert!(
                matches!(
                    events[2],
                    TransitionEvent::Complete {
                        direction: Direction::Unpatching,
                        reversed: false,
                        ..
                    }
                ),
                "{told}: {events:?}"
            );
        }
    }
}
