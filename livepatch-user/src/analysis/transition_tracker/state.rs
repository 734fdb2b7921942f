//! The tracker's state: what it knows of the patches, the transition
//! under way and the last one's end, and what it keeps between polls. Each
//! concern that moves it has a file of its own.
use std::collections::{BTreeMap, BTreeSet};

use super::events::{Outcome, SignalsSeen, TransitionEvent};
use crate::{
    analysis::{advice::SIGNALS_AFTER_ROUNDS, blockers::Blocker, observation::Observation},
    model::{Direction, Patch},
};

#[derive(Clone, Debug, PartialEq)]
pub struct TransitionProgress {
    pub patch: String,
    pub direction: Direction,
    pub initial_direction: Direction,
    pub started_ns: u64,
    pub tasks_total: usize,
    pub tasks_pending: usize,
    pub signals: Option<SignalsSeen>,
    pub forced: bool,
    /// The blockers worth showing, with `blocked_secs` filled in.
    pub blockers: Vec<Blocker>,
}

/// Retry rounds as the tracer counts them (reset when a transition starts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rounds {
    pub total: u32,
    pub failed: u32,
}

#[derive(Clone, Debug)]
pub struct TransitionTracker {
    /// The one patch followed (`--patch`); None follows every patch.
    pub(super) watched: Option<String>,
    /// The watched patches as last polled; a patch that left stays with
    /// `gone` set.
    pub patches: Vec<Patch>,
    pub transition: Option<TransitionProgress>,
    pub last_outcome: Option<Outcome>,
    /// From the tracer; None when only polling feeds the view.
    pub rounds: Option<Rounds>,
    /// The newest time any observation carried.
    pub now_ns: u64,
    /// The object whose pre-patch callback failed, until the refusal that
    /// follows it in the log.
    pub(super) failed_callback: Option<String>,
    pub(super) polls: u64,
    pub(super) tracer_start_ns: Option<u64>,
    pub(super) candidates: BTreeMap<TaskKey, Candidate>,
    /// Switches the tracer saw since the last poll.
    pub(super) switched: BTreeSet<u32>,
    /// A patch seen in transition whose direction no poll has told yet.
    pub(super) unbegun: Option<String>,
    /// Transitions starting and completing as the tracer timed them, until
    /// a poll that read sysfs after them: that poll may already show the
    /// patch's next transition (a disable right after), or nothing of
    /// one that came and went between (an unpatching of a few
    /// milliseconds, the module unloaded and loaded again).
    pub(super) lifecycle: Vec<(u64, Lifecycle)>,
    /// A traced start came after the last traced completion: the next
    /// completion ends that transition, whichever poll reads past it.
    pub(super) started_since_completion: bool,
    /// Whether the tracer reports at all; without it, completions come
    /// from the kernel log.
    pub(super) traced: bool,
    /// The patch and direction of a transition ended by its completion:
    /// the tracer hears it as klp_complete_transition begins, and sysfs
    /// shows the patch in transition until that function's end.
    pub(super) completing: Option<Completing>,
    /// The kernel backed out of a patch it was setting up (refused in the
    /// log, cancelled by the tracer) since the last poll. That poll read
    /// sysfs before the log and the tracer: a patch it shows being set up
    /// is the one refused.
    pub(super) backed_out: bool,
    /// When the tracer heard the last reversal: a poll that read sysfs
    /// before it shows the direction the reversal undid.
    pub(super) reversed_ns: Option<u64>,
}

impl TransitionTracker {
    pub fn new(watched: Option<String>) -> Self {
        TransitionTracker {
            watched,
            patches: Vec::new(),
            transition: None,
            last_outcome: None,
            rounds: None,
            now_ns: 0,
            failed_callback: None,
            polls: 0,
            tracer_start_ns: None,
            candidates: BTreeMap::new(),
            switched: BTreeSet::new(),
            unbegun: None,
            lifecycle: Vec::new(),
            started_since_completion: false,
            traced: false,
            completing: None,
            backed_out: false,
            reversed_ns: None,
        }
    }

    /// Applies one observation; returns the events it produced. Of a call
    /// sample only its time matters here (see `LiveState`).
    pub fn apply(&mut self, observation: Observation) -> Vec<TransitionEvent> {
        let mut events = Vec::new();
        match observation {
            Observation::Poll(poll) => {
                let assessed = self.assess(poll);
                self.on_poll(assessed, &mut events);
            }
            Observation::Trace(event) => self.on_trace(event, &mut events),
            Observation::KernelLog(message) => self.on_kernel_log(message, &mut events),
            Observation::Calls(sample) => self.observe_clock(sample.at_ns),
            Observation::ForceWritten => self.forced(&mut events),
        }
        events
    }

    /// Time moves on with every observation, whatever it is about.
    pub fn observe_clock(&mut self, at_ns: u64) {
        self.now_ns = self.now_ns.max(at_ns);
    }

    /// Seconds since the transition in progress started.
    pub fn elapsed_secs(&self) -> Option<f64> {
        let transition = self.transition.as_ref()?;
        Some(secs_between(transition.started_ns, self.now_ns))
    }

    /// Retry rounds so far: counted by the tracer, or estimated from the
    /// elapsed time (the kernel retries once a second). The flag says
    /// whether it is an estimate.
    pub fn retry_rounds(&self) -> Option<(u32, bool)> {
        let elapsed = self.elapsed_secs()?;
        Some(match self.rounds {
            Some(rounds) => (rounds.total, false),
            None => (elapsed as u32, true),
        })
    }

    /// The kernel signals after this many failed rounds; with only an
    /// estimate of the rounds, it is only likely.
    pub fn signals_expected(&self) -> bool {
        self.retry_rounds()
            .is_some_and(|(rounds, _)| rounds >= SIGNALS_AFTER_ROUNDS)
    }
}

pub(crate) fn secs_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e9
}

/// A transition ended by its completion, while sysfs may still show it.
#[derive(Clone, Debug)]
pub(super) struct Completing {
    pub(super) patch: String,
    pub(super) direction: Direction,
    /// When the kernel completed it: the tail lasts no longer than the
    /// rest of klp_complete_transition.
    pub(super) at_ns: u64,
}

/// A transition's start or completion, as the tracer hears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lifecycle {
    Start,
    Complete,
}

/// Which task a blocker is: the per-CPU idle tasks all have tid 0, and
/// tell themselves apart by name (swapper/N).
pub(super) type TaskKey = (u32, String);

/// A task found blocking, not necessarily shown yet.
#[derive(Clone, Debug)]
pub(super) struct Candidate {
    pub(super) first_seen_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn polling_alone_estimates_rounds_and_takes_signals_from_the_kernel_log() {
        let mut state = tracker();
        state.apply(patching(0, 1, vec![]));
        state.apply(patching(16, 1, vec![]));
        assert_eq!(state.retry_rounds(), Some((16, true)));
        assert!(state.signals_expected());
        let events = state.apply(Observation::KernelLog(LivepatchMessage::Signaling));
        assert_eq!(
            events,
            [TransitionEvent::Signals {
                patch: "p".into(),
                seen_in: SignalsSeen::KernelLog
            }]
        );
    }
}
