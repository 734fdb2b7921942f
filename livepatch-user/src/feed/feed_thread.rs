//! The live feed on its own thread: reading /proc and /sys can take
//! seconds on a large machine, and the event loop must answer keys,
//! timeouts and signals meanwhile.
use std::{
    sync::mpsc::{self as std_mpsc, RecvTimeoutError},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::transition_feed::TransitionFeed;
use crate::{analysis::observation::Observation, model::FeedCapabilities};

/// Twice per kernel retry round, so that a short transition is still seen.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// With the tracer, a round also starts as soon as it reports something
/// (a transition starting or ending, a verdict), so that its line follows
/// within tens of milliseconds; but no sooner than this after the last
/// round began, so that a burst of events is read in one round.
const EARLIEST_AFTER: Duration = Duration::from_millis(20);

/// Nor sooner than this many times the last round's cost after it: a round
/// scans every thread, and the feed must not take a whole CPU on a machine
/// with many.
const COST_FACTOR: u32 = 4;

/// How often a wait for the tracer looks whether the feed was dropped.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// A round of observations every `POLL_EVERY`, and sooner when the tracer
/// has news, until this handle is dropped; the probes go with the thread.
pub struct FeedThread {
    pub capabilities: FeedCapabilities,
    rounds: UnboundedReceiver<Result<Vec<Observation>>>,
    /// Dropping it tells the thread to stop (and drop the probes).
    _stop: std_mpsc::Sender<()>,
}

/// Why the wait between two rounds ended.
#[derive(PartialEq)]
enum Wait {
    NextRound,
    Stop,
}

/// Waits until the next round is due: `POLL_EVERY` after `started`, or
/// earlier when the tracer reports something (not before `earliest`).
fn wait_for_round(
    feed: &TransitionFeed,
    stopped: &std_mpsc::Receiver<()>,
    started: Instant,
    earliest: Instant,
) -> Wait {
    let due = started + POLL_EVERY;
    let stop_requested =
        |timeout: Duration| stopped.recv_timeout(timeout) != Err(RecvTimeoutError::Timeout);
    loop {
        let left = due.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Wait::NextRound;
        }
        match feed.wait_for_trace(left.min(STOP_CHECK)) {
            None if stop_requested(left) => return Wait::Stop,
            None => return Wait::NextRound,
            Some(true) => {
                let pause = earliest.saturating_duration_since(Instant::now());
                return if stop_requested(pause) {
                    Wait::Stop
                } else {
                    Wait::NextRound
                };
            }
            Some(false) if stop_requested(Duration::ZERO) => return Wait::Stop,
            Some(false) => {}
        }
    }
}

impl FeedThread {
    pub fn start(mut feed: TransitionFeed) -> Result<Self> {
        let capabilities = feed.capabilities().clone();
        let (send_round, rounds) = unbounded_channel();
        let (stop, stopped) = std_mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("klpscope-feed".into())
            .spawn(move || {
                loop {
                    let started = Instant::now();
                    let round = feed.read_round();
                    let failed = round
                        .as_ref()
                        .is_err_and(|error| !out_of_descriptors(error));
                    if send_round.send(round).is_err() || failed {
                        return;
                    }
                    let earliest = started + EARLIEST_AFTER.max(started.elapsed() * COST_FACTOR);
                    if wait_for_round(&feed, &stopped, started, earliest) == Wait::Stop {
                        return;
                    }
                }
            })
            .context("starting the feed thread")?;
        Ok(FeedThread {
            capabilities,
            rounds,
            _stop: stop,
        })
    }

    /// The next round; cancel-safe, for `select!`. A round that failed
    /// for want of descriptors (`out_of_descriptors`) is followed by the
    /// next one; any other failure is the last.
    pub async fn next(&mut self) -> Result<Vec<Observation>> {
        match self.rounds.recv().await {
            Some(round) => round,
            None => anyhow::bail!("the feed thread stopped unexpectedly"),
        }
    }
}

/// A round failed because the process or the system had no descriptor left
/// (EMFILE, ENFILE): another round may well succeed once some are closed.
pub fn out_of_descriptors(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|errno| matches!(errno, libc::EMFILE | libc::ENFILE))
    })
}
