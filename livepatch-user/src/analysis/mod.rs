//! Pure functions from the model to progress, blockers and verdicts.
