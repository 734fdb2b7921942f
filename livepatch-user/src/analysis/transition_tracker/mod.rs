//! The transitions a live feed sees, as a state machine over its
//! observations: which patch is moving where, who blocks it, when the
//! kernel signals, how it ends. Pure: every observation carries its own
//! CLOCK_MONOTONIC time, so tests replay any history.
//!
//! Each observation may produce `TransitionEvent`s: the events that watch
//! prints and shows, that apply acts on and that metrics count.
//!
//! The tracker's state is in `state`; each concern that moves it has its
//! own file: `progress` (a transition followed poll by poll), `between_polls`
//! (what happened between two polls), `blocker_tracking` (which blockers
//! show), `tracer_and_log` (what the tracer and the kernel log tell), and
//! `events` (what comes out).
mod between_polls;
mod blocker_tracking;
mod events;
mod progress;
mod state;
#[cfg(test)]
mod test_support;
mod tracer_and_log;

pub use events::{Outcome, SignalsSeen, TransitionEvent};
pub(crate) use state::secs_between;
pub use state::{Rounds, TransitionProgress, TransitionTracker};
