//! A stuck transition explained: its state, its blockers with advice, and
//! what the kernel will do next.
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    advice::{Advice, SIGNALS_AFTER_ROUNDS, advise},
    blockers::{Blocker, VerdictSource},
};
use crate::model::{Direction, LivepatchMessage, LogEntry, Transition};

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Diagnosis {
    pub in_transition: bool,
    pub patch: Option<String>,
    pub direction: Option<Direction>,
    /// Since the kernel logged the transition's start; None if the log has
    /// no such line (rotated out, or unreadable).
    pub elapsed_secs: Option<f64>,
    /// The kernel retries once a second.
    pub retry_rounds: Option<u64>,
    pub tasks_total: usize,
    pub tasks_pending: usize,
    /// Tasks whose patch_state could not be read (not root): counted as
    /// pending, since nothing says they switched.
    pub tasks_unreadable: usize,
    /// Per-CPU idle tasks the kernel failed to switch, as the tracer saw
    /// (they have no /proc entry, so `tasks_pending` leaves them out); 0
    /// when its verdicts are not heard (`verdicts_from` inferred).
    pub idle_tasks_pending: usize,
    /// None when the kernel log could not be read.
    pub signals_sent: Option<bool>,
    pub next: String,
    pub verdicts_from: VerdictSource,
    pub blockers: Vec<BlockerReport>,
    /// With no transition in progress: how the last one ended, if logged.
    pub last_outcome: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct BlockerReport {
    #[serde(flatten)]
    pub blocker: Blocker,
    #[serde(flatten)]
    pub advice: Advice,
}

/// The log entries of the current transition: from its last start on.
fn current_run<'a>(log: &'a [LogEntry], patch: &str) -> Option<&'a [LogEntry]> {
    let start = log.iter().rposition(
        |entry| matches!(&entry.message, LivepatchMessage::Starting { patch: p, .. } if p == patch),
    )?;
    Some(&log[start..])
}

/// The transition in progress, explained. `now_us` is CLOCK_MONOTONIC, the
/// kernel log's clock.
pub fn diagnose_transition(
    transition: &Transition,
    mut blockers: Vec<Blocker>,
    log: Option<&[LogEntry]>,
    now_us: u64,
    tasks_unreadable: usize,
) -> Diagnosis {
    let run = log.and_then(|log| current_run(log, &transition.patch));
    let elapsed_secs = run.map(|run| now_us.saturating_sub(run[0].timestamp_us) as f64 / 1e6);
    let signals_sent = match (log, run) {
        (None, _) => None,
        (Some(_), None) => Some(false),
        (Some(_), Some(run)) => Some(
            run.iter()
                .any(|entry| entry.message == LivepatchMessage::Signaling),
        ),
    };
    // Every pending task has been pending since the transition started:
    // patch_state only ever moves to the target.
    if let Some(elapsed) = elapsed_secs {
        for blocker in &mut blockers {
            blocker.blocked_secs = Some(blocker.blocked_secs.map_or(elapsed, |b| b.max(elapsed)));
        }
    }
    let verdicts_from = if blockers.iter().any(|b| b.source == VerdictSource::Kernel) {
        VerdictSource::Kernel
    } else {
        VerdictSource::Inferred
    };
    let idle_tasks_pending = blockers.iter().filter(|b| b.is_idle_task()).count();
    let next = next_step(
        elapsed_secs,
        signals_sent,
        &blockers,
        transition.tasks_pending,
    );
    let signals_in_secs = match signals_sent {
        Some(true) => None,
        _ => elapsed_secs.map(|elapsed| (f64::from(SIGNALS_AFTER_ROUNDS) - elapsed).max(0.0)),
    };
    let blockers = blockers
        .into_iter()
        .map(|blocker| BlockerReport {
            advice: advise(
                &blocker,
                transition.direction,
                &transition.patch,
                signals_in_secs,
            ),
            blocker,
        })
        .collect();
    Diagnosis {
        in_transition: true,
        patch: Some(transition.patch.clone()),
        direction: Some(transition.direction),
        elapsed_secs,
        retry_rounds: elapsed_secs.map(|e| e as u64),
        tasks_total: transition.tasks_total,
        tasks_pending: transition.tasks_pending,
        tasks_unreadable,
        idle_tasks_pending,
        signals_sent,
        next,
        verdicts_from,
        blockers,
        last_outcome: None,
    }
}

/// After this long, a transition with no task pending in /proc is held up
/// by something /proc does not list.
const IDLE_SUSPECT_SECS: f64 = 3.0;

fn next_step(
    elapsed: Option<f64>,
    signals_sent: Option<bool>,
    blockers: &[Blocker],
    tasks_pending: usize,
) -> String {
    let no_blockers = blockers.is_empty();
    if tasks_pending == 0 && !no_blockers && blockers.iter().all(Blocker::is_idle_task) {
        let idle: Vec<&str> = blockers.iter().map(|b| b.comm.as_str()).collect();
        return format!(
            "every task in /proc has switched; what is left is the idle task of a CPU ({}): \
             it switches itself when its CPU passes through the idle loop, and the kernel \
             wakes idle CPUs every round for that, so this clears unless that CPU never \
             idles (busy with interrupts, or stuck in a driver's idle state)",
            idle.join(", ")
        );
    }
    if no_blockers && tasks_pending == 0 && elapsed.is_some_and(|e| e > IDLE_SUSPECT_SECS) {
        return format!(
            "no task in /proc is pending, yet the transition has run for {:.0} s: the \
             per-CPU idle tasks (swapper/N) take part too and have no /proc entry; one of \
             them is what is left. An idle task switches itself when its CPU goes through \
             the idle loop, and the kernel wakes idle CPUs every round for that: a CPU that \
             never gets there is busy with interrupts or stuck in a driver's idle state",
            elapsed.unwrap_or_default()
        );
    }
    if no_blockers {
        return "no task blocks right now: the pending tasks switch at the next retry round \
                (within a second) or on their way back to user space"
            .into();
    }
    match (signals_sent, elapsed) {
        (Some(true), _) => format!(
            "the kernel has already sent fake signals; it retries every second and signals \
             again every {SIGNALS_AFTER_ROUNDS} rounds, but never gives up by itself"
        ),
        (_, Some(elapsed)) if elapsed < SIGNALS_AFTER_ROUNDS as f64 => format!(
            "the kernel retries every second and sends fake signals to the remaining tasks \
             in about {:.0} s",
            SIGNALS_AFTER_ROUNDS as f64 - elapsed
        ),
        _ => format!(
            "the kernel retries every second and signals the remaining tasks every \
             {SIGNALS_AFTER_ROUNDS} rounds; it never gives up by itself"
        ),
    }
}

/// No transition in progress: say how the last one ended, if the log tells.
pub fn diagnose_idle(log: Option<&[LogEntry]>, patch: Option<&str>) -> Diagnosis {
    let last_outcome = log.and_then(|log| {
        log.iter().rev().find_map(|entry| match &entry.message {
            LivepatchMessage::Complete {
                patch: p,
                unpatching,
            } if patch.is_none_or(|wanted| wanted == p) => {
                let what = if *unpatching {
                    "unpatching"
                } else {
                    "patching"
                };
                Some(format!(
                    "'{p}': {what} complete at {:.1} s after boot",
                    entry.timestamp_us as f64 / 1e6
                ))
            }
            _ => None,
        })
    });
    Diagnosis {
        in_transition: false,
        patch: patch.map(str::to_string),
        direction: None,
        elapsed_secs: None,
        retry_rounds: None,
        tasks_total: 0,
        tasks_pending: 0,
        tasks_unreadable: 0,
        idle_tasks_pending: 0,
        signals_sent: None,
        next: "nothing to do: no transition in progress".into(),
        verdicts_from: VerdictSource::Inferred,
        blockers: Vec::new(),
        last_outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::BlockReason, testing};

    fn entry(ts_s: u64, message: LivepatchMessage) -> LogEntry {
        LogEntry {
            timestamp_us: ts_s * 1_000_000,
            message,
        }
    }

    fn starting(patch: &str) -> LivepatchMessage {
        LivepatchMessage::Starting {
            patch: patch.into(),
            unpatching: false,
        }
    }

    fn transition() -> Transition {
        Transition {
            patch: "p".into(),
            direction: Direction::Patching,
            tasks_total: 100,
            tasks_pending: 1,
        }
    }

    fn blocker() -> Blocker {
        Blocker {
            comm: "cat".into(),
            function: Some("f".into()),
            ..testing::blocker(5, BlockReason::FunctionOnStack)
        }
    }

    #[test]
    fn elapsed_time_and_signals_come_from_the_latest_start() {
        let log = vec![
            entry(10, starting("p")),
            entry(25, LivepatchMessage::Signaling),
            entry(100, starting("p")),
        ];
        let d = diagnose_transition(&transition(), vec![blocker()], Some(&log), 106_000_000, 0);
        assert_eq!(d.elapsed_secs, Some(6.0));
        assert_eq!(d.retry_rounds, Some(6));
        assert_eq!(
            d.signals_sent,
            Some(false),
            "the old run's signal does not count"
        );
        assert_eq!(d.blockers[0].blocker.blocked_secs, Some(6.0));
        assert!(d.next.contains("in about 9 s"), "{}", d.next);
    }

    #[test]
    fn after_the_signal_the_kernel_keeps_retrying_forever() {
        let log = vec![
            entry(10, starting("p")),
            entry(25, LivepatchMessage::Signaling),
        ];
        let d = diagnose_transition(&transition(), vec![blocker()], Some(&log), 40_000_000, 0);
        assert_eq!(d.signals_sent, Some(true));
        assert!(d.next.contains("never gives up"));
    }

    #[test]
    fn an_unreadable_log_leaves_time_and_signals_unknown() {
        let d = diagnose_transition(&transition(), vec![blocker()], None, 1, 0);
        assert_eq!(d.elapsed_secs, None);
        assert_eq!(d.signals_sent, None);
        assert_eq!(d.blockers.len(), 1);
    }

    #[test]
    fn idle_reports_the_last_outcome() {
        let log = vec![
            entry(10, starting("p")),
            entry(
                11,
                LivepatchMessage::Complete {
                    patch: "p".into(),
                    unpatching: false,
                },
            ),
        ];
        let d = diagnose_idle(Some(&log), None);
        assert!(!d.in_transition);
        assert_eq!(
            d.last_outcome.as_deref(),
            Some("'p': patching complete at 11.0 s after boot")
        );
        assert_eq!(diagnose_idle(Some(&log), Some("other")).last_outcome, None);
    }

    #[test]
    fn idle_tasks_left_alone_are_named() {
        let idle = |cpu: u32| Blocker {
            pid: 0,
            tid: 0,
            comm: format!("swapper/{cpu}"),
            kthread: true,
            state: 'R',
            reason: BlockReason::Running,
            source: VerdictSource::Kernel,
            ..blocker()
        };
        let transition = Transition {
            tasks_pending: 0,
            ..transition()
        };
        let d = diagnose_transition(&transition, vec![idle(1), idle(0)], None, 1, 0);
        assert_eq!(d.idle_tasks_pending, 2);
        assert_eq!(d.tasks_pending, 0);
        assert!(d.next.contains("swapper/1, swapper/0"), "{}", d.next);
        assert!(
            d.blockers
                .iter()
                .all(|b| b.advice.kind == crate::analysis::advice::BlockerKind::IdleTask)
        );
    }
}
