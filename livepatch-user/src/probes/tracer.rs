//! The transition tracer from user space: decoding its events and reading
//! the kernel's per-task verdicts.
use std::time::Duration;

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, RingBuf},
};
use livepatch_ebpf::{
    CHECK_FUNCTION_ON_STACK, CHECK_RUNNING, CHECK_SWITCHED, CHECK_UNRELIABLE_STACK, EventKind,
    TaskCheck,
};

use rustix::event::{PollFd, PollFlags, Timespec, poll};

use super::object::map_named;
use crate::model::{BlockReason, TaskVerdict, TraceEvent};

/// The transition tracer's programs, each on one kernel function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TracerProgram {
    /// The kernel's verdict on each task it tries to switch: the call's
    /// arguments, then its result.
    CheckAndSwitchTaskEntry,
    CheckAndSwitchTaskExit,
    StartTransition,
    /// A retry round begins.
    TryCompleteTransition,
    UpdatePatchStateEntry,
    UpdatePatchStateExit,
    ReverseTransition,
    ForceTransition,
    CompleteTransition,
    CancelTransition,
}

impl TracerProgram {
    pub const ALL: [Self; 10] = [
        Self::CheckAndSwitchTaskEntry,
        Self::CheckAndSwitchTaskExit,
        Self::StartTransition,
        Self::TryCompleteTransition,
        Self::UpdatePatchStateEntry,
        Self::UpdatePatchStateExit,
        Self::ReverseTransition,
        Self::ForceTransition,
        Self::CompleteTransition,
        Self::CancelTransition,
    ];

    /// The program's name in klpscope's eBPF object.
    pub fn program(self) -> &'static str {
        match self {
            Self::CheckAndSwitchTaskEntry => "klp_check_and_switch_task_entry",
            Self::CheckAndSwitchTaskExit => "klp_check_and_switch_task_exit",
            Self::StartTransition => "klp_start_transition",
            Self::TryCompleteTransition => "klp_try_complete_transition",
            Self::UpdatePatchStateEntry => "klp_update_patch_state_entry",
            Self::UpdatePatchStateExit => "klp_update_patch_state_exit",
            Self::ReverseTransition => "klp_reverse_transition",
            Self::ForceTransition => "klp_force_transition",
            Self::CompleteTransition => "klp_complete_transition",
            Self::CancelTransition => "klp_cancel_transition",
        }
    }

    /// The kernel function it attaches to.
    pub fn function(self) -> &'static str {
        match self {
            Self::CheckAndSwitchTaskEntry | Self::CheckAndSwitchTaskExit => {
                "klp_check_and_switch_task"
            }
            Self::StartTransition => "klp_start_transition",
            Self::TryCompleteTransition => "klp_try_complete_transition",
            Self::UpdatePatchStateEntry | Self::UpdatePatchStateExit => "klp_update_patch_state",
            Self::ReverseTransition => "klp_reverse_transition",
            Self::ForceTransition => "klp_force_transition",
            Self::CompleteTransition => "klp_complete_transition",
            Self::CancelTransition => "klp_cancel_transition",
        }
    }

    /// No hook is an fexit: an fexit's trampoline calls the function and
    /// stays on the stack of whoever runs it, and the kernel's reliable
    /// unwinder cannot walk BPF code, so a task checking itself would fail
    /// the check. What needs a return value takes a kretprobe, whose return
    /// address the unwinder recovers.
    pub fn hook(self) -> TracerHook {
        match self {
            Self::CheckAndSwitchTaskEntry | Self::UpdatePatchStateEntry => TracerHook::Kprobe,
            Self::CheckAndSwitchTaskExit | Self::UpdatePatchStateExit => TracerHook::Kretprobe,
            _ => TracerHook::Fentry,
        }
    }
}

/// How a tracer program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TracerHook {
    Fentry,
    Kprobe,
    Kretprobe,
}

/// The tracer's ring buffer, in bytes, for a kernel of `threads` threads.
/// A retry round checks every thread in one go, the first round of a
/// transition (and of a reversal) reports each one, and user space drains
/// only between rounds: a buffer that cannot hold a round loses events,
/// completions included. Room for two records a thread, a power of two
/// as the kernel wants, from 256 KiB (what the object declares) to 16 MiB.
pub fn event_ring_bytes(threads: usize) -> u32 {
    const MIN: usize = 256 << 10;
    const MAX: usize = 16 << 20;
    // Each record is preceded by the ring's 8-byte header, 8-aligned.
    let record = (size_of::<livepatch_ebpf::TraceRecord>() + 8).next_multiple_of(8);
    let wanted = threads.saturating_mul(2 * record).clamp(MIN, MAX);
    // At most MAX, a u32.
    wanted.next_power_of_two() as u32
}

pub struct TransitionTracer {
    events: RingBuf<MapData>,
    /// Keyed by task_struct address; an LRU hash map in the kernel, which
    /// aya reads as a HashMap.
    task_checks: HashMap<MapData, u64, TaskCheck>,
    /// The current transition's generation, at index 0.
    generation: Array<MapData, u32>,
}

impl TransitionTracer {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, MapError> {
        Ok(Self {
            events: map_named(ebpf, "EVENTS")?,
            task_checks: map_named(ebpf, "TASK_CHECKS")?,
            generation: map_named(ebpf, "GENERATION")?,
        })
    }

    /// Waits up to `timeout` for the ring buffer to hold an event: true once
    /// it does, false at the timeout (or if the wait fails: the caller polls
    /// on its own schedule then).
    pub fn wait_for_event(&self, timeout: Duration) -> bool {
        let mut fds = [PollFd::new(&self.events, PollFlags::IN)];
        let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        });
        matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
    }

    /// Every event waiting in the ring buffer, decoded.
    pub fn drain(&mut self) -> Vec<TraceEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            if let Some(event) = parse_event(&item) {
                out.push(event);
            }
        }
        out
    }

    /// The kernel's current verdict on every task it has tried to switch in
    /// the transition under way (or the last one). Verdicts of earlier
    /// transitions are left out: they would name tasks that block nothing.
    pub fn verdicts(&self) -> Vec<TaskVerdict> {
        let Ok(generation) = self.generation.get(&0, 0) else {
            return Vec::new();
        };
        self.task_checks
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, check)| check.generation == generation)
            .map(|(_, check)| verdict(&check))
            .collect()
    }
}

/// Text up to the first NUL, as the kernel stores names.
pub fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

pub fn block_reason(result: i32) -> Option<BlockReason> {
    match result {
        CHECK_RUNNING => Some(BlockReason::Running),
        CHECK_FUNCTION_ON_STACK => Some(BlockReason::FunctionOnStack),
        CHECK_UNRELIABLE_STACK => Some(BlockReason::UnreliableStack),
        CHECK_SWITCHED => None,
        // Any other error still kept the task from switching; the stack
        // walker's other failures are the closest kind.
        _ => Some(BlockReason::UnreliableStack),
    }
}

fn verdict(check: &TaskCheck) -> TaskVerdict {
    let function = c_string(&check.function);
    TaskVerdict {
        tid: check.tid,
        tgid: check.tgid,
        comm: c_string(&check.comm),
        kthread: check.kthread != 0,
        reason: block_reason(check.last_result),
        function: (!function.is_empty()).then_some(function),
        failed_checks: check.failed_checks,
        failed_rounds: check.failed_rounds,
        first_failure_ns: check.first_failure_ns,
        last_failure_ns: check.last_failure_ns,
    }
}

/// Decodes one ring-buffer record; None for a record of the wrong size or an
/// unknown kind (an object and binary out of step).
pub fn parse_event(bytes: &[u8]) -> Option<TraceEvent> {
    if bytes.len() < size_of::<livepatch_ebpf::TraceRecord>() {
        return None;
    }
    // SAFETY: size checked; TraceEvent is plain repr(C) data, read unaligned.
    let raw: livepatch_ebpf::TraceRecord =
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    decode(&raw)
}

pub fn decode(raw: &livepatch_ebpf::TraceRecord) -> Option<TraceEvent> {
    let timestamp_ns = raw.timestamp_ns;
    Some(match EventKind::from_u32(raw.kind)? {
        EventKind::Check => {
            let function = c_string(&raw.function);
            TraceEvent::Check {
                timestamp_ns,
                tid: raw.tid,
                tgid: raw.tgid,
                comm: c_string(&raw.comm),
                kthread: raw.kthread != 0,
                reason: block_reason(raw.result),
                function: (!function.is_empty()).then_some(function),
                failed_checks: raw.failed_checks,
                failed_rounds: raw.failed_rounds,
            }
        }
        EventKind::Start => TraceEvent::Start { timestamp_ns },
        EventKind::Round => TraceEvent::Round {
            timestamp_ns,
            round: raw.result as u32,
        },
        EventKind::SelfSwitch => TraceEvent::SelfSwitch {
            timestamp_ns,
            tid: raw.tid,
            tgid: raw.tgid,
            comm: c_string(&raw.comm),
            kthread: raw.kthread != 0,
        },
        EventKind::Reverse => TraceEvent::Reverse { timestamp_ns },
        EventKind::Force => TraceEvent::Force { timestamp_ns },
        EventKind::Complete => TraceEvent::Complete { timestamp_ns },
        EventKind::Cancel => TraceEvent::Cancel { timestamp_ns },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_holds_two_records_a_thread_within_bounds() {
        assert_eq!(event_ring_bytes(0), 256 << 10);
        assert_eq!(event_ring_bytes(150), 256 << 10);
        // 30,000 threads, 60,000 records of 128 bytes: 7.3 MiB.
        assert_eq!(event_ring_bytes(30_000), 8 << 20);
        assert_eq!(event_ring_bytes(10_000_000), 16 << 20);
    }

    fn raw(kind: EventKind, result: i32) -> livepatch_ebpf::TraceRecord {
        let mut function = [0u8; 64];
        function[..17].copy_from_slice(b"cmdline_proc_show");
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"cat");
        livepatch_ebpf::TraceRecord {
            timestamp_ns: 42,
            kind: kind as u32,
            tid: 100,
            tgid: 99,
            result,
            kthread: 0,
            failed_checks: 3,
            failed_rounds: 2,
            comm,
            function,
        }
    }

    #[test]
    fn a_task_with_the_function_on_its_stack_is_decoded_with_the_name() {
        let event = decode(&raw(EventKind::Check, -98)).unwrap();
        assert_eq!(
            event,
            TraceEvent::Check {
                timestamp_ns: 42,
                tid: 100,
                tgid: 99,
                comm: "cat".into(),
                kthread: false,
                reason: Some(BlockReason::FunctionOnStack),
                function: Some("cmdline_proc_show".into()),
                failed_checks: 3,
                failed_rounds: 2,
            }
        );
    }

    /// The eBPF crate has no libc: its copies of the kernel's errno values
    /// are checked against libc's here.
    #[test]
    fn verdict_codes_are_the_kernels_errno_values() {
        assert_eq!(CHECK_RUNNING, -libc::EBUSY);
        assert_eq!(CHECK_UNRELIABLE_STACK, -libc::EINVAL);
        assert_eq!(CHECK_FUNCTION_ON_STACK, -libc::EADDRINUSE);
    }

    #[test]
    fn verdict_codes_map_to_reasons() {
        assert_eq!(block_reason(0), None);
        assert_eq!(block_reason(-16), Some(BlockReason::Running));
        assert_eq!(block_reason(-22), Some(BlockReason::UnreliableStack));
        assert_eq!(block_reason(-98), Some(BlockReason::FunctionOnStack));
    }

    #[test]
    fn rounds_carry_their_number() {
        assert_eq!(
            decode(&raw(EventKind::Round, 3)),
            Some(TraceEvent::Round {
                timestamp_ns: 42,
                round: 3
            })
        );
    }

    #[test]
    fn short_or_unknown_records_are_dropped() {
        assert_eq!(parse_event(&[0u8; 8]), None);
        let mut unknown = raw(EventKind::Start, 0);
        unknown.kind = 99;
        assert_eq!(decode(&unknown), None);
    }
}
