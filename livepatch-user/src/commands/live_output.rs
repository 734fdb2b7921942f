//! Where a live command shows what the feed sees: lines (text or JSON),
//! the TUI, or serve's metrics. Each owns the live state it renders.
use std::sync::Arc;

use anyhow::{Context, Result};
use crossterm::event::KeyEvent;
use tokio::sync::watch;

use crate::{
    analysis::{
        fleet_metrics::{FleetMetrics, LiveExport},
        live_state::LiveState,
        observation::Observation,
        rollout::RolloutStep,
        transition_tracker::TransitionEvent,
    },
    commands::{event_lines::EventLines, output},
    model::{FeedCapabilities, LiveEvent},
    views::{
        rollout_lines::describe_step,
        tui::{
            app::App,
            handler::{Request, handle_key},
            terminal::TerminalSession,
        },
    },
};

/// serve's metrics as the last round left them; None until the first.
pub type Published = watch::Sender<Option<Arc<FleetMetrics>>>;

pub enum LiveOutput {
    Lines {
        lines: EventLines,
        live: Box<LiveState>,
    },
    Tui {
        session: TerminalSession,
        app: Box<App>,
        /// A rollout's steps, printed once the terminal is restored.
        said: Vec<String>,
    },
    Metrics {
        export: Box<LiveExport>,
        publish: Published,
        capabilities: FeedCapabilities,
    },
}

impl LiveOutput {
    pub fn lines(lines: EventLines, live: LiveState) -> Self {
        LiveOutput::Lines {
            lines,
            live: Box::new(live),
        }
    }

    /// Takes over the terminal until `close`.
    pub fn tui(app: App) -> Result<Self> {
        let session = TerminalSession::enter().context("setting up the terminal")?;
        Ok(LiveOutput::Tui {
            session,
            app: Box::new(app),
            said: Vec::new(),
        })
    }

    pub fn metrics(export: LiveExport, publish: Published, capabilities: FeedCapabilities) -> Self {
        LiveOutput::Metrics {
            export: Box::new(export),
            publish,
            capabilities,
        }
    }

    pub fn live(&self) -> &LiveState {
        match self {
            LiveOutput::Lines { live, .. } => live,
            LiveOutput::Tui { app, .. } => &app.live,
            LiveOutput::Metrics { export, .. } => export.live(),
        }
    }

    pub fn is_tui(&self) -> bool {
        matches!(self, LiveOutput::Tui { .. })
    }

    /// Lines are all there is to say: once nobody reads them, the
    /// command has nothing left to do.
    pub fn watches_stdout(&self) -> bool {
        matches!(self, LiveOutput::Lines { .. })
    }

    /// How the feed follows transitions, said before the first events.
    pub fn ready(&mut self, capabilities: &FeedCapabilities) -> Result<()> {
        let polling = |reason: &String| {
            output::note(&format!(
                "eBPF unavailable ({reason}): following transitions by polling /proc and /sys"
            ));
        };
        match self {
            LiveOutput::Lines { lines, .. } => {
                capabilities.polling.iter().for_each(polling);
                lines.ready(capabilities)
            }
            LiveOutput::Tui { app, .. } => {
                app.note(LiveEvent::ready(capabilities));
                Ok(())
            }
            LiveOutput::Metrics { .. } => {
                capabilities.polling.iter().for_each(polling);
                Ok(())
            }
        }
    }

    /// Applies a round to the live state and shows its events.
    pub fn apply(&mut self, round: Vec<Observation>) -> Result<Vec<TransitionEvent>> {
        Ok(match self {
            LiveOutput::Lines { lines, live } => {
                let events = live.apply_all(round);
                lines.emit(&events)?;
                events
            }
            LiveOutput::Tui { app, .. } => app.apply(round),
            LiveOutput::Metrics {
                export,
                publish,
                capabilities,
            } => {
                let events = export.apply(round);
                publish.send_replace(Some(Arc::new(export.metrics(capabilities))));
                events
            }
        })
    }

    /// An event of the command's own (a timeout, a signal), shown like
    /// the transition's.
    pub fn event(&mut self, event: LiveEvent) -> Result<()> {
        match self {
            LiveOutput::Lines { lines, .. } => lines.emit_live(&event),
            LiveOutput::Tui { app, .. } => {
                app.note(event);
                Ok(())
            }
            LiveOutput::Metrics { .. } => Ok(()),
        }
    }

    pub fn steps(&mut self, steps: &[RolloutStep]) -> Result<()> {
        match self {
            LiveOutput::Lines { lines, .. } => lines.emit_steps(steps),
            LiveOutput::Tui { app, said, .. } => {
                for step in steps {
                    let sentence = describe_step(step);
                    app.message = Some(sentence.clone());
                    said.push(sentence);
                }
                Ok(())
            }
            LiveOutput::Metrics { .. } => Ok(()),
        }
    }

    /// One sentence for the user: the TUI's message line, else stderr.
    pub fn note(&mut self, sentence: &str) {
        match self {
            LiveOutput::Tui { app, .. } => app.message = Some(sentence.to_owned()),
            _ => output::note(sentence),
        }
    }

    /// A key of the TUI, into what it asks for.
    pub fn key(&mut self, key: KeyEvent) -> Option<Request> {
        match self {
            LiveOutput::Tui { app, .. } => handle_key(app, key),
            _ => None,
        }
    }

    pub fn draw(&mut self) -> Result<()> {
        if let LiveOutput::Tui { session, app, .. } = self {
            session
                .terminal
                .draw(|frame| frame.render_widget(&**app, frame.area()))
                .context("drawing the screen")?;
        }
        Ok(())
    }

    /// Restores the terminal and says there what the TUI said in passing.
    pub fn close(self) -> Result<()> {
        if let LiveOutput::Tui { session, said, .. } = self {
            drop(session);
            if !said.is_empty() {
                output::print(&(said.join("\n") + "\n"))?;
            }
        }
        Ok(())
    }
}
