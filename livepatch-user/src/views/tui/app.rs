//! What the TUI shows: the live state, what the screen keeps of its
//! history (the event log, the call-rate sparklines), and the user's place
//! in it.
use std::collections::{BTreeMap, VecDeque};

use crate::{
    analysis::{
        blockers::Blocker,
        live_state::LiveState,
        observation::Observation,
        transition_tracker::{TransitionEvent, TransitionTracker},
    },
    kernel::livepatch_write::TransitionWrite,
    model::{FeedCapabilities, LiveEvent},
    views::watch_event::WatchEvent,
};

/// How many events the log keeps.
const LOG_LEN: usize = 200;
/// How many samples of calls per second the sparklines keep.
const CALL_HISTORY: usize = 60;

pub struct App {
    pub live: LiveState,
    pub feed: FeedCapabilities,
    pub kernel_release: String,
    /// The events so far, oldest first.
    pub log: VecDeque<LoggedEvent>,
    /// When the first observation came: the log's times count from here.
    pub started_ns: Option<u64>,
    /// Per counted function: calls per second on the old and on the new
    /// version, oldest first.
    pub call_history: BTreeMap<String, CallHistory>,
    pub screen: Screen,
    pub sort: SortKey,
    /// The selected blocker, by thread id: rows move as blockers come and
    /// go, the selection stays on its task.
    pub selected_tid: Option<u32>,
    /// The outcome of the last write, or why a key did nothing.
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoggedEvent {
    pub at_ns: u64,
    pub event: WatchEvent,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallHistory {
    pub old_per_sec: VecDeque<u64>,
    pub new_per_sec: VecDeque<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Screen {
    Main,
    /// The selected blocker's kernel stack.
    Stack,
    Confirm(Confirmation),
    Help,
}

/// A write waiting for the user's yes. Reverse takes `y`; force, the one
/// write that cannot be undone, takes the patch's name typed out and Enter.
/// Any other key cancels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmation {
    pub write: TransitionWrite,
    /// What the user typed so far (force only).
    pub typed: String,
}

impl Confirmation {
    pub fn new(write: TransitionWrite) -> Self {
        Confirmation {
            write,
            typed: String::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    BlockedFor,
    Pid,
    Comm,
    Reason,
}

impl SortKey {
    pub fn next(self) -> Self {
        match self {
            SortKey::BlockedFor => SortKey::Pid,
            SortKey::Pid => SortKey::Comm,
            SortKey::Comm => SortKey::Reason,
            SortKey::Reason => SortKey::BlockedFor,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortKey::BlockedFor => "blocked for",
            SortKey::Pid => "pid",
            SortKey::Comm => "comm",
            SortKey::Reason => "reason",
        }
    }
}

impl App {
    /// `watched`: the one patch to follow; None follows every patch.
    pub fn new(
        kernel_release: impl Into<String>,
        feed: FeedCapabilities,
        watched: Option<String>,
    ) -> Self {
        App {
            live: LiveState::new(watched),
            feed,
            kernel_release: kernel_release.into(),
            log: VecDeque::new(),
            started_ns: None,
            call_history: BTreeMap::new(),
            screen: Screen::Main,
            sort: SortKey::BlockedFor,
            selected_tid: None,
            message: None,
        }
    }

    pub fn tracker(&self) -> &TransitionTracker {
        &self.live.tracker
    }

    /// Applies one round of observations; returns its events, also kept
    /// in the log.
    pub fn apply(&mut self, observations: Vec<Observation>) -> Vec<TransitionEvent> {
        let mut events = Vec::new();
        for observation in observations {
            let sampled = matches!(observation, Observation::Calls(_));
            let polled = matches!(observation, Observation::Poll(_));
            let new = self.live.apply(observation);
            if polled {
                self.started_ns.get_or_insert(self.live.tracker.now_ns);
            }
            self.note_all(&new);
            events.extend(new);
            if sampled {
                self.sample_calls();
            }
        }
        self.dismiss_stale_confirmation();
        events
    }

    /// An event the command itself decided (ready, a timeout), logged
    /// like the rest.
    pub fn note(&mut self, event: LiveEvent) {
        self.log_event(event.into());
    }

    fn note_all(&mut self, events: &[TransitionEvent]) {
        for event in events {
            self.log_event(event.clone().into());
        }
    }

    fn log_event(&mut self, event: WatchEvent) {
        if self.log.len() == LOG_LEN {
            self.log.pop_front();
        }
        self.log.push_back(LoggedEvent {
            at_ns: self.live.tracker.now_ns,
            event,
        });
    }

    fn sample_calls(&mut self) {
        let functions = &self.live.calls.functions;
        self.call_history
            .retain(|name, _| functions.iter().any(|f| &f.function == name));
        for calls in functions {
            let history = self.call_history.entry(calls.function.clone()).or_default();
            if let (Some(old), Some(new)) = (calls.old_per_sec, calls.new_per_sec) {
                push_capped(&mut history.old_per_sec, old);
                push_capped(&mut history.new_per_sec, new);
            }
        }
    }

    /// The blockers in table order.
    pub fn blockers(&self) -> Vec<&Blocker> {
        let mut rows: Vec<&Blocker> = self
            .live
            .tracker
            .transition
            .iter()
            .flat_map(|t| t.blockers.iter())
            .collect();
        match self.sort {
            SortKey::BlockedFor => rows.sort_by(|a, b| {
                b.blocked_secs
                    .unwrap_or(0.0)
                    .total_cmp(&a.blocked_secs.unwrap_or(0.0))
                    .then(a.tid.cmp(&b.tid))
            }),
            SortKey::Pid => rows.sort_by_key(|b| (b.pid, b.tid)),
            SortKey::Comm => rows.sort_by(|a, b| a.comm.cmp(&b.comm).then(a.tid.cmp(&b.tid))),
            SortKey::Reason => rows.sort_by_key(|b| (b.reason as u8, b.tid)),
        }
        rows
    }

    /// The selected row's index; the first row when the selected task
    /// stopped blocking.
    pub fn selected_row(&self) -> Option<usize> {
        let rows = self.blockers();
        if rows.is_empty() {
            return None;
        }
        Some(
            self.selected_tid
                .and_then(|tid| rows.iter().position(|b| b.tid == tid))
                .unwrap_or(0),
        )
    }

    /// A dialog asks about the transition on screen when it opened; once
    /// that transition has ended, turned around or given way to another,
    /// the question is void. (The kernel layer re-checks at the write too:
    /// this only keeps the screen honest.)
    fn dismiss_stale_confirmation(&mut self) {
        let Screen::Confirm(confirmation) = &self.screen else {
            return;
        };
        let current = self
            .live
            .tracker
            .transition
            .as_ref()
            .is_some_and(|transition| {
                transition.patch == confirmation.write.patch()
                    && transition.direction == confirmation.write.confirmed_direction()
            });
        if !current {
            self.screen = Screen::Main;
            self.message =
                Some("the transition changed: question withdrawn, nothing written".into());
        }
    }

    pub fn selected_blocker(&self) -> Option<&Blocker> {
        let row = self.selected_row()?;
        self.blockers().get(row).copied()
    }
}

fn push_capped(history: &mut VecDeque<u64>, value: u64) {
    if history.len() == CALL_HISTORY {
        history.pop_front();
    }
    history.push_back(value);
}
