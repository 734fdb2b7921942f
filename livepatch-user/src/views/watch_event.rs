//! What a live command's lines and event log carry: the transition's
//! events and the command's own (ready, a timeout, a signal).
use schemars::JsonSchema;
use serde::Serialize;

use crate::{analysis::transition_tracker::TransitionEvent, model::LiveEvent};

/// A line of a live command: the transition's event, or the command's own.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum WatchEvent {
    Transition(TransitionEvent),
    Live(LiveEvent),
}

impl From<TransitionEvent> for WatchEvent {
    fn from(event: TransitionEvent) -> Self {
        WatchEvent::Transition(event)
    }
}

impl From<LiveEvent> for WatchEvent {
    fn from(event: LiveEvent) -> Self {
        WatchEvent::Live(event)
    }
}
