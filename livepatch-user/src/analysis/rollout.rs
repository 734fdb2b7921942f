//! A guarded rollout, `apply` or `revert`, as a state machine: after the
//! transition starts it waits for the transition's events until a
//! deadline; past it, or when interrupted for good, it backs out (reverses
//! the transition), waits for that to end and unloads what it loaded. It
//! never forces. Pure: the command performs the actions it asks for and
//! reports how they went.
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    blockers::Blocker,
    transition_tracker::{TransitionEvent, TransitionTracker, secs_between},
};
use crate::{exit_code, model::Direction};

/// What is being rolled out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutKind {
    /// A patch loaded: its patching transition. Backing out disables it
    /// and unloads its module.
    Apply,
    /// A loaded patch disabled: its unpatching transition, then its module
    /// unloaded. Backing out re-enables it, which is safe.
    Revert,
}

impl RolloutKind {
    fn direction(self) -> Direction {
        match self {
            RolloutKind::Apply => Direction::Patching,
            RolloutKind::Revert => Direction::Unpatching,
        }
    }
}

/// Why a rollout backs out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum BackoutCause {
    Deadline,
    /// A signal (or a second Ctrl-C) asked to stop.
    Interrupted {
        signal: String,
    },
}

/// How a rollout ended, with the exit code the CLI documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutEnd {
    /// apply: the patch is applied. revert: the patch is gone and its
    /// module unloaded.
    Done,
    /// --dry-run: checked and ready; nothing changed.
    DryRun,
    /// The check found warnings and nobody said to go on: nothing changed.
    NotConfirmed,
    /// The check says it cannot work: nothing changed.
    NotReady,
    /// The kernel refused the module or the write: nothing changed.
    Refused,
    /// It stalled or was interrupted and was backed out: apply leaves no
    /// patch behind, revert leaves the patch applied.
    BackedOut,
    /// Backing out stalled too: the patch is still in transition. klpscope
    /// stops there; it never forces.
    BackoutStalled,
}

impl RolloutEnd {
    pub fn exit_code(self) -> u8 {
        match self {
            RolloutEnd::Done | RolloutEnd::DryRun => exit_code::SUCCESS,
            RolloutEnd::NotConfirmed => exit_code::WARNINGS,
            RolloutEnd::NotReady => exit_code::NOT_READY,
            RolloutEnd::BackedOut => exit_code::REVERSED,
            RolloutEnd::Refused => exit_code::REFUSED,
            RolloutEnd::BackoutStalled => exit_code::BACKOUT_STALLED,
        }
    }
}

/// A step of the rollout, reported beside the transition's events.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RolloutStep {
    /// apply: the module is loaded and the patch's transition started.
    Loaded {
        patch: String,
        module: String,
    },
    /// revert: 0 written to `enabled`; the unpatching transition started.
    Disabling {
        patch: String,
    },
    /// The first interrupt: a second one, or SIGTERM, backs out.
    ConfirmBackout {
        signal: String,
    },
    /// The deadline passed with tasks still pending; these block.
    Deadline {
        patch: String,
        secs: f64,
        tasks_pending: usize,
        blockers: Vec<Blocker>,
    },
    /// The transition is being turned around.
    Reversing {
        patch: String,
        direction: Direction,
        #[serde(flatten)]
        cause: BackoutCause,
    },
    /// The reversal completed.
    Reversed {
        patch: String,
        direction: Direction,
    },
    Unloaded {
        module: String,
    },
    /// Something klpscope could not do, and what that leaves behind.
    Failed {
        patch: String,
        what: String,
    },
    Finished {
        patch: String,
        kind: RolloutKind,
        end: RolloutEnd,
        exit_code: u8,
    },
}

impl RolloutStep {
    pub fn finished(kind: RolloutKind, patch: &str, end: RolloutEnd) -> Self {
        RolloutStep::Finished {
            patch: patch.to_owned(),
            kind,
            end,
            exit_code: end.exit_code(),
        }
    }
}

/// What the command must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutAction {
    /// Turn the transition around: it was going `from`.
    Reverse { from: Direction },
    /// Unload the patch's module (apply backed out, revert done).
    Unload,
    /// Stop with this exit code.
    Exit(u8),
}

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    /// The transition runs towards the rollout's goal.
    Moving,
    /// Turned around at `since_ns`; waiting for it to end.
    BackingOut {
        since_ns: u64,
        cause: BackoutCause,
    },
    /// Waiting for the module to be unloaded, then ending so.
    Unloading {
        end: RolloutEnd,
    },
    Ended,
}

#[derive(Clone, Debug)]
pub struct Rollout {
    pub kind: RolloutKind,
    pub patch: String,
    started_ns: u64,
    deadline_secs: f64,
    phase: Phase,
    /// A first interrupt came: the next one backs out.
    interrupt_pending: bool,
}

impl Rollout {
    /// The transition was started at `started_ns` (the module loaded, or 0
    /// written to `enabled`).
    pub fn new(kind: RolloutKind, patch: &str, started_ns: u64, deadline_secs: f64) -> Self {
        Rollout {
            kind,
            patch: patch.to_owned(),
            started_ns,
            deadline_secs,
            phase: Phase::Moving,
            interrupt_pending: false,
        }
    }

    pub fn backing_out(&self) -> bool {
        matches!(self.phase, Phase::BackingOut { .. })
    }

    /// The transition's events since the last call.
    pub fn on_events(
        &mut self,
        events: &[TransitionEvent],
        steps: &mut Vec<RolloutStep>,
    ) -> Option<RolloutAction> {
        if !matches!(self.phase, Phase::Moving | Phase::BackingOut { .. }) {
            return None;
        }
        for event in events {
            let ended = match event {
                TransitionEvent::Complete {
                    patch, direction, ..
                } if *patch == self.patch => Some(*direction),
                // Freed before a poll saw its end: it ended disabled.
                TransitionEvent::Gone { patch } if *patch == self.patch => {
                    Some(Direction::Unpatching)
                }
                _ => None,
            };
            if let Some(direction) = ended {
                if let Some(action) = self.ended(direction, steps) {
                    return Some(action);
                }
            }
        }
        None
    }

    /// Time passes: past the deadline the rollout backs out; past another
    /// deadline of backing out it gives up.
    pub fn on_tick(
        &mut self,
        now_ns: u64,
        tracker: &TransitionTracker,
        steps: &mut Vec<RolloutStep>,
    ) -> Option<RolloutAction> {
        // Only a transition seen in progress is backed out: one that ended
        // between two polls is reported by the next.
        let moving = tracker
            .transition
            .as_ref()
            .filter(|t| t.patch == self.patch);
        match (&self.phase, moving) {
            (Phase::Moving, Some(transition))
                if secs_between(self.started_ns, now_ns) >= self.deadline_secs =>
            {
                steps.push(RolloutStep::Deadline {
                    patch: self.patch.clone(),
                    secs: self.deadline_secs,
                    tasks_pending: transition.tasks_pending,
                    blockers: transition.blockers.clone(),
                });
                Some(self.back_out(BackoutCause::Deadline, now_ns, steps))
            }
            (Phase::BackingOut { since_ns, .. }, _)
                if secs_between(*since_ns, now_ns) >= self.deadline_secs =>
            {
                steps.push(RolloutStep::Failed {
                    patch: self.patch.clone(),
                    what: format!(
                        "the reversal did not complete within {:.0} s either: {} is still in \
                         transition; klpscope never forces it: see `klpscope diagnose`",
                        self.deadline_secs, self.patch
                    ),
                });
                Some(self.finish(RolloutEnd::BackoutStalled, steps))
            }
            _ => None,
        }
    }

    /// A stop signal or Ctrl-C. SIGINT asks first; a second SIGINT, SIGTERM
    /// or SIGHUP backs out. While backing out, nothing more is done: the
    /// reversal must finish.
    pub fn on_interrupt(
        &mut self,
        signal: &str,
        asks_first: bool,
        now_ns: u64,
        steps: &mut Vec<RolloutStep>,
    ) -> Option<RolloutAction> {
        if self.phase != Phase::Moving {
            return None;
        }
        if asks_first && !self.interrupt_pending {
            self.interrupt_pending = true;
            steps.push(RolloutStep::ConfirmBackout {
                signal: signal.to_owned(),
            });
            return None;
        }
        let cause = BackoutCause::Interrupted {
            signal: signal.to_owned(),
        };
        Some(self.back_out(cause, now_ns, steps))
    }

    /// The reverse write found the transition already over: the events
    /// will say how it ended.
    pub fn reverse_refused(&mut self, why: &str, steps: &mut Vec<RolloutStep>) {
        steps.push(RolloutStep::Failed {
            patch: self.patch.clone(),
            what: format!("could not reverse: {why}"),
        });
        self.phase = Phase::Moving;
    }

    /// The module is unloaded (or could not be, said in `failure`).
    pub fn unloaded(
        &mut self,
        module: &str,
        failure: Option<String>,
        steps: &mut Vec<RolloutStep>,
    ) -> RolloutAction {
        match failure {
            None => steps.push(RolloutStep::Unloaded {
                module: module.to_owned(),
            }),
            Some(what) => steps.push(RolloutStep::Failed {
                patch: self.patch.clone(),
                what,
            }),
        }
        let end = match &self.phase {
            Phase::Unloading { end } => *end,
            _ => RolloutEnd::Done,
        };
        self.finish(end, steps)
    }

    fn back_out(
        &mut self,
        cause: BackoutCause,
        now_ns: u64,
        steps: &mut Vec<RolloutStep>,
    ) -> RolloutAction {
        let from = self.kind.direction();
        steps.push(RolloutStep::Reversing {
            patch: self.patch.clone(),
            direction: from.opposite(),
            cause: cause.clone(),
        });
        self.phase = Phase::BackingOut {
            since_ns: now_ns,
            cause,
        };
        RolloutAction::Reverse { from }
    }

    /// The transition of the patch ended, towards `direction`.
    fn ended(
        &mut self,
        direction: Direction,
        steps: &mut Vec<RolloutStep>,
    ) -> Option<RolloutAction> {
        let goal = self.kind.direction();
        let backed_out = direction != goal;
        if backed_out {
            steps.push(RolloutStep::Reversed {
                patch: self.patch.clone(),
                direction,
            });
        }
        match (self.kind, backed_out) {
            (RolloutKind::Apply, false) => Some(self.finish(RolloutEnd::Done, steps)),
            (RolloutKind::Apply, true) => {
                self.phase = Phase::Unloading {
                    end: RolloutEnd::BackedOut,
                };
                Some(RolloutAction::Unload)
            }
            (RolloutKind::Revert, false) => {
                self.phase = Phase::Unloading {
                    end: RolloutEnd::Done,
                };
                Some(RolloutAction::Unload)
            }
            (RolloutKind::Revert, true) => Some(self.finish(RolloutEnd::BackedOut, steps)),
        }
    }

    fn finish(&mut self, end: RolloutEnd, steps: &mut Vec<RolloutStep>) -> RolloutAction {
        self.phase = Phase::Ended;
        steps.push(RolloutStep::finished(self.kind, &self.patch, end));
        RolloutAction::Exit(end.exit_code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::PatchState,
        testing::{frame, patch_of, poll, task},
    };

    const SEC: u64 = 1_000_000_000;

    fn patch(enabled: bool, transition: bool) -> crate::model::Patch {
        patch_of("p", enabled, transition, "vmlinux", &["cmdline_proc_show"])
    }

    /// A tracker that saw `p` start patching at 1 s, with a reader asleep
    /// in the patched function at `at` seconds.
    fn blocked(tracker: &mut TransitionTracker, at: u64) -> Vec<TransitionEvent> {
        let reader = task(
            7,
            'S',
            PatchState::Unpatched,
            vec![frame("__schedule", None), frame("cmdline_proc_show", None)],
        );
        tracker.apply(poll(
            at,
            vec![patch(true, true)],
            Some(Direction::Patching),
            (10, 1),
            vec![reader],
        ))
    }

    fn ended(tracker: &mut TransitionTracker, at: u64, enabled: bool) -> Vec<TransitionEvent> {
        let patches = if enabled {
            vec![patch(true, false)]
        } else {
            vec![]
        };
        tracker.apply(poll(at, patches, None, (10, 0), vec![]))
    }

    fn names(steps: &[RolloutStep]) -> Vec<String> {
        steps
            .iter()
            .map(|s| {
                serde_json::to_value(s).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn a_clean_apply_ends_done_when_the_transition_completes() {
        let mut tracker = TransitionTracker::new(Some("p".into()));
        tracker.apply(poll(0, vec![], None, (10, 0), vec![]));
        let mut rollout = Rollout::new(RolloutKind::Apply, "p", 0, 60.0);
        let mut steps = Vec::new();
        let events = blocked(&mut tracker, 1);
        assert_eq!(rollout.on_events(&events, &mut steps), None);
        assert_eq!(rollout.on_tick(2 * SEC, &tracker, &mut steps), None);
        let events = ended(&mut tracker, 3, true);
        assert_eq!(
            rollout.on_events(&events, &mut steps),
            Some(RolloutAction::Exit(0))
        );
        assert_eq!(names(&steps), ["finished"]);
    }

    #[test]
    fn past_the_deadline_apply_names_the_blockers_reverses_and_unloads() {
        let mut tracker = TransitionTracker::new(Some("p".into()));
        tracker.apply(poll(0, vec![], None, (10, 0), vec![]));
        let mut rollout = Rollout::new(RolloutKind::Apply, "p", 0, 20.0);
        let mut steps = Vec::new();
        blocked(&mut tracker, 1);
        blocked(&mut tracker, 19);
        assert_eq!(rollout.on_tick(19 * SEC, &tracker, &mut steps), None);
        blocked(&mut tracker, 20);
        assert_eq!(
            rollout.on_tick(20 * SEC, &tracker, &mut steps),
            Some(RolloutAction::Reverse {
                from: Direction::Patching
            })
        );
        let RolloutStep::Deadline {
            tasks_pending,
            blockers,
            ..
        } = &steps[0]
        else {
            panic!("{steps:?}");
        };
        assert_eq!(*tasks_pending, 1);
        assert_eq!(blockers[0].tid, 7);
        assert_eq!(blockers[0].function.as_deref(), Some("cmdline_proc_show"));
        // Reversed, then freed: unload once, and the module's end is 5.
        let events = ended(&mut tracker, 22, false);
        assert_eq!(
            rollout.on_events(&events, &mut steps),
            Some(RolloutAction::Unload)
        );
        assert_eq!(rollout.on_events(&events, &mut steps), None, "once");
        assert_eq!(
            rollout.unloaded("p", None, &mut steps),
            RolloutAction::Exit(5)
        );
        assert_eq!(
            names(&steps),
            ["deadline", "reversing", "reversed", "unloaded", "finished"]
        );
    }

    #[test]
    fn sigint_asks_first_sigterm_backs_out_at_once() {
        let mut rollout = Rollout::new(RolloutKind::Apply, "p", 0, 60.0);
        let mut steps = Vec::new();
        assert_eq!(rollout.on_interrupt("SIGINT", true, SEC, &mut steps), None);
        assert_eq!(names(&steps), ["confirm_backout"]);
        assert_eq!(
            rollout.on_interrupt("SIGINT", true, 2 * SEC, &mut steps),
            Some(RolloutAction::Reverse {
                from: Direction::Patching
            })
        );
        assert_eq!(
            rollout.on_interrupt("SIGTERM", false, 3 * SEC, &mut steps),
            None,
            "already backing out: the reversal must finish"
        );
        let mut rollout = Rollout::new(RolloutKind::Apply, "p", 0, 60.0);
        assert!(matches!(
            rollout.on_interrupt("SIGTERM", false, SEC, &mut Vec::new()),
            Some(RolloutAction::Reverse { .. })
        ));
    }

    #[test]
    fn a_stalled_revert_is_re_enabled_and_the_module_stays() {
        let mut tracker = TransitionTracker::new(Some("p".into()));
        tracker.apply(poll(0, vec![patch(true, false)], None, (10, 0), vec![]));
        let mut rollout = Rollout::new(RolloutKind::Revert, "p", 0, 20.0);
        let mut steps = Vec::new();
        let sleeper = task(
            9,
            'S',
            PatchState::Patched,
            vec![frame("livepatch_cmdline_proc_show", Some("p"))],
        );
        tracker.apply(poll(
            1,
            vec![patch(false, true)],
            Some(Direction::Unpatching),
            (10, 1),
            vec![sleeper],
        ));
        assert_eq!(
            rollout.on_tick(21 * SEC, &tracker, &mut steps),
            Some(RolloutAction::Reverse {
                from: Direction::Unpatching
            })
        );
        let events = ended(&mut tracker, 22, true);
        assert_eq!(
            rollout.on_events(&events, &mut steps),
            Some(RolloutAction::Exit(5)),
            "re-enabled: nothing to unload"
        );
    }

    #[test]
    fn a_reversal_that_stalls_too_gives_up_without_forcing() {
        let mut tracker = TransitionTracker::new(Some("p".into()));
        tracker.apply(poll(0, vec![], None, (10, 0), vec![]));
        let mut rollout = Rollout::new(RolloutKind::Apply, "p", 0, 10.0);
        let mut steps = Vec::new();
        blocked(&mut tracker, 10);
        assert!(rollout.on_tick(10 * SEC, &tracker, &mut steps).is_some());
        assert_eq!(rollout.on_tick(19 * SEC, &tracker, &mut steps), None);
        assert_eq!(
            rollout.on_tick(20 * SEC, &tracker, &mut steps),
            Some(RolloutAction::Exit(8))
        );
        assert!(names(&steps).contains(&"failed".to_owned()));
    }
}
