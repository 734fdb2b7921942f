//! `klpscope apply` and `klpscope revert`: a guarded rollout. The check
//! first; then, with the live feed already following the kernel, the change
//! (the module loaded, or the patch disabled); then the transition watched
//! until it completes, or backed out past the deadline or on a signal, and
//! the module unloaded where that leaves it unused. Never forced.
use std::{
    io::{self, BufRead, IsTerminal, Write},
    path::Path,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use tokio::time::{Instant, interval, sleep};

use crate::{
    analysis::{
        live_state::LiveState,
        observation::Observation,
        readiness::Verdict,
        rollout::{Rollout, RolloutAction, RolloutEnd, RolloutKind, RolloutStep},
        transition_tracker::TransitionEvent,
    },
    cli::{self, ApplyArgs, RevertArgs, RolloutArgs},
    commands::{
        check::{CheckRequest, Checked, check},
        event_lines::EventLines,
        output,
        stop_signals::{StopSignal, StopSignals},
    },
    feed::{feed_thread::FeedThread, transition_feed::TransitionFeed},
    kernel::{
        clock::monotonic_ns,
        livepatch_module::{LivepatchModule, ModuleImage, open_livepatch_module},
        livepatch_write::{
            LoadRefused, TransitionWrite, UnloadRefused, disable_patch, load_module, unload_module,
            write_confirmed,
        },
        read_kernel,
    },
    views::{
        check_report::render_text,
        json_output::{CheckEvent, CheckStep},
        rollout_lines::describe_step,
        style::Color,
        tui::{
            app::App,
            handler::{Request, handle_key},
            terminal::TerminalSession,
        },
    },
};

/// How long an unload may be retried: the kernel drops its reference to a
/// disabled patch's module from a work item, just after the transition.
const UNLOAD_FOR: Duration = Duration::from_secs(10);

/// The change a rollout makes.
enum Change {
    Load { image: ModuleImage },
    Disable,
}

pub fn apply(root: &Path, args: &ApplyArgs, color: Color) -> Result<ExitCode> {
    supported(root, "apply")?;
    let (module, image) = open_livepatch_module(&args.module)?;
    names_as_on_the_command_line(&module, &image)?;
    let patch = module.name.clone();
    let checked = check(root, check_request(Some(module), None, &args.rollout))?;
    let (kind, change) = (RolloutKind::Apply, Change::Load { image });
    let rollout = rollout(root, kind, &patch, change, checked, &args.rollout, color);
    super::block_on(rollout)
}

pub fn revert(root: &Path, args: &RevertArgs, color: Color) -> Result<ExitCode> {
    supported(root, "revert")?;
    let request = check_request(None, Some(&args.patch), &args.rollout);
    let checked = check(root, request)?;
    let (kind, change) = (RolloutKind::Revert, Change::Disable);
    let rollout = rollout(
        root,
        kind,
        &args.patch,
        change,
        checked,
        &args.rollout,
        color,
    );
    super::block_on(rollout)
}

/// The module's names are its author's: the patch's name builds the sysfs
/// paths of the back-out and the unload, so they pass the checks that the
/// same names given on the command line pass, before anything is done.
fn names_as_on_the_command_line(module: &LivepatchModule, image: &ModuleImage) -> Result<()> {
    let refuse =
        |what: &str, name: &str, why: String| anyhow!("{}: {what} {name:?} is {why}", image.path);
    cli::module_name(&module.name).map_err(|why| refuse("its name", &module.name, why))?;
    for object in &module.objects {
        if let Some(name) = &object.name {
            cli::module_name(name).map_err(|why| refuse("the object", name, why))?;
        }
        for function in &object.functions {
            cli::function_spec(&function.name)
                .map_err(|why| refuse("the function", &function.name, why))?;
        }
    }
    Ok(())
}

/// The check before the change: of the module to load, or of the patch to
/// disable.
fn check_request<'a>(
    module: Option<LivepatchModule>,
    patch: Option<&'a str>,
    args: &RolloutArgs,
) -> CheckRequest<'a> {
    CheckRequest {
        functions: &[],
        object: None,
        module,
        patch,
        duration: args.check_duration,
        no_ebpf: args.no_ebpf,
    }
}

fn supported(root: &Path, verb: &str) -> Result<()> {
    let kernel = read_kernel(root);
    if !kernel.livepatch_supported {
        let reason = kernel.problems.first().map_or("", String::as_str);
        bail!("cannot {verb}: {reason}");
    }
    Ok(())
}

async fn rollout(
    root: &Path,
    kind: RolloutKind,
    patch: &str,
    change: Change,
    checked: Checked,
    args: &RolloutArgs,
    color: Color,
) -> Result<ExitCode> {
    let interactive = !args.plain && !args.json && io::stdout().is_terminal();
    let mut lines = EventLines::new(args.json, color);
    if args.json {
        lines.emit_json(&CheckStep {
            event: CheckEvent::Check,
            check: checked.view(),
        })?;
    } else {
        output::print(&render_text(&checked.view(), color))?;
    }
    let end = match checked.readiness.verdict {
        Verdict::NotReady => Some(RolloutEnd::NotReady),
        Verdict::Warnings
            if checked.readiness.asks_to_confirm() && !args.yes && !confirmed(kind, patch) =>
        {
            Some(RolloutEnd::NotConfirmed)
        }
        _ => None,
    };
    if let Some(end) = end {
        return finish(&mut lines, kind, patch, end);
    }

    // The feed follows the kernel before anything changes: a transition of
    // milliseconds is still seen.
    let feed = TransitionFeed::open(root, args.no_ebpf)?;
    let mut signals = StopSignals::new().context("installing signal handlers")?;
    let mut feed = FeedThread::start(feed)?;
    let mut live = LiveState::new(Some(patch.to_owned()));
    tokio::select! {
        round = feed.next() => { live.apply_all(round?); }
        stop = signals.recv() => return Ok(stop.exit_code()),
    }
    if !interactive {
        lines.ready(&feed.capabilities)?;
    }
    if args.dry_run {
        return finish(&mut lines, kind, patch, RolloutEnd::DryRun);
    }

    let started = monotonic_ns();
    let first = match change {
        Change::Load { image } => match load_module(root, &image, patch) {
            Ok(()) => RolloutStep::Loaded {
                patch: patch.to_owned(),
                module: image.path.clone(),
            },
            Err(LoadRefused::Kernel { why, .. }) => {
                lines.emit(&[TransitionEvent::Refused {
                    patch: patch.to_owned(),
                    why,
                }])?;
                return finish(&mut lines, kind, patch, RolloutEnd::Refused);
            }
            Err(changed) => return Err(changed.into()),
        },
        Change::Disable => match disable_patch(root, patch) {
            Ok(_) => RolloutStep::Disabling {
                patch: patch.to_owned(),
            },
            Err(refused) => {
                let what = refused.to_string();
                lines.emit_steps(&[RolloutStep::Failed {
                    patch: patch.to_owned(),
                    what,
                }])?;
                return finish(&mut lines, kind, patch, RolloutEnd::Refused);
            }
        },
    };
    let rollout = Rollout::new(kind, patch, started, args.deadline);
    let mut output = if interactive {
        let session = TerminalSession::enter().context("setting up the terminal")?;
        let release = read_kernel(root).release;
        let mut app = App::new(release, feed.capabilities.clone(), Some(patch.to_owned()));
        app.live = live;
        Output::Tui {
            session,
            app: Box::new(app),
            said: Vec::new(),
        }
    } else {
        Output::Lines {
            lines,
            live: Box::new(live),
        }
    };
    let mut keys = interactive.then(EventStream::new);
    output.steps(&[first])?;
    let mut sources = Sources {
        feed: &mut feed,
        signals: &mut signals,
        keys: &mut keys,
    };
    let code = follow(root, rollout, &mut sources, &mut output).await?;
    output.close()?;
    Ok(ExitCode::from(code))
}

/// Asks on the terminal whether to go on despite the check's warnings; no
/// terminal, no yes.
fn confirmed(kind: RolloutKind, patch: &str) -> bool {
    if !io::stdin().is_terminal() || !io::stderr().is_terminal() {
        output::note("the check found warnings: --yes goes on anyway (nobody to ask here)");
        return false;
    }
    let verb = match kind {
        RolloutKind::Apply => "apply",
        RolloutKind::Revert => "revert",
    };
    eprint!("the check found warnings (above): {verb} {patch} anyway? [y/N] ");
    let _ = io::stderr().flush();
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "Y" | "yes")
}

fn finish(
    lines: &mut EventLines,
    kind: RolloutKind,
    patch: &str,
    end: RolloutEnd,
) -> Result<ExitCode> {
    lines.emit_steps(&[RolloutStep::finished(kind, patch, end)])?;
    Ok(ExitCode::from(end.exit_code()))
}

/// What the rollout listens to while the transition runs.
struct Sources<'a> {
    feed: &'a mut FeedThread,
    signals: &'a mut StopSignals,
    /// The terminal's keys, with the TUI.
    keys: &'a mut Option<EventStream>,
}

async fn next_key(keys: &mut Option<EventStream>) -> Option<crossterm::event::KeyEvent> {
    match keys {
        Some(keys) => match keys.next().await {
            Some(Ok(Event::Key(key))) => Some(key),
            _ => None,
        },
        None => std::future::pending().await,
    }
}

/// The transition followed until the rollout ends.
async fn follow(
    root: &Path,
    mut rollout: Rollout,
    sources: &mut Sources<'_>,
    output: &mut Output,
) -> Result<u8> {
    let mut ticks = interval(Duration::from_millis(250));
    loop {
        let mut steps = Vec::new();
        let action = tokio::select! {
            round = sources.feed.next() => {
                let events = output.apply(round?)?;
                rollout.on_events(&events, &mut steps)
            }
            _ = ticks.tick() => rollout.on_tick(monotonic_ns(), &output.live().tracker, &mut steps),
            stop = sources.signals.recv() => {
                let asks = stop == StopSignal::Interrupt;
                rollout.on_interrupt(stop.name(), asks, monotonic_ns(), &mut steps)
            }
            Some(key) = next_key(sources.keys) => match output.key(key) {
                Some(Request::Quit | Request::Interrupt) => {
                    rollout.on_interrupt("Ctrl-C", true, monotonic_ns(), &mut steps)
                }
                Some(Request::Write(write)) => {
                    let outcome = write_confirmed(root, &write);
                    output.note(&outcome.map_or_else(|e| e.to_string(), |w| w.to_string()));
                    None
                }
                None => None,
            },
        };
        output.steps(&steps)?;
        let mut next = action;
        while let Some(action) = next.take() {
            let mut steps = Vec::new();
            next = match action {
                RolloutAction::Exit(code) => return Ok(code),
                RolloutAction::Reverse { from } => {
                    let write = TransitionWrite::Reverse {
                        patch: rollout.patch.clone(),
                        from,
                    };
                    if let Err(refused) = write_confirmed(root, &write) {
                        rollout.reverse_refused(&refused.to_string(), &mut steps);
                    }
                    None
                }
                RolloutAction::Unload => {
                    let failure = unload(root, &rollout.patch).await;
                    Some(rollout.unloaded(&rollout.patch.clone(), failure, &mut steps))
                }
            };
            output.steps(&steps)?;
        }
        output.draw()?;
    }
}

/// Unloads the patch's module, retrying while the kernel still holds it;
/// the failure said in one sentence.
async fn unload(root: &Path, module: &str) -> Option<String> {
    let until = Instant::now() + UNLOAD_FOR;
    loop {
        let error = match unload_module(root, module) {
            Ok(()) => return None,
            Err(error) => error,
        };
        let busy = match &error {
            UnloadRefused::PatchActive { .. } => true,
            UnloadRefused::Kernel { error, .. } => {
                matches!(error.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN))
            }
        };
        if !busy || Instant::now() >= until {
            return Some(format!("{error}: unload it with `rmmod {module}`"));
        }
        sleep(Duration::from_millis(200)).await;
    }
}

/// Where the rollout shows itself: lines (text or JSON), or the watch TUI
/// with its steps in the footer.
enum Output {
    Lines {
        lines: EventLines,
        live: Box<LiveState>,
    },
    Tui {
        session: TerminalSession,
        app: Box<App>,
        /// Every step, printed once the terminal is restored.
        said: Vec<String>,
    },
}

impl Output {
    fn live(&self) -> &LiveState {
        match self {
            Output::Lines { live, .. } => live,
            Output::Tui { app, .. } => &app.live,
        }
    }

    fn apply(&mut self, round: Vec<Observation>) -> Result<Vec<TransitionEvent>> {
        Ok(match self {
            Output::Lines { lines, live } => {
                let events = live.apply_all(round);
                lines.emit(&events)?;
                events
            }
            Output::Tui { app, .. } => app.apply(round),
        })
    }

    fn steps(&mut self, steps: &[RolloutStep]) -> Result<()> {
        match self {
            Output::Lines { lines, .. } => lines.emit_steps(steps),
            Output::Tui { app, said, .. } => {
                for step in steps {
                    let sentence = describe_step(step);
                    app.message = Some(sentence.clone());
                    said.push(sentence);
                }
                Ok(())
            }
        }
    }

    fn note(&mut self, sentence: &str) {
        match self {
            Output::Lines { .. } => output::note(sentence),
            Output::Tui { app, .. } => app.message = Some(sentence.to_owned()),
        }
    }

    /// A key of the TUI, into what it asks for.
    fn key(&mut self, key: crossterm::event::KeyEvent) -> Option<Request> {
        match self {
            Output::Lines { .. } => None,
            Output::Tui { app, .. } => handle_key(app, key),
        }
    }

    fn draw(&mut self) -> Result<()> {
        if let Output::Tui { session, app, .. } = self {
            session
                .terminal
                .draw(|frame| frame.render_widget(&**app, frame.area()))
                .context("drawing the screen")?;
        }
        Ok(())
    }

    /// Restores the terminal and says there what happened.
    fn close(self) -> Result<()> {
        if let Output::Tui { session, said, .. } = self {
            drop(session);
            output::print(&(said.join("\n") + "\n"))?;
        }
        Ok(())
    }
}
