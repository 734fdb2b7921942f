//! `klpscope watch`: the live feed's rounds, applied to the live state and
//! shown as a TUI or as lines, until the user, a signal, the timeout or
//! (with --until-complete) the transition ends it.
use std::{
    io::{self, IsTerminal},
    path::Path,
    process::ExitCode,
    time::Duration,
};

use anyhow::Result;
use tokio::time::Instant;

use crate::{
    analysis::{live_state::LiveState, transition_tracker::TransitionEvent},
    cli::WatchArgs,
    commands::{
        event_lines::EventLines,
        live_driver::{LiveDriver, Stop, StoppingRule, block_on},
        live_output::LiveOutput,
    },
    exit_code,
    kernel::read_kernel,
    model::LiveEvent,
    views::{style::Color, tui::app::App},
};

pub fn run(root: &Path, args: &WatchArgs, color: Color) -> Result<ExitCode> {
    block_on(watch(root, args, color))
}

async fn watch(root: &Path, args: &WatchArgs, color: Color) -> Result<ExitCode> {
    let kernel = read_kernel(root);
    if let Some(why) = kernel.livepatch.unsupported() {
        // No transition can ever come: waiting for one would only hang.
        anyhow::bail!("nothing to watch: {why}");
    }
    let interactive = !args.plain && !args.json && io::stdout().is_terminal();
    let mut driver = LiveDriver::start(root, args.no_ebpf)?;
    let mut output = if interactive {
        let capabilities = driver.capabilities().clone();
        LiveOutput::tui(App::new(kernel.release, capabilities, args.patch.clone()))?
    } else {
        let live = LiveState::new(args.patch.clone());
        LiveOutput::lines(EventLines::new(args.json, color), live)
    };
    let mut rule = UntilEnd {
        args,
        started: Instant::now(),
    };
    let code = driver.run(&mut rule, &mut output).await;
    output.close()?;
    Ok(ExitCode::from(code?))
}

/// watch ends on the user's word, a signal, `--timeout`, or with
/// `--until-complete` the transition's end.
struct UntilEnd<'a> {
    args: &'a WatchArgs,
    started: Instant,
}

impl StoppingRule for UntilEnd<'_> {
    fn deadline(&self) -> Option<Instant> {
        let secs = self.args.timeout?;
        Some(self.started + Duration::from_secs_f64(secs))
    }

    async fn on_events(
        &mut self,
        events: &[TransitionEvent],
        _output: &mut LiveOutput,
    ) -> Result<Option<u8>> {
        Ok(ended(events, self.args))
    }

    async fn on_deadline(&mut self, output: &mut LiveOutput) -> Result<Option<u8>> {
        let secs = self.started.elapsed().as_secs_f64();
        output.event(LiveEvent::Timeout { secs })?;
        Ok(Some(exit_code::TIMED_OUT))
    }

    async fn on_stop(&mut self, stop: Stop, output: &mut LiveOutput) -> Result<Option<u8>> {
        Ok(Some(match stop {
            Stop::Signal(signal) => {
                // Said if it can be: the pipe may be what went away.
                let _ = output.event(signal.event());
                signal.exit_code()
            }
            Stop::Quit => exit_code::SUCCESS,
            Stop::CtrlC => exit_code::INTERRUPTED,
        }))
    }
}

/// With `--until-complete`, the transition's end as the exit code.
fn ended(events: &[TransitionEvent], args: &WatchArgs) -> Option<u8> {
    if !args.until_complete {
        return None;
    }
    events.iter().find_map(|event| match event {
        TransitionEvent::Complete { reversed: true, .. } => Some(exit_code::REVERSED),
        TransitionEvent::Complete { .. } => Some(exit_code::SUCCESS),
        // The transition waited for will never come.
        TransitionEvent::Refused { patch, .. }
            if args.patch.as_ref().is_none_or(|p| p == patch) =>
        {
            Some(exit_code::REFUSED)
        }
        _ => None,
    })
}
