//! `apply` and `revert` steps as sentences, between the transition's own
//! events (`watch_lines`).
use crate::{
    analysis::rollout::{BackoutCause, RolloutEnd, RolloutKind, RolloutStep},
    views::{counted, style::Tone},
};

/// What a step means to the person rolling out, as a colour.
pub fn step_tone(step: &RolloutStep) -> Option<Tone> {
    match step {
        RolloutStep::Loaded { .. } | RolloutStep::Disabling { .. } => None,
        RolloutStep::ConfirmBackout { .. }
        | RolloutStep::Deadline { .. }
        | RolloutStep::Reversing { .. }
        | RolloutStep::Reversed { .. } => Some(Tone::Warn),
        RolloutStep::Unloaded { .. } => Some(Tone::Good),
        RolloutStep::Failed { .. } => Some(Tone::Bad),
        RolloutStep::Finished { end, .. } => Some(match end {
            RolloutEnd::Done | RolloutEnd::DryRun => Tone::Good,
            RolloutEnd::NotConfirmed | RolloutEnd::BackedOut => Tone::Warn,
            RolloutEnd::NotReady | RolloutEnd::Refused | RolloutEnd::BackoutStalled => Tone::Bad,
        }),
    }
}

pub fn describe_step(step: &RolloutStep) -> String {
    match step {
        RolloutStep::Loaded { patch, module } => {
            format!("{patch}: module {module} loaded, patching transition started")
        }
        RolloutStep::Disabling { patch } => {
            format!("{patch}: disabled, unpatching transition started")
        }
        RolloutStep::ConfirmBackout { signal } => format!(
            "{signal}: the transition goes on; press Ctrl-C again (or send SIGTERM) to reverse it"
        ),
        RolloutStep::Deadline {
            patch,
            secs,
            tasks_pending,
            blockers,
        } => {
            let who: Vec<String> = blockers
                .iter()
                .map(|b| {
                    format!(
                        "{} pid {} tid {} [{}] {}{}",
                        b.comm,
                        b.pid,
                        b.tid,
                        b.state,
                        b.reason.words(),
                        b.function
                            .as_deref()
                            .map_or(String::new(), |f| format!(" ({f})"))
                    )
                })
                .collect();
            let named = if who.is_empty() {
                "no blocker named yet (see klpscope diagnose)".to_owned()
            } else {
                format!("blocked by {}", who.join("; "))
            };
            format!(
                "{patch}: deadline of {secs:.0}s passed with {} pending, {named}",
                counted(*tasks_pending, "task")
            )
        }
        RolloutStep::Reversing {
            patch,
            direction,
            cause,
        } => {
            let why = match cause {
                BackoutCause::Deadline => "the deadline passed".to_owned(),
                BackoutCause::Interrupted { signal } => signal.clone(),
            };
            format!("{patch}: reversing ({why}): now {direction}")
        }
        RolloutStep::Reversed { patch, direction } => {
            format!("{patch}: reversal complete, ended {direction}")
        }
        RolloutStep::Unloaded { module } => format!("module {module} unloaded"),
        RolloutStep::Failed { patch, what } => format!("{patch}: {what}"),
        RolloutStep::Finished {
            patch, kind, end, ..
        } => match (kind, end) {
            (RolloutKind::Apply, RolloutEnd::Done) => format!("{patch}: applied"),
            (RolloutKind::Revert, RolloutEnd::Done) => {
                format!("{patch}: reverted, its module unloaded")
            }
            (RolloutKind::Apply, RolloutEnd::BackedOut) => {
                format!("{patch}: backed out: not applied, its module unloaded")
            }
            (RolloutKind::Revert, RolloutEnd::BackedOut) => {
                format!("{patch}: backed out: enabled again, still applied")
            }
            (_, RolloutEnd::BackoutStalled) => {
                format!("{patch}: left in transition: the reversal stalled too")
            }
            (_, RolloutEnd::DryRun) => format!("{patch}: dry run: ready, nothing changed"),
            (_, RolloutEnd::NotConfirmed) => {
                format!("{patch}: the check found warnings: nothing changed (--yes goes on anyway)")
            }
            (_, RolloutEnd::NotReady) => format!("{patch}: not ready: nothing changed"),
            (_, RolloutEnd::Refused) => format!("{patch}: refused: nothing changed"),
        },
    }
}
