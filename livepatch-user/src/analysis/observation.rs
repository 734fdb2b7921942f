//! What a live feed saw, as it saw it: the input of every live analysis
//! (transition tracking, call statistics). Plain facts, nothing worked out
//! yet; each carries its CLOCK_MONOTONIC time, so tests replay any history.
use crate::model::{
    CallCount, LivepatchMessage, LogEntry, Patch, Task, TaskVerdict, ThreadPatchState, TraceEvent,
};

#[derive(Clone, Debug)]
pub enum Observation {
    Poll(KernelPoll),
    Trace(TraceEvent),
    /// A new livepatch message in the kernel log.
    KernelLog(LivepatchMessage),
    Calls(CallSample),
    /// klpscope itself wrote 1 to `force`, after the user confirmed.
    ForceWritten,
}

/// One poll of sysfs and procfs (and of the tracer's verdicts).
#[derive(Clone, Debug, Default)]
pub struct KernelPoll {
    pub at_ns: u64,
    /// When the poll began reading sysfs (CLOCK_MONOTONIC): a traced event
    /// before it shows in what the poll read, one after it does not.
    pub read_ns: u64,
    /// Every loaded patch: the watched ones make transitions, all of them
    /// the func stack a transition is checked against.
    pub patches: Vec<Patch>,
    /// Every thread's patch_state, when this poll scanned them (while a
    /// patch is in transition, or the patches changed).
    pub threads: Option<Vec<ThreadPatchState>>,
    /// Threads still pending, with their kernel stacks: the ones the
    /// kernel failed to switch when its verdicts are heard, at most a
    /// bounded number.
    pub pending: Vec<Task>,
    /// The kernel's standing verdicts, when the tracer hears them.
    pub verdicts: Option<Vec<TaskVerdict>>,
    /// The kernel's livepatch log so far; None when unreadable.
    pub log: Option<Vec<LogEntry>>,
}

/// The call counters' running totals at one time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallSample {
    pub at_ns: u64,
    pub counts: Vec<CallCount>,
    /// Per thread id: calls that ran an old version during a transition,
    /// running totals.
    pub old_callers: Vec<(u32, u64)>,
    /// Patched functions whose calls are not counted, and why.
    pub uncounted: Vec<(String, String)>,
}
