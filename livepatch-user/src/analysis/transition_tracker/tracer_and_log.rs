//! What the tracer and the kernel log tell as it happens: rounds, signals,
//! force, reversal, refusal, the threads that switched, and the starts and
//! completions the next poll is read against.
use super::{
    events::{SignalsSeen, TransitionEvent},
    state::{Lifecycle, Rounds, TransitionTracker},
};
use crate::{
    analysis::advice::SIGNALS_AFTER_ROUNDS,
    model::{LivepatchMessage, TraceEvent},
};

impl TransitionTracker {
    pub(super) fn on_trace(&mut self, event: TraceEvent, events: &mut Vec<TransitionEvent>) {
        self.traced = true;
        match event {
            TraceEvent::Start { timestamp_ns } => {
                self.lifecycle.push((timestamp_ns, Lifecycle::Start));
                self.tracer_start_ns = Some(timestamp_ns);
                // Counted from the first round the tracer reports; until
                // then (or on kernels where that hook is off) estimated.
                self.rounds = None;
            }
            // A round begins: every round before it failed to complete.
            TraceEvent::Round { round, .. } => {
                let rounds = self.rounds.get_or_insert_with(Rounds::default);
                rounds.total = round;
                rounds.failed = round.saturating_sub(1);
                // The kernel signals at the end of the round after
                // SIGNALS_AFTER_ROUNDS failed ones (its count starts at 0).
                if rounds.failed > SIGNALS_AFTER_ROUNDS {
                    self.signals(SignalsSeen::FailedRounds, events);
                }
            }
            TraceEvent::Reverse { timestamp_ns } => {
                self.reversed_ns = Some(timestamp_ns);
                if let Some(transition) = self.transition.as_mut() {
                    let direction = transition.direction.opposite();
                    transition.direction = direction;
                    events.push(TransitionEvent::Reverse {
                        patch: transition.patch.clone(),
                        direction,
                    });
                }
            }
            TraceEvent::Force { .. } => self.forced(events),
            TraceEvent::Check {
                tid, reason: None, ..
            }
            | TraceEvent::SelfSwitch { tid, .. } => {
                self.switched.insert(tid);
            }
            // The kernel backs out of a patch it is setting up (a pre-patch
            // callback failed): what a poll saw of it was no transition.
            TraceEvent::Cancel { .. } => {
                self.unbegun = None;
                self.backed_out = true;
            }
            // The polls decide when a transition starts and ends: they know
            // the patch, the tracer does not. A completion says where the
            // one under way ended.
            TraceEvent::Complete { timestamp_ns } => {
                self.lifecycle.push((timestamp_ns, Lifecycle::Complete));
            }
            TraceEvent::Check { .. } => {}
        }
    }

    pub(super) fn on_kernel_log(
        &mut self,
        message: LivepatchMessage,
        events: &mut Vec<TransitionEvent>,
    ) {
        match message {
            LivepatchMessage::Signaling => self.signals(SignalsSeen::KernelLog, events),
            LivepatchMessage::Forcing => self.forced(events),
            LivepatchMessage::PreCallbackFailed { object } => {
                self.failed_callback = Some(object);
            }
            LivepatchMessage::Refused {
                patch,
                incompatible_states,
            } => {
                let why = if incompatible_states {
                    "not compatible with the already installed livepatches (system states)"
                        .to_owned()
                } else {
                    match self.failed_callback.take() {
                        Some(object) => {
                            format!("its pre-patch callback failed for object {object}")
                        }
                        None => "the kernel failed to enable it (see dmesg)".to_owned(),
                    }
                };
                // Seen being set up, it never began: when it leaves sysfs,
                // it is no transition that came and went.
                if self.unbegun.as_deref() == Some(patch.as_str()) {
                    self.unbegun = None;
                }
                self.backed_out = true;
                events.push(TransitionEvent::Refused { patch, why });
            }
            LivepatchMessage::Enabling { .. }
            | LivepatchMessage::Starting { .. }
            | LivepatchMessage::Complete { .. } => {}
        }
    }

    /// Once per transition, whichever source tells first.
    fn signals(&mut self, seen_in: SignalsSeen, events: &mut Vec<TransitionEvent>) {
        if let Some(transition) = self.transition.as_mut().filter(|t| t.signals.is_none()) {
            transition.signals = Some(seen_in);
            events.push(TransitionEvent::Signals {
                patch: transition.patch.clone(),
                seen_in,
            });
        }
    }

    /// Force is seen by the tracer, the kernel log, or klpscope's own
    /// write: reported once.
    pub(super) fn forced(&mut self, events: &mut Vec<TransitionEvent>) {
        if let Some(transition) = self.transition.as_mut().filter(|t| !t.forced) {
            transition.forced = true;
            events.push(TransitionEvent::Force {
                patch: transition.patch.clone(),
            });
        }
    }

    /// The switches the tracer saw since the last poll, under the patch in
    /// transition, or before the completion of one that ended since.
    pub(super) fn report_switches(&mut self, events: &mut Vec<TransitionEvent>) {
        if self.switched.is_empty() {
            return;
        }
        let completed = events
            .iter()
            .position(|e| matches!(e, TransitionEvent::Complete { .. }));
        let patch = match (&self.transition, completed.map(|i| &events[i])) {
            (_, Some(TransitionEvent::Complete { patch, .. })) => patch.clone(),
            (Some(transition), _) => transition.patch.clone(),
            // Not in a transition yet: the tracer ran ahead of the polls.
            _ => return,
        };
        let switched = TransitionEvent::Switched {
            patch,
            tids: std::mem::take(&mut self.switched).into_iter().collect(),
        };
        match completed {
            Some(at) => events.insert(at, switched),
            None => events.push(switched),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn signals_come_once_from_the_log_or_the_kernels_count_of_failed_rounds() {
        let mut state = tracker();
        state.apply(Observation::Trace(TraceEvent::Start { timestamp_ns: 0 }));
        state.apply(patching(1, 1, vec![]));
        let round = |round| {
            Observation::Trace(TraceEvent::Round {
                timestamp_ns: 0,
                round,
            })
        };
        // The kernel's count of failed rounds starts at 0: it signals at the
        // end of the 16th, seen when the 17th begins.
        for number in 1..=16 {
            assert!(state.apply(round(number)).is_empty());
        }
        assert_eq!(state.retry_rounds(), Some((16, false)));
        assert_eq!(names(&state.apply(round(17))), ["signals"]);
        assert!(
            state
                .apply(Observation::KernelLog(LivepatchMessage::Signaling))
                .is_empty()
        );
        assert_eq!(
            state.transition.as_ref().unwrap().started_ns,
            0,
            "the tracer saw the start first"
        );
    }

    #[test]
    fn force_is_reported_once_whoever_saw_it() {
        let mut state = tracker();
        assert!(
            state.apply(Observation::ForceWritten).is_empty(),
            "nothing to force when idle"
        );
        state.apply(patching(0, 1, vec![]));
        assert_eq!(names(&state.apply(Observation::ForceWritten)), ["force"]);
        assert!(
            state
                .apply(Observation::KernelLog(LivepatchMessage::Forcing))
                .is_empty()
        );
        let end = state.apply(poll(1, vec![patch("p", true, false)], None, vec![]));
        assert!(matches!(
            end[0],
            TransitionEvent::Complete {
                forced: true,
                reversed: false,
                ..
            }
        ));
    }

    #[test]
    fn the_tracer_reports_a_reversal_before_the_poll_and_only_once() {
        let mut state = tracker();
        state.apply(patching(0, 5, vec![]));
        assert_eq!(
            names(&state.apply(Observation::Trace(TraceEvent::Reverse { timestamp_ns: 1 }))),
            ["reverse"]
        );
        let poll = state.apply(poll(
            1,
            vec![patch("p", false, true)],
            Some((Direction::Unpatching, 5)),
            vec![],
        ));
        assert!(poll.is_empty(), "{poll:?}");
    }

    #[test]
    fn a_poll_read_before_a_traced_reversal_does_not_turn_it_back() {
        let mut state = tracker();
        state.apply(patching(0, 5, vec![]));
        state.apply(Observation::Trace(TraceEvent::Reverse {
            timestamp_ns: 2 * SEC,
        }));
        // Read at 1 s, applied after the tracer's news: still patching.
        let stale = state.apply(poll(
            1,
            vec![patch("p", true, true)],
            Some((Direction::Patching, 5)),
            vec![],
        ));
        assert!(
            names(&stale).iter().all(|name| name != "reverse"),
            "{stale:?}"
        );
        assert_eq!(
            state.transition.as_ref().map(|t| t.direction),
            Some(Direction::Unpatching)
        );
    }

    #[test]
    fn switches_the_tracer_saw_are_reported_in_bulk_once_a_poll() {
        let mut state = tracker();
        state.apply(patching(0, 3, vec![]));
        let check = |tid, reason| TraceEvent::Check {
            timestamp_ns: 1,
            tid,
            tgid: tid,
            comm: "t".into(),
            kthread: false,
            reason,
            function: None,
            failed_checks: 0,
            failed_rounds: 0,
        };
        let switched = |tid| check(tid, None);
        assert!(state.apply(Observation::Trace(switched(7))).is_empty());
        state.apply(Observation::Trace(TraceEvent::SelfSwitch {
            timestamp_ns: 2,
            tid: 5,
            tgid: 5,
            comm: "u".into(),
            kthread: false,
        }));
        state.apply(Observation::Trace(check(
            9,
            Some(BlockReason::FunctionOnStack),
        )));
        let events = state.apply(patching(1, 1, vec![]));
        assert!(
            events.contains(&TransitionEvent::Switched {
                patch: "p".into(),
                tids: vec![5, 7]
            }),
            "{events:?}"
        );
        let again = state.apply(patching(2, 1, vec![]));
        assert!(
            !again
                .iter()
                .any(|e| matches!(e, TransitionEvent::Switched { .. })),
            "each switch is reported once"
        );
    }

    #[test]
    fn switches_of_a_transition_that_ended_between_polls_come_before_its_end() {
        let mut state = tracker();
        state.apply(poll(0, vec![], None, vec![]));
        state.apply(Observation::Trace(TraceEvent::SelfSwitch {
            timestamp_ns: 1,
            tid: 3,
            tgid: 3,
            comm: "sh".into(),
            kthread: false,
        }));
        let events = state.apply(poll(1, vec![patch("p", true, false)], None, vec![]));
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| match e {
                TransitionEvent::Start { .. } => "start",
                TransitionEvent::Switched { .. } => "switched",
                TransitionEvent::Complete { .. } => "complete",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["start", "switched", "complete"]);
    }
}
