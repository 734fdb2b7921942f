//! What `watch` knows about transitions, built from a stream of
//! observations: periodic polls of sysfs and procfs, tracer events, kernel
//! log messages and call counts. Pure: every observation carries its own
//! CLOCK_MONOTONIC time, so tests replay any history.
//!
//! Each observation may produce `WatchEvent`s: the same events feed the
//! TUI's event log and the plain and JSON lines.
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;

use super::{
    advice::SIGNALS_AFTER_ROUNDS,
    blockers::{Blocker, CodeVersion, letter},
};
use crate::{
    kernel::kernel_log::LivepatchMessage,
    model::{BlockReason, Direction, Known, Patch, TraceEvent, Transition},
    probes::CallCount,
};

/// How many samples of calls per second the sparklines keep.
pub const CALL_HISTORY: usize = 60;
/// How many events the log keeps for the TUI.
const LOG_LEN: usize = 200;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WatchEvent {
    Start {
        patch: String,
        direction: Direction,
        tasks_total: usize,
    },
    /// Tasks switched since the last progress event: in bulk, once a poll.
    Progress {
        patch: String,
        tasks_pending: usize,
        tasks_total: usize,
        switched: usize,
    },
    Blocker {
        pid: u32,
        tid: u32,
        comm: String,
        kthread: bool,
        #[serde(serialize_with = "letter")]
        state: char,
        reason: BlockReason,
        function: Option<String>,
        version: Option<CodeVersion>,
    },
    BlockerCleared {
        pid: u32,
        tid: u32,
        comm: String,
    },
    /// Threads the tracer saw switch (the kernel's check passed, or they
    /// moved themselves), in bulk, once a poll.
    Switched {
        patch: String,
        tids: Vec<u32>,
    },
    /// The kernel sent fake signals (user tasks) and wake-ups (kthreads) to
    /// the remaining tasks.
    Signals {
        patch: String,
        seen_in: SignalsSeen,
    },
    /// The transition turned around; `direction` is its new goal.
    Reverse {
        patch: String,
        direction: Direction,
    },
    Force {
        patch: String,
    },
    /// The transition ended. `reversed`: it ended in the opposite direction
    /// from where it started. `secs` is None for a transition that began and
    /// ended between two polls.
    Complete {
        patch: String,
        direction: Direction,
        reversed: bool,
        forced: bool,
        secs: Option<f64>,
    },
    /// The patch left /sys/kernel/livepatch (disabled and freed, or
    /// unloaded).
    Gone {
        patch: String,
    },
    Timeout {
        secs: f64,
    },
    /// Watch has attached its probes and polled once: from here on, no
    /// transition goes unreported.
    Ready {
        ebpf: bool,
        /// The kernel's own per-task verdicts are traced; otherwise
        /// blockers are inferred from patch_state, scheduler state and
        /// stacks.
        kernel_verdicts: bool,
    },
    /// The kernel refused to enable a patch: no transition will come of it.
    Refused {
        patch: String,
        why: String,
    },
    /// A signal ended the watch.
    Interrupted {
        signal: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalsSeen {
    /// The kernel logged "signaling remaining tasks".
    KernelLog,
    /// The tracer counted the failed rounds after which the kernel signals.
    FailedRounds,
}

/// What fed the view: the kernel's own verdicts, or polling alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feed {
    Ebpf,
    Polling { reason: String },
}

/// One poll of sysfs and procfs.
#[derive(Clone, Debug)]
pub struct Poll {
    pub at_ns: u64,
    /// Only the patches being watched.
    pub patches: Vec<Patch>,
    pub transition: Option<Transition>,
    pub blockers: Vec<Blocker>,
    /// How many threads the poll scanned, when it scanned them.
    pub threads: Option<usize>,
}

#[derive(Clone, Debug)]
pub enum Observation {
    Poll(Poll),
    Trace(TraceEvent),
    KernelLog(LivepatchMessage),
    Calls {
        at_ns: u64,
        counts: Vec<CallCount>,
        /// Per thread id: calls that ran an old version during a transition,
        /// running totals.
        old_callers: Vec<(u32, u64)>,
    },
    /// Watch itself wrote 1 to `force`, after the user confirmed.
    ForceWritten,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TransitionProgress {
    pub patch: String,
    pub direction: Direction,
    pub initial_direction: Direction,
    pub started_ns: u64,
    pub tasks_total: usize,
    pub tasks_pending: usize,
    pub signals: Option<SignalsSeen>,
    pub forced: bool,
    /// The blockers worth showing, with `blocked_secs` filled in.
    pub blockers: Vec<Blocker>,
}

/// How the last transition ended, shown until the next one starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub patch: String,
    pub direction: Direction,
    pub reversed: bool,
    pub forced: bool,
    pub secs: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoggedEvent {
    pub at_ns: u64,
    pub event: WatchEvent,
}

/// Calls per second of one patched function, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionCalls {
    pub function: String,
    pub old_per_sec: VecDeque<u64>,
    pub new_per_sec: VecDeque<u64>,
    last: Option<(u64, u64, u64)>,
}

/// Retry rounds as the tracer counts them (reset when a transition starts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rounds {
    pub total: u32,
    pub failed: u32,
}

/// A task found blocking, not necessarily shown yet.
#[derive(Clone, Debug)]
struct Candidate {
    first_seen_ns: u64,
    polls: u32,
}

#[derive(Clone, Debug)]
pub struct WatchState {
    pub kernel_release: String,
    pub feed: Feed,
    /// Patches as last polled; a patch that left stays with `gone` set.
    pub patches: Vec<Patch>,
    pub transition: Option<TransitionProgress>,
    pub last_outcome: Option<Outcome>,
    /// From the tracer; None when only polling feeds the view.
    pub rounds: Option<Rounds>,
    pub calls: Vec<FunctionCalls>,
    /// Patched functions whose calls cannot be counted, with the reason.
    pub uncounted: Vec<(String, String)>,
    /// With the eBPF feed but without the kernel's per-task verdicts (the
    /// hook is missing or off on this kernel): why. Blockers are then
    /// inferred.
    pub verdicts_inferred: Option<String>,
    /// The object whose pre-patch callback failed, until the refusal that
    /// follows it in the log.
    failed_callback: Option<String>,
    pub log: VecDeque<LoggedEvent>,
    pub started_ns: Option<u64>,
    pub now_ns: u64,
    polls: u64,
    tracer_start_ns: Option<u64>,
    candidates: BTreeMap<u32, Candidate>,
    /// Switches the tracer saw since the last poll.
    switched: BTreeSet<u32>,
    /// A patch seen in transition whose direction no poll has told yet.
    unbegun: Option<String>,
    /// The threads still running old code in this transition, by calls
    /// made there, most first.
    pub old_callers: Vec<(u32, u64)>,
    /// Old-code calls per thread before this transition: the counters run
    /// across transitions.
    old_calls_before: BTreeMap<u32, u64>,
}

impl WatchState {
    pub fn new(kernel_release: impl Into<String>, feed: Feed) -> Self {
        WatchState {
            kernel_release: kernel_release.into(),
            rounds: None,
            feed,
            patches: Vec::new(),
            transition: None,
            last_outcome: None,
            calls: Vec::new(),
            uncounted: Vec::new(),
            verdicts_inferred: None,
            failed_callback: None,
            log: VecDeque::new(),
            started_ns: None,
            now_ns: 0,
            polls: 0,
            tracer_start_ns: None,
            candidates: BTreeMap::new(),
            switched: BTreeSet::new(),
            unbegun: None,
            old_callers: Vec::new(),
            old_calls_before: BTreeMap::new(),
        }
    }

    /// Applies one observation; returns the events it produced, also kept in
    /// the log.
    pub fn apply(&mut self, observation: Observation) -> Vec<WatchEvent> {
        let mut events = Vec::new();
        match observation {
            Observation::Poll(poll) => self.on_poll(poll, &mut events),
            Observation::Trace(event) => self.on_trace(event, &mut events),
            Observation::KernelLog(message) => self.on_kernel_log(message, &mut events),
            Observation::Calls {
                at_ns,
                counts,
                old_callers,
            } => {
                self.on_calls(at_ns, &counts);
                self.on_old_callers(old_callers);
            }
            Observation::ForceWritten => self.forced(&mut events),
        }
        self.record(&events);
        events
    }

    /// An event the watcher itself decided (ready, a timeout), logged like
    /// the rest.
    pub fn note(&mut self, event: WatchEvent) {
        self.record(std::slice::from_ref(&event));
    }

    /// Seconds since the transition on screen started.
    pub fn elapsed_secs(&self) -> Option<f64> {
        let transition = self.transition.as_ref()?;
        Some(secs_between(transition.started_ns, self.now_ns))
    }

    /// Retry rounds so far: counted by the tracer, or estimated from the
    /// elapsed time (the kernel retries once a second). The flag says
    /// whether it is an estimate.
    pub fn retry_rounds(&self) -> Option<(u32, bool)> {
        let elapsed = self.elapsed_secs()?;
        Some(match self.rounds {
            Some(rounds) => (rounds.total, false),
            None => (elapsed as u32, true),
        })
    }

    /// The kernel signals after this many failed rounds; with only an
    /// estimate of the rounds, it is only likely.
    pub fn signals_expected(&self) -> bool {
        self.retry_rounds()
            .is_some_and(|(rounds, _)| rounds >= SIGNALS_AFTER_ROUNDS)
    }

    fn record(&mut self, events: &[WatchEvent]) {
        for event in events {
            if self.log.len() == LOG_LEN {
                self.log.pop_front();
            }
            self.log.push_back(LoggedEvent {
                at_ns: self.now_ns,
                event: event.clone(),
            });
        }
    }

    fn on_poll(&mut self, mut poll: Poll, events: &mut Vec<WatchEvent>) {
        self.settle_direction(&mut poll);
        self.now_ns = self.now_ns.max(poll.at_ns);
        self.started_ns.get_or_insert(poll.at_ns);
        let first_poll = self.polls == 0;
        self.polls += 1;

        // A patch whose `transition` could not be read this time (a read
        // racing a write) has not ended its transition.
        let unreadable = |name: &str| {
            poll.patches
                .iter()
                .any(|p| p.name == name && !p.gone && matches!(p.transition, Known::Unknown { .. }))
        };
        let continuing = match (&self.transition, &poll.transition) {
            (Some(current), Some(seen)) => current.patch == seen.patch,
            (Some(current), None) => unreadable(&current.patch),
            (None, _) => false,
        };
        if !continuing {
            let ended = self.transition.take().map(|ended| {
                let name = ended.patch.clone();
                self.end(ended, &poll.patches, events);
                name
            });
            if let Some(seen) = &poll.transition {
                self.begin(seen, events);
            } else if !first_poll {
                self.quick_transitions(&poll, ended.as_deref(), events);
            }
        }
        if let (Some(current), Some(seen)) = (self.transition.as_mut(), &poll.transition) {
            if seen.direction != current.direction {
                current.direction = seen.direction;
                events.push(WatchEvent::Reverse {
                    patch: current.patch.clone(),
                    direction: seen.direction,
                });
            }
            if seen.tasks_pending != current.tasks_pending {
                events.push(WatchEvent::Progress {
                    patch: current.patch.clone(),
                    tasks_pending: seen.tasks_pending,
                    tasks_total: seen.tasks_total,
                    switched: current.tasks_pending.saturating_sub(seen.tasks_pending),
                });
            }
            current.tasks_pending = seen.tasks_pending;
            current.tasks_total = seen.tasks_total;
        }
        self.track_blockers(poll.blockers, poll.at_ns, events);
        self.report_switches(events);
        self.update_patches(poll.patches, events);
    }

    fn begin(&mut self, seen: &Transition, events: &mut Vec<WatchEvent>) {
        self.unbegun = None;
        // The tracer saw the start before the poll did: count from there.
        let started_ns = self
            .tracer_start_ns
            .take()
            .filter(|&at| at <= self.now_ns)
            .unwrap_or(self.now_ns);
        self.transition = Some(TransitionProgress {
            patch: seen.patch.clone(),
            direction: seen.direction,
            initial_direction: seen.direction,
            started_ns,
            tasks_total: seen.tasks_total,
            tasks_pending: seen.tasks_pending,
            signals: None,
            forced: false,
            blockers: Vec::new(),
        });
        self.candidates.clear();
        events.push(WatchEvent::Start {
            patch: seen.patch.clone(),
            direction: seen.direction,
            tasks_total: seen.tasks_total,
        });
    }

    fn end(&mut self, ended: TransitionProgress, patches: &[Patch], events: &mut Vec<WatchEvent>) {
        // `enabled` names where the transition ended, even if a reversal
        // happened between polls; a patch that left ended disabled.
        let direction = match patches
            .iter()
            .find(|p| p.name == ended.patch && !p.gone)
            .map(|p| &p.enabled)
        {
            Some(Known::Value(true)) => Direction::Patching,
            Some(Known::Value(false)) | None => Direction::Unpatching,
            Some(Known::Unknown { .. }) => ended.direction,
        };
        for blocker in &ended.blockers {
            events.push(cleared(blocker));
        }
        self.candidates.clear();
        let outcome = Outcome {
            patch: ended.patch,
            direction,
            reversed: direction != ended.initial_direction,
            forced: ended.forced,
            secs: Some(secs_between(ended.started_ns, self.now_ns)),
        };
        events.push(complete(&outcome));
        self.last_outcome = Some(outcome);
    }

    /// A transition that began and ended between two polls (a few
    /// milliseconds on 7.x) is seen only in what it left: a patch that
    /// appeared enabled, or a known patch whose `enabled` flipped. Report
    /// it, so that scripts waiting for it end.
    ///
    /// `ended` is the patch whose transition this poll saw end: already
    /// reported. A patch that turned disabled while another transition
    /// came or went is left alone: an atomic replace disables the patches
    /// it replaces as part of its own transition.
    fn quick_transitions(
        &mut self,
        poll: &Poll,
        ended: Option<&str>,
        events: &mut Vec<WatchEvent>,
    ) {
        let quick: Vec<(&Patch, Direction)> = poll
            .patches
            .iter()
            .filter(|patch| Some(patch.name.as_str()) != ended)
            .filter_map(|patch| Some((patch, self.settled_since_last_poll(patch)?)))
            .collect();
        let patching = quick.iter().any(|(_, d)| *d == Direction::Patching);
        for (patch, direction) in quick {
            if direction == Direction::Unpatching && (patching || ended.is_some()) {
                continue;
            }
            events.push(WatchEvent::Start {
                patch: patch.name.clone(),
                direction,
                tasks_total: poll.threads.unwrap_or(0),
            });
            let outcome = Outcome {
                patch: patch.name.clone(),
                direction,
                reversed: false,
                forced: false,
                secs: None,
            };
            events.push(complete(&outcome));
            self.last_outcome = Some(outcome);
            self.unbegun = None;
        }
    }

    /// The direction of a transition `patch` went through unseen, if its
    /// settled state differs from the last poll's.
    fn settled_since_last_poll(&self, patch: &Patch) -> Option<Direction> {
        let Known::Value(enabled) = patch.enabled else {
            return None;
        };
        if patch.gone || patch.transition != Known::Value(false) {
            return None;
        }
        let direction = if enabled {
            Direction::Patching
        } else {
            Direction::Unpatching
        };
        let before = self
            .patches
            .iter()
            .find(|p| p.name == patch.name && !p.gone);
        match before {
            // New: loaded and applied between polls. A disabled newcomer is
            // only being set up (sysfs shows it before its transition).
            None => enabled.then_some(direction),
            // Seen before its transition began, enabled now.
            Some(_) if self.unbegun.as_deref() == Some(patch.name.as_str()) => {
                enabled.then_some(direction)
            }
            Some(before) => match before.enabled {
                Known::Value(was) if was != enabled => Some(direction),
                _ => None,
            },
        }
    }

    /// A transition with no task pending says nothing about its direction.
    /// The kernel marks the transition before it sets `enabled` to its goal
    /// (and patches the objects in between), so for a while `enabled` names
    /// the opposite direction, and every task, still at the initial state,
    /// looks switched to that direction's target. Such a poll keeps the
    /// direction already known, and does not start a transition.
    fn settle_direction(&mut self, poll: &mut Poll) {
        let Some(seen) = poll.transition.as_mut() else {
            return;
        };
        if seen.tasks_pending > 0 {
            return;
        }
        match &self.transition {
            Some(current) if current.patch == seen.patch => seen.direction = current.direction,
            _ => {
                // Should it end before a poll tells its direction, it is
                // reported as a transition that came and went between polls.
                self.unbegun = Some(seen.patch.clone());
                poll.transition = None;
            }
        }
    }

    /// The switches the tracer saw since the last poll, under the patch in
    /// transition, or before the completion of one that ended since.
    fn report_switches(&mut self, events: &mut Vec<WatchEvent>) {
        if self.switched.is_empty() {
            return;
        }
        let completed = events
            .iter()
            .position(|e| matches!(e, WatchEvent::Complete { .. }));
        let patch = match (&self.transition, completed.map(|i| &events[i])) {
            (_, Some(WatchEvent::Complete { patch, .. })) => patch.clone(),
            (Some(transition), _) => transition.patch.clone(),
            // Not in a transition yet: the tracer ran ahead of the polls.
            _ => return,
        };
        let switched = WatchEvent::Switched {
            patch,
            tids: std::mem::take(&mut self.switched).into_iter().collect(),
        };
        match completed {
            Some(at) => events.insert(at, switched),
            None => events.push(switched),
        }
    }

    /// Which blockers to show. A function on the stack blocks for sure; a
    /// running task or an unreliable stack is usually gone by the next
    /// round, so it shows only once seen in two polls in a row (or failed
    /// twice by the kernel's count).
    fn track_blockers(&mut self, blockers: Vec<Blocker>, at_ns: u64, events: &mut Vec<WatchEvent>) {
        let Some(transition) = self.transition.as_mut() else {
            return;
        };
        let mut shown = Vec::new();
        let mut candidates = BTreeMap::new();
        for mut blocker in blockers {
            let mut candidate = self.candidates.remove(&blocker.tid).unwrap_or(Candidate {
                first_seen_ns: at_ns,
                polls: 0,
            });
            candidate.polls += 1;
            let persistent = blocker.reason == BlockReason::FunctionOnStack
                || candidate.polls >= 2
                || blocker.failed_checks.is_some_and(|checks| checks >= 2);
            if persistent {
                blocker
                    .blocked_secs
                    .get_or_insert(secs_between(candidate.first_seen_ns, at_ns));
                let previous = transition.blockers.iter().find(|b| b.tid == blocker.tid);
                if previous
                    .is_none_or(|p| p.reason != blocker.reason || p.function != blocker.function)
                {
                    events.push(WatchEvent::Blocker {
                        pid: blocker.pid,
                        tid: blocker.tid,
                        comm: blocker.comm.clone(),
                        kthread: blocker.kthread,
                        state: blocker.state,
                        reason: blocker.reason,
                        function: blocker.function.clone(),
                        version: blocker.version.clone(),
                    });
                }
                shown.push(blocker.clone());
            }
            candidates.insert(blocker.tid, candidate);
        }
        for old in &transition.blockers {
            if !shown.iter().any(|b| b.tid == old.tid) {
                events.push(cleared(old));
            }
        }
        transition.blockers = shown;
        self.candidates = candidates;
    }

    fn update_patches(&mut self, polled: Vec<Patch>, events: &mut Vec<WatchEvent>) {
        let mut patches = polled;
        for old in self.patches.drain(..) {
            match patches.iter_mut().find(|p| p.name == old.name) {
                Some(new) if new.gone && !old.gone => events.push(WatchEvent::Gone {
                    patch: old.name.clone(),
                }),
                Some(_) => {}
                None => {
                    if !old.gone {
                        events.push(WatchEvent::Gone {
                            patch: old.name.clone(),
                        });
                    }
                    patches.push(Patch { gone: true, ..old });
                }
            }
        }
        patches.sort_by(|a, b| a.name.cmp(&b.name));
        self.patches = patches;
    }

    fn on_trace(&mut self, event: TraceEvent, events: &mut Vec<WatchEvent>) {
        match event {
            TraceEvent::Start { timestamp_ns } => {
                self.tracer_start_ns = Some(timestamp_ns);
                // Counted from the first round the tracer reports; until
                // then (or on kernels where that hook is off) estimated.
                self.rounds = None;
            }
            TraceEvent::Round { complete, .. } => {
                let rounds = self.rounds.get_or_insert_with(Rounds::default);
                rounds.total += 1;
                if !complete {
                    rounds.failed += 1;
                }
                if rounds.failed >= SIGNALS_AFTER_ROUNDS {
                    self.signals(SignalsSeen::FailedRounds, events);
                }
            }
            TraceEvent::Reverse { .. } => {
                if let Some(transition) = self.transition.as_mut() {
                    let direction = transition.direction.opposite();
                    transition.direction = direction;
                    events.push(WatchEvent::Reverse {
                        patch: transition.patch.clone(),
                        direction,
                    });
                }
            }
            TraceEvent::Force { .. } => self.forced(events),
            TraceEvent::Check {
                tid, reason: None, ..
            }
            | TraceEvent::SelfSwitch { tid, .. } => {
                self.switched.insert(tid);
            }
            // The polls decide when a transition starts and ends: they know
            // the patch, the tracer does not.
            TraceEvent::Check { .. } | TraceEvent::Complete { .. } | TraceEvent::Cancel { .. } => {}
        }
    }

    fn on_kernel_log(&mut self, message: LivepatchMessage, events: &mut Vec<WatchEvent>) {
        match message {
            LivepatchMessage::Signaling => self.signals(SignalsSeen::KernelLog, events),
            LivepatchMessage::Forcing => self.forced(events),
            LivepatchMessage::PreCallbackFailed { object } => {
                self.failed_callback = Some(object);
            }
            LivepatchMessage::Refused {
                patch,
                incompatible_states,
            } => {
                let why = if incompatible_states {
                    "not compatible with the already installed livepatches (system states)"
                        .to_owned()
                } else {
                    match self.failed_callback.take() {
                        Some(object) => {
                            format!("its pre-patch callback failed for object {object}")
                        }
                        None => "the kernel failed to enable it (see dmesg)".to_owned(),
                    }
                };
                events.push(WatchEvent::Refused { patch, why });
            }
            LivepatchMessage::Starting { .. } | LivepatchMessage::Complete { .. } => {}
        }
    }

    /// Once per transition, whichever source tells first.
    fn signals(&mut self, seen_in: SignalsSeen, events: &mut Vec<WatchEvent>) {
        if let Some(transition) = self.transition.as_mut().filter(|t| t.signals.is_none()) {
            transition.signals = Some(seen_in);
            events.push(WatchEvent::Signals {
                patch: transition.patch.clone(),
                seen_in,
            });
        }
    }

    /// Force is seen by the tracer, the kernel log, or watch's own write:
    /// reported once.
    fn forced(&mut self, events: &mut Vec<WatchEvent>) {
        if let Some(transition) = self.transition.as_mut().filter(|t| !t.forced) {
            transition.forced = true;
            events.push(WatchEvent::Force {
                patch: transition.patch.clone(),
            });
        }
    }

    fn on_calls(&mut self, at_ns: u64, counts: &[CallCount]) {
        self.now_ns = self.now_ns.max(at_ns);
        self.calls
            .retain(|calls| counts.iter().any(|c| c.function == calls.function));
        for count in counts {
            let calls = match self.calls.iter().position(|c| c.function == count.function) {
                Some(at) => &mut self.calls[at],
                None => {
                    self.calls.push(FunctionCalls {
                        function: count.function.clone(),
                        ..FunctionCalls::default()
                    });
                    self.calls.last_mut().expect("just pushed")
                }
            };
            calls.sample(at_ns, count.old, count.new);
        }
    }
}

impl WatchState {
    /// How many threads the TUI lists as still running old code.
    const OLD_CALLERS_SHOWN: usize = 8;

    fn on_old_callers(&mut self, totals: Vec<(u32, u64)>) {
        if self.transition.is_none() {
            self.old_calls_before = totals.into_iter().collect();
            self.old_callers.clear();
            return;
        }
        let mut callers: Vec<(u32, u64)> = totals
            .into_iter()
            .map(|(tid, calls)| {
                let before = self.old_calls_before.get(&tid).copied().unwrap_or(0);
                (tid, calls.saturating_sub(before))
            })
            .filter(|&(_, calls)| calls > 0)
            .collect();
        callers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        callers.truncate(Self::OLD_CALLERS_SHOWN);
        self.old_callers = callers;
    }
}

impl FunctionCalls {
    /// The counters are running totals: a rate needs the previous sample.
    fn sample(&mut self, at_ns: u64, old: u64, new: u64) {
        if let Some((last_ns, last_old, last_new)) = self.last {
            let secs = secs_between(last_ns, at_ns);
            if secs > 0.0 {
                let rate =
                    |now: u64, then: u64| (now.saturating_sub(then) as f64 / secs).round() as u64;
                push_capped(&mut self.old_per_sec, rate(old, last_old));
                push_capped(&mut self.new_per_sec, rate(new, last_new));
            }
        }
        self.last = Some((at_ns, old, new));
    }

    pub fn latest(&self) -> (Option<u64>, Option<u64>) {
        (
            self.old_per_sec.back().copied(),
            self.new_per_sec.back().copied(),
        )
    }
}

fn push_capped(history: &mut VecDeque<u64>, value: u64) {
    if history.len() == CALL_HISTORY {
        history.pop_front();
    }
    history.push_back(value);
}

fn secs_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e9
}

fn cleared(blocker: &Blocker) -> WatchEvent {
    WatchEvent::BlockerCleared {
        pid: blocker.pid,
        tid: blocker.tid,
        comm: blocker.comm.clone(),
    }
}

fn complete(outcome: &Outcome) -> WatchEvent {
    WatchEvent::Complete {
        patch: outcome.patch.clone(),
        direction: outcome.direction,
        reversed: outcome.reversed,
        forced: outcome.forced,
        secs: outcome.secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{analysis::blockers::VerdictSource, model::PatchObject};

    const SEC: u64 = 1_000_000_000;

    fn patch(name: &str, enabled: bool, transition: bool) -> Patch {
        Patch {
            name: name.into(),
            enabled: Known::Value(enabled),
            transition: Known::Value(transition),
            force: Known::unknown("write-only"),
            replace: None,
            stack_order: None,
            objects: Vec::<PatchObject>::new(),
            gone: false,
        }
    }

    fn blocker(tid: u32, reason: BlockReason) -> Blocker {
        Blocker {
            pid: tid,
            tid,
            comm: format!("task{tid}"),
            kthread: false,
            state: 'S',
            reason,
            function: Some("cmdline_proc_show".into()),
            version: None,
            unexplained: None,
            stack: vec![],
            marked_frame: None,
            blocked_secs: None,
            failed_checks: None,
            source: VerdictSource::Inferred,
        }
    }

    fn poll(
        at: u64,
        patches: Vec<Patch>,
        transition: Option<(Direction, usize)>,
        blockers: Vec<Blocker>,
    ) -> Observation {
        Observation::Poll(Poll {
            at_ns: at * SEC,
            transition: transition.map(|(direction, pending)| Transition {
                patch: "p".into(),
                direction,
                tasks_total: 100,
                tasks_pending: pending,
            }),
            patches,
            blockers,
            threads: Some(100),
        })
    }

    fn patching(at: u64, pending: usize, blockers: Vec<Blocker>) -> Observation {
        poll(
            at,
            vec![patch("p", true, true)],
            Some((Direction::Patching, pending)),
            blockers,
        )
    }

    fn polling() -> WatchState {
        WatchState::new(
            "6.12",
            Feed::Polling {
                reason: "fentry refused".into(),
            },
        )
    }

    fn names(events: &[WatchEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                serde_json::to_value(e).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn a_transition_starts_progresses_and_completes() {
        let mut state = polling();
        assert!(state.apply(poll(0, vec![], None, vec![])).is_empty());
        let start = state.apply(patching(1, 100, vec![]));
        assert_eq!(
            start,
            [WatchEvent::Start {
                patch: "p".into(),
                direction: Direction::Patching,
                tasks_total: 100
            }]
        );
        let progress = state.apply(patching(2, 3, vec![]));
        assert_eq!(
            progress,
            [WatchEvent::Progress {
                patch: "p".into(),
                tasks_pending: 3,
                tasks_total: 100,
                switched: 97
            }]
        );
        assert!(
            state.apply(patching(3, 3, vec![])).is_empty(),
            "no change, no event"
        );
        let end = state.apply(poll(4, vec![patch("p", true, false)], None, vec![]));
        assert_eq!(
            end,
            [WatchEvent::Complete {
                patch: "p".into(),
                direction: Direction::Patching,
                reversed: false,
                forced: false,
                secs: Some(3.0)
            }]
        );
        assert!(state.transition.is_none());
        assert_eq!(state.last_outcome.as_ref().map(|o| o.reversed), Some(false));
        assert_eq!(state.log.len(), 3);
    }

    #[test]
    fn watching_from_before_the_load_sees_a_transition_too_quick_to_poll() {
        let mut state = polling();
        state.apply(poll(0, vec![], None, vec![]));
        let events = state.apply(poll(1, vec![patch("p", true, false)], None, vec![]));
        assert_eq!(names(&events), ["start", "complete"]);
        // A patch already settled when watch starts is not a transition.
        let mut state = polling();
        assert!(
            state
                .apply(poll(0, vec![patch("p", true, false)], None, vec![]))
                .is_empty()
        );
    }

    #[test]
    fn a_disable_too_quick_to_poll_is_an_unpatching_transition() {
        let mut state = polling();
        state.apply(poll(0, vec![patch("p", true, false)], None, vec![]));
        let events = state.apply(poll(1, vec![patch("p", false, false)], None, vec![]));
        assert_eq!(names(&events), ["start", "complete"]);
        assert!(matches!(
            events[1],
            WatchEvent::Complete {
                direction: Direction::Unpatching,
                reversed: false,
                ..
            }
        ));
        let again = state.apply(poll(2, vec![patch("p", true, false)], None, vec![]));
        assert_eq!(names(&again), ["start", "complete"], "enabled again");
        assert!(
            state
                .apply(poll(3, vec![patch("p", true, false)], None, vec![]))
                .is_empty(),
            "nothing changed"
        );
    }

    /// An atomic replace disables the patch it replaces inside its own
    /// transition: one transition, not two.
    #[test]
    fn a_replaced_patch_turning_disabled_is_not_a_transition_of_its_own() {
        let mut state = polling();
        state.apply(poll(0, vec![patch("old", true, false)], None, vec![]));
        let events = state.apply(poll(
            1,
            vec![patch("new", true, false), patch("old", false, false)],
            None,
            vec![],
        ));
        assert_eq!(names(&events), ["start", "complete"], "{events:?}");
        assert!(matches!(&events[0], WatchEvent::Start { patch, .. } if patch == "new"));
    }

    /// A transition polled while it ran ends once, even if `enabled` read
    /// its old value at the start (it lags during code patching).
    #[test]
    fn a_polled_transition_is_not_reported_again_as_a_quick_one() {
        let mut state = polling();
        state.apply(poll(0, vec![patch("p", false, false)], None, vec![]));
        state.apply(poll(
            1,
            vec![patch("p", false, true)],
            Some((Direction::Patching, 5)),
            vec![],
        ));
        let end = state.apply(poll(2, vec![patch("p", true, false)], None, vec![]));
        assert_eq!(names(&end), ["complete"], "{end:?}");
    }

    #[test]
    fn a_reversed_transition_reports_reverse_then_complete_reversed_then_gone() {
        let mut state = polling();
        state.apply(patching(0, 5, vec![]));
        let reverse = state.apply(poll(
            1,
            vec![patch("p", false, true)],
            Some((Direction::Unpatching, 95)),
            vec![],
        ));
        assert_eq!(names(&reverse), ["reverse", "progress"]);
        let end = state.apply(poll(2, vec![], None, vec![]));
        assert_eq!(names(&end), ["complete", "gone"]);
        assert!(matches!(
            end[0],
            WatchEvent::Complete {
                reversed: true,
                direction: Direction::Unpatching,
                ..
            }
        ));
        assert!(
            state.patches[0].gone,
            "a gone patch stays on screen, marked"
        );
    }

    #[test]
    fn an_unreadable_transition_flag_does_not_end_the_transition() {
        let mut state = polling();
        state.apply(patching(0, 5, vec![]));
        let mut racing = patch("p", true, true);
        racing.transition = Known::unknown("empty read");
        assert!(state.apply(poll(1, vec![racing], None, vec![])).is_empty());
        assert!(state.transition.is_some());
    }

    #[test]
    fn a_reversal_between_polls_is_still_reported_as_reversed() {
        let mut state = polling();
        state.apply(patching(0, 5, vec![]));
        let end = state.apply(poll(1, vec![patch("p", false, false)], None, vec![]));
        assert!(
            matches!(end[0], WatchEvent::Complete { reversed: true, .. }),
            "{end:?}"
        );
    }

    #[test]
    fn a_function_on_the_stack_blocks_at_once_a_running_task_only_when_it_persists() {
        let mut state = polling();
        state.apply(poll(
            0,
            vec![patch("p", true, true)],
            Some((Direction::Patching, 2)),
            vec![],
        ));
        let first = state.apply(patching(
            1,
            2,
            vec![
                blocker(10, BlockReason::FunctionOnStack),
                blocker(11, BlockReason::Running),
            ],
        ));
        assert!(
            matches!(first.as_slice(), [WatchEvent::Blocker { tid: 10, .. }]),
            "{first:?}"
        );
        let second = state.apply(patching(
            3,
            2,
            vec![
                blocker(10, BlockReason::FunctionOnStack),
                blocker(11, BlockReason::Running),
            ],
        ));
        assert!(
            matches!(second.as_slice(), [WatchEvent::Blocker { tid: 11, .. }]),
            "{second:?}"
        );
        let shown = &state.transition.as_ref().unwrap().blockers;
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0].blocked_secs, Some(2.0), "blocked since first seen");
        let cleared = state.apply(patching(
            4,
            1,
            vec![blocker(10, BlockReason::FunctionOnStack)],
        ));
        assert_eq!(names(&cleared), ["progress", "blocker_cleared"]);
    }

    #[test]
    fn a_transient_verdict_never_shows() {
        let mut state = polling();
        state.apply(patching(0, 2, vec![]));
        assert!(
            state
                .apply(patching(
                    1,
                    2,
                    vec![blocker(11, BlockReason::UnreliableStack)]
                ))
                .is_empty()
        );
        assert!(state.apply(patching(2, 2, vec![])).is_empty());
        assert!(state.transition.unwrap().blockers.is_empty());
    }

    #[test]
    fn signals_come_once_from_the_log_or_fifteen_failed_rounds() {
        let mut state = WatchState::new("6.12", Feed::Ebpf);
        state.apply(Observation::Trace(TraceEvent::Start { timestamp_ns: 0 }));
        state.apply(patching(1, 1, vec![]));
        let round = |complete| {
            Observation::Trace(TraceEvent::Round {
                timestamp_ns: 0,
                duration_ns: 0,
                complete,
            })
        };
        for _ in 0..14 {
            assert!(state.apply(round(false)).is_empty());
        }
        assert_eq!(state.retry_rounds(), Some((14, false)));
        assert_eq!(names(&state.apply(round(false))), ["signals"]);
        assert!(
            state
                .apply(Observation::KernelLog(LivepatchMessage::Signaling))
                .is_empty()
        );
        assert_eq!(
            state.transition.as_ref().unwrap().started_ns,
            0,
            "the tracer saw the start first"
        );
    }

    #[test]
    fn polling_alone_estimates_rounds_and_takes_signals_from_the_kernel_log() {
        let mut state = polling();
        state.apply(patching(0, 1, vec![]));
        state.apply(patching(16, 1, vec![]));
        assert_eq!(state.retry_rounds(), Some((16, true)));
        assert!(state.signals_expected());
        let events = state.apply(Observation::KernelLog(LivepatchMessage::Signaling));
        assert_eq!(
            events,
            [WatchEvent::Signals {
                patch: "p".into(),
                seen_in: SignalsSeen::KernelLog
            }]
        );
    }

    #[test]
    fn force_is_reported_once_whoever_saw_it() {
        let mut state = polling();
        assert!(
            state.apply(Observation::ForceWritten).is_empty(),
            "nothing to force when idle"
        );
        state.apply(patching(0, 1, vec![]));
        assert_eq!(names(&state.apply(Observation::ForceWritten)), ["force"]);
        assert!(
            state
                .apply(Observation::KernelLog(LivepatchMessage::Forcing))
                .is_empty()
        );
        let end = state.apply(poll(1, vec![patch("p", true, false)], None, vec![]));
        assert!(matches!(
            end[0],
            WatchEvent::Complete {
                forced: true,
                reversed: false,
                ..
            }
        ));
    }

    #[test]
    fn the_tracer_reports_a_reversal_before_the_poll_and_only_once() {
        let mut state = WatchState::new("6.12", Feed::Ebpf);
        state.apply(patching(0, 5, vec![]));
        assert_eq!(
            names(&state.apply(Observation::Trace(TraceEvent::Reverse { timestamp_ns: 1 }))),
            ["reverse"]
        );
        let poll = state.apply(poll(
            1,
            vec![patch("p", false, true)],
            Some((Direction::Unpatching, 5)),
            vec![],
        ));
        assert!(poll.is_empty(), "{poll:?}");
    }

    #[test]
    fn calls_per_second_come_from_the_running_totals() {
        let mut state = polling();
        let calls = |at, old, new| Observation::Calls {
            at_ns: at,
            old_callers: vec![],
            counts: vec![CallCount {
                function: "f".into(),
                old,
                new,
            }],
        };
        state.apply(calls(0, 100, 0));
        assert_eq!(state.calls[0].latest(), (None, None));
        state.apply(calls(SEC / 2, 150, 10));
        assert_eq!(state.calls[0].latest(), (Some(100), Some(20)));
        state.apply(Observation::Calls {
            at_ns: SEC,
            old_callers: vec![],
            counts: vec![],
        });
        assert!(
            state.calls.is_empty(),
            "a function no longer counted is dropped"
        );
    }

    #[test]
    fn switches_the_tracer_saw_are_reported_in_bulk_once_a_poll() {
        let mut state = WatchState::new("6.12", Feed::Ebpf);
        state.apply(patching(0, 3, vec![]));
        let check = |tid, reason| TraceEvent::Check {
            timestamp_ns: 1,
            tid,
            tgid: tid,
            comm: "t".into(),
            kthread: false,
            reason,
            function: None,
            failed_checks: 0,
        };
        let switched = |tid| check(tid, None);
        assert!(state.apply(Observation::Trace(switched(7))).is_empty());
        state.apply(Observation::Trace(TraceEvent::SelfSwitch {
            timestamp_ns: 2,
            tid: 5,
            tgid: 5,
            comm: "u".into(),
            kthread: false,
        }));
        state.apply(Observation::Trace(check(
            9,
            Some(BlockReason::FunctionOnStack),
        )));
        let events = state.apply(patching(1, 1, vec![]));
        assert!(
            events.contains(&WatchEvent::Switched {
                patch: "p".into(),
                tids: vec![5, 7]
            }),
            "{events:?}"
        );
        let again = state.apply(patching(2, 1, vec![]));
        assert!(
            !again
                .iter()
                .any(|e| matches!(e, WatchEvent::Switched { .. })),
            "each switch is reported once"
        );
    }

    #[test]
    fn switches_of_a_transition_that_ended_between_polls_come_before_its_end() {
        let mut state = WatchState::new("6.12", Feed::Ebpf);
        state.apply(poll(0, vec![], None, vec![]));
        state.apply(Observation::Trace(TraceEvent::SelfSwitch {
            timestamp_ns: 1,
            tid: 3,
            tgid: 3,
            comm: "sh".into(),
            kthread: false,
        }));
        let events = state.apply(poll(1, vec![patch("p", true, false)], None, vec![]));
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| match e {
                WatchEvent::Start { .. } => "start",
                WatchEvent::Switched { .. } => "switched",
                WatchEvent::Complete { .. } => "complete",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["start", "switched", "complete"]);
    }

    #[test]
    fn a_transition_caught_before_enabled_flips_does_not_start_backwards() {
        let mut state = polling();
        state.apply(poll(0, vec![], None, vec![]));
        // Marked in transition, `enabled` not yet 1: looks like unpatching
        // with every task already at the target.
        let window = poll(
            1,
            vec![patch("p", false, true)],
            Some((Direction::Unpatching, 0)),
            vec![],
        );
        assert!(state.apply(window).is_empty());
        let events = state.apply(patching(2, 5, vec![]));
        assert!(
            matches!(
                events.as_slice(),
                [WatchEvent::Start {
                    direction: Direction::Patching,
                    ..
                }]
            ),
            "{events:?}"
        );
        // The last poll before completion, with nothing pending, keeps it
        // patching: no reversal.
        let events = state.apply(poll(
            3,
            vec![patch("p", true, true)],
            Some((Direction::Unpatching, 0)),
            vec![],
        ));
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, WatchEvent::Reverse { .. })),
            "{events:?}"
        );
    }

    #[test]
    fn threads_still_on_old_code_count_from_the_transition_start() {
        let mut state = polling();
        let old_callers = |at, callers: Vec<(u32, u64)>| Observation::Calls {
            at_ns: at,
            counts: vec![],
            old_callers: callers,
        };
        state.apply(old_callers(0, vec![(7, 100)]));
        assert!(
            state.old_callers.is_empty(),
            "no transition: nothing listed"
        );
        state.apply(patching(1, 2, vec![]));
        state.apply(old_callers(2 * SEC, vec![(7, 103), (9, 40), (11, 0)]));
        assert_eq!(state.old_callers, [(9, 40), (7, 3)]);
    }

    #[test]
    fn a_transition_never_seen_with_pending_tasks_is_still_reported() {
        let mut state = polling();
        state.apply(poll(0, vec![], None, vec![]));
        // Every task already switched; the kernel has not completed yet.
        let end = poll(
            1,
            vec![patch("p", true, true)],
            Some((Direction::Patching, 0)),
            vec![],
        );
        assert!(state.apply(end).is_empty());
        let events = state.apply(poll(2, vec![patch("p", true, false)], None, vec![]));
        assert!(
            matches!(
                events.as_slice(),
                [WatchEvent::Start { .. }, WatchEvent::Complete { .. }]
            ),
            "{events:?}"
        );
    }

    #[test]
    fn a_patch_seen_before_its_transition_then_settled_is_reported() {
        let mut state = polling();
        state.apply(poll(0, vec![], None, vec![]));
        // The patch's sysfs folder exists before the kernel starts patching.
        assert!(
            state
                .apply(poll(1, vec![patch("p", false, false)], None, vec![]))
                .is_empty()
        );
        let events = state.apply(poll(2, vec![patch("p", true, false)], None, vec![]));
        assert!(
            matches!(
                events.as_slice(),
                [WatchEvent::Start { .. }, WatchEvent::Complete { .. }]
            ),
            "{events:?}"
        );
        assert!(
            state
                .apply(poll(3, vec![patch("p", true, false)], None, vec![]))
                .is_empty(),
            "reported once"
        );
    }
}
