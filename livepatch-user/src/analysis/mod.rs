//! Pure functions from the model to progress, blockers and verdicts.
pub mod advice;
pub mod blockers;
pub mod diagnosis;
pub mod function_state;
pub mod readiness;
pub mod transition_progress;
