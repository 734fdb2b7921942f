//! What the TUI shows: the watch state plus the user's place in it.
use crate::{
    analysis::{blockers::Blocker, transition_progress::WatchState},
    model::Direction,
};

pub struct App {
    pub state: WatchState,
    pub screen: Screen,
    pub sort: SortKey,
    /// The selected blocker, by thread id: rows move as blockers come and
    /// go, the selection stays on its task.
    pub selected_tid: Option<u32>,
    /// The outcome of the last write, or why a key did nothing.
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Screen {
    Main,
    /// The selected blocker's kernel stack.
    Stack,
    Confirm(Action),
    Help,
}

/// The only writes klpscope makes, each after a confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Turn the transition around: write the opposite of its goal to
    /// `enabled`. `to` is the new goal.
    Reverse { patch: String, to: Direction },
    /// Write 1 to `force`.
    Force { patch: String },
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
    pub fn new(state: WatchState) -> Self {
        App {
            state,
            screen: Screen::Main,
            sort: SortKey::BlockedFor,
            selected_tid: None,
            message: None,
        }
    }

    /// The blockers in table order.
    pub fn blockers(&self) -> Vec<&Blocker> {
        let mut rows: Vec<&Blocker> = self
            .state
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

    pub fn selected_blocker(&self) -> Option<&Blocker> {
        let row = self.selected_row()?;
        self.blockers().get(row).copied()
    }
}
