//! The events a transition produces: what watch prints and shows, what
//! apply acts on, what metrics count, and the JSON every script reads.
use schemars::JsonSchema;
use serde::Serialize;

use crate::{
    analysis::blockers::{Blocker, CodeVersion, letter},
    model::{BlockReason, Direction},
};

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TransitionEvent {
    Start {
        patch: String,
        direction: Direction,
        tasks_total: usize,
    },
    /// Tasks switched since the last progress event: in bulk, once a poll.
    Progress {
        patch: String,
        tasks_pending: usize,
        tasks_total: usize,
        switched: usize,
    },
    Blocker {
        pid: u32,
        tid: u32,
        comm: String,
        kthread: bool,
        #[serde(serialize_with = "letter")]
        state: char,
        reason: BlockReason,
        function: Option<String>,
        version: Option<CodeVersion>,
    },
    BlockerCleared {
        pid: u32,
        tid: u32,
        comm: String,
    },
    /// Threads the tracer saw switch (the kernel's check passed, or they
    /// moved themselves), in bulk, once a poll.
    Switched {
        patch: String,
        tids: Vec<u32>,
    },
    /// The kernel sent fake signals (user tasks) and wake-ups (kthreads) to
    /// the remaining tasks.
    Signals {
        patch: String,
        seen_in: SignalsSeen,
    },
    /// The transition turned around; `direction` is its new goal.
    Reverse {
        patch: String,
        direction: Direction,
    },
    Force {
        patch: String,
    },
    /// The transition ended. `reversed`: it ended in the opposite direction
    /// from where it started. `secs` is None for a transition that began and
    /// ended between two polls.
    Complete {
        patch: String,
        direction: Direction,
        reversed: bool,
        forced: bool,
        secs: Option<f64>,
    },
    /// The patch left /sys/kernel/livepatch (disabled and freed, or
    /// unloaded).
    Gone {
        patch: String,
    },
    /// The kernel refused to enable a patch: no transition will come of it.
    Refused {
        patch: String,
        why: String,
    },
}

/// How the last transition ended, shown until the next one starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub patch: String,
    pub direction: Direction,
    pub reversed: bool,
    pub forced: bool,
    pub secs: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignalsSeen {
    /// The kernel logged "signaling remaining tasks".
    KernelLog,
    /// The tracer counted the failed rounds after which the kernel signals.
    FailedRounds,
}

pub(super) fn cleared(blocker: &Blocker) -> TransitionEvent {
    TransitionEvent::BlockerCleared {
        pid: blocker.pid,
        tid: blocker.tid,
        comm: blocker.comm.clone(),
    }
}

pub(super) fn complete(outcome: &Outcome) -> TransitionEvent {
    TransitionEvent::Complete {
        patch: outcome.patch.clone(),
        direction: outcome.direction,
        reversed: outcome.reversed,
        forced: outcome.forced,
        secs: outcome.secs,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Scripts match on `event` and read the scheduler state as a letter.
    #[test]
    fn an_event_is_tagged_by_its_snake_case_name() {
        let blocker = TransitionEvent::Blocker {
            pid: 7,
            tid: 8,
            comm: "sh".into(),
            kthread: false,
            state: 'D',
            reason: BlockReason::FunctionOnStack,
            function: Some("cmdline_proc_show".into()),
            version: Some(CodeVersion::Original),
        };
        let value = serde_json::to_value(&blocker).unwrap();
        assert_eq!(value["event"], "blocker");
        assert_eq!(value["state"], "D");
        let cleared = serde_json::to_value(TransitionEvent::BlockerCleared {
            pid: 7,
            tid: 8,
            comm: "sh".into(),
        })
        .unwrap();
        assert_eq!(
            cleared,
            json!({"event": "blocker_cleared", "pid": 7, "tid": 8, "comm": "sh"})
        );
    }
}
