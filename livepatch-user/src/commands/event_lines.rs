//! A live command's output without a terminal: one line per event (the
//! transition's, and a rollout's steps), as text or JSON.
use std::{
    io::{self, Write},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use tokio::time::Instant;

use crate::{
    analysis::{rollout::RolloutStep, transition_tracker::TransitionEvent},
    commands::output::{self, stdout_error},
    model::{FeedCapabilities, LiveEvent},
    views::{
        rollout_lines::{describe_step, step_tone},
        style::{Color, Tone},
        {
            watch_event::WatchEvent,
            watch_lines::{describe, json_line, plain_line, tone},
        },
    },
};

/// Lines for a script or a log: one per event, as text or JSON.
pub struct EventLines {
    json: bool,
    color: Color,
    started: Instant,
    stdout: io::StdoutLock<'static>,
}

impl EventLines {
    pub fn new(json: bool, color: Color) -> Self {
        EventLines {
            json,
            color,
            started: Instant::now(),
            stdout: io::stdout().lock(),
        }
    }

    pub fn emit(&mut self, events: &[TransitionEvent]) -> Result<()> {
        for event in events {
            let line = WatchEvent::Transition(event.clone());
            self.line(event, || (describe(&line), tone(&line)))?;
        }
        self.stdout.flush().map_err(stdout_error)
    }

    /// An event of the command's own.
    pub fn emit_live(&mut self, event: &LiveEvent) -> Result<()> {
        let line = WatchEvent::Live(event.clone());
        self.line(event, || (describe(&line), tone(&line)))?;
        self.stdout.flush().map_err(stdout_error)
    }

    /// A JSON document of its own (a report), as one line; nothing in
    /// text mode.
    pub fn emit_json(&mut self, document: &impl serde::Serialize) -> Result<()> {
        if self.json {
            self.line(document, || (String::new(), None))?;
        }
        self.stdout.flush().map_err(stdout_error)
    }

    pub fn emit_steps(&mut self, steps: &[RolloutStep]) -> Result<()> {
        for step in steps {
            self.line(step, || (describe_step(step), step_tone(step)))?;
        }
        self.stdout.flush().map_err(stdout_error)
    }

    fn line(
        &mut self,
        event: &impl serde::Serialize,
        sentence: impl FnOnce() -> (String, Option<Tone>),
    ) -> Result<()> {
        let line = if self.json {
            json_line(event, wall_clock_secs())
        } else {
            let (sentence, tone) = sentence();
            let secs = self.started.elapsed().as_secs_f64();
            plain_line(&sentence, tone, secs, self.color)
        };
        writeln!(self.stdout, "{line}").map_err(stdout_error)
    }

    /// Says how the feed follows transitions: in JSON the `ready` event, in
    /// text lines on stderr (stdout keeps the events).
    pub fn ready(&mut self, feed: &FeedCapabilities) -> Result<()> {
        let ready = LiveEvent::ready(feed);
        if self.json {
            self.emit_live(&ready)?;
        } else {
            output::note(&describe(&ready.into()));
        }
        if let Some(why) = &feed.verdicts_inferred {
            output::note(&format!("blockers are inferred from stacks: {why}"));
        }
        // Without eBPF at all the ready line has said so already.
        if let Some(why) = feed.tasks_from_procfs.as_ref().filter(|_| feed.ebpf()) {
            output::note(&format!("threads are read from procfs: {why}"));
        }
        Ok(())
    }
}

fn wall_clock_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
