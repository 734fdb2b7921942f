//! Pure functions from the model to progress, blockers and verdicts.
//! One-shot commands call them on a snapshot; live ones feed
//! `live_state` with a feed's observations.
pub mod advice;
pub mod blockers;
pub mod call_stats;
pub mod diagnosis;
pub mod fleet_metrics;
pub mod function_state;
pub mod live_state;
pub mod observation;
pub mod readiness;
pub mod rollout;
pub mod transition;
pub mod transition_tracker;
