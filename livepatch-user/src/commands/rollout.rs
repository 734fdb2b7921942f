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

use anyhow::{Result, anyhow, bail};
use tokio::time::{Instant, sleep};

use crate::{
    analysis::{
        live_state::LiveState,
        readiness::Verdict,
        rollout::{Rollout, RolloutAction, RolloutEnd, RolloutKind, RolloutStep},
        transition_tracker::TransitionEvent,
    },
    cli::{self, ApplyArgs, RevertArgs, RolloutArgs},
    commands::{
        check::{CheckRequest, Checked, check},
        event_lines::EventLines,
        live_driver::{LiveDriver, Stop, StoppingRule, block_on},
        live_output::LiveOutput,
        output,
        stop_signals::StopSignal,
    },
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
        style::Color,
        tui::app::App,
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
    block_on(rollout)
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
    block_on(rollout)
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
            cli::function_name(&function.name)
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
    if let Some(why) = read_kernel(root).livepatch.unsupported() {
        bail!("cannot {verb}: {why}");
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
    let mut driver = LiveDriver::start(root, args.no_ebpf)?;
    let mut live = LiveState::new(Some(patch.to_owned()));
    if let Some(code) = driver.first_round(&mut live).await? {
        return Ok(ExitCode::from(code));
    }
    if !interactive {
        lines.ready(driver.capabilities())?;
    }
    if args.dry_run {
        return finish(&mut lines, kind, patch, RolloutEnd::DryRun);
    }

    let started = monotonic_ns();
    let first = match make(root, change, patch, &mut lines)? {
        Ok(first) => first,
        Err(end) => return finish(&mut lines, kind, patch, end),
    };
    let mut output = if interactive {
        let release = read_kernel(root).release;
        let capabilities = driver.capabilities().clone();
        let mut app = App::new(release, capabilities.clone(), Some(patch.to_owned()));
        app.live = live;
        let mut output = LiveOutput::tui(app)?;
        output.ready(&capabilities)?;
        output
    } else {
        LiveOutput::lines(lines, live)
    };
    output.steps(&[first])?;
    let mut rule = Guarded {
        root,
        rollout: Rollout::new(kind, patch, started, args.deadline),
    };
    let code = driver.run(&mut rule, &mut output).await;
    output.close()?;
    Ok(ExitCode::from(code?))
}

/// Loads the module or disables the patch: the first step, or how the
/// rollout ends when the kernel refuses.
fn make(
    root: &Path,
    change: Change,
    patch: &str,
    lines: &mut EventLines,
) -> Result<Result<RolloutStep, RolloutEnd>> {
    Ok(match change {
        Change::Load { image } => match load_module(root, &image, patch) {
            Ok(()) => Ok(RolloutStep::Loaded {
                patch: patch.to_owned(),
                module: image.path.clone(),
            }),
            Err(LoadRefused::Kernel { why, .. }) => {
                lines.emit(&[TransitionEvent::Refused {
                    patch: patch.to_owned(),
                    why,
                }])?;
                Err(RolloutEnd::Refused)
            }
            Err(changed) => return Err(changed.into()),
        },
        Change::Disable => match disable_patch(root, patch) {
            Ok(_) => Ok(RolloutStep::Disabling {
                patch: patch.to_owned(),
            }),
            Err(refused) => {
                lines.emit_steps(&[RolloutStep::Failed {
                    patch: patch.to_owned(),
                    what: refused.to_string(),
                }])?;
                Err(RolloutEnd::Refused)
            }
        },
    })
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

/// A rollout's rule: the transition followed until it completes, or
/// backed out past the deadline or on the user's word.
struct Guarded<'a> {
    root: &'a Path,
    rollout: Rollout,
}

impl Guarded<'_> {
    /// Shows the steps, then does what the rollout asked for, and what
    /// that in turn asks for; the exit code once it says to end.
    async fn act(
        &mut self,
        steps: Vec<RolloutStep>,
        mut next: Option<RolloutAction>,
        output: &mut LiveOutput,
    ) -> Result<Option<u8>> {
        output.steps(&steps)?;
        while let Some(action) = next.take() {
            let mut steps = Vec::new();
            next = match action {
                RolloutAction::Exit(code) => return Ok(Some(code)),
                RolloutAction::Reverse { from } => {
                    let write = TransitionWrite::Reverse {
                        patch: self.rollout.patch.clone(),
                        from,
                    };
                    if let Err(refused) = write_confirmed(self.root, &write) {
                        self.rollout
                            .reverse_refused(&refused.to_string(), &mut steps);
                    }
                    None
                }
                RolloutAction::Unload => {
                    let patch = self.rollout.patch.clone();
                    let failure = unload(self.root, &patch).await;
                    Some(self.rollout.unloaded(&patch, failure, &mut steps))
                }
            };
            output.steps(&steps)?;
        }
        Ok(None)
    }
}

impl StoppingRule for Guarded<'_> {
    fn ticks(&self) -> Option<Duration> {
        Some(Duration::from_millis(250))
    }

    async fn on_events(
        &mut self,
        events: &[TransitionEvent],
        output: &mut LiveOutput,
    ) -> Result<Option<u8>> {
        let mut steps = Vec::new();
        let action = self.rollout.on_events(events, &mut steps);
        self.act(steps, action, output).await
    }

    async fn on_tick(&mut self, output: &mut LiveOutput) -> Result<Option<u8>> {
        let mut steps = Vec::new();
        let tracker = &output.live().tracker;
        let action = self.rollout.on_tick(monotonic_ns(), tracker, &mut steps);
        self.act(steps, action, output).await
    }

    async fn on_stop(&mut self, stop: Stop, output: &mut LiveOutput) -> Result<Option<u8>> {
        let (name, asks) = match stop {
            Stop::Signal(signal) => (signal.name(), signal == StopSignal::Interrupt),
            Stop::Quit | Stop::CtrlC => ("Ctrl-C", true),
        };
        let mut steps = Vec::new();
        let action = self
            .rollout
            .on_interrupt(name, asks, monotonic_ns(), &mut steps);
        self.act(steps, action, output).await
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
