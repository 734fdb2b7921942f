use serde::Serialize;

use super::Direction;
use schemars::JsonSchema;

/// Which version of a patched function runs, as far as sysfs tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FunctionState {
    Unpatched,
    Patched,
    /// Each task runs the version its patch_state says.
    InTransition(Direction),
}

/// Why the kernel could not switch a task, from `klp_check_and_switch_task`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    /// -EBUSY: running on another CPU.
    Running,
    /// -EADDRINUSE: a function of the patch is on its stack.
    FunctionOnStack,
    /// -EINVAL: its stack could not be walked reliably.
    UnreliableStack,
    /// Not a verdict of the kernel: the task is pending and klpscope could
    /// not tell why (its stack is unreadable without root, or its
    /// patch_state makes no sense). Never silently dropped.
    Unexplained,
}

impl BlockReason {
    /// The reason in a sentence.
    pub fn words(self) -> &'static str {
        match self {
            BlockReason::Running => "running on a CPU",
            BlockReason::FunctionOnStack => "function on stack",
            BlockReason::UnreliableStack => "unreliable stack",
            BlockReason::Unexplained => "pending, reason unknown",
        }
    }

    /// The reason in a table cell, where the function column needs the
    /// width more.
    pub fn short(self) -> &'static str {
        match self {
            BlockReason::Running => "running",
            BlockReason::FunctionOnStack => "on stack",
            BlockReason::UnreliableStack => "unreliable",
            BlockReason::Unexplained => "unknown",
        }
    }
}

/// What the transition tracer saw, decoded from the eBPF ring buffer.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TraceEvent {
    /// The kernel's verdict on a task changed.
    Check {
        timestamp_ns: u64,
        tid: u32,
        tgid: u32,
        comm: String,
        kthread: bool,
        /// None: the task switched.
        reason: Option<BlockReason>,
        function: Option<String>,
        failed_checks: u32,
        /// In how many of the kernel's retry rounds in a row it failed.
        failed_rounds: u32,
    },
    Start {
        timestamp_ns: u64,
    },
    /// A retry round began: the kernel tries every pending task once.
    /// Counted from 1 in each transition, and again after a reversal.
    Round {
        timestamp_ns: u64,
        round: u32,
    },
    SelfSwitch {
        timestamp_ns: u64,
        tid: u32,
        tgid: u32,
        comm: String,
        kthread: bool,
    },
    Reverse {
        timestamp_ns: u64,
    },
    Force {
        timestamp_ns: u64,
    },
    Complete {
        timestamp_ns: u64,
    },
    Cancel {
        timestamp_ns: u64,
    },
}

impl TraceEvent {
    /// When the kernel hit the hook (CLOCK_MONOTONIC, as `bpf_ktime_get_ns`).
    pub fn timestamp_ns(&self) -> u64 {
        match self {
            Self::Check { timestamp_ns, .. }
            | Self::Start { timestamp_ns }
            | Self::Round { timestamp_ns, .. }
            | Self::SelfSwitch { timestamp_ns, .. }
            | Self::Reverse { timestamp_ns }
            | Self::Force { timestamp_ns }
            | Self::Complete { timestamp_ns }
            | Self::Cancel { timestamp_ns } => *timestamp_ns,
        }
    }
}

/// The kernel's standing verdict on one task, from the tracer's map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskVerdict {
    /// 0 for the per-CPU idle tasks (`swapper/N` in `comm`), which have no
    /// /proc entry.
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
    pub kthread: bool,
    /// None: switched.
    pub reason: Option<BlockReason>,
    pub function: Option<String>,
    pub failed_checks: u32,
    /// In how many of the kernel's retry rounds in a row it failed.
    pub failed_rounds: u32,
    pub first_failure_ns: u64,
    pub last_failure_ns: u64,
}
