//! The transitions a live feed sees, as a state machine over its
//! observations: which patch is moving where, who blocks it, when the
//! kernel signals, how it ends. Pure: every observation carries its own
//! CLOCK_MONOTONIC time, so tests replay any history.
//!
//! Each observation may produce `TransitionEvent`s: the events that watch
//! prints and shows, that apply acts on and that metrics count.
use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::Serialize;

use super::{
    advice::SIGNALS_AFTER_ROUNDS,
    blockers::{Blocker, CodeVersion, PatchedCode, VerdictSource, find_blockers, letter},
    observation::{KernelPoll, Observation},
    transition::transition,
};
use crate::model::{
    BlockReason, Direction, FeedCapabilities, Known, LivepatchMessage, LogEntry, Patch, TraceEvent,
    Transition,
};

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TransitionEvent {
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
    /// The feed has attached its probes and polled once: from here on, no
    /// transition goes unreported.
    Ready {
        ebpf: bool,
        /// The kernel's own per-task verdicts are traced; otherwise
        /// blockers are inferred from patch_state, scheduler state and
        /// stacks.
        kernel_verdicts: bool,
        /// Threads are read by the BPF task iterator, not from procfs.
        task_iterator: bool,
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

impl TransitionEvent {
    /// Said once, when the first round is in: the feed is attached and has
    /// polled, so scripts can start the transition they want to see.
    pub fn ready(feed: &FeedCapabilities) -> Self {
        TransitionEvent::Ready {
            ebpf: feed.ebpf(),
            kernel_verdicts: feed.kernel_verdicts(),
            task_iterator: feed.tasks_from_procfs.is_none(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignalsSeen {
    /// The kernel logged "signaling remaining tasks".
    KernelLog,
    /// The tracer counted the failed rounds after which the kernel signals.
    FailedRounds,
}

/// A poll worked out: the watched patches, their transition and its
/// blockers.
struct Assessed {
    at_ns: u64,
    read_ns: u64,
    log: Option<Vec<LogEntry>>,
    patches: Vec<Patch>,
    transition: Option<Transition>,
    blockers: Vec<Blocker>,
    /// How many threads the poll scanned, when it scanned them.
    threads: Option<usize>,
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

/// Retry rounds as the tracer counts them (reset when a transition starts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rounds {
    pub total: u32,
    pub failed: u32,
}

/// A transition ended by its completion, while sysfs may still show it.
#[derive(Clone, Debug)]
struct Completing {
    patch: String,
    direction: Direction,
    /// When the kernel completed it: the tail lasts no longer than the
    /// rest of klp_complete_transition.
    at_ns: u64,
}

/// How long after a completion a poll may still see its tail: far longer
/// than klp_complete_transition takes, far shorter than unloading the
/// patch and loading it again.
const COMPLETION_TAIL_NS: u64 = 300_000_000;

/// A transition's start or completion, as the tracer hears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Start,
    Complete,
}

/// Which task a blocker is: the per-CPU idle tasks all have tid 0, and
/// tell themselves apart by name (swapper/N).
type TaskKey = (u32, String);

fn key(blocker: &Blocker) -> TaskKey {
    (blocker.tid, blocker.comm.clone())
}

/// A task found blocking, not necessarily shown yet.
#[derive(Clone, Debug)]
struct Candidate {
    first_seen_ns: u64,
}

/// Where klpscope infers the verdicts: how long a running task or an
/// unreliable stack goes on blocking before it shows. Far more than a task
/// caught running takes to switch itself on its way to user space.
const PERSISTS_AFTER_NS: u64 = 400_000_000;

#[derive(Clone, Debug)]
pub struct TransitionTracker {
    /// The one patch followed (`--patch`); None follows every patch.
    watched: Option<String>,
    /// The watched patches as last polled; a patch that left stays with
    /// `gone` set.
    pub patches: Vec<Patch>,
    pub transition: Option<TransitionProgress>,
    pub last_outcome: Option<Outcome>,
    /// From the tracer; None when only polling feeds the view.
    pub rounds: Option<Rounds>,
    /// The newest time any observation carried.
    pub now_ns: u64,
    /// The object whose pre-patch callback failed, until the refusal that
    /// follows it in the log.
    failed_callback: Option<String>,
    polls: u64,
    tracer_start_ns: Option<u64>,
    candidates: BTreeMap<TaskKey, Candidate>,
    /// Switches the tracer saw since the last poll.
    switched: BTreeSet<u32>,
    /// A patch seen in transition whose direction no poll has told yet.
    unbegun: Option<String>,
    /// Transitions starting and completing as the tracer timed them, until
    /// a poll that read sysfs after them: that poll may already show the
    /// patch's next transition (a disable right after), or nothing of
    /// one that came and went between (an unpatching of a few
    /// milliseconds, the module unloaded and loaded again).
    lifecycle: Vec<(u64, Lifecycle)>,
    /// A traced start came after the last traced completion: the next
    /// completion ends that transition, whichever poll reads past it.
    started_since_completion: bool,
    /// Whether the tracer reports at all; without it, completions come
    /// from the kernel log.
    traced: bool,
    /// The patch and direction of a transition ended by its completion:
    /// the tracer hears it as klp_complete_transition begins, and sysfs
    /// shows the patch in transition until that function's end.
    completing: Option<Completing>,
    /// The kernel backed out of a patch it was setting up (refused in the
    /// log, cancelled by the tracer) since the last poll. That poll read
    /// sysfs before the log and the tracer: a patch it shows being set up
    /// is the one refused.
    backed_out: bool,
}

impl TransitionTracker {
    pub fn new(watched: Option<String>) -> Self {
        TransitionTracker {
            watched,
            patches: Vec::new(),
            transition: None,
            last_outcome: None,
            rounds: None,
            now_ns: 0,
            failed_callback: None,
            polls: 0,
            tracer_start_ns: None,
            candidates: BTreeMap::new(),
            switched: BTreeSet::new(),
            unbegun: None,
            lifecycle: Vec::new(),
            started_since_completion: false,
            traced: false,
            completing: None,
            backed_out: false,
        }
    }

    /// Applies one observation; returns the events it produced. Of a call
    /// sample only its time matters here (see `LiveState`).
    pub fn apply(&mut self, observation: Observation) -> Vec<TransitionEvent> {
        let mut events = Vec::new();
        match observation {
            Observation::Poll(poll) => {
                let assessed = self.assess(poll);
                self.on_poll(assessed, &mut events);
            }
            Observation::Trace(event) => self.on_trace(event, &mut events),
            Observation::KernelLog(message) => self.on_kernel_log(message, &mut events),
            Observation::Calls(sample) => self.observe_clock(sample.at_ns),
            Observation::ForceWritten => self.forced(&mut events),
        }
        events
    }

    /// Time moves on with every observation, whatever it is about.
    pub fn observe_clock(&mut self, at_ns: u64) {
        self.now_ns = self.now_ns.max(at_ns);
    }

    /// Seconds since the transition in progress started.
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

    /// The watched patches, their transition and its blockers, as the
    /// kernel decides them: the func stack is every loaded patch's.
    fn assess(&self, poll: KernelPoll) -> Assessed {
        let watched: Vec<Patch> = poll
            .patches
            .iter()
            .filter(|patch| self.watched.as_ref().is_none_or(|name| &patch.name == name))
            .cloned()
            .collect();
        let log = poll.log.as_deref();
        let transition = poll
            .threads
            .as_ref()
            .and_then(|threads| transition(&watched, log, threads.iter().map(|t| &t.patch_state)));
        let blockers = transition
            .as_ref()
            .and_then(|transition| {
                let patch = poll.patches.iter().find(|p| p.name == transition.patch)?;
                let code = PatchedCode {
                    patch,
                    direction: transition.direction,
                    loaded: &poll.patches,
                };
                Some(find_blockers(
                    &poll.pending,
                    &code,
                    poll.verdicts.as_deref(),
                    poll.at_ns,
                ))
            })
            .unwrap_or_default();
        Assessed {
            at_ns: poll.at_ns,
            read_ns: poll.read_ns,
            log: poll.log,
            threads: poll.threads.as_ref().map(Vec::len),
            patches: watched,
            transition,
            blockers,
        }
    }

    fn on_poll(&mut self, mut poll: Assessed, events: &mut Vec<TransitionEvent>) {
        let completed_ahead = self.end_completed(&poll, events);
        self.ignore_completion_tail(&mut poll);
        self.settle_direction(&mut poll);
        self.backed_out = false;
        self.now_ns = self.now_ns.max(poll.at_ns);
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
            let reported = events.len();
            let ended = self.transition.take().map(|ended| {
                let name = ended.patch.clone();
                self.end(ended, None, &poll.patches, events);
                name
            });
            if let Some(seen) = &poll.transition {
                self.came_and_went_before(seen, poll.threads, events);
                self.begin(seen, events);
            } else if !first_poll {
                // A transition that ended by its completion left its patch
                // settled: what the patch did since (disabled and gone
                // within the poll interval) is a transition of its own.
                let ended = ended.filter(|_| !completed_ahead);
                self.quick_transitions(&poll, ended.as_deref(), events);
            }
            // What this poll told from sysfs alone explains the tracer's
            // starts and completions still waiting for a later poll (the
            // read took long, a patch folder being removed): walked again,
            // they would tell the same transitions twice.
            if events[reported..]
                .iter()
                .any(|e| matches!(e, TransitionEvent::Complete { .. }))
            {
                self.lifecycle.clear();
                self.started_since_completion = false;
            }
        }
        if let (Some(current), Some(seen)) = (self.transition.as_mut(), &poll.transition) {
            if seen.direction != current.direction {
                current.direction = seen.direction;
                events.push(TransitionEvent::Reverse {
                    patch: current.patch.clone(),
                    direction: seen.direction,
                });
            }
            if seen.tasks_pending != current.tasks_pending {
                events.push(TransitionEvent::Progress {
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

    fn begin(&mut self, seen: &Transition, events: &mut Vec<TransitionEvent>) {
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
        events.push(TransitionEvent::Start {
            patch: seen.patch.clone(),
            direction: seen.direction,
            tasks_total: seen.tasks_total,
        });
    }

    /// Ends the transition under way. `completed` is where the tracer or
    /// the log saw it end; without it, `enabled` names where it ended, even
    /// if a reversal happened between polls, and a patch that left ended
    /// disabled.
    fn end(
        &mut self,
        ended: TransitionProgress,
        completed: Option<Direction>,
        patches: &[Patch],
        events: &mut Vec<TransitionEvent>,
    ) {
        let settled = || match patches
            .iter()
            .find(|p| p.name == ended.patch && !p.gone)
            .map(|p| &p.enabled)
        {
            Some(Known::Value(true)) => Direction::Patching,
            Some(Known::Value(false)) | None => Direction::Unpatching,
            Some(Known::Unknown { .. }) => ended.direction,
        };
        let direction = completed.unwrap_or_else(settled);
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

    /// Ends what completed before this poll read sysfs, in the order the
    /// tracer timed it (or, without the tracer, as the kernel log tells):
    /// the transition under way, then any transition of its patch that
    /// started and completed after it (its direction the opposite of the
    /// one before). Whatever the poll shows of the patch then is a
    /// transition of its own. True when a transition ended.
    fn end_completed(&mut self, poll: &Assessed, events: &mut Vec<TransitionEvent>) -> bool {
        if !self.traced {
            let logged = self
                .transition
                .as_ref()
                .and_then(|current| logged_completion(poll.log.as_deref(), current, poll.read_ns));
            let Some((direction, at_ns)) = logged else {
                return false;
            };
            let ended = self.transition.take().expect("completed above");
            let name = ended.patch.clone();
            self.end(ended, Some(direction), &poll.patches, events);
            self.settle(&name, direction);
            self.completing = Some(Completing {
                patch: name,
                direction,
                at_ns,
            });
            return true;
        }
        let (mut before, after): (Vec<_>, Vec<_>) = std::mem::take(&mut self.lifecycle)
            .into_iter()
            .partition(|&(at, _)| at <= poll.read_ns);
        self.lifecycle = after;
        before.sort_by_key(|&(at, _)| at);
        let mut ended_any = false;
        // The transition that ended last: one completing after it without
        // a poll seeing it went the other way.
        let mut last = self
            .last_outcome
            .as_ref()
            .map(|outcome| (outcome.patch.clone(), outcome.direction));
        let mut completed_ns = 0;
        for (at_ns, what) in before {
            match what {
                Lifecycle::Start => self.started_since_completion = true,
                Lifecycle::Complete => {
                    let started_since = std::mem::take(&mut self.started_since_completion);
                    if let Some(ended) = self.transition.take() {
                        let (name, direction) = (ended.patch.clone(), ended.direction);
                        self.end(ended, Some(direction), &poll.patches, events);
                        last = Some((name, direction));
                    } else if let Some((name, previous)) = last.take().filter(|_| started_since) {
                        let direction = previous.opposite();
                        let outcome = Outcome {
                            patch: name.clone(),
                            direction,
                            reversed: false,
                            forced: false,
                            secs: None,
                        };
                        events.push(TransitionEvent::Start {
                            patch: name.clone(),
                            direction,
                            tasks_total: poll.threads.unwrap_or(0),
                        });
                        events.push(complete(&outcome));
                        self.last_outcome = Some(outcome);
                        // Reported here: no poll's view of it is left to tell.
                        if self.unbegun.as_deref() == Some(name.as_str()) {
                            self.unbegun = None;
                        }
                        last = Some((name, direction));
                    } else {
                        continue;
                    }
                    ended_any = true;
                    completed_ns = at_ns;
                    if let Some((name, direction)) = &last {
                        self.settle(name, *direction);
                    }
                }
            }
        }
        // The tail of a completion is no new transition, unless one
        // started since.
        if ended_any || self.started_since_completion {
            self.completing = last
                .filter(|_| ended_any && !self.started_since_completion)
                .map(|(patch, direction)| Completing {
                    patch,
                    direction,
                    at_ns: completed_ns,
                });
        }
        ended_any
    }

    /// A completed transition's patch, seen still in transition the same
    /// way (or with no task left to tell the way) by a poll that read
    /// sysfs right after the completion, is that transition's end under
    /// way, not a new one. Later, it is the patch loaded again.
    fn ignore_completion_tail(&mut self, poll: &mut Assessed) {
        let Some(tail) = &self.completing else {
            return;
        };
        match &poll.transition {
            Some(seen)
                if seen.patch == tail.patch
                    && (seen.direction == tail.direction || seen.tasks_pending == 0)
                    && poll.read_ns <= tail.at_ns + COMPLETION_TAIL_NS =>
            {
                poll.transition = None;
            }
            _ => self.completing = None,
        }
    }

    /// A patch never goes the same way twice in a row: one seen starting
    /// the way its last transition ended went the other way unseen in
    /// between (disabled, unpatched in milliseconds, unloaded and loaded
    /// again between two polls, where the tracer hears no start of it).
    fn came_and_went_before(
        &mut self,
        seen: &Transition,
        threads: Option<usize>,
        events: &mut Vec<TransitionEvent>,
    ) {
        let Some(last) = self
            .last_outcome
            .as_ref()
            .filter(|last| last.patch == seen.patch && last.direction == seen.direction)
        else {
            return;
        };
        let outcome = Outcome {
            patch: last.patch.clone(),
            direction: last.direction.opposite(),
            reversed: false,
            forced: false,
            secs: None,
        };
        events.push(TransitionEvent::Start {
            patch: outcome.patch.clone(),
            direction: outcome.direction,
            tasks_total: threads.unwrap_or(0),
        });
        events.push(complete(&outcome));
        self.last_outcome = Some(outcome);
    }

    /// Records `patch` as its completed transition left it: the state the
    /// next transition of it starts from.
    fn settle(&mut self, patch: &str, direction: Direction) {
        let record = self.patches.iter().position(|p| p.name == patch && !p.gone);
        let record = record.or_else(|| self.patches.iter().position(|p| p.name == patch));
        if let Some(before) = record.map(|i| &mut self.patches[i]) {
            // A patch unpatched is freed: the next poll finds it gone.
            before.gone = false;
            before.enabled = Known::Value(direction == Direction::Patching);
            before.transition = Known::Value(false);
        }
    }

    /// A transition that began and ended between two polls (a few
    /// milliseconds on 7.x) is seen only in what it left: a patch that
    /// appeared enabled, a known patch whose `enabled` flipped, or an
    /// applied patch that is gone. Report it, so that scripts waiting for
    /// it end.
    ///
    /// `ended` is the patch whose transition this poll saw end: already
    /// reported. A patch that turned disabled while another transition
    /// came or went is left alone: an atomic replace disables the patches
    /// it replaces as part of its own transition.
    fn quick_transitions(
        &mut self,
        poll: &Assessed,
        ended: Option<&str>,
        events: &mut Vec<TransitionEvent>,
    ) {
        let mut quick: Vec<(String, Direction)> = poll
            .patches
            .iter()
            .filter(|patch| Some(patch.name.as_str()) != ended)
            .filter_map(|patch| Some((patch.name.clone(), self.settled_since_last_poll(patch)?)))
            .collect();
        // A patch that left sysfs after it was seen applied, or in a
        // transition no poll could tell the direction of, was unpatched and
        // freed between the polls: the kernel frees a patch as soon as its
        // unpatching transition completes.
        let present = |name: &str| poll.patches.iter().any(|p| p.name == name && !p.gone);
        let applied = |patch: &Patch| {
            patch.enabled == Known::Value(true) && patch.transition == Known::Value(false)
        };
        let unbegun = |patch: &Patch| self.unbegun.as_deref() == Some(patch.name.as_str());
        quick.extend(
            self.patches
                .iter()
                .filter(|before| Some(before.name.as_str()) != ended && !present(&before.name))
                .filter(|before| !before.gone && (applied(before) || unbegun(before)))
                .map(|before| (before.name.clone(), Direction::Unpatching)),
        );
        let patching = quick.iter().any(|(_, d)| *d == Direction::Patching);
        for (patch, direction) in quick {
            if direction == Direction::Unpatching && (patching || ended.is_some()) {
                continue;
            }
            events.push(TransitionEvent::Start {
                patch: patch.clone(),
                direction,
                tasks_total: poll.threads.unwrap_or(0),
            });
            let outcome = Outcome {
                patch,
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
    fn settle_direction(&mut self, poll: &mut Assessed) {
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
                // reported as a transition that came and went between polls;
                // unless it is the patch the kernel just backed out of.
                if !self.backed_out {
                    self.unbegun = Some(seen.patch.clone());
                }
                poll.transition = None;
            }
        }
    }

    /// The switches the tracer saw since the last poll, under the patch in
    /// transition, or before the completion of one that ended since.
    fn report_switches(&mut self, events: &mut Vec<TransitionEvent>) {
        if self.switched.is_empty() {
            return;
        }
        let completed = events
            .iter()
            .position(|e| matches!(e, TransitionEvent::Complete { .. }));
        let patch = match (&self.transition, completed.map(|i| &events[i])) {
            (_, Some(TransitionEvent::Complete { patch, .. })) => patch.clone(),
            (Some(transition), _) => transition.patch.clone(),
            // Not in a transition yet: the tracer ran ahead of the polls.
            _ => return,
        };
        let switched = TransitionEvent::Switched {
            patch,
            tids: std::mem::take(&mut self.switched).into_iter().collect(),
        };
        match completed {
            Some(at) => events.insert(at, switched),
            None => events.push(switched),
        }
    }

    /// Which blockers to show. The kernel's own verdicts come already
    /// judged: a task it failed in two retry rounds in a row
    /// (`find_blockers`). Where klpscope infers them, a function on the
    /// stack blocks for sure, and a running task or an unreliable stack
    /// shows once seen in polls `PERSISTS_AFTER_NS` apart.
    fn track_blockers(
        &mut self,
        blockers: Vec<Blocker>,
        at_ns: u64,
        events: &mut Vec<TransitionEvent>,
    ) {
        let Some(transition) = self.transition.as_mut() else {
            return;
        };
        let mut shown = Vec::new();
        let mut candidates = BTreeMap::new();
        for mut blocker in blockers {
            let candidate = self.candidates.remove(&key(&blocker)).unwrap_or(Candidate {
                first_seen_ns: at_ns,
            });
            let persistent = blocker.source == VerdictSource::Kernel
                || blocker.reason == BlockReason::FunctionOnStack
                || at_ns.saturating_sub(candidate.first_seen_ns) >= PERSISTS_AFTER_NS;
            if persistent {
                blocker
                    .blocked_secs
                    .get_or_insert(secs_between(candidate.first_seen_ns, at_ns));
                let previous = transition.blockers.iter().find(|b| key(b) == key(&blocker));
                if previous
                    .is_none_or(|p| p.reason != blocker.reason || p.function != blocker.function)
                {
                    events.push(TransitionEvent::Blocker {
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
            candidates.insert(key(&blocker), candidate);
        }
        for old in &transition.blockers {
            if !shown.iter().any(|b| key(b) == key(old)) {
                events.push(cleared(old));
            }
        }
        transition.blockers = shown;
        self.candidates = candidates;
    }

    fn update_patches(&mut self, polled: Vec<Patch>, events: &mut Vec<TransitionEvent>) {
        let mut patches = polled;
        for old in self.patches.drain(..) {
            match patches.iter_mut().find(|p| p.name == old.name) {
                Some(new) if new.gone && !old.gone => events.push(TransitionEvent::Gone {
                    patch: old.name.clone(),
                }),
                Some(_) => {}
                None => {
                    if !old.gone {
                        events.push(TransitionEvent::Gone {
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

    fn on_trace(&mut self, event: TraceEvent, events: &mut Vec<TransitionEvent>) {
        self.traced = true;
        match event {
            TraceEvent::Start { timestamp_ns } => {
                self.lifecycle.push((timestamp_ns, Lifecycle::Start));
                self.tracer_start_ns = Some(timestamp_ns);
                // Counted from the first round the tracer reports; until
                // then (or on kernels where that hook is off) estimated.
                self.rounds = None;
            }
            // A round begins: every round before it failed to complete.
            TraceEvent::Round { round, .. } => {
                let rounds = self.rounds.get_or_insert_with(Rounds::default);
                rounds.total = round;
                rounds.failed = round.saturating_sub(1);
                // The kernel signals at the end of the round after
                // SIGNALS_AFTER_ROUNDS failed ones (its count starts at 0).
                if rounds.failed > SIGNALS_AFTER_ROUNDS {
                    self.signals(SignalsSeen::FailedRounds, events);
                }
            }
            TraceEvent::Reverse { .. } => {
                if let Some(transition) = self.transition.as_mut() {
                    let direction = transition.direction.opposite();
                    transition.direction = direction;
                    events.push(TransitionEvent::Reverse {
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
            // The kernel backs out of a patch it is setting up (a pre-patch
            // callback failed): what a poll saw of it was no transition.
            TraceEvent::Cancel { .. } => {
                self.unbegun = None;
                self.backed_out = true;
            }
            // The polls decide when a transition starts and ends: they know
            // the patch, the tracer does not. A completion says where the
            // one under way ended.
            TraceEvent::Complete { timestamp_ns } => {
                self.lifecycle.push((timestamp_ns, Lifecycle::Complete));
            }
            TraceEvent::Check { .. } => {}
        }
    }

    fn on_kernel_log(&mut self, message: LivepatchMessage, events: &mut Vec<TransitionEvent>) {
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
                // Seen being set up, it never began: when it leaves sysfs,
                // it is no transition that came and went.
                if self.unbegun.as_deref() == Some(patch.as_str()) {
                    self.unbegun = None;
                }
                self.backed_out = true;
                events.push(TransitionEvent::Refused { patch, why });
            }
            LivepatchMessage::Enabling { .. }
            | LivepatchMessage::Starting { .. }
            | LivepatchMessage::Complete { .. } => {}
        }
    }

    /// Once per transition, whichever source tells first.
    fn signals(&mut self, seen_in: SignalsSeen, events: &mut Vec<TransitionEvent>) {
        if let Some(transition) = self.transition.as_mut().filter(|t| t.signals.is_none()) {
            transition.signals = Some(seen_in);
            events.push(TransitionEvent::Signals {
                patch: transition.patch.clone(),
                seen_in,
            });
        }
    }

    /// Force is seen by the tracer, the kernel log, or klpscope's own
    /// write: reported once.
    fn forced(&mut self, events: &mut Vec<TransitionEvent>) {
        if let Some(transition) = self.transition.as_mut().filter(|t| !t.forced) {
            transition.forced = true;
            events.push(TransitionEvent::Force {
                patch: transition.patch.clone(),
            });
        }
    }
}

/// Where and when the kernel log says `current` completed, if it logged
/// that after the transition began and before `read_ns`.
fn logged_completion(
    log: Option<&[LogEntry]>,
    current: &TransitionProgress,
    read_ns: u64,
) -> Option<(Direction, u64)> {
    log?.iter().rev().find_map(|entry| {
        let at_ns = entry.timestamp_us * 1000;
        match &entry.message {
            LivepatchMessage::Complete { patch, unpatching }
                if *patch == current.patch && (current.started_ns..=read_ns).contains(&at_ns) =>
            {
                let direction = if *unpatching {
                    Direction::Unpatching
                } else {
                    Direction::Patching
                };
                Some((direction, at_ns))
            }
            _ => None,
        }
    })
}

pub(crate) fn secs_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e9
}

fn cleared(blocker: &Blocker) -> TransitionEvent {
    TransitionEvent::BlockerCleared {
        pid: blocker.pid,
        tid: blocker.tid,
        comm: blocker.comm.clone(),
    }
}

fn complete(outcome: &Outcome) -> TransitionEvent {
    TransitionEvent::Complete {
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
    use crate::{
        model::{LogEntry, PatchState, Task},
        probes::TaskVerdict,
        testing::{frame, patch_of, task, thread},
    };

    const SEC: u64 = 1_000_000_000;
    const THREADS: u32 = 100;

    /// The watched patch `p`, replacing cmdline_proc_show.
    fn patch(name: &str, enabled: bool, transition: bool) -> Patch {
        patch_of(name, enabled, transition, "vmlinux", &["cmdline_proc_show"])
    }

    /// A pending task that blocks for `reason`: asleep in the patched
    /// function, running on a CPU, or (only the kernel can tell) with an
    /// unreliable stack.
    fn pending_task(tid: u32, reason: BlockReason) -> Task {
        match reason {
            BlockReason::FunctionOnStack => task(
                tid,
                'S',
                PatchState::Unpatched,
                vec![frame("__schedule", None), frame("cmdline_proc_show", None)],
            ),
            BlockReason::Running => task(tid, 'R', PatchState::Unpatched, vec![]),
            _ => task(
                tid,
                'S',
                PatchState::Unpatched,
                vec![frame("__schedule", None)],
            ),
        }
    }

    fn verdict(tid: u32, reason: BlockReason, at_ns: u64) -> TaskVerdict {
        TaskVerdict {
            tid,
            tgid: tid,
            comm: format!("task{tid}"),
            kthread: false,
            reason: Some(reason),
            function: None,
            failed_checks: 1,
            failed_rounds: 1,
            first_failure_ns: at_ns,
            last_failure_ns: at_ns,
        }
    }

    /// A raw poll of `THREADS` threads: with `transition`, that many still
    /// short of its direction's target (a kernel log line tells the
    /// direction where `enabled` does not yet), and `blockers` among them.
    /// Without, every thread idle.
    fn poll(
        at: u64,
        patches: Vec<Patch>,
        transition: Option<(Direction, usize)>,
        blockers: Vec<(u32, BlockReason)>,
    ) -> Observation {
        let at_ns = at * SEC;
        let threads = (0..THREADS)
            .map(|i| {
                let state = match transition {
                    Some((direction, pending)) if (i as usize) < pending => {
                        direction.opposite().target()
                    }
                    Some((direction, _)) => direction.target(),
                    None => PatchState::Idle,
                };
                thread(1000 + i, state)
            })
            .collect();
        let enabled_says = patches
            .iter()
            .find(|p| p.name == "p")
            .and_then(|p| p.enabled.value().copied())
            .map(|enabled| match enabled {
                true => Direction::Patching,
                false => Direction::Unpatching,
            });
        let log = match transition {
            Some((direction, _)) if Some(direction) != enabled_says => vec![LogEntry {
                timestamp_us: at_ns / 1000,
                message: LivepatchMessage::Starting {
                    patch: "p".into(),
                    unpatching: direction == Direction::Unpatching,
                },
            }],
            _ => Vec::new(),
        };
        let kernel_told = blockers
            .iter()
            .any(|(_, reason)| *reason == BlockReason::UnreliableStack);
        Observation::Poll(KernelPoll {
            at_ns,
            read_ns: at_ns,
            patches,
            threads: Some(threads),
            pending: blockers
                .iter()
                .map(|&(tid, reason)| pending_task(tid, reason))
                .collect(),
            verdicts: kernel_told.then(|| {
                blockers
                    .iter()
                    .map(|&(tid, reason)| verdict(tid, reason, at_ns))
                    .collect()
            }),
            log: Some(log),
        })
    }

    fn patching(at: u64, pending: usize, blockers: Vec<(u32, BlockReason)>) -> Observation {
        poll(
            at,
            vec![patch("p", true, true)],
            Some((Direction::Patching, pending)),
            blockers,
        )
    }

    fn tracker() -> TransitionTracker {
        TransitionTracker::new(None)
    }

    fn names(events: &[TransitionEvent]) -> Vec<String> {
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
        let mut state = tracker();
        assert!(state.apply(poll(0, vec![], None, vec![])).is_empty());
        let start = state.apply(patching(1, 100, vec![]));
        assert_eq!(
            start,
            [TransitionEvent::Start {
                patch: "p".into(),
                direction: Direction::Patching,
                tasks_total: 100
            }]
        );
        let progress = state.apply(patching(2, 3, vec![]));
        assert_eq!(
            progress,
            [TransitionEvent::Progress {
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
            [TransitionEvent::Complete {
                patch: "p".into(),
                direction: Direction::Patching,
                reversed: false,
                forced: false,
                secs: Some(3.0)
            }]
        );
        assert!(state.transition.is_none());
        assert_eq!(state.last_outcome.as_ref().map(|o| o.reversed), Some(false));
    }

    #[test]
    fn watching_from_before_the_load_sees_a_transition_too_quick_to_poll() {
        let mut state = tracker();
        state.apply(poll(0, vec![], None, vec![]));
        let events = state.apply(poll(1, vec![patch("p", true, false)], None, vec![]));
        assert_eq!(names(&events), ["start", "complete"]);
        // A patch already settled when watch starts is not a transition.
        let mut state = tracker();
        assert!(
            state
                .apply(poll(0, vec![patch("p", true, false)], None, vec![]))
                .is_empty()
        );
    }

    #[test]
    fn a_disable_too_quick_to_poll_is_an_unpatching_transition() {
        let mut state = tracker();
        state.apply(poll(0, vec![patch("p", true, false)], None, vec![]));
        let events = state.apply(poll(1, vec![patch("p", false, false)], None, vec![]));
        assert_eq!(names(&events), ["start", "complete"]);
        assert!(matches!(
            events[1],
            TransitionEvent::Complete {
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

    /// A disabled patch is freed as soon as it is unpatched: seen applied,
    /// then gone, it went through an unpatching transition.
    #[test]
    fn an_applied_patch_gone_between_polls_was_unpatched() {
        let mut state = tracker();
        state.apply(poll(0, vec![patch("p", true, false)], None, vec![]));
        let events = state.apply(poll(1, vec![], None, vec![]));
        assert_eq!(names(&events), ["start", "complete", "gone"], "{events:?}");
        assert!(matches!(
            events[1],
            TransitionEvent::Complete {
                direction: Direction::Unpatching,
                reversed: false,
                ..
            }
        ));
        // Seen in a transition of no telling direction (every task at the
        // target already), then gone: it was unpatched.
        let mut state = tracker();
        state.apply(poll(0, vec![patch("p", true, false)], None, vec![]));
        let settling = poll(
            1,
            vec![patch("p", false, true)],
            Some((Direction::Unpatching, 0)),
            vec![],
        );
        assert!(state.apply(settling).is_empty());
        let events = state.apply(poll(2, vec![], None, vec![]));
        assert_eq!(names(&events), ["start", "complete", "gone"], "{events:?}");
        // Gone while disabled: nothing more to report than that.
        let mut state = tracker();
        state.apply(poll(0, vec![patch("p", false, false)], None, vec![]));
        let events = state.apply(poll(1, vec![], None, vec![]));
        assert_eq!(names(&events), ["gone"]);
    }

    /// The per-CPU idle tasks all have tid 0: each is a blocker of its own.
    #[test]
    fn two_cpus_idle_tasks_block_apart() {
        let mut state = tracker();
        state.apply(patching(0, 2, vec![]));
        let idle = |cpu: u32| TaskVerdict {
            comm: format!("swapper/{cpu}"),
            failed_checks: 2,
            failed_rounds: 2,
            ..verdict(0, BlockReason::Running, 0)
        };
        let Observation::Poll(mut poll) = patching(1, 2, vec![]) else {
            unreachable!()
        };
        poll.verdicts = Some(vec![idle(0), idle(1)]);
        let events = state.apply(Observation::Poll(poll));
        let comms: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                TransitionEvent::Blocker { comm, .. } => Some(comm.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(comms, ["swapper/0", "swapper/1"], "{events:?}");
        assert_eq!(state.transition.as_ref().unwrap().blockers.len(), 2);
    }

    /// An atomic replace disables the patch it replaces inside its own
    /// transition: one transition, not two.
    #[test]
    fn a_replaced_patch_turning_disabled_is_not_a_transition_of_its_own() {
        let mut state = tracker();
        state.apply(poll(0, vec![patch("old", true, false)], None, vec![]));
        let events = state.apply(poll(
            1,
            vec![patch("new", true, false), patch("old", false, false)],
            None,
            vec![],
        ));
        assert_eq!(names(&events), ["start", "complete"], "{events:?}");
        assert!(matches!(&events[0], TransitionEvent::Start { patch, .. } if patch == "new"));
    }

    /// A transition polled while it ran ends once, even if `enabled` read
    /// its old value at the start (it lags during code patching).
    #[test]
    fn a_polled_transition_is_not_reported_again_as_a_quick_one() {
        let mut state = tracker();
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
        let mut state = tracker();
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
            TransitionEvent::Complete {
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
        let mut state = tracker();
        state.apply(patching(0, 5, vec![]));
        let mut racing = patch("p", true, true);
        racing.transition = Known::unknown("empty read");
        assert!(state.apply(poll(1, vec![racing], None, vec![])).is_empty());
        assert!(state.transition.is_some());
    }

    /// `poll`, read at `read_ms`, after the transition of "p" under way
    /// completed at `completed_ms` (towards `direction`) as the tracer or
    /// the kernel log `told`: the tracer's event comes before the poll that
    /// read sysfs after it, the log is part of every poll.
    fn after_completion(
        state: &mut TransitionTracker,
        told: &str,
        completed_ms: u64,
        direction: Direction,
        read_ms: u64,
        poll: Observation,
    ) -> Vec<TransitionEvent> {
        let Observation::Poll(mut poll) = poll else {
            unreachable!("a poll")
        };
        poll.read_ns = read_ms * 1_000_000;
        match told {
            "tracer" => {
                state.apply(Observation::Trace(TraceEvent::Complete {
                    timestamp_ns: completed_ms * 1_000_000,
                }));
            }
            _ => poll.log.get_or_insert_with(Vec::new).push(LogEntry {
                timestamp_us: completed_ms * 1000,
                message: LivepatchMessage::Complete {
                    patch: "p".into(),
                    unpatching: direction == Direction::Unpatching,
                },
            }),
        }
        state.apply(Observation::Poll(poll))
    }

    fn complete_event(events: &[TransitionEvent]) -> Option<(Direction, bool)> {
        events.iter().find_map(|e| match e {
            TransitionEvent::Complete {
                direction,
                reversed,
                ..
            } => Some((*direction, *reversed)),
            _ => None,
        })
    }

    /// The patching transition completed and a disable began unpatching
    /// before the next poll read sysfs: two transitions, no reversal (seen
    /// on 5.10 and 6.1, where a poll found the same patch in transition
    /// again).
    #[test]
    fn a_completion_then_a_disable_between_polls_is_no_reversal() {
        for told in ["tracer", "log"] {
            let mut state = tracker();
            state.apply(patching(0, 5, vec![]));
            let unpatching = poll(
                2,
                vec![patch("p", false, true)],
                Some((Direction::Unpatching, 5)),
                vec![],
            );
            let events = after_completion(
                &mut state,
                told,
                1500,
                Direction::Patching,
                2000,
                unpatching,
            );
            assert_eq!(names(&events), ["complete", "start"], "{told}: {events:?}");
            assert_eq!(
                complete_event(&events),
                Some((Direction::Patching, false)),
                "{told}"
            );
            assert!(matches!(
                events[1],
                TransitionEvent::Start {
                    direction: Direction::Unpatching,
                    ..
                }
            ));
            let events = state.apply(poll(3, vec![], None, vec![]));
            assert_eq!(
                complete_event(&events),
                Some((Direction::Unpatching, false)),
                "{told}: {events:?}"
            );
        }
    }

    /// A poll that read sysfs before the completion still shows the
    /// transition it ended: the next one ends it.
    #[test]
    fn a_poll_read_before_the_completion_keeps_the_transition() {
        for told in ["tracer", "log"] {
            let mut state = tracker();
            state.apply(patching(0, 5, vec![]));
            let events = after_completion(
                &mut state,
                told,
                1500,
                Direction::Patching,
                1000,
                patching(2, 1, vec![]),
            );
            assert_eq!(names(&events), ["progress"], "{told}");
            let Observation::Poll(mut settled) =
                poll(3, vec![patch("p", true, false)], None, vec![])
            else {
                unreachable!("a poll")
            };
            if told == "log" {
                settled.log = Some(vec![LogEntry {
                    timestamp_us: 1_500_000,
                    message: LivepatchMessage::Complete {
                        patch: "p".into(),
                        unpatching: false,
                    },
                }]);
            }
            let events = state.apply(Observation::Poll(settled));
            assert_eq!(
                complete_event(&events),
                Some((Direction::Patching, false)),
                "{told}: {events:?}"
            );
        }
    }

    /// The tracer hears a completion as klp_complete_transition begins;
    /// sysfs shows the patch in transition until it ends. A poll between
    /// sees the completed transition's tail, not a new one.
    #[test]
    fn the_tail_of_a_completed_transition_is_no_transition_of_its_own() {
        let mut state = tracker();
        let unpatching = |at, pending| {
            poll(
                at,
                vec![patch("p", false, true)],
                Some((Direction::Unpatching, pending)),
                vec![],
            )
        };
        state.apply(unpatching(0, 5));
        let events = after_completion(
            &mut state,
            "tracer",
            1900,
            Direction::Unpatching,
            2000,
            unpatching(2, 0),
        );
        assert_eq!(
            complete_event(&events),
            Some((Direction::Unpatching, false)),
            "{events:?}"
        );
        assert_eq!(names(&events), ["complete"], "{events:?}");
        let Observation::Poll(mut tail) = unpatching(2, 0) else {
            unreachable!("a poll")
        };
        tail.read_ns = 2100 * 1_000_000;
        assert!(state.apply(Observation::Poll(tail)).is_empty());
        let events = state.apply(poll(4, vec![], None, vec![]));
        assert_eq!(names(&events), ["gone"], "{events:?}");
    }

    /// The tail lasts milliseconds: the same patch seen patching again a
    /// while after its patching completed (polled alone, the unpatching
    /// between unseen) is a transition of its own, however long it lasts.
    #[test]
    fn a_tail_rule_never_hides_the_patchs_next_transition() {
        let mut state = tracker();
        state.apply(patching(0, 5, vec![]));
        let events = after_completion(
            &mut state,
            "log",
            1900,
            Direction::Patching,
            2000,
            poll(
                2,
                vec![patch("p", false, true)],
                Some((Direction::Unpatching, 0)),
                vec![],
            ),
        );
        assert_eq!(complete_event(&events), Some((Direction::Patching, false)));
        let events = state.apply(patching(3, 5, vec![]));
        assert_eq!(names(&events), ["start", "complete", "start"], "{events:?}");
        assert!(state.apply(patching(4, 5, vec![])).is_empty());
        assert!(state.transition.is_some(), "the new patching is followed");
    }

    fn traced(state: &mut TransitionTracker, event: TraceEvent) {
        state.apply(Observation::Trace(event));
    }

    /// A tracker that saw "p" start patching (traced and polled) and its
    /// completion traced, but no poll since.
    fn patching_completed_as_traced() -> TransitionTracker {
        let mut state = tracker();
        traced(&mut state, TraceEvent::Start { timestamp_ns: 0 });
        state.apply(patching(0, 5, vec![]));
        traced(&mut state, TraceEvent::Complete { timestamp_ns: SEC });
        state
    }

    /// `events` told an unpatching that came and went unseen by the polls,
    /// then the patching that followed it.
    fn assert_unpatched_between_then_patching(events: &[TransitionEvent]) {
        assert_eq!(names(events), ["start", "complete", "start"], "{events:?}");
        assert!(
            matches!(
                events,
                [
                    TransitionEvent::Start {
                        direction: Direction::Unpatching,
                        ..
                    },
                    TransitionEvent::Complete {
                        direction: Direction::Unpatching,
                        reversed: false,
                        ..
                    },
                    TransitionEvent::Start {
                        direction: Direction::Patching,
                        ..
                    },
                ]
            ),
            "{events:?}"
        );
    }

    /// 7.x unpatches in milliseconds: between two polls the patch was
    /// disabled, unpatched, unloaded, loaded again and is patching anew.
    /// The tracer's starts and completions, in order, tell each one.
    #[test]
    fn transitions_that_came_and_went_between_polls_are_told_by_the_tracer() {
        let mut state = patching_completed_as_traced();
        let events = state.apply(poll(2, vec![patch("p", true, false)], None, vec![]));
        assert_eq!(complete_event(&events), Some((Direction::Patching, false)));
        for (at_ms, event) in [(2100, "start"), (2105, "complete"), (2600, "start")] {
            let timestamp_ns = at_ms * 1_000_000;
            traced(
                &mut state,
                match event {
                    "start" => TraceEvent::Start { timestamp_ns },
                    _ => TraceEvent::Complete { timestamp_ns },
                },
            );
        }
        assert_unpatched_between_then_patching(&state.apply(patching(3, 5, vec![])));
    }

    /// A transition's start is read by one poll, which sees it with no
    /// task left to tell its way, and its completion by the next, which
    /// already sees the patch's next transition: the start still counts.
    #[test]
    fn a_start_and_its_completion_read_by_two_polls_are_one_transition() {
        let mut state = patching_completed_as_traced();
        state.apply(poll(2, vec![patch("p", true, false)], None, vec![]));
        traced(
            &mut state,
            TraceEvent::Start {
                timestamp_ns: 2_100_000_000,
            },
        );
        let unpatching = poll(
            3,
            vec![patch("p", false, true)],
            Some((Direction::Unpatching, 0)),
            vec![],
        );
        assert!(state.apply(unpatching).is_empty());
        for timestamp_ns in [3100 * 1_000_000, 3500 * 1_000_000] {
            let event = match timestamp_ns {
                3_100_000_000 => TraceEvent::Complete { timestamp_ns },
                _ => TraceEvent::Start { timestamp_ns },
            };
            traced(&mut state, event);
        }
        let events = state.apply(patching(4, 5, vec![]));
        assert_unpatched_between_then_patching(&events);
    }

    /// Polled alone (or where the tracer hears no start of it): a patch
    /// seen patching again after its patching completed was unpatched and
    /// loaded again between the polls.
    #[test]
    fn a_patch_seen_going_the_same_way_twice_went_the_other_way_between() {
        let mut state = tracker();
        state.apply(patching(0, 5, vec![]));
        let events = state.apply(poll(1, vec![patch("p", true, false)], None, vec![]));
        assert_eq!(complete_event(&events), Some((Direction::Patching, false)));
        let events = state.apply(patching(2, 5, vec![]));
        assert_unpatched_between_then_patching(&events);
    }

    /// A poll whose sysfs read began before a quick unpatching and ended
    /// after its patch's folder was gone tells that unpatching from sysfs;
    /// the tracer's start and completion of it, timed after the read began,
    /// do not tell it again at the next poll.
    #[test]
    fn a_transition_told_from_sysfs_is_not_told_again_by_the_tracer() {
        let mut state = patching_completed_as_traced();
        state.apply(poll(2, vec![patch("p", true, false)], None, vec![]));
        traced(
            &mut state,
            TraceEvent::Start {
                timestamp_ns: 2_500_000_000,
            },
        );
        traced(
            &mut state,
            TraceEvent::Complete {
                timestamp_ns: 2550 * 1_000_000,
            },
        );
        let Observation::Poll(mut slow) = poll(3, vec![], None, vec![]) else {
            unreachable!("a poll")
        };
        slow.read_ns = 2400 * 1_000_000;
        let events = state.apply(Observation::Poll(slow));
        assert_eq!(names(&events), ["start", "complete", "gone"], "{events:?}");
        assert_eq!(
            complete_event(&events),
            Some((Direction::Unpatching, false))
        );
        let events = state.apply(poll(4, vec![], None, vec![]));
        assert!(events.is_empty(), "{events:?}");
    }

    /// Completed, then disabled and gone within one poll interval (7.x
    /// unpatches in milliseconds): the patching completed, and the
    /// unpatching came and went.
    #[test]
    fn a_completion_then_a_quick_unpatching_is_two_transitions() {
        for told in ["tracer", "log"] {
            let mut state = tracker();
            state.apply(patching(0, 5, vec![]));
            let gone = poll(1, vec![], None, vec![]);
            let events = after_completion(&mut state, told, 500, Direction::Patching, 1000, gone);
            assert_eq!(
                names(&events),
                ["complete", "start", "complete", "gone"],
                "{told}: {events:?}"
            );
            assert_eq!(
                complete_event(&events),
                Some((Direction::Patching, false)),
                "{told}"
            );
            assert!(
                matches!(
                    events[2],
                    TransitionEvent::Complete {
                        direction: Direction::Unpatching,
                        reversed: false,
                        ..
                    }
                ),
                "{told}: {events:?}"
            );
        }
    }

    #[test]
    fn a_reversal_between_polls_is_still_reported_as_reversed() {
        let mut state = tracker();
        state.apply(patching(0, 5, vec![]));
        let end = state.apply(poll(1, vec![patch("p", false, false)], None, vec![]));
        assert!(
            matches!(end[0], TransitionEvent::Complete { reversed: true, .. }),
            "{end:?}"
        );
    }

    #[test]
    fn a_function_on_the_stack_blocks_at_once_a_running_task_only_when_it_persists() {
        let mut state = tracker();
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
                (10, BlockReason::FunctionOnStack),
                (11, BlockReason::Running),
            ],
        ));
        assert!(
            matches!(first.as_slice(), [TransitionEvent::Blocker { tid: 10, .. }]),
            "{first:?}"
        );
        let second = state.apply(patching(
            3,
            2,
            vec![
                (10, BlockReason::FunctionOnStack),
                (11, BlockReason::Running),
            ],
        ));
        assert!(
            matches!(
                second.as_slice(),
                [TransitionEvent::Blocker { tid: 11, .. }]
            ),
            "{second:?}"
        );
        let shown = &state.transition.as_ref().unwrap().blockers;
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0].blocked_secs, Some(2.0), "blocked since first seen");
        let cleared = state.apply(patching(4, 1, vec![(10, BlockReason::FunctionOnStack)]));
        assert_eq!(names(&cleared), ["progress", "blocker_cleared"]);
    }

    /// `patching` at `at_ms` milliseconds.
    fn patching_ms(at_ms: u64, pending: usize, blockers: Vec<(u32, BlockReason)>) -> Observation {
        let Observation::Poll(mut poll) = patching(0, pending, blockers) else {
            unreachable!("patching is a poll");
        };
        poll.at_ns = at_ms * 1_000_000;
        Observation::Poll(poll)
    }

    #[test]
    fn polls_close_together_do_not_make_a_passing_task_a_blocker() {
        let mut state = tracker();
        state.apply(patching_ms(0, 3, vec![]));
        let blockers = |events: &[TransitionEvent]| {
            events
                .iter()
                .filter_map(|e| match e {
                    TransitionEvent::Blocker { tid, .. } => Some(*tid),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let running = vec![(11, BlockReason::Running), (12, BlockReason::Running)];
        // Woken by the tracer: polls 20 ms apart.
        for at in [100, 120, 140] {
            let events = state.apply(patching_ms(at, 3, running.clone()));
            assert_eq!(
                blockers(&events),
                Vec::<u32>::new(),
                "at {at} ms: {events:?}"
            );
        }
        // 12 switched; 11 still runs 400 ms after it was first seen.
        let events = state.apply(patching_ms(500, 2, vec![(11, BlockReason::Running)]));
        assert_eq!(blockers(&events), [11], "{events:?}");
        // 12 comes back: seen afresh, it waits its 400 ms again.
        let events = state.apply(patching_ms(520, 2, running.clone()));
        assert_eq!(blockers(&events), Vec::<u32>::new(), "{events:?}");
        let events = state.apply(patching_ms(930, 2, running));
        assert_eq!(blockers(&events), [12], "{events:?}");
    }

    /// A poll at `at_ms` of a patching transition where task 11 is pending
    /// and the kernel failed it for an unreliable stack `failed_checks`
    /// times in `failed_rounds` retry rounds in a row.
    fn unreliable_stack_checked(at_ms: u64, failed_checks: u32, failed_rounds: u32) -> Observation {
        let Observation::Poll(mut poll) = patching_ms(at_ms, 2, vec![]) else {
            unreachable!("patching is a poll");
        };
        poll.pending = vec![pending_task(11, BlockReason::UnreliableStack)];
        poll.verdicts = Some(vec![TaskVerdict {
            failed_checks,
            failed_rounds,
            ..verdict(11, BlockReason::UnreliableStack, 10_000_000)
        }]);
        Observation::Poll(poll)
    }

    fn names_a_blocker(events: &[TransitionEvent]) -> bool {
        events
            .iter()
            .any(|e| matches!(e, TransitionEvent::Blocker { tid: 11, .. }))
    }

    /// A task checks itself on its way through cond_resched, many times a
    /// millisecond, and the tracer wakes the feed within milliseconds of a
    /// check: neither the count of checks nor how often or how long polls
    /// read a verdict tells a blocker from a kworker caught in passing.
    /// Only the kernel's next round does.
    #[test]
    fn failed_checks_in_one_round_are_no_blocker_however_long_they_are_read() {
        let mut state = tracker();
        state.apply(patching_ms(0, 2, vec![]));
        for at_ms in [20, 40, 300, 600, 900, 1500] {
            let events = state.apply(unreliable_stack_checked(at_ms, 9, 1));
            assert!(!names_a_blocker(&events), "at {at_ms} ms: {events:?}");
        }
    }

    #[test]
    fn failing_the_next_round_too_makes_a_blocker_at_once() {
        let mut state = tracker();
        state.apply(patching_ms(0, 2, vec![]));
        assert!(!names_a_blocker(
            &state.apply(unreliable_stack_checked(20, 1, 1))
        ));
        let events = state.apply(unreliable_stack_checked(1010, 2, 2));
        assert!(names_a_blocker(&events), "{events:?}");
    }

    /// A refused load: sysfs shows the patch being set up (in transition,
    /// disabled, every task at the start) until the kernel backs out and
    /// frees it. Polled in that moment, it is still no transition.
    #[test]
    fn a_refused_patch_seen_being_set_up_is_no_transition() {
        // The round read sysfs before the log: the refusal comes first.
        for told_first in ["log", "tracer"] {
            let mut state = tracker();
            state.apply(poll(0, vec![], None, vec![]));
            let backed_out = match told_first {
                "log" => Observation::KernelLog(LivepatchMessage::Refused {
                    patch: "p".into(),
                    incompatible_states: false,
                }),
                _ => Observation::Trace(TraceEvent::Cancel { timestamp_ns: 0 }),
            };
            state.apply(backed_out);
            let setting_up = poll(
                1,
                vec![patch("p", false, true)],
                Some((Direction::Unpatching, 0)),
                vec![],
            );
            assert!(state.apply(setting_up).is_empty());
            let events = state.apply(poll(2, vec![], None, vec![]));
            assert_eq!(names(&events), ["gone"], "told first by the {told_first}");
        }
        for told in ["log", "tracer"] {
            let mut state = tracker();
            state.apply(poll(0, vec![], None, vec![]));
            let setting_up = poll(
                1,
                vec![patch("p", false, true)],
                Some((Direction::Unpatching, 0)),
                vec![],
            );
            assert!(state.apply(setting_up).is_empty());
            let refused = LivepatchMessage::Refused {
                patch: "p".into(),
                incompatible_states: false,
            };
            let events = match told {
                "log" => state.apply(Observation::KernelLog(refused)),
                _ => state.apply(Observation::Trace(TraceEvent::Cancel { timestamp_ns: 0 })),
            };
            assert!(
                events
                    .iter()
                    .all(|e| matches!(e, TransitionEvent::Refused { .. })),
                "{events:?}"
            );
            // It was in sysfs, and is gone: that much is so.
            let events = state.apply(poll(2, vec![], None, vec![]));
            assert_eq!(names(&events), ["gone"], "told by the {told}");
        }
    }

    #[test]
    fn a_transient_verdict_never_shows() {
        let mut state = tracker();
        state.apply(patching(0, 2, vec![]));
        assert!(
            state
                .apply(patching(1, 2, vec![(11, BlockReason::UnreliableStack)]))
                .is_empty()
        );
        assert!(state.apply(patching(2, 2, vec![])).is_empty());
        assert!(state.transition.unwrap().blockers.is_empty());
    }

    #[test]
    fn signals_come_once_from_the_log_or_the_kernels_count_of_failed_rounds() {
        let mut state = tracker();
        state.apply(Observation::Trace(TraceEvent::Start { timestamp_ns: 0 }));
        state.apply(patching(1, 1, vec![]));
        let round = |round| {
            Observation::Trace(TraceEvent::Round {
                timestamp_ns: 0,
                round,
            })
        };
        // The kernel's count of failed rounds starts at 0: it signals at the
        // end of the 16th, seen when the 17th begins.
        for number in 1..=16 {
            assert!(state.apply(round(number)).is_empty());
        }
        assert_eq!(state.retry_rounds(), Some((16, false)));
        assert_eq!(names(&state.apply(round(17))), ["signals"]);
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
        let mut state = tracker();
        state.apply(patching(0, 1, vec![]));
        state.apply(patching(16, 1, vec![]));
        assert_eq!(state.retry_rounds(), Some((16, true)));
        assert!(state.signals_expected());
        let events = state.apply(Observation::KernelLog(LivepatchMessage::Signaling));
        assert_eq!(
            events,
            [TransitionEvent::Signals {
                patch: "p".into(),
                seen_in: SignalsSeen::KernelLog
            }]
        );
    }

    #[test]
    fn force_is_reported_once_whoever_saw_it() {
        let mut state = tracker();
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
            TransitionEvent::Complete {
                forced: true,
                reversed: false,
                ..
            }
        ));
    }

    #[test]
    fn the_tracer_reports_a_reversal_before_the_poll_and_only_once() {
        let mut state = tracker();
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
    fn switches_the_tracer_saw_are_reported_in_bulk_once_a_poll() {
        let mut state = tracker();
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
            failed_rounds: 0,
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
            events.contains(&TransitionEvent::Switched {
                patch: "p".into(),
                tids: vec![5, 7]
            }),
            "{events:?}"
        );
        let again = state.apply(patching(2, 1, vec![]));
        assert!(
            !again
                .iter()
                .any(|e| matches!(e, TransitionEvent::Switched { .. })),
            "each switch is reported once"
        );
    }

    #[test]
    fn switches_of_a_transition_that_ended_between_polls_come_before_its_end() {
        let mut state = tracker();
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
                TransitionEvent::Start { .. } => "start",
                TransitionEvent::Switched { .. } => "switched",
                TransitionEvent::Complete { .. } => "complete",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["start", "switched", "complete"]);
    }

    #[test]
    fn a_transition_caught_before_enabled_flips_does_not_start_backwards() {
        let mut state = tracker();
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
                [TransitionEvent::Start {
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
                .any(|e| matches!(e, TransitionEvent::Reverse { .. })),
            "{events:?}"
        );
    }

    #[test]
    fn a_transition_never_seen_with_pending_tasks_is_still_reported() {
        let mut state = tracker();
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
                [
                    TransitionEvent::Start { .. },
                    TransitionEvent::Complete { .. }
                ]
            ),
            "{events:?}"
        );
    }

    #[test]
    fn a_patch_seen_before_its_transition_then_settled_is_reported() {
        let mut state = tracker();
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
                [
                    TransitionEvent::Start { .. },
                    TransitionEvent::Complete { .. }
                ]
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
