//! The transitions a live feed sees, as a state machine over its
//! observations: which patch is moving where, who blocks it, when the
//! kernel signals, how it ends. Pure: every observation carries its own
//! CLOCK_MONOTONIC time, so tests replay any history.
//!
//! Each observation may produce `TransitionEvent`s: the events that watch
//! prints and shows, that apply acts on and that metrics count.
//!
//! The tracker's state is here; each concern that moves it has its own
//! file: `progress` (a transition followed poll by poll), `between_polls`
//! (what happened between two polls), `blocker_tracking` (which blockers
//! show), `tracer_and_log` (what the tracer and the kernel log tell), and
//! `events` (what comes out).
mod between_polls;
mod blocker_tracking;
mod events;
mod progress;
#[cfg(test)]
mod test_support;
mod tracer_and_log;

use std::collections::{BTreeMap, BTreeSet};

pub use events::{SignalsSeen, TransitionEvent};

use self::{
    between_polls::{Completing, Lifecycle},
    blocker_tracking::{Candidate, TaskKey},
};
use super::{advice::SIGNALS_AFTER_ROUNDS, blockers::Blocker, observation::Observation};
use crate::model::{Direction, Patch};

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

/// How the last transition ended, shown until the next one starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub patch: String,
    pub direction: Direction,
    pub reversed: bool,
    pub forced: bool,
    pub secs: Option<f64>,
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
    watched: Option<String>,
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
    failed_callback: Option<String>,
    polls: u64,
    tracer_start_ns: Option<u64>,
    candidates: BTreeMap<TaskKey, Candidate>,
    /// Switches the tracer saw since the last poll.
    switched: BTreeSet<u32>,
    /// A patch seen in transition whose direction no poll has told yet.
    unbegun: Option<String>,
    /// Transitions starting and completing as the tracer timed them, until
    /// a poll that read sysfs after them: that poll may already show the
    /// patch's next transition (a disable right after), or nothing of
    /// one that came and went between (an unpatching of a few
    /// milliseconds, the module unloaded and loaded again).
    lifecycle: Vec<(u64, Lifecycle)>,
    /// A traced start came after the last traced completion: the next
    /// completion ends that transition, whichever poll reads past it.
    started_since_completion: bool,
    /// Whether the tracer reports at all; without it, completions come
    /// from the kernel log.
    traced: bool,
    /// The patch and direction of a transition ended by its completion:
    /// the tracer hears it as klp_complete_transition begins, and sysfs
    /// shows the patch in transition until that function's end.
    completing: Option<Completing>,
    /// The kernel backed out of a patch it was setting up (refused in the
    /// log, cancelled by the tracer) since the last poll. That poll read
    /// sysfs before the log and the tracer: a patch it shows being set up
    /// is the one refused.
    backed_out: bool,
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

#[cfg(test)]
mod tests {
    use super::test_support::*;
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
