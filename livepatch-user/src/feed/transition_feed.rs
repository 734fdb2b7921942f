//! Follows the kernel's livepatch state live: sysfs and procfs polls, the
//! eBPF tracer's events and verdicts, the kernel log and the call
//! counters, as rounds of observations. It owns the eBPF programs: they go
//! with it, on every way out.
use std::{
    path::{Path, PathBuf},
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::Result;

use super::snapshot::read_patches_and_threads;
use crate::{
    analysis::{
        function_state::function_state,
        observation::{CallSample, KernelPoll, Observation},
        transition::transition_target,
    },
    kernel::{Stacks, ThreadId, clock::monotonic_ns, kernel_log::KernelLogFollower},
    model::{FeedCapabilities, Known, LogEntry, Patch, Target, Task, ThreadPatchState, TraceEvent},
    probes::{
        self, Capabilities, Loaded, ProbeRequest, Probes, TaskSource, TaskSourceError, TaskVerdict,
    },
};

/// At most this many pending threads get their kernel stack read per poll:
/// at the start of a transition almost every thread is pending.
const MAX_STACKS: usize = 256;

pub struct TransitionFeed {
    root: PathBuf,
    capabilities: FeedCapabilities,
    /// The transition tracer; None when eBPF is unavailable or refused.
    tracer: Option<Probes>,
    counters: CallCounters,
    /// The kernel log, read from a kept descriptor.
    log: KernelLogFollower,
    /// The newest kernel log record already seen.
    log_seen_us: Option<u64>,
    patch_names: Vec<String>,
    /// Every thread's patch_state, and the pending ones' stacks: the task
    /// iterator, or procfs with descriptors kept open between polls.
    tasks: TaskSource,
    /// Since when a poll has seen a patch in transition, and whether the
    /// tracer has seen a retry round (or an end) of it since.
    in_transition: Option<(u64, bool)>,
}

/// Call counters for the patched functions, reloaded when the patches
/// change: the programs attach to a fixed list.
#[derive(Default)]
struct CallCounters {
    probes: Option<Probes>,
    /// The counters of `counted` being attached, on a thread of their own:
    /// detaching the old ones and loading the new takes a second or two
    /// under TCG, just as a patch is loaded or removed, and the rounds must
    /// go on meanwhile.
    attaching: Option<JoinHandle<(Option<Probes>, Capabilities)>>,
    counted: Vec<Target>,
    /// Functions that cannot be counted, and why.
    uncounted: Vec<(String, String)>,
    /// The first round waits for the counters it starts to attach: once
    /// the feed's user is told klpscope is ready, a transition it then
    /// starts must not find klpscope patching kernel text (the kernel's
    /// set-up and the counters' attach wait on each other, and the
    /// kernel's first round comes seconds late).
    first_done: bool,
}

/// What watch's TUI says of a function until its counter is attached.
const ATTACHING: &str = "its counter is being attached";

impl TransitionFeed {
    /// Attaches the tracer unless `no_ebpf`; without it the feed polls.
    /// Err only when `KLPSCOPE_TASK_SOURCE` asks for what cannot be had.
    pub fn open(root: &Path, no_ebpf: bool) -> Result<Self, TaskSourceError> {
        let mut request = ProbeRequest {
            tracer: true,
            ..ProbeRequest::default()
        };
        // The iterator's programs come with the tracer's, from one object
        // and one parse of the kernel's BTF: half the start-up's work.
        let mut loaded = None;
        let tasks = TaskSource::open_with(root, no_ebpf, || {
            let with_iterator = ProbeRequest {
                task_iterator: true,
                ..request.clone()
            };
            let mut load = probes::load(root, &with_iterator);
            let iterator = load.task_iterator.take().expect("asked for the iterator");
            loaded = Some(load);
            iterator
        })?;
        request.task_iterator = false;
        let (tracer, capabilities) = if no_ebpf {
            let capabilities = FeedCapabilities {
                polling: Some("--no-ebpf".to_owned()),
                verdicts_inferred: None,
                tasks_from_procfs: None,
            };
            (None, capabilities)
        } else {
            let Loaded {
                probes,
                capabilities: caps,
                ..
            } = loaded.unwrap_or_else(|| probes::load(root, &request));
            match (probes, caps) {
                (Some(probes), caps) if probes.tracer.is_some() => {
                    let capabilities = FeedCapabilities {
                        polling: None,
                        verdicts_inferred: caps.verdicts_unavailable(),
                        tasks_from_procfs: None,
                    };
                    (Some(probes), capabilities)
                }
                (_, caps) => {
                    let reason = caps
                        .tracer_unavailable()
                        .unwrap_or_else(|| "the transition tracer did not load".into());
                    let capabilities = FeedCapabilities {
                        polling: Some(reason),
                        verdicts_inferred: None,
                        tasks_from_procfs: None,
                    };
                    (None, capabilities)
                }
            }
        };
        let capabilities = FeedCapabilities {
            tasks_from_procfs: tasks.capability().reason.clone(),
            ..capabilities
        };
        Ok(TransitionFeed {
            root: root.to_owned(),
            capabilities,
            tracer,
            counters: CallCounters::default(),
            log: KernelLogFollower::new(root),
            log_seen_us: None,
            patch_names: Vec::new(),
            tasks,
            in_transition: None,
        })
    }

    pub fn capabilities(&self) -> &FeedCapabilities {
        &self.capabilities
    }

    /// One round of reading: a poll of sysfs and procfs, then the tracer's
    /// events and what the log and the counters say since.
    pub fn read_round(&mut self) -> Result<Vec<Observation>> {
        let mut observations = Vec::new();
        let (root, tasks, names) = (&self.root, &mut self.tasks, &mut self.patch_names);
        // A scan only when a transition may be under way: it is the costly
        // part, and a new patch may have started and ended between polls.
        let patches_changed = |patches: &[Patch]| {
            let now: Vec<String> = patches.iter().map(|p| p.name.clone()).collect();
            std::mem::replace(names, now) != *names
        };
        let scan = || tasks.patch_states();
        let read_ns = monotonic_ns();
        let (patches, threads) = read_patches_and_threads(root, patches_changed, scan)?;
        log::debug!("sysfs: read at {read_ns} ns, {} patches", patches.len());
        for patch in &patches {
            log::debug!(
                "sysfs: {} enabled {:?} transition {:?} gone {}",
                patch.name,
                patch.enabled,
                patch.transition,
                patch.gone
            );
        }
        // After the scan: a switched task it saw is logged by then. Read on
        // every poll, patches or none: a refused load leaves only its
        // message behind.
        let (log, messages) = self.kernel_log();
        // The tracer last: every event behind what sysfs and the log showed
        // is in by now. A transition this read saw end has its completion
        // here, and a reversal the log already tells (its "starting" line)
        // is heard before the poll that shows it: heard a round later, it
        // would turn the transition back the way it came.
        let verdicts = self.drain_tracer(&mut observations);
        self.follow_set_up(&patches, read_ns, &observations);
        observations.extend(messages);
        let at_ns = monotonic_ns();
        let pending = match &threads {
            Some(threads) => self.pending(&patches, log.as_deref(), threads, verdicts.as_deref()),
            None => Vec::new(),
        };
        let calls = self.count_calls(&patches, at_ns);
        observations.push(Observation::Poll(KernelPoll {
            at_ns,
            read_ns,
            patches,
            threads,
            pending,
            verdicts,
            log,
        }));
        observations.extend(calls.map(Observation::Calls));
        Ok(observations)
    }

    /// Waits up to `timeout` for the tracer to report something. None
    /// without a tracer: the feed then only polls.
    pub fn wait_for_trace(&self, timeout: Duration) -> Option<bool> {
        let tracer = self.tracer.as_ref()?.tracer.as_ref()?;
        Some(tracer.wait_for_event(timeout))
    }

    /// The tracer's events, and its verdicts for the blockers.
    fn drain_tracer(&mut self, observations: &mut Vec<Observation>) -> Option<Vec<TaskVerdict>> {
        let kernel_verdicts = self.capabilities.kernel_verdicts();
        let tracer = self.tracer.as_mut()?.tracer.as_mut()?;
        // The tracer keeps the verdicts of the transition under way only.
        let events = tracer.drain();
        // For the bench (with --log): how long after the kernel's hook each
        // event is read, the round that reports it being this one.
        let now = monotonic_ns();
        for event in &events {
            let after_ms = now.saturating_sub(event.timestamp_ns()) as f64 / 1e6;
            log::debug!(
                "tracer: an event read {after_ms:.3} ms after the kernel's hook: {event:?}"
            );
        }
        observations.extend(events.into_iter().map(Observation::Trace));
        // Without the check hook the map stays empty: blockers are then
        // inferred from stacks, not taken as "none".
        kernel_verdicts.then(|| tracer.verdicts())
    }

    /// The kernel's livepatch log so far, and its messages new since the
    /// last poll. The first read only marks where the log stands: older
    /// messages belong to older transitions.
    fn kernel_log(&mut self) -> (Option<Vec<LogEntry>>, Vec<Observation>) {
        let Known::Value((entries, _)) = self.log.poll() else {
            return (None, Vec::new());
        };
        let newest = entries.iter().map(|e| e.timestamp_us).max().unwrap_or(0);
        let fresh = match self.log_seen_us {
            None => Vec::new(),
            Some(seen) => entries
                .iter()
                .filter(|entry| entry.timestamp_us > seen)
                .inspect(|entry| log::debug!("kernel log: {entry:?}"))
                .map(|entry| Observation::KernelLog(entry.message.clone()))
                .collect(),
        };
        self.log_seen_us = Some(self.log_seen_us.unwrap_or(0).max(newest));
        (Some(entries.to_vec()), fresh)
    }

    /// The threads the transition waits for, with their stacks. With the
    /// kernel's verdicts, only the ones it failed to switch.
    fn pending(
        &mut self,
        patches: &[Patch],
        log: Option<&[LogEntry]>,
        threads: &[ThreadPatchState],
        verdicts: Option<&[TaskVerdict]>,
    ) -> Vec<Task> {
        let Some(target) = transition_target(patches, log) else {
            return Vec::new();
        };
        let target = Known::Value(target);
        let failed = |tid: u32| {
            verdicts
                .is_none_or(|verdicts| verdicts.iter().any(|v| v.tid == tid && v.reason.is_some()))
        };
        let pending = threads
            .iter()
            .filter(|thread| thread.patch_state != target && failed(thread.tid))
            .map(|thread| ThreadId {
                pid: thread.pid,
                tid: thread.tid,
            })
            .take(MAX_STACKS)
            .collect::<Vec<_>>();
        // A thread that exited since the scan is left out: it blocks nothing.
        self.tasks
            .tasks_of(&pending, Stacks::Read)
            .unwrap_or_else(|error| {
                log::warn!("reading the pending threads: {error}");
                Vec::new()
            })
    }

    /// Notes whether the transition a poll sees is past its set-up: the
    /// kernel begins a transition (callbacks, code patching, then
    /// `klp_start_transition`, which rewrites cond_resched's static call)
    /// before its first retry round.
    fn follow_set_up(&mut self, patches: &[Patch], read_ns: u64, observations: &[Observation]) {
        if !patches.iter().any(|p| p.transition == Known::Value(true)) {
            self.in_transition = None;
            return;
        }
        let (since, past_set_up) = self.in_transition.get_or_insert((read_ns, false));
        *past_set_up |= observations.iter().any(|observation| {
            matches!(
                observation,
                Observation::Trace(
                    event @ (TraceEvent::Round { .. }
                        | TraceEvent::Complete { .. }
                        | TraceEvent::Cancel { .. })
                ) if event.timestamp_ns() >= *since
            )
        });
    }

    /// Calls per version of the patched functions, vmlinux and modules.
    fn count_calls(&mut self, patches: &[Patch], at_ns: u64) -> Option<CallSample> {
        self.tracer.as_ref()?;
        // Arming counters patches kernel text, as the kernel's set-up of a
        // transition does: side by side they wait on each other (the first
        // round came up to 2 s late under TCG). The counters wait.
        let setting_up = self.in_transition.is_some_and(|(_, past)| !past);
        let mut functions: Vec<Target> = patches
            .iter()
            .filter(|p| !p.gone)
            .flat_map(|patch| &patch.objects)
            .flat_map(|object| {
                object
                    .functions
                    .iter()
                    .map(|f| Target::in_object(&object.name, &f.name, f.sympos))
            })
            .collect();
        functions.sort();
        functions.dedup();
        let counters = &mut self.counters;
        if functions != counters.counted && !setting_up {
            let request = ProbeRequest {
                count_calls: functions
                    .iter()
                    .map(|f| (f.clone(), function_state(patches, f.object_name(), &f.name)))
                    .collect(),
                ..ProbeRequest::default()
            };
            counters.uncounted = functions
                .iter()
                .map(|f| (f.to_string(), ATTACHING.to_owned()))
                .collect();
            counters.counted = functions;
            // One thread at a time, the old counters gone before the new
            // ones attach: a load still under way for an older list ends
            // first, and what it attached goes then. Side by side, a
            // detach (a second under TCG) and a load would hold both
            // objects' memory at once.
            let old = counters.probes.take();
            let previous = counters.attaching.take();
            let root = self.root.clone();
            let attaching = thread::Builder::new()
                .name("klpscope-counters".into())
                .spawn(move || {
                    drop(previous.map(JoinHandle::join));
                    drop(old);
                    if request.count_calls.is_empty() {
                        return (None, Capabilities::default());
                    }
                    let loaded = probes::load(&root, &request);
                    (loaded.probes, loaded.capabilities)
                });
            counters.attaching = match attaching {
                Ok(attaching) => Some(attaching),
                Err(error) => {
                    let why = format!("cannot start the thread that attaches counters: {error}");
                    for (_, reason) in &mut counters.uncounted {
                        reason.clone_from(&why);
                    }
                    None
                }
            };
        }
        let attached = !counters.first_done
            || counters
                .attaching
                .as_ref()
                .is_some_and(JoinHandle::is_finished);
        counters.first_done = true;
        if attached && let Some(attaching) = counters.attaching.take() {
            match attaching.join() {
                Ok((probes, caps)) => {
                    counters.probes = probes;
                    counters.uncounted = caps
                        .uncounted()
                        .map(|(function, reason)| (function.to_string(), reason.to_owned()))
                        .collect();
                }
                Err(_) => {
                    for (_, reason) in &mut counters.uncounted {
                        *reason = "attaching its counter failed (the thread panicked)".into();
                    }
                }
            }
        }
        let mut sample = CallSample {
            at_ns,
            uncounted: counters.uncounted.clone(),
            ..CallSample::default()
        };
        let Some(counter) = counters
            .probes
            .as_mut()
            .and_then(|probes| probes.call_counter.as_mut())
        else {
            return Some(sample);
        };
        for patch in patches {
            for object in &patch.objects {
                for function in &object.functions {
                    let state = function_state(patches, &object.name, &function.name);
                    let _ = counter.set_state(
                        &Target::in_object(&object.name, &function.name, function.sympos),
                        state,
                    );
                }
            }
        }
        sample.counts = counter.counts().ok()?;
        sample.old_callers = counter.old_calls_by_task();
        Some(sample)
    }
}
