//! The live picture a feed's observations build: the transitions and their
//! blockers, and the calls per patched function. `watch` renders it,
//! `apply` acts on its events, `metrics` exports it.
use super::{
    call_stats::CallStats,
    observation::Observation,
    transition_tracker::{TransitionEvent, TransitionTracker},
};

#[derive(Clone, Debug)]
pub struct LiveState {
    pub tracker: TransitionTracker,
    pub calls: CallStats,
}

impl LiveState {
    /// `watched`: the one patch to follow; None follows every patch.
    pub fn new(watched: Option<String>) -> Self {
        LiveState {
            tracker: TransitionTracker::new(watched),
            calls: CallStats::default(),
        }
    }

    /// Applies one observation; returns the transition events it produced.
    pub fn apply(&mut self, observation: Observation) -> Vec<TransitionEvent> {
        match observation {
            Observation::Calls(sample) => {
                self.tracker.observe_clock(sample.at_ns);
                let in_transition = self.tracker.transition.is_some();
                self.calls.apply(sample, in_transition);
                Vec::new()
            }
            observation => self.tracker.apply(observation),
        }
    }

    /// Applies a round of observations in order.
    pub fn apply_all(
        &mut self,
        observations: impl IntoIterator<Item = Observation>,
    ) -> Vec<TransitionEvent> {
        observations
            .into_iter()
            .flat_map(|observation| self.apply(observation))
            .collect()
    }
}
