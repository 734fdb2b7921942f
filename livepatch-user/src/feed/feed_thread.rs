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

/// A round of observations every `POLL_EVERY`, until this handle is
/// dropped; the probes go with the thread.
pub struct FeedThread {
    pub capabilities: FeedCapabilities,
    rounds: UnboundedReceiver<Result<Vec<Observation>>>,
    /// Dropping it tells the thread to stop (and drop the probes).
    _stop: std_mpsc::Sender<()>,
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
            capabilities,
            rounds,
            _stop: stop,
        })
    }

    /// The next round; cancel-safe, for `select!`.
    pub async fn next(&mut self) -> Result<Vec<Observation>> {
        match self.rounds.recv().await {
            Some(round) => round,
            None => anyhow::bail!("the feed thread stopped unexpectedly"),
        }
    }
}
