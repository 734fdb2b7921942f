//! A transition followed poll by poll: each poll is worked out against
//! the watched patches, and begins, moves on or ends the transition.
use super::{
    events::{Outcome, TransitionEvent, cleared, complete},
    state::{TransitionProgress, TransitionTracker, secs_between},
};
use crate::{
    analysis::{
        blockers::{Blocker, PatchedCode, find_blockers},
        observation::KernelPoll,
        transition::transition,
    },
    model::{Direction, Known, LogEntry, Patch, Transition},
};

/// A poll worked out: the watched patches, their transition and its
/// blockers.
pub(super) struct Assessed {
    pub(super) at_ns: u64,
    pub(super) read_ns: u64,
    pub(super) log: Option<Vec<LogEntry>>,
    pub(super) patches: Vec<Patch>,
    pub(super) transition: Option<Transition>,
    pub(super) blockers: Vec<Blocker>,
    /// How many threads the poll scanned, when it scanned them.
    pub(super) threads: Option<usize>,
}

impl TransitionTracker {
    /// The watched patches, their transition and its blockers, as the
    /// kernel decides them: the func stack is every loaded patch's.
    pub(super) fn assess(&self, poll: KernelPoll) -> Assessed {
        let watched: Vec<Patch> = poll
            .patches
            .iter()
            .filter(|patch| self.watched.as_ref().is_none_or(|name| &patch.name == name))
            .cloned()
            .collect();
        let log = poll.log.as_deref();
        let transition = poll
            .threads
            .as_ref()
            .and_then(|threads| transition(&watched, log, threads.iter().map(|t| &t.patch_state)));
        let blockers = transition
            .as_ref()
            .and_then(|transition| {
                let patch = poll.patches.iter().find(|p| p.name == transition.patch)?;
                let code = PatchedCode {
                    patch,
                    direction: transition.direction,
                    loaded: &poll.patches,
                };
                Some(find_blockers(
                    &poll.pending,
                    &code,
                    poll.verdicts.as_deref(),
                    poll.at_ns,
                ))
            })
            .unwrap_or_default();
        Assessed {
            at_ns: poll.at_ns,
            read_ns: poll.read_ns,
            log: poll.log,
            threads: poll.threads.as_ref().map(Vec::len),
            patches: watched,
            transition,
            blockers,
        }
    }

    pub(super) fn on_poll(&mut self, mut poll: Assessed, events: &mut Vec<TransitionEvent>) {
        let completed_ahead = self.end_completed(&poll, events);
        self.ignore_completion_tail(&mut poll);
        self.settle_direction(&mut poll);
        self.backed_out = false;
        self.now_ns = self.now_ns.max(poll.at_ns);
        let first_poll = self.polls == 0;
        self.polls += 1;

        // A patch whose `transition` could not be read this time (a read
        // racing a write) has not ended its transition.
        let unreadable = |name: &str| {
            poll.patches
                .iter()
                .any(|p| p.name == name && !p.gone && matches!(p.transition, Known::Unknown { .. }))
        };
        let continuing = match (&self.transition, &poll.transition) {
            (Some(current), Some(seen)) => current.patch == seen.patch,
            (Some(current), None) => unreadable(&current.patch),
            (None, _) => false,
        };
        if !continuing {
            let reported = events.len();
            let ended = self.transition.take().map(|ended| {
                let name = ended.patch.clone();
                self.end(ended, None, &poll.patches, events);
                name
            });
            if let Some(seen) = &poll.transition {
                self.came_and_went_before(seen, poll.threads, events);
                self.begin(seen, events);
            } else if !first_poll {
                // A transition that ended by its completion left its patch
                // settled: what the patch did since (disabled and gone
                // within the poll interval) is a transition of its own.
                let ended = ended.filter(|_| !completed_ahead);
                self.quick_transitions(&poll, ended.as_deref(), events);
            }
            // What this poll told from sysfs alone explains the tracer's
            // starts and completions still waiting for a later poll (the
            // read took long, a patch folder being removed): walked again,
            // they would tell the same transitions twice.
            if events[reported..]
                .iter()
                .any(|e| matches!(e, TransitionEvent::Complete { .. }))
            {
                self.lifecycle.clear();
                self.started_since_completion = false;
            }
        }
        // A poll that read sysfs before a reversal the tracer heard shows
        // the direction the reversal undid.
        let stale = self.reversed_ns.is_some_and(|at| poll.read_ns < at);
        if let (Some(current), Some(seen)) = (self.transition.as_mut(), &poll.transition) {
            if seen.direction != current.direction && !stale {
                current.direction = seen.direction;
                events.push(TransitionEvent::Reverse {
                    patch: current.patch.clone(),
                    direction: seen.direction,
                });
            }
            if seen.tasks_pending != current.tasks_pending {
                events.push(TransitionEvent::Progress {
                    patch: current.patch.clone(),
                    tasks_pending: seen.tasks_pending,
                    tasks_total: seen.tasks_total,
                    switched: current.tasks_pending.saturating_sub(seen.tasks_pending),
                });
            }
            current.tasks_pending = seen.tasks_pending;
            current.tasks_total = seen.tasks_total;
        }
        self.track_blockers(poll.blockers, poll.at_ns, events);
        self.report_switches(events);
        self.update_patches(poll.patches, events);
    }

    fn begin(&mut self, seen: &Transition, events: &mut Vec<TransitionEvent>) {
        self.unbegun = None;
        // The tracer saw the start before the poll did: count from there.
        let started_ns = self
            .tracer_start_ns
            .take()
            .filter(|&at| at <= self.now_ns)
            .unwrap_or(self.now_ns);
        self.transition = Some(TransitionProgress {
            patch: seen.patch.clone(),
            direction: seen.direction,
            initial_direction: seen.direction,
            started_ns,
            tasks_total: seen.tasks_total,
            tasks_pending: seen.tasks_pending,
            signals: None,
            forced: false,
            blockers: Vec::new(),
        });
        self.candidates.clear();
        events.push(TransitionEvent::Start {
            patch: seen.patch.clone(),
            direction: seen.direction,
            tasks_total: seen.tasks_total,
        });
    }

    /// Ends the transition under way. `completed` is where the tracer or
    /// the log saw it end; without it, `enabled` names where it ended, even
    /// if a reversal happened between polls, and a patch that left ended
    /// disabled.
    pub(super) fn end(
        &mut self,
        ended: TransitionProgress,
        completed: Option<Direction>,
        patches: &[Patch],
        events: &mut Vec<TransitionEvent>,
    ) {
        let settled = || match patches
            .iter()
            .find(|p| p.name == ended.patch && !p.gone)
            .map(|p| &p.enabled)
        {
            Some(Known::Value(true)) => Direction::Patching,
            Some(Known::Value(false)) | None => Direction::Unpatching,
            Some(Known::Unknown { .. }) => ended.direction,
        };
        let direction = completed.unwrap_or_else(settled);
        for blocker in &ended.blockers {
            events.push(cleared(blocker));
        }
        self.candidates.clear();
        let outcome = Outcome {
            patch: ended.patch,
            direction,
            reversed: direction != ended.initial_direction,
            forced: ended.forced,
            secs: Some(secs_between(ended.started_ns, self.now_ns)),
        };
        events.push(complete(&outcome));
        self.last_outcome = Some(outcome);
    }

    fn update_patches(&mut self, polled: Vec<Patch>, events: &mut Vec<TransitionEvent>) {
        let mut patches = polled;
        for old in self.patches.drain(..) {
            match patches.iter_mut().find(|p| p.name == old.name) {
                Some(new) if new.gone && !old.gone => events.push(TransitionEvent::Gone {
                    patch: old.name.clone(),
                }),
                Some(_) => {}
                None => {
                    if !old.gone {
                        events.push(TransitionEvent::Gone {
                            patch: old.name.clone(),
                        });
                    }
                    patches.push(Patch { gone: true, ..old });
                }
            }
        }
        patches.sort_by(|a, b| a.name.cmp(&b.name));
        self.patches = patches;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn a_transition_starts_progresses_and_completes() {
        let mut state = tracker();
        assert!(state.apply(poll(0, vec![], None, vec![])).is_empty());
        let start = state.apply(patching(1, 100, vec![]));
        assert_eq!(
            start,
            [TransitionEvent::Start {
                patch: "p".into(),
                direction: Direction::Patching,
                tasks_total: 100
            }]
        );
        let progress = state.apply(patching(2, 3, vec![]));
        assert_eq!(
            progress,
            [TransitionEvent::Progress {
                patch: "p".into(),
                tasks_pending: 3,
                tasks_total: 100,
                switched: 97
            }]
        );
        assert!(
            state.apply(patching(3, 3, vec![])).is_empty(),
            "no change, no event"
        );
        let end = state.apply(poll(4, vec![patch("p", true, false)], None, vec![]));
        assert_eq!(
            end,
            [TransitionEvent::Complete {
                patch: "p".into(),
                direction: Direction::Patching,
                reversed: false,
                forced: false,
                secs: Some(3.0)
            }]
        );
        assert!(state.transition.is_none());
        assert_eq!(state.last_outcome.as_ref().map(|o| o.reversed), Some(false));
    }

    #[test]
    fn a_reversed_transition_reports_reverse_then_complete_reversed_then_gone() {
        let mut state = tracker();
        state.apply(patching(0, 5, vec![]));
        let reverse = state.apply(poll(
            1,
            vec![patch("p", false, true)],
            Some((Direction::Unpatching, 95)),
            vec![],
        ));
        assert_eq!(names(&reverse), ["reverse", "progress"]);
        let end = state.apply(poll(2, vec![], None, vec![]));
        assert_eq!(names(&end), ["complete", "gone"]);
        assert!(matches!(
            end[0],
            TransitionEvent::Complete {
                reversed: true,
                direction: Direction::Unpatching,
                ..
            }
        ));
        assert!(
            state.patches[0].gone,
            "a gone patch stays on screen, marked"
        );
    }

    #[test]
    fn an_unreadable_transition_flag_does_not_end_the_transition() {
        let mut state = tracker();
        state.apply(patching(0, 5, vec![]));
        let mut racing = patch("p", true, true);
        racing.transition = Known::unknown("empty read");
        assert!(state.apply(poll(1, vec![racing], None, vec![])).is_empty());
        assert!(state.transition.is_some());
    }

    #[test]
    fn a_reversal_between_polls_is_still_reported_as_reversed() {
        let mut state = tracker();
        state.apply(patching(0, 5, vec![]));
        let end = state.apply(poll(1, vec![patch("p", false, false)], None, vec![]));
        assert!(
            matches!(end[0], TransitionEvent::Complete { reversed: true, .. }),
            "{end:?}"
        );
    }
}
