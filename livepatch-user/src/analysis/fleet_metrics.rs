//! What one host tells the fleet about its livepatching: the numbers that
//! `metrics` and `serve` export to Prometheus, worked out from a one-shot
//! snapshot or from the live state. Pure; encoding them is a view's job.
//!
//! Low cardinality by design. The kernel runs one transition at a time, so
//! the transition's numbers carry no labels (its patch and direction are in
//! one info series, and a reversal does not start new series); blockers are
//! counted per reason and kind; a blocker's identity (pid, comm, function)
//! goes out only for the first `TOP_BLOCKERS`.
use super::{
    advice::{BlockerKind, advise},
    blockers::{Blocker, PatchedCode, VerdictSource, find_blockers},
    call_stats::FunctionCalls,
    live_state::LiveState,
    observation::Observation,
    transition::transition,
    transition_tracker::{Outcome, TransitionEvent},
};
use crate::model::{
    BlockReason, Direction, FeedCapabilities, Kernel, Known, LivepatchMessage, LogEntry, Patch,
    Snapshot,
};

/// Blockers named one by one, at most: a transition held up by thousands of
/// tasks must not make thousands of series.
pub const TOP_BLOCKERS: usize = 10;

/// Every (reason, kind) a blocker can have. Each is exported, zero included,
/// so that a query sees a blocker go as well as come.
pub const BLOCKER_CLASSES: [(BlockReason, BlockerKind); 6] = [
    (
        BlockReason::FunctionOnStack,
        BlockerKind::UserTaskAsleepInPatchedFunction,
    ),
    (
        BlockReason::FunctionOnStack,
        BlockerKind::UninterruptibleInPatchedFunction,
    ),
    (
        BlockReason::FunctionOnStack,
        BlockerKind::KthreadInPatchedFunction,
    ),
    (BlockReason::Running, BlockerKind::RunningInKernel),
    (BlockReason::UnreliableStack, BlockerKind::UnreliableStack),
    (BlockReason::Unexplained, BlockerKind::Unexplained),
];

#[derive(Clone, Debug, PartialEq)]
pub struct FleetMetrics {
    pub livepatch_supported: bool,
    /// Why livepatching (or klpscope's view of it) is limited here.
    pub kernel_problems: Vec<String>,
    /// What the live feed attached; None for a one-shot reading, which
    /// loads no eBPF.
    pub feed: Option<FeedCapabilities>,
    pub patches: Vec<PatchFlags>,
    pub transition: Option<TransitionFacts>,
    /// The transition's blockers per reason and kind; every class of
    /// `BLOCKER_CLASSES`, zero included, unless livepatch is unsupported.
    pub blockers: Vec<BlockerClass>,
    /// The first `TOP_BLOCKERS` blockers, those that will not pass by
    /// themselves first.
    pub top_blockers: Vec<BlockerIdentity>,
    /// How the last transition ended, when known.
    pub last_transition: Option<Outcome>,
    /// Calls per patched function, when eBPF counts them.
    pub calls: Vec<FunctionCalls>,
    /// Transitions seen ending since `serve` started; None for a one-shot
    /// reading, which has no past.
    pub ended: Option<TransitionsEnded>,
}

/// A loaded patch's sysfs flags; None where the file is missing (`replace`
/// before 6.11) or could not be read.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchFlags {
    pub name: String,
    pub enabled: Option<bool>,
    pub transition: Option<bool>,
    pub replace: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TransitionFacts {
    pub patch: String,
    pub direction: Direction,
    pub tasks_total: usize,
    pub tasks_pending: usize,
    /// Since the transition started (its first start, before any
    /// reversal); None when neither the kernel log nor a live feed tells.
    pub elapsed_secs: Option<f64>,
    /// The kernel's retry rounds so far: as the tracer counted them, or one
    /// a second since the start, whichever is more.
    pub retry_rounds: Option<u32>,
    /// None when the kernel log is unreadable and no live feed saw them.
    pub signals_sent: Option<bool>,
    /// It turned around: it now heads back where it came from.
    pub reversed: bool,
    pub forced: bool,
    pub verdicts: VerdictSource,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BlockerClass {
    pub reason: BlockReason,
    pub kind: BlockerKind,
    pub count: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BlockerIdentity {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub function: Option<String>,
    pub reason: BlockReason,
    pub kind: BlockerKind,
}

/// Transitions that ended, by how: counters, for alerts on what happened
/// between two scrapes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransitionsEnded {
    pub completed: u64,
    pub reversed: u64,
    /// Forced, reversed or not: the patch module can never be unloaded.
    pub forced: u64,
}

impl TransitionsEnded {
    pub fn count(&mut self, events: &[TransitionEvent]) {
        for event in events {
            if let TransitionEvent::Complete {
                reversed, forced, ..
            } = event
            {
                match (forced, reversed) {
                    (true, _) => self.forced += 1,
                    (false, true) => self.reversed += 1,
                    (false, false) => self.completed += 1,
                }
            }
        }
    }
}

/// What `serve` keeps between the feed's rounds to export them: the live
/// state, the transitions that ended, and the kernel log as last polled.
pub struct LiveExport {
    kernel: Kernel,
    live: LiveState,
    ended: TransitionsEnded,
    log: Option<Vec<LogEntry>>,
}

impl LiveExport {
    pub fn new(kernel: Kernel) -> Self {
        LiveExport {
            kernel,
            live: LiveState::new(None),
            ended: TransitionsEnded::default(),
            log: None,
        }
    }

    pub fn live(&self) -> &LiveState {
        &self.live
    }

    /// Applies a round; returns its events.
    pub fn apply(&mut self, round: Vec<Observation>) -> Vec<TransitionEvent> {
        // A log the poll could not read leaves the last one read.
        let polled = round
            .iter()
            .rev()
            .find_map(|observation| match observation {
                Observation::Poll(poll) => poll.log.clone(),
                _ => None,
            });
        if polled.is_some() {
            self.log = polled;
        }
        let events = self.live.apply_all(round);
        self.ended.count(&events);
        events
    }

    pub fn metrics(&self, feed: &FeedCapabilities) -> FleetMetrics {
        FleetMetrics::from_live(
            &self.kernel,
            &self.live,
            feed,
            self.log.as_deref(),
            self.ended,
        )
    }
}

impl FleetMetrics {
    /// From a one-shot reading: blockers inferred from patch_state,
    /// scheduler state and stacks (no eBPF); the transition's age, signals
    /// and reversal from the kernel log. `now_us` is CLOCK_MONOTONIC, the
    /// kernel log's clock.
    pub fn from_snapshot(snapshot: &Snapshot, now_us: u64) -> Self {
        let log = snapshot.log.value().map(Vec::as_slice);
        let mut metrics =
            FleetMetrics::without_transition(&snapshot.kernel, None, &snapshot.patches);
        metrics.last_transition = log.and_then(last_outcome);
        if !metrics.livepatch_supported {
            return metrics;
        }
        let seen = transition(
            &snapshot.patches,
            log,
            snapshot.tasks.iter().map(|task| &task.patch_state),
        );
        let Some(seen) = seen else {
            return metrics;
        };
        let Some(patch) = snapshot.patches.iter().find(|p| p.name == seen.patch) else {
            return metrics;
        };
        let code = PatchedCode {
            patch,
            direction: seen.direction,
            loaded: &snapshot.patches,
        };
        let blockers = find_blockers(&snapshot.tasks, &code, None, now_us * 1000);
        let run = log.and_then(|log| logged_run(log, &seen.patch));
        let elapsed_secs = run
            .as_ref()
            .map(|run| now_us.saturating_sub(run.started_us) as f64 / 1e6);
        metrics.transition = Some(TransitionFacts {
            retry_rounds: elapsed_secs.map(|secs| secs as u32),
            elapsed_secs,
            signals_sent: log.map(|_| run.as_ref().is_some_and(|run| run.signals)),
            reversed: run.as_ref().is_some_and(|run| run.reversed),
            forced: run.as_ref().is_some_and(|run| run.forced),
            verdicts: VerdictSource::Inferred,
            patch: seen.patch,
            direction: seen.direction,
            tasks_total: seen.tasks_total,
            tasks_pending: seen.tasks_pending,
        });
        metrics.count_blockers(&blockers);
        metrics
    }

    /// From the live state, as `serve` keeps it; `log` is the kernel's
    /// livepatch log as last polled, which tells what happened before the
    /// feed started.
    pub fn from_live(
        kernel: &Kernel,
        live: &LiveState,
        feed: &FeedCapabilities,
        log: Option<&[LogEntry]>,
        ended: TransitionsEnded,
    ) -> Self {
        let tracker = &live.tracker;
        let patches: Vec<Patch> = tracker
            .patches
            .iter()
            .filter(|p| !p.gone)
            .cloned()
            .collect();
        let mut metrics = FleetMetrics::without_transition(kernel, Some(feed.clone()), &patches);
        metrics.ended = Some(ended);
        if feed.ebpf() {
            metrics.calls = live.calls.functions.clone();
        }
        metrics.last_transition = tracker
            .last_outcome
            .clone()
            .or_else(|| log.and_then(last_outcome));
        let Some(progress) = &tracker.transition else {
            return metrics;
        };
        let run = log.and_then(|log| logged_run(log, &progress.patch));
        let now_us = tracker.now_ns / 1000;
        let logged_secs = run
            .as_ref()
            .map(|run| now_us.saturating_sub(run.started_us) as f64 / 1e6);
        // Started before the feed was: the log knows since when.
        let elapsed_secs = tracker.elapsed_secs().map(|tracked| match logged_secs {
            Some(logged) => tracked.max(logged),
            None => tracked,
        });
        let counted = tracker.retry_rounds().map(|(rounds, _)| rounds);
        let retry_rounds = counted.max(elapsed_secs.map(|secs| secs as u32));
        metrics.transition = Some(TransitionFacts {
            patch: progress.patch.clone(),
            direction: progress.direction,
            tasks_total: progress.tasks_total,
            tasks_pending: progress.tasks_pending,
            elapsed_secs,
            retry_rounds,
            signals_sent: if progress.signals.is_some() || run.as_ref().is_some_and(|r| r.signals) {
                Some(true)
            } else {
                // Either the log or the tracer's count of failed rounds would tell.
                (log.is_some() || tracker.rounds.is_some()).then_some(false)
            },
            reversed: progress.direction != progress.initial_direction
                || run.as_ref().is_some_and(|run| run.reversed),
            forced: progress.forced || run.as_ref().is_some_and(|run| run.forced),
            verdicts: if feed.kernel_verdicts() {
                VerdictSource::Kernel
            } else {
                VerdictSource::Inferred
            },
        });
        metrics.count_blockers(&progress.blockers);
        metrics
    }

    /// What holds without a transition: support, the patches, and blocker
    /// classes at zero.
    pub fn without_transition(
        kernel: &Kernel,
        feed: Option<FeedCapabilities>,
        patches: &[Patch],
    ) -> Self {
        let blockers = if kernel.livepatch.is_supported() {
            BLOCKER_CLASSES
                .iter()
                .map(|&(reason, kind)| BlockerClass {
                    reason,
                    kind,
                    count: 0,
                })
                .collect()
        } else {
            Vec::new()
        };
        FleetMetrics {
            livepatch_supported: kernel.livepatch.is_supported(),
            kernel_problems: kernel.problems.clone(),
            feed,
            patches: patches
                .iter()
                .filter(|patch| !patch.gone)
                .map(PatchFlags::of)
                .collect(),
            transition: None,
            blockers,
            top_blockers: Vec::new(),
            last_transition: None,
            calls: Vec::new(),
            ended: None,
        }
    }

    fn count_blockers(&mut self, blockers: &[Blocker]) {
        let Some(transition) = &self.transition else {
            return;
        };
        let mut named: Vec<(u8, BlockerIdentity)> = Vec::new();
        for blocker in blockers {
            let advice = advise(blocker, transition.direction, &transition.patch, None);
            match self
                .blockers
                .iter_mut()
                .find(|c| c.reason == blocker.reason && c.kind == advice.kind)
            {
                Some(class) => class.count += 1,
                None => self.blockers.push(BlockerClass {
                    reason: blocker.reason,
                    kind: advice.kind,
                    count: 1,
                }),
            }
            named.push((
                urgency(blocker.reason),
                BlockerIdentity {
                    pid: blocker.pid,
                    tid: blocker.tid,
                    comm: blocker.comm.clone(),
                    function: blocker.function.clone(),
                    reason: blocker.reason,
                    kind: advice.kind,
                },
            ));
        }
        named.sort_by_key(|(urgency, b)| (*urgency, b.pid, b.tid));
        self.top_blockers = named
            .into_iter()
            .take(TOP_BLOCKERS)
            .map(|(_, b)| b)
            .collect();
    }
}

/// Which blockers to name first: a function on the stack stays until the
/// task leaves it, an unexplained task may well stay; a running task or an
/// unreliable stack is usually gone by the next round.
fn urgency(reason: BlockReason) -> u8 {
    match reason {
        BlockReason::FunctionOnStack => 0,
        BlockReason::Unexplained => 1,
        BlockReason::Running | BlockReason::UnreliableStack => 2,
    }
}

impl PatchFlags {
    fn of(patch: &Patch) -> Self {
        PatchFlags {
            name: patch.name.clone(),
            enabled: patch.enabled.value().copied(),
            transition: patch.transition.value().copied(),
            replace: patch.replace.as_ref().and_then(Known::value).copied(),
        }
    }
}

/// What the kernel log tells of a patch's transition in progress.
#[derive(Clone, Debug, PartialEq)]
struct LoggedRun {
    /// Its first "starting" line since the patch's last completion.
    started_us: u64,
    initial: Direction,
    /// A later "starting" line in the other direction: a reversal.
    reversed: bool,
    signals: bool,
    forced: bool,
}

fn logged_run(log: &[LogEntry], patch: &str) -> Option<LoggedRun> {
    let since = log
        .iter()
        .rposition(|entry| completes(entry, patch).is_some())
        .map_or(0, |at| at + 1);
    let run = &log[since..];
    let start = run
        .iter()
        .position(|entry| starts(entry, patch).is_some())?;
    let run = &run[start..];
    let initial = starts(&run[0], patch)?;
    Some(LoggedRun {
        started_us: run[0].timestamp_us,
        initial,
        reversed: run
            .iter()
            .any(|entry| starts(entry, patch).is_some_and(|d| d != initial)),
        signals: run
            .iter()
            .any(|entry| entry.message == LivepatchMessage::Signaling),
        forced: run
            .iter()
            .any(|entry| entry.message == LivepatchMessage::Forcing),
    })
}

/// How the last transition in the log ended: where its "complete" line
/// says, reversed if its first "starting" line headed the other way.
fn last_outcome(log: &[LogEntry]) -> Option<Outcome> {
    let end = log
        .iter()
        .rposition(|entry| matches!(entry.message, LivepatchMessage::Complete { .. }))?;
    let LivepatchMessage::Complete { patch, .. } = &log[end].message else {
        return None;
    };
    let direction = completes(&log[end], patch)?;
    let run = logged_run(&log[..end], patch);
    Some(Outcome {
        patch: patch.clone(),
        direction,
        reversed: run.as_ref().is_some_and(|run| run.initial != direction),
        forced: run.as_ref().is_some_and(|run| run.forced),
        secs: run.map(|run| log[end].timestamp_us.saturating_sub(run.started_us) as f64 / 1e6),
    })
}

fn starts(entry: &LogEntry, patch: &str) -> Option<Direction> {
    match &entry.message {
        LivepatchMessage::Starting {
            patch: p,
            unpatching,
        } if p == patch => Some(direction_of(*unpatching)),
        _ => None,
    }
}

fn completes(entry: &LogEntry, patch: &str) -> Option<Direction> {
    match &entry.message {
        LivepatchMessage::Complete {
            patch: p,
            unpatching,
        } if p == patch => Some(direction_of(*unpatching)),
        _ => None,
    }
}

fn direction_of(unpatching: bool) -> Direction {
    if unpatching {
        Direction::Unpatching
    } else {
        Direction::Patching
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{Kernel, PatchState, Task},
        testing::{frame, patch_of, poll, task},
    };

    const SEC_US: u64 = 1_000_000;

    fn entry(secs: u64, message: LivepatchMessage) -> LogEntry {
        LogEntry {
            timestamp_us: secs * SEC_US,
            message,
        }
    }

    fn starting(secs: u64, patch: &str, unpatching: bool) -> LogEntry {
        let patch = patch.into();
        entry(secs, LivepatchMessage::Starting { patch, unpatching })
    }

    fn complete(secs: u64, patch: &str, unpatching: bool) -> LogEntry {
        let patch = patch.into();
        entry(secs, LivepatchMessage::Complete { patch, unpatching })
    }

    fn kernel() -> Kernel {
        Kernel {
            livepatch: crate::model::LivepatchSupport::Supported,
            ..Kernel::default()
        }
    }

    fn patch(transition: bool) -> Patch {
        patch_of("p", true, transition, "vmlinux", &["cmdline_proc_show"])
    }

    /// Asleep in the patched function: a user task in S, or in D.
    fn sleeper(tid: u32, state: char) -> Task {
        let stack = vec![frame("__schedule", None), frame("cmdline_proc_show", None)];
        task(tid, state, PatchState::Unpatched, stack)
    }

    fn class(metrics: &FleetMetrics, reason: BlockReason, kind: BlockerKind) -> usize {
        metrics
            .blockers
            .iter()
            .find(|c| c.reason == reason && c.kind == kind)
            .map_or(usize::MAX, |c| c.count)
    }

    #[test]
    fn the_log_tells_a_runs_start_reversal_and_signals() {
        let log = [
            complete(1, "p", false),
            starting(10, "p", true),
            entry(25, LivepatchMessage::Signaling),
            starting(30, "p", false),
        ];
        let run = logged_run(&log, "p").expect("a run in progress");
        assert_eq!(run.started_us, 10 * SEC_US, "from the first start on");
        assert_eq!(run.initial, Direction::Unpatching);
        assert!(run.reversed && run.signals && !run.forced, "{run:?}");
        assert_eq!(logged_run(&log[..1], "p"), None, "completed: no run");
        assert_eq!(logged_run(&log, "q"), None);
    }

    #[test]
    fn the_last_outcome_is_reversed_when_it_ended_where_it_did_not_head() {
        let log = [
            starting(10, "p", false),
            entry(12, LivepatchMessage::Forcing),
            complete(14, "p", false),
            starting(20, "q", false),
            starting(22, "q", true),
            complete(27, "q", true),
        ];
        let last = last_outcome(&log).expect("an outcome");
        assert_eq!(
            last,
            Outcome {
                patch: "q".into(),
                direction: Direction::Unpatching,
                reversed: true,
                forced: false,
                secs: Some(7.0),
            }
        );
        let first = last_outcome(&log[..3]).expect("an outcome");
        assert!(!first.reversed && first.forced, "{first:?}");
        // Its start rotated out of the log: how long is not known.
        let rotated = last_outcome(&log[2..3]).expect("an outcome");
        assert_eq!((rotated.reversed, rotated.secs), (false, None));
    }

    #[test]
    fn a_live_transition_counts_its_blockers_by_reason_and_kind() {
        let mut live = LiveState::new(None);
        let feed = FeedCapabilities {
            polling: Some("--no-ebpf".into()),
            verdicts_inferred: None,
            tasks_from_procfs: Some("not tried (--no-ebpf)".into()),
        };
        let blocking = vec![sleeper(7, 'S'), sleeper(8, 'D')];
        let direction = Some(Direction::Patching);
        live.apply_all([poll(
            100,
            vec![patch(true)],
            direction,
            (50, 3),
            blocking.clone(),
        )]);
        let events = live.apply_all([poll(110, vec![patch(true)], direction, (50, 2), blocking)]);
        let mut ended = TransitionsEnded::default();
        ended.count(&events);
        // The log saw it start before the feed did.
        let log = [starting(40, "p", false)];
        let metrics = FleetMetrics::from_live(&kernel(), &live, &feed, Some(&log), ended);

        let t = metrics.transition.as_ref().expect("in transition");
        assert_eq!((t.patch.as_str(), t.direction), ("p", Direction::Patching));
        assert_eq!((t.tasks_total, t.tasks_pending), (50, 2));
        assert_eq!(t.elapsed_secs, Some(70.0), "from the logged start");
        assert_eq!(t.retry_rounds, Some(70), "estimated at one a second");
        assert_eq!(
            (t.signals_sent, t.reversed, t.forced),
            (Some(false), false, false)
        );
        assert_eq!(t.verdicts, VerdictSource::Inferred);
        let on_stack = BlockReason::FunctionOnStack;
        assert_eq!(
            class(
                &metrics,
                on_stack,
                BlockerKind::UserTaskAsleepInPatchedFunction
            ),
            1
        );
        assert_eq!(
            class(
                &metrics,
                on_stack,
                BlockerKind::UninterruptibleInPatchedFunction
            ),
            1
        );
        assert_eq!(
            class(&metrics, BlockReason::Running, BlockerKind::RunningInKernel),
            0
        );
        assert_eq!(metrics.blockers.len(), BLOCKER_CLASSES.len());
        let named: Vec<u32> = metrics.top_blockers.iter().map(|b| b.pid).collect();
        assert_eq!(named, [7, 8]);
        assert_eq!(
            metrics.top_blockers[0].function.as_deref(),
            Some("cmdline_proc_show")
        );
        assert!(metrics.calls.is_empty(), "no eBPF: no calls");
        assert_eq!(metrics.ended, Some(TransitionsEnded::default()));
    }

    #[test]
    fn the_export_keeps_the_log_last_read() {
        let feed = FeedCapabilities::default();
        let mut export = LiveExport::new(kernel());
        let direction = Some(Direction::Patching);
        let with_log = |at, log: Option<Vec<LogEntry>>| {
            let blocking = vec![sleeper(7, 'S')];
            let mut observation = poll(at, vec![patch(true)], direction, (10, 1), blocking);
            if let Observation::Poll(poll) = &mut observation {
                poll.log = log;
            }
            observation
        };
        export.apply(vec![with_log(100, Some(vec![starting(40, "p", false)]))]);
        export.apply(vec![with_log(110, None)]);
        let metrics = export.metrics(&feed);
        let t = metrics.transition.expect("in transition");
        assert_eq!(t.elapsed_secs, Some(70.0), "from the log read before");
        let idle = patch_of("p", true, false, "vmlinux", &["cmdline_proc_show"]);
        let other = patch_of("q", true, false, "vmlinux", &["cmdline_proc_show"]);
        export.apply(vec![poll(120, vec![idle, other], None, (10, 0), vec![])]);
        let metrics = export.metrics(&feed);
        // p's, and q's, which came and went between two polls.
        assert_eq!(metrics.ended.map(|e| e.completed), Some(2));
        assert_eq!(metrics.patches.len(), 2);
    }

    #[test]
    fn a_live_reversal_and_its_end_are_counted() {
        let mut live = LiveState::new(None);
        let feed = FeedCapabilities::default();
        let mut ended = TransitionsEnded::default();
        let patching = Some(Direction::Patching);
        let unpatching = Some(Direction::Unpatching);
        let blocking = vec![sleeper(7, 'S')];
        ended.count(&live.apply_all([poll(1, vec![patch(true)], patching, (9, 1), blocking)]));
        let reversed = patch_of("p", false, true, "vmlinux", &["cmdline_proc_show"]);
        ended.count(&live.apply_all([poll(2, vec![reversed], unpatching, (9, 4), vec![])]));
        let metrics = FleetMetrics::from_live(&kernel(), &live, &feed, None, ended);
        let t = metrics.transition.as_ref().expect("in transition");
        assert!(t.reversed, "{t:?}");
        assert_eq!(
            t.verdicts,
            VerdictSource::Kernel,
            "eBPF with the verdict hook"
        );

        let idle = patch_of("p", false, false, "vmlinux", &["cmdline_proc_show"]);
        ended.count(&live.apply_all([poll(3, vec![idle], None, (9, 0), vec![])]));
        let metrics = FleetMetrics::from_live(&kernel(), &live, &feed, None, ended);
        assert_eq!(metrics.transition, None);
        assert!(metrics.blockers.iter().all(|c| c.count == 0));
        assert!(metrics.top_blockers.is_empty());
        let last = metrics.last_transition.expect("the outcome");
        assert!(last.reversed && last.direction == Direction::Unpatching);
        assert_eq!(
            metrics.ended,
            Some(TransitionsEnded {
                completed: 0,
                reversed: 1,
                forced: 0
            })
        );
    }

    #[test]
    fn only_the_first_blockers_are_named_those_in_a_patched_function_first() {
        let mut tasks: Vec<Task> = (1..=12)
            .map(|tid| task(tid, 'R', PatchState::Unpatched, vec![]))
            .collect();
        tasks.extend((20..25).map(|tid| sleeper(tid, 'S')));
        let snapshot = Snapshot {
            kernel: kernel(),
            patches: vec![patch(true)],
            tasks,
            log: Known::Value(vec![starting(100, "p", false)]),
        };
        let metrics = FleetMetrics::from_snapshot(&snapshot, 160 * SEC_US);
        let t = metrics.transition.as_ref().expect("in transition");
        assert_eq!((t.tasks_total, t.tasks_pending), (17, 17));
        assert_eq!((t.elapsed_secs, t.signals_sent), (Some(60.0), Some(false)));
        assert_eq!(
            class(&metrics, BlockReason::Running, BlockerKind::RunningInKernel),
            12
        );
        assert_eq!(metrics.top_blockers.len(), TOP_BLOCKERS);
        let named: Vec<u32> = metrics.top_blockers.iter().map(|b| b.pid).collect();
        assert_eq!(named, [20, 21, 22, 23, 24, 1, 2, 3, 4, 5]);
        assert_eq!(metrics.feed, None, "a one-shot reading loads no eBPF");
        assert_eq!(metrics.ended, None);
    }

    #[test]
    fn without_livepatch_there_are_no_blocker_classes() {
        let snapshot = Snapshot {
            kernel: Kernel {
                problems: vec!["livepatch unsupported: no CONFIG_LIVEPATCH".into()],
                ..Kernel::default()
            },
            patches: Vec::new(),
            tasks: Vec::new(),
            log: Known::unknown("not root"),
        };
        let metrics = FleetMetrics::from_snapshot(&snapshot, 0);
        assert!(!metrics.livepatch_supported);
        assert!(metrics.blockers.is_empty() && metrics.transition.is_none());
        assert_eq!(metrics.kernel_problems.len(), 1);
    }
}
