//! Plain `#[repr(C)]` types shared by klpscope's eBPF programs and user space.
//!
//! Both sides compile this file, so a layout change cannot drift between them.
#![no_std]

/// How many patched functions one loaded object can count at once: one fentry
/// program per slot, since a loaded program attaches to exactly one function.
pub const CALL_SLOTS: usize = 16;

/// Length of a function name read from the kernel (`KSYM_NAME_LEN` is larger,
/// but livepatch function names are far shorter in practice).
pub const FUNC_NAME_LEN: usize = 64;

pub const TASK_COMM_LEN: usize = 16;

/// Which version of a patched function a call ran, as the counter keys it.
pub const VERSION_OLD: usize = 0;
pub const VERSION_NEW: usize = 1;

/// What a counter slot's program does to tell which version a call runs.
/// User space keeps it current from sysfs: outside a transition every call
/// runs one version, so the hot path reads no task state at all.
pub const SLOT_OLD: u32 = VERSION_OLD as u32;
pub const SLOT_NEW: u32 = VERSION_NEW as u32;
/// In a transition: the calling task's patch_state decides; once it reads
/// -1 (the transition just completed) the call counts as old or new.
pub const SLOT_ASK_TASK_ELSE_OLD: u32 = 2;
pub const SLOT_ASK_TASK_ELSE_NEW: u32 = 3;

/// Index into the per-CPU call counter array.
pub const fn call_index(slot: usize, version: usize) -> u32 {
    (slot * 2 + version) as u32
}

/// `klp_check_and_switch_task`'s results, negated errno values.
pub const CHECK_SWITCHED: i32 = 0;
pub const CHECK_RUNNING: i32 = -16; // -EBUSY
pub const CHECK_UNRELIABLE_STACK: i32 = -22; // -EINVAL
pub const CHECK_FUNCTION_ON_STACK: i32 = -98; // -EADDRINUSE

/// Offsets into `struct task_struct`, read from the kernel's BTF at run time
/// and handed to the programs as globals: Rust eBPF cannot emit CO-RE
/// relocations.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    pub pid: u32,
    pub tgid: u32,
    pub comm: u32,
    pub flags: u32,
    pub patch_state: u32,
}

/// The kernel's latest verdict on one task in one transition, kept per
/// task (keyed by its `task_struct` address: the per-CPU idle tasks all have
/// tid 0).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TaskCheck {
    pub first_failure_ns: u64,
    pub last_failure_ns: u64,
    pub failed_checks: u32,
    /// In how many of the kernel's retry rounds the task failed a check,
    /// in a row (a task is never checked again once it switched). A task
    /// checks itself many times between rounds: only rounds tell a task
    /// that goes on blocking from one that failed a check in passing.
    pub failed_rounds: u32,
    /// The last round a check of it failed in.
    pub last_failed_round: u32,
    pub last_result: i32,
    pub tid: u32,
    pub tgid: u32,
    pub kthread: u32,
    /// The transition it belongs to: the tracer's `GENERATION` counts one
    /// up each time the kernel starts a transition or reverses one. A
    /// verdict of an earlier transition says nothing about this one.
    pub generation: u32,
    pub comm: [u8; TASK_COMM_LEN],
    pub function: [u8; FUNC_NAME_LEN],
}

/// What a [`TraceRecord`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A task's verdict from `klp_check_and_switch_task` changed; `result`
    /// holds it.
    Check = 1,
    /// `klp_start_transition`.
    Start = 2,
    /// A retry round began; `result` is its number in the transition (or
    /// reversal) under way, from 1.
    Round = 3,
    /// A task switched itself (`klp_update_patch_state`).
    SelfSwitch = 4,
    Reverse = 5,
    Force = 6,
    Complete = 7,
    Cancel = 8,
}

impl EventKind {
    pub const fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::Check,
            2 => Self::Start,
            3 => Self::Round,
            4 => Self::SelfSwitch,
            5 => Self::Reverse,
            6 => Self::Force,
            7 => Self::Complete,
            8 => Self::Cancel,
            _ => return None,
        })
    }
}

/// One event sent from the tracer to user space through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TraceRecord {
    pub timestamp_ns: u64,
    pub kind: u32,
    pub tid: u32,
    pub tgid: u32,
    pub result: i32,
    pub kthread: u32,
    pub failed_checks: u32,
    pub failed_rounds: u32,
    pub comm: [u8; TASK_COMM_LEN],
    pub function: [u8; FUNC_NAME_LEN],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C) plain data with no padding-dependent
    // invariants; any bit pattern is a valid value.
    unsafe impl aya::Pod for super::TaskOffsets {}
    unsafe impl aya::Pod for super::TaskCheck {}
    unsafe impl aya::Pod for super::TraceRecord {}
}

// ---- The task iterator (iter/task): one pass over every task ----

/// Offsets into `struct task_struct` for the task iterator, from the
/// kernel's BTF at run time (no CO-RE in Rust eBPF).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskIterOffsets {
    pub pid: u32,
    /// Right after `pid` on every kernel: the programs read both at once.
    pub tgid: u32,
    pub comm: u32,
    pub flags: u32,
    /// `__state` (5.14 on), or the `long state` before it: read as a u32
    /// either way, which on little-endian is its low half, where every
    /// state bit lives.
    pub state: u32,
    pub exit_state: u32,
    pub patch_state: u32,
    /// 0 when task_struct has no patch_state (no CONFIG_LIVEPATCH): the
    /// records then carry [`PATCH_STATE_ABSENT`].
    pub has_patch_state: u32,
}

/// `PF_KTHREAD` from include/linux/sched.h, in `task_struct.flags`.
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// A record's patch_state when the kernel has none to read.
pub const PATCH_STATE_ABSENT: i32 = i32::MIN;

/// Frames per kernel stack, as /proc/<pid>/stack reads them
/// (`MAX_STACK_TRACE_DEPTH` in fs/proc/base.c).
pub const TASK_STACK_DEPTH: usize = 64;

/// One task's patch_state, from the patch_state scan.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatchStateRecord {
    pub tid: u32,
    pub tgid: u32,
    pub patch_state: i32,
}

/// One task, from the task scans. With stacks, `stack_bytes` bytes of
/// return addresses (u64 each) follow the record; a negative value is the
/// error of `bpf_get_task_stack`, and nothing follows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskRecord {
    pub tid: u32,
    pub tgid: u32,
    pub flags: u32,
    pub state: u32,
    pub exit_state: u32,
    pub patch_state: i32,
    pub stack_bytes: i64,
    pub comm: [u8; TASK_COMM_LEN],
}

#[cfg(feature = "user")]
mod task_iter_pod {
    // SAFETY: repr(C) plain data; any bit pattern is a valid value.
    unsafe impl aya::Pod for super::TaskIterOffsets {}
}
