//! `klpscope watch`: the live feed's rounds, applied to the live state and
//! shown as a TUI or as lines, until the user, a signal, the timeout or
//! (with --until-complete) the transition ends it.
use std::{
    io::{self, IsTerminal},
    path::Path,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result};
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use tokio::time::{Instant, sleep_until};

use crate::{
    analysis::{
        live_state::LiveState, observation::Observation, transition_tracker::TransitionEvent,
    },
    cli::WatchArgs,
    commands::{
        event_lines::EventLines,
        output,
        stop_signals::{StopSignal, StopSignals},
    },
    feed::{feed_thread::FeedThread, transition_feed::TransitionFeed},
    kernel::{
        livepatch_write::{TransitionWrite, write_confirmed},
        read_kernel,
    },
    views::{
        style::Color,
        tui::{
            app::App,
            handler::{Request, handle_key},
            terminal::TerminalSession,
        },
    },
};

pub const EXIT_REVERSED: u8 = 5;
pub const EXIT_TIMED_OUT: u8 = 6;
pub const EXIT_REFUSED: u8 = 7;

/// A hidden switch for the VM lab's detach test: panic once ready.
const DEBUG_PANIC: &str = "KLPSCOPE_DEBUG_PANIC";

pub fn run(root: &Path, args: &WatchArgs, color: Color) -> Result<ExitCode> {
    super::block_on(watch(root, args, color))
}

async fn watch(root: &Path, args: &WatchArgs, color: Color) -> Result<ExitCode> {
    let kernel = read_kernel(root);
    if !kernel.livepatch_supported {
        // No transition can ever come: waiting for one would only hang.
        let reason = kernel.problems.first().map_or("", String::as_str);
        anyhow::bail!("nothing to watch: {reason}");
    }
    let interactive = !args.plain && !args.json && io::stdout().is_terminal();
    // Loading the probes takes a moment; until the handlers below are in
    // place a signal ends klpscope the default way, which detaches them too.
    let feed = TransitionFeed::open(root, args.no_ebpf)?;
    let deadline = args
        .timeout
        .map(|secs| Instant::now() + Duration::from_secs_f64(secs));
    let signals = StopSignals::new().context("installing signal handlers")?;
    let feed = FeedThread::start(feed)?;
    if interactive {
        let app = App::new(
            kernel.release,
            feed.capabilities.clone(),
            args.patch.clone(),
        );
        run_tui(root, feed, signals, app, args, deadline).await
    } else {
        let live = LiveState::new(args.patch.clone());
        run_lines(feed, signals, live, args, deadline, color).await
    }
}

/// How the loop ends, as the exit code the CLI documents.
fn exit_for(events: &[TransitionEvent], args: &WatchArgs) -> Option<ExitCode> {
    if !args.until_complete {
        return None;
    }
    events.iter().find_map(|event| match event {
        TransitionEvent::Complete { reversed: true, .. } => Some(ExitCode::from(EXIT_REVERSED)),
        TransitionEvent::Complete { .. } => Some(ExitCode::SUCCESS),
        // The transition waited for will never come.
        TransitionEvent::Refused { patch, .. }
            if args.patch.as_ref().is_none_or(|p| p == patch) =>
        {
            Some(ExitCode::from(EXIT_REFUSED))
        }
        _ => None,
    })
}

fn panic_if_asked() {
    if std::env::var_os(DEBUG_PANIC).is_some_and(|value| value == "1") {
        panic!("{DEBUG_PANIC}=1: panicking on purpose once ready");
    }
}

async fn run_lines(
    mut feed: FeedThread,
    mut signals: StopSignals,
    mut live: LiveState,
    args: &WatchArgs,
    deadline: Option<Instant>,
    color: Color,
) -> Result<ExitCode> {
    if let Some(reason) = &feed.capabilities.polling {
        output::note(&format!(
            "eBPF unavailable ({reason}): following transitions by polling /proc and /sys"
        ));
    }
    let mut lines = EventLines::new(args.json, color);
    let mut announced = false;
    let closed = output::stdout_closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            () = &mut closed => return Ok(ExitCode::from(output::EXIT_OUTPUT_CLOSED)),
            round = feed.next() => {
                let events = live.apply_all(round?);
                if !announced {
                    announced = true;
                    lines.ready(&feed.capabilities)?;
                    panic_if_asked();
                }
                lines.emit(&events)?;
                if let Some(code) = exit_for(&events, args) {
                    return Ok(code);
                }
            }
            _ = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                lines.timeout()?;
                return Ok(ExitCode::from(EXIT_TIMED_OUT));
            }
            stop = signals.recv() => {
                // Said if it can be: the pipe may be what went away.
                let _ = lines.emit(&[stop.event()]);
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
                let events = app.apply(round?);
                if !announced {
                    announced = true;
                    app.note(TransitionEvent::ready(&feed.capabilities));
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
                let secs = started.elapsed().as_secs_f64();
                app.note(TransitionEvent::Timeout { secs });
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
                app.apply(vec![Observation::ForceWritten]);
            }
            written.to_string()
        }
        Err(refused) => refused.to_string(),
    });
}

pub fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}
