//! What the TUI shows: the watch state plus the user's place in it.
use crate::{
    analysis::{blockers::Blocker, transition_progress::WatchState},
    kernel::livepatch_write::TransitionWrite,
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

    /// A dialog asks about the transition on screen when it opened; once
    /// that transition has ended, turned around or given way to another,
    /// the question is void. (The kernel layer re-checks at the write too:
    /// this only keeps the screen honest.)
    pub fn dismiss_stale_confirmation(&mut self) {
        let Screen::Confirm(confirmation) = &self.screen else {
            return;
        };
        let current = self.state.transition.as_ref().is_some_and(|transition| {
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
