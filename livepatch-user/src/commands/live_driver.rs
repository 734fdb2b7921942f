//! The one event loop of the live commands (watch, apply, revert, serve).
//! It owns the feed thread, the stop signals and the terminal's keys, and
//! hands every round to a `LiveOutput`; a command supplies only what
//! differs, its `StoppingRule`: when to end, and what to do on the way.
use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use crossterm::event::{Event, EventStream, KeyEvent};
use futures_util::StreamExt;
use tokio::time::{Instant, Interval, interval, sleep_until};

use crate::{
    analysis::{
        live_state::LiveState, observation::Observation, transition_tracker::TransitionEvent,
    },
    commands::{
        live_output::LiveOutput,
        output,
        stop_signals::{StopSignal, StopSignals},
    },
    exit_code,
    feed::{
        feed_thread::{FeedThread, out_of_descriptors},
        transition_feed::TransitionFeed,
    },
    kernel::livepatch_write::{TransitionWrite, write_confirmed},
    model::FeedCapabilities,
    views::tui::handler::Request,
};

/// Runs a live command's event loop: one thread answers the feed's rounds,
/// keys, timers and signals.
pub fn block_on(command: impl std::future::Future<Output = Result<ExitCode>>) -> Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(command)
}

/// What ended the user's patience: a signal, or a key of the TUI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Signal(StopSignal),
    /// `q` in the TUI, or its terminal gone.
    Quit,
    /// Ctrl-C in the TUI: raw mode makes it a key, not a signal.
    CtrlC,
}

/// Where a live command differs from the others. Each hook returns the
/// exit code that ends the loop, or None to go on.
pub trait StoppingRule {
    /// When the command gives up waiting, if ever.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// How often `on_tick` runs, if at all.
    fn ticks(&self) -> Option<Duration> {
        None
    }

    /// A round's transition events, already shown.
    async fn on_events(
        &mut self,
        events: &[TransitionEvent],
        output: &mut LiveOutput,
    ) -> Result<Option<u8>>;

    async fn on_tick(&mut self, _output: &mut LiveOutput) -> Result<Option<u8>> {
        Ok(None)
    }

    async fn on_deadline(&mut self, _output: &mut LiveOutput) -> Result<Option<u8>> {
        Ok(None)
    }

    async fn on_stop(&mut self, stop: Stop, output: &mut LiveOutput) -> Result<Option<u8>>;
}

/// A hidden switch for the VM lab's detach test: panic once ready.
const DEBUG_PANIC: &str = "KLPSCOPE_DEBUG_PANIC";

pub struct LiveDriver<'a> {
    root: &'a Path,
    feed: FeedThread,
    signals: StopSignals,
    announced: bool,
    said_skipped: bool,
}

impl<'a> LiveDriver<'a> {
    /// Attaches the feed. Until this returns a signal ends klpscope the
    /// default way, which detaches the probes too.
    pub fn start(root: &'a Path, no_ebpf: bool) -> Result<Self> {
        let feed = TransitionFeed::open(root, no_ebpf)?;
        let signals = StopSignals::new().context("installing signal handlers")?;
        Ok(LiveDriver {
            root,
            feed: FeedThread::start(feed)?,
            signals,
            announced: false,
            said_skipped: false,
        })
    }

    pub fn capabilities(&self) -> &FeedCapabilities {
        &self.feed.capabilities
    }

    /// The state before a command changes anything: the first round,
    /// applied to `live`. The command says it is ready in its own way (it
    /// has no live output yet). A signal meanwhile ends it with the
    /// signal's exit code.
    pub async fn first_round(&mut self, live: &mut LiveState) -> Result<Option<u8>> {
        loop {
            tokio::select! {
                round = self.feed.next() => {
                    if let Some(round) = self.usable(round)? {
                        self.announced = true;
                        panic_if_asked();
                        live.apply_all(round);
                        return Ok(None);
                    }
                }
                stop = self.signals.recv() => return Ok(Some(stop.exit_code())),
            }
        }
    }

    /// Follows the kernel until the rule ends it; the exit code.
    pub async fn run(
        &mut self,
        rule: &mut impl StoppingRule,
        output: &mut LiveOutput,
    ) -> Result<u8> {
        let mut ticks = rule.ticks().map(interval);
        let mut keys = output.is_tui().then(EventStream::new);
        let deadline = rule.deadline();
        let closed = output::stdout_closed();
        tokio::pin!(closed);
        loop {
            let end = tokio::select! {
                () = &mut closed, if output.watches_stdout() => Some(exit_code::OUTPUT_CLOSED),
                round = self.feed.next() => match self.usable(round)? {
                    Some(round) => {
                        self.announce(output)?;
                        let events = output.apply(round)?;
                        rule.on_events(&events, output).await?
                    }
                    None => None,
                },
                () = tick(&mut ticks) => rule.on_tick(output).await?,
                () = until(deadline) => rule.on_deadline(output).await?,
                stop = self.signals.recv() => rule.on_stop(Stop::Signal(stop), output).await?,
                input = next_input(&mut keys) => match input? {
                    Input::Key(key) => match output.key(key) {
                        Some(Request::Quit) => rule.on_stop(Stop::Quit, output).await?,
                        Some(Request::Interrupt) => rule.on_stop(Stop::CtrlC, output).await?,
                        Some(Request::Write(write)) => {
                            let events = self.write(&write, output)?;
                            rule.on_events(&events, output).await?
                        }
                        None => None,
                    },
                    Input::Redraw => None,
                    Input::Closed => rule.on_stop(Stop::Quit, output).await?,
                },
            };
            if let Some(code) = end {
                return Ok(code);
            }
            output.draw()?;
        }
    }

    /// A round, or None for one the feed skipped for want of descriptors:
    /// it goes on with the next, and so does the command (an exporter
    /// must outlive a flood of connections).
    fn usable(&mut self, round: Result<Vec<Observation>>) -> Result<Option<Vec<Observation>>> {
        match round {
            Ok(round) => Ok(Some(round)),
            Err(error) if out_of_descriptors(&error) => {
                if !std::mem::replace(&mut self.said_skipped, true) {
                    output::note(&format!(
                        "a reading was skipped: {error:#}; what is shown is the last one \
                         read until descriptors are free again"
                    ));
                }
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Said once, before the first round's events: from here on no
    /// transition goes unreported.
    fn announce(&mut self, output: &mut LiveOutput) -> Result<()> {
        if std::mem::replace(&mut self.announced, true) {
            return Ok(());
        }
        output.ready(&self.feed.capabilities)?;
        panic_if_asked();
        Ok(())
    }

    /// A write the user confirmed in the TUI; the events it makes. The
    /// kernel layer re-checks the transition before it writes; the
    /// outcome, written or refused, is what the user sees.
    fn write(
        &self,
        write: &TransitionWrite,
        output: &mut LiveOutput,
    ) -> Result<Vec<TransitionEvent>> {
        match write_confirmed(self.root, write) {
            Ok(written) => {
                output.note(&written.to_string());
                if matches!(write, TransitionWrite::Force { .. }) {
                    // Forced tasks never switch: nobody is left to wait for.
                    return output.apply(vec![Observation::ForceWritten]);
                }
            }
            Err(refused) => output.note(&refused.to_string()),
        }
        Ok(Vec::new())
    }
}

/// What the terminal said.
enum Input {
    Key(KeyEvent),
    /// A resize, or anything else that needs only a redraw.
    Redraw,
    Closed,
}

/// The terminal's next input; never, without a terminal.
async fn next_input(keys: &mut Option<EventStream>) -> Result<Input> {
    let Some(keys) = keys else {
        return std::future::pending().await;
    };
    match keys.next().await {
        Some(Ok(Event::Key(key))) => Ok(Input::Key(key)),
        Some(Ok(_)) => Ok(Input::Redraw),
        Some(Err(error)) => Err(error).context("reading the terminal"),
        None => Ok(Input::Closed),
    }
}

fn panic_if_asked() {
    if std::env::var_os(DEBUG_PANIC).is_some_and(|value| value == "1") {
        panic!("{DEBUG_PANIC}=1: panicking on purpose once ready");
    }
}

async fn tick(ticks: &mut Option<Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
