//! `klpscope watch`: a feed thread polls sysfs and procfs (and drains the
//! eBPF tracer) on a tick and sends its observations to the event loop,
//! which applies them to the transition state machine and shows the events
//! as a TUI or as lines. Reading runs off the event loop so that keys and
//! signals are answered at once even when a scan of /proc takes seconds.
//! The eBPF programs live in `Feed`, on the feed thread, and go with it or
//! with the process on every way out.
use std::{
    io::{self, IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::mpsc::{self as std_mpsc, RecvTimeoutError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc::{UnboundedReceiver, unbounded_channel},
    time::{Instant, sleep_until},
};

use crate::{
    analysis::{
        blockers::{Blocker, PatchedCode, find_blockers},
        function_state::function_state,
        transition_progress::{self, Observation, Poll, WatchEvent, WatchState},
    },
    cli::WatchArgs,
    commands::output::{self, stdout_error},
    kernel::{
        PatchStateScanner, ThreadId,
        clock::monotonic_ns,
        kernel_log::{KernelLogFollower, LogEntry},
        livepatch_write::{TransitionWrite, write_confirmed},
        procfs_tasks::Stacks,
        read_kernel, read_patches, read_task, reread_in_transition, transition,
    },
    model::{Known, Patch, PatchFunction, ThreadPatchState, Transition},
    probes::{self, CountedFunction, ProbeRequest, Probes, TaskVerdict},
    views::{
        tui::{
            app::App,
            handler::{Request, handle_key},
            terminal::TerminalSession,
        },
        watch_lines::{describe, json_line, plain_line},
    },
};

const EXIT_REVERSED: u8 = 5;
const EXIT_TIMED_OUT: u8 = 6;
const EXIT_REFUSED: u8 = 7;

/// Twice per kernel retry round, so that a short transition is still seen.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// At most this many pending threads get their kernel stack read per poll:
/// at the start of a transition almost every thread is pending.
const MAX_STACKS: usize = 256;
/// A hidden switch for the VM lab's detach test: panic once ready.
const DEBUG_PANIC: &str = "KLPSCOPE_DEBUG_PANIC";

pub fn run(root: &Path, args: &WatchArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(watch(root, args))
}

async fn watch(root: &Path, args: &WatchArgs) -> Result<ExitCode> {
    let kernel = read_kernel(root);
    if !kernel.livepatch_supported {
        // No transition can ever come: waiting for one would only hang.
        let reason = kernel.problems.first().map_or("", String::as_str);
        anyhow::bail!("nothing to watch: {reason}");
    }
    let interactive = !args.plain && !args.json && io::stdout().is_terminal();
    // Loading the probes takes a moment; until the handlers below are in
    // place a signal ends klpscope the default way, which detaches them too.
    let feed = Feed::open(root, args);
    let mut state = WatchState::new(kernel.release, feed.kind());
    state.verdicts_inferred = feed.verdicts_inferred.clone();
    let deadline = args
        .timeout
        .map(|secs| Instant::now() + Duration::from_secs_f64(secs));
    let signals = StopSignals::new().context("installing signal handlers")?;
    let rounds = FeedThread::start(feed)?;
    if interactive {
        run_tui(root, rounds, signals, App::new(state), args, deadline).await
    } else {
        run_lines(rounds, signals, state, args, deadline).await
    }
}

/// How the loop ends, as the exit code the CLI documents.
fn exit_for(events: &[WatchEvent], args: &WatchArgs) -> Option<ExitCode> {
    if !args.until_complete {
        return None;
    }
    events.iter().find_map(|event| match event {
        WatchEvent::Complete { reversed: true, .. } => Some(ExitCode::from(EXIT_REVERSED)),
        WatchEvent::Complete { .. } => Some(ExitCode::SUCCESS),
        // The transition waited for will never come.
        WatchEvent::Refused { patch, .. } if args.patch.as_ref().is_none_or(|p| p == patch) => {
            Some(ExitCode::from(EXIT_REFUSED))
        }
        _ => None,
    })
}

/// The signals that end a watch, each with its own exit code (128 + the
/// signal's number, as a shell reports it), distinct from completed,
/// reversed and timed out.
struct StopSignals {
    hangup: Signal,
    interrupt: Signal,
    terminate: Signal,
}

#[derive(Clone, Copy, Debug)]
enum StopSignal {
    Hangup,
    Interrupt,
    Terminate,
}

impl StopSignal {
    fn number(self) -> i32 {
        match self {
            StopSignal::Hangup => libc::SIGHUP,
            StopSignal::Interrupt => libc::SIGINT,
            StopSignal::Terminate => libc::SIGTERM,
        }
    }

    fn name(self) -> &'static str {
        match self {
            StopSignal::Hangup => "SIGHUP",
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    fn exit_code(self) -> ExitCode {
        ExitCode::from(128 + self.number() as u8)
    }

    fn event(self) -> WatchEvent {
        WatchEvent::Interrupted {
            signal: self.name().to_owned(),
        }
    }
}

impl StopSignals {
    fn new() -> io::Result<Self> {
        Ok(StopSignals {
            hangup: signal(SignalKind::hangup())?,
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.hangup.recv() => StopSignal::Hangup,
            _ = self.interrupt.recv() => StopSignal::Interrupt,
            _ = self.terminate.recv() => StopSignal::Terminate,
        }
    }
}

/// What one round of reading found.
struct Round {
    observations: Vec<Observation>,
    /// Patched functions whose calls are not counted, and why.
    uncounted: Vec<(String, String)>,
}

impl Round {
    fn apply(self, state: &mut WatchState) -> Vec<WatchEvent> {
        let mut events = Vec::new();
        for observation in self.observations {
            events.extend(state.apply(observation));
        }
        state.uncounted = self.uncounted;
        events
    }
}

/// The feed on its own thread: a round every `POLL_EVERY`, sent to the
/// event loop, until this handle is dropped.
struct FeedThread {
    rounds: UnboundedReceiver<Result<Round>>,
    /// Dropping it tells the thread to stop (and drop the probes).
    _stop: std_mpsc::Sender<()>,
}

impl FeedThread {
    fn start(mut feed: Feed) -> Result<Self> {
        let (send_round, rounds) = unbounded_channel();
        let (stop, stopped) = std_mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("klpscope-feed".into())
            .spawn(move || {
                loop {
                    let started = std::time::Instant::now();
                    let round = feed.read_round();
                    let failed = round.is_err();
                    if send_round.send(round).is_err() || failed {
                        return;
                    }
                    let rest = POLL_EVERY.saturating_sub(started.elapsed());
                    if stopped.recv_timeout(rest) != Err(RecvTimeoutError::Timeout) {
                        return;
                    }
                }
            })
            .context("starting the feed thread")?;
        Ok(FeedThread {
            rounds,
            _stop: stop,
        })
    }

    async fn next(&mut self) -> Result<Round> {
        match self.rounds.recv().await {
            Some(round) => round,
            None => anyhow::bail!("the feed thread stopped unexpectedly"),
        }
    }
}

/// Said once, when the first round is in: the feed is attached and has
/// polled, so scripts can start the transition they want to see.
fn ready(state: &WatchState) -> WatchEvent {
    let ebpf = state.feed == transition_progress::Feed::Ebpf;
    WatchEvent::Ready {
        ebpf,
        kernel_verdicts: ebpf && state.verdicts_inferred.is_none(),
    }
}

fn panic_if_asked() {
    if std::env::var_os(DEBUG_PANIC).is_some_and(|value| value == "1") {
        panic!("{DEBUG_PANIC}=1: panicking on purpose once ready");
    }
}

async fn run_lines(
    mut feed: FeedThread,
    mut signals: StopSignals,
    mut state: WatchState,
    args: &WatchArgs,
    deadline: Option<Instant>,
) -> Result<ExitCode> {
    if let transition_progress::Feed::Polling { reason } = &state.feed {
        output::note(&format!(
            "eBPF unavailable ({reason}): following transitions by polling /proc and /sys"
        ));
    }
    let started = Instant::now();
    let mut stdout = io::stdout().lock();
    let mut emit = |events: &[WatchEvent]| -> Result<()> {
        for event in events {
            let line = if args.json {
                json_line(event, wall_clock_secs())
            } else {
                plain_line(event, started.elapsed().as_secs_f64())
            };
            writeln!(stdout, "{line}").map_err(stdout_error)?;
        }
        stdout.flush().map_err(stdout_error)
    };
    let mut announced = false;
    loop {
        tokio::select! {
            round = feed.next() => {
                let events = round?.apply(&mut state);
                if !announced {
                    announced = true;
                    let ready = ready(&state);
                    state.note(ready.clone());
                    if args.json {
                        emit(std::slice::from_ref(&ready))?;
                    } else {
                        output::note(&describe(&ready));
                    }
                    if let Some(why) = &state.verdicts_inferred {
                        output::note(&format!("blockers are inferred from stacks: {why}"));
                    }
                    panic_if_asked();
                }
                emit(&events)?;
                if let Some(code) = exit_for(&events, args) {
                    return Ok(code);
                }
            }
            _ = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                emit(&[timeout(started)])?;
                return Ok(ExitCode::from(EXIT_TIMED_OUT));
            }
            stop = signals.recv() => {
                // Said if it can be: the pipe may be what went away.
                let _ = emit(&[stop.event()]);
                return Ok(stop.exit_code());
            }
        }
    }
}
/// One `select!` over the feed's rounds, terminal events and signals; the
/// screen is redrawn after each. ratatui only writes the cells that
/// changed, so redraws do not flicker.
async fn run_tui(
    root: &Path,
    mut feed: FeedThread,
    mut signals: StopSignals,
    mut app: App,
    args: &WatchArgs,
    deadline: Option<Instant>,
) -> Result<ExitCode> {
    let mut session = TerminalSession::enter().context("setting up the terminal")?;
    let started = Instant::now();
    let mut keys = EventStream::new();
    let mut announced = false;
    loop {
        tokio::select! {
            round = feed.next() => {
                let events = round?.apply(&mut app.state);
                app.dismiss_stale_confirmation();
                if !announced {
                    announced = true;
                    app.state.note(ready(&app.state));
                    panic_if_asked();
                }
                if let Some(code) = exit_for(&events, args) {
                    return Ok(code);
                }
            }
            event = keys.next() => match event {
                Some(Ok(Event::Key(key))) => match handle_key(&mut app, key) {
                    Some(Request::Quit) => return Ok(ExitCode::SUCCESS),
                    Some(Request::Interrupt) => return Ok(StopSignal::Interrupt.exit_code()),
                    Some(Request::Write(write)) => write_confirmed_from_tui(root, &mut app, &write),
                    None => {}
                },
                // A resize needs only the redraw below.
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error).context("reading the terminal"),
                None => return Ok(ExitCode::SUCCESS),
            },
            _ = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                app.state.note(timeout(started));
                return Ok(ExitCode::from(EXIT_TIMED_OUT));
            }
            stop = signals.recv() => return Ok(stop.exit_code()),
        }
        session
            .terminal
            .draw(|frame| frame.render_widget(&app, frame.area()))
            .context("drawing the screen")?;
    }
}

/// The kernel layer re-checks the transition before it writes; the outcome,
/// written or refused, is the line the user sees.
fn write_confirmed_from_tui(root: &Path, app: &mut App, write: &TransitionWrite) {
    app.message = Some(match write_confirmed(root, write) {
        Ok(written) => {
            if matches!(write, TransitionWrite::Force { .. }) {
                app.state.apply(Observation::ForceWritten);
            }
            written.to_string()
        }
        Err(refused) => refused.to_string(),
    });
}

fn timeout(started: Instant) -> WatchEvent {
    WatchEvent::Timeout {
        secs: started.elapsed().as_secs_f64(),
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

fn wall_clock_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Everything watch reads from the kernel, and the eBPF programs it owns.
struct Feed {
    root: PathBuf,
    patch: Option<String>,
    /// The transition tracer; None when eBPF is unavailable or refused.
    tracer: Option<Probes>,
    /// Whether the tracer hears the kernel's verdicts (its check hook attached).
    kernel_verdicts: bool,
    polling_reason: Option<String>,
    /// With the tracer loaded but its per-task verdict hook off: why.
    verdicts_inferred: Option<String>,
    /// Call counters for the patched functions, reloaded when the
    /// patches change (the programs attach to a fixed list).
    counter: Option<Probes>,
    counted: Vec<CountedFunction>,
    /// Functions the kernel would not let the counter attach to, and why.
    uncounted: Vec<(String, String)>,
    /// The kernel log, read from a kept descriptor.
    log_follower: KernelLogFollower,
    /// The newest kernel log record already seen.
    log_seen_us: Option<u64>,
    /// The kernel's livepatch log as last read; None when unreadable.
    log: Option<Vec<LogEntry>>,
    patch_names: Vec<String>,
    /// Kept between polls: its open descriptors make the scan cheap.
    scanner: Option<PatchStateScanner>,
}

impl Feed {
    fn open(root: &Path, args: &WatchArgs) -> Self {
        let mut kernel_verdicts = false;
        let mut verdicts_inferred = None;
        let (tracer, polling_reason) = if args.no_ebpf {
            (None, Some("--no-ebpf".to_owned()))
        } else {
            let request = ProbeRequest {
                tracer: true,
                count_calls: Vec::new(),
            };
            match probes::load(root, &request) {
                (Some(probes), caps) if probes.tracer.is_some() => {
                    verdicts_inferred = caps.verdicts_unavailable();
                    kernel_verdicts = verdicts_inferred.is_none();
                    (Some(probes), None)
                }
                (_, caps) => (
                    None,
                    Some(
                        caps.tracer_unavailable()
                            .unwrap_or_else(|| "the transition tracer did not load".into()),
                    ),
                ),
            }
        };
        Feed {
            root: root.to_owned(),
            patch: args.patch.clone(),
            tracer,
            kernel_verdicts,
            polling_reason,
            verdicts_inferred,
            counter: None,
            counted: Vec::new(),
            uncounted: Vec::new(),
            log_follower: KernelLogFollower::new(root),
            log_seen_us: None,
            log: None,
            patch_names: Vec::new(),
            scanner: None,
        }
    }

    fn kind(&self) -> transition_progress::Feed {
        match &self.polling_reason {
            None => transition_progress::Feed::Ebpf,
            Some(reason) => transition_progress::Feed::Polling {
                reason: reason.clone(),
            },
        }
    }

    /// One round of reading: what changed, and what cannot be counted.
    fn read_round(&mut self) -> Result<Round> {
        let observations = self.read()?;
        Ok(Round {
            observations,
            uncounted: self.uncounted.clone(),
        })
    }

    fn read(&mut self) -> Result<Vec<Observation>> {
        let mut observations = Vec::new();
        // Every patch for the func stack; the watched ones for the rest.
        let loaded = read_patches(&self.root).context("reading /sys/kernel/livepatch")?;
        let mut patches = loaded.clone();
        if let Some(name) = &self.patch {
            patches.retain(|patch| &patch.name == name);
        }
        let names: Vec<String> = patches.iter().map(|p| p.name.clone()).collect();
        let names_changed = names != self.patch_names;
        self.patch_names = names;
        let in_transition = patches.iter().any(|p| p.transition == Known::Value(true));
        // A scan only when a transition may be under way: it is the costly
        // part, and a new patch may have started and ended between polls.
        let threads = if in_transition || names_changed {
            let scanner = match &mut self.scanner {
                Some(scanner) => scanner,
                scanner @ None => {
                    scanner.insert(PatchStateScanner::new(&self.root).context("opening /proc")?)
                }
            };
            Some(scanner.scan().context("scanning /proc for patch_state")?)
        } else {
            None
        };
        if threads.is_some() {
            patches = reread_in_transition(&self.root, patches);
        }
        // The tracer after sysfs: every event of a transition this read saw
        // end is in by now, so none is left for a read that knows no
        // transition to put it under.
        let verdicts = self.drain_tracer(&mut observations);
        // After the scan: a switched task it saw is logged by then. Read on
        // every poll, patches or none: a refused load leaves only its
        // message behind.
        observations.extend(self.kernel_log());
        let now_ns = monotonic_ns();
        let transition = threads.as_ref().and_then(|threads| {
            let log = self.log.as_deref();
            transition(&patches, log, threads.iter().map(|t| &t.patch_state))
        });
        let blockers = match (&transition, &threads) {
            (Some(transition), Some(threads)) => {
                self.blockers(transition, &loaded, threads, verdicts.as_deref(), now_ns)
            }
            _ => Vec::new(),
        };
        let calls = self.count_calls(&patches, now_ns);
        observations.push(Observation::Poll(Poll {
            at_ns: now_ns,
            threads: threads.as_ref().map(Vec::len),
            patches,
            transition,
            blockers,
        }));
        observations.extend(calls);
        Ok(observations)
    }

    /// The tracer's events, and its verdicts for the blockers.
    fn drain_tracer(&mut self, observations: &mut Vec<Observation>) -> Option<Vec<TaskVerdict>> {
        let tracer = self.tracer.as_mut()?.tracer.as_mut()?;
        // The tracer keeps the verdicts of the transition under way only.
        observations.extend(tracer.drain().into_iter().map(Observation::Trace));
        // Without the check hook the map stays empty: blockers are then
        // inferred from stacks, not taken as "none".
        self.kernel_verdicts.then(|| tracer.verdicts())
    }

    /// New livepatch messages in the kernel log. The first read only marks
    /// where the log stands: older messages belong to older transitions.
    fn kernel_log(&mut self) -> Vec<Observation> {
        let Known::Value((entries, _)) = self.log_follower.poll() else {
            self.log = None;
            return Vec::new();
        };
        self.log = Some(entries.to_vec());
        let newest = entries.iter().map(|e| e.timestamp_us).max().unwrap_or(0);
        let fresh = match self.log_seen_us {
            None => Vec::new(),
            Some(seen) => entries
                .iter()
                .filter(|entry| entry.timestamp_us > seen)
                .map(|entry| Observation::KernelLog(entry.message.clone()))
                .collect(),
        };
        self.log_seen_us = Some(self.log_seen_us.unwrap_or(0).max(newest));
        fresh
    }

    fn blockers(
        &self,
        transition: &Transition,
        patches: &[Patch],
        threads: &[ThreadPatchState],
        verdicts: Option<&[TaskVerdict]>,
        now_ns: u64,
    ) -> Vec<Blocker> {
        let Some(patch) = patches.iter().find(|p| p.name == transition.patch) else {
            return Vec::new();
        };
        let target = Known::Value(transition.direction.target());
        // With the kernel's verdicts, only the tasks it failed to switch
        // need their stacks read.
        let failed = |tid: u32| {
            verdicts
                .is_none_or(|verdicts| verdicts.iter().any(|v| v.tid == tid && v.reason.is_some()))
        };
        let tasks: Vec<_> = threads
            .iter()
            .filter(|thread| thread.patch_state != target && failed(thread.tid))
            .take(MAX_STACKS)
            .filter_map(|thread| {
                let id = ThreadId {
                    pid: thread.pid,
                    tid: thread.tid,
                };
                read_task(&self.root, id, Stacks::Read)
            })
            .collect();
        let code = PatchedCode {
            patch,
            direction: transition.direction,
            loaded: patches,
        };
        find_blockers(&tasks, &code, verdicts, now_ns)
    }

    /// Calls per version of the patched functions, vmlinux and modules.
    fn count_calls(&mut self, patches: &[Patch], now_ns: u64) -> Option<Observation> {
        self.tracer.as_ref()?;
        let mut functions: Vec<CountedFunction> = patches
            .iter()
            .filter(|p| !p.gone)
            .flat_map(|patch| &patch.objects)
            .flat_map(|object| object.functions.iter().map(|f| counted(&object.name, f)))
            .collect();
        functions.sort();
        functions.dedup();
        if functions != self.counted {
            // Detach the old counters before attaching the new ones.
            self.counter = None;
            let request = ProbeRequest {
                tracer: false,
                count_calls: functions
                    .iter()
                    .map(|f| {
                        let object = f.object.as_deref().unwrap_or("vmlinux");
                        (f.clone(), function_state(patches, object, &f.name))
                    })
                    .collect(),
            };
            let (counter, caps) = probes::load(&self.root, &request);
            self.counter = counter;
            self.counted = functions;
            self.uncounted = caps
                .uncounted()
                .map(|(function, reason)| (function.to_string(), reason.to_owned()))
                .collect();
        }
        let counter = self.counter.as_mut()?.call_counter.as_mut()?;
        for patch in patches {
            for object in &patch.objects {
                for function in &object.functions {
                    let state = function_state(patches, &object.name, &function.name);
                    let _ = counter.set_state(&counted(&object.name, function), state);
                }
            }
        }
        let counts = counter.counts().ok()?;
        Some(Observation::Calls {
            at_ns: now_ns,
            counts,
            old_callers: counter.old_calls_by_task(),
        })
    }
}

/// A patched function as the counter names it; sysfs says "vmlinux".
fn counted(object: &str, function: &PatchFunction) -> CountedFunction {
    CountedFunction {
        object: (object != "vmlinux").then(|| object.to_owned()),
        name: function.name.clone(),
        sympos: function.sympos,
    }
}
