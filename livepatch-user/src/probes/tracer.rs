//! The transition tracer from user space: decoding its events and reading
//! the kernel's per-task verdicts.
use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError, RingBuf},
};
use livepatch_ebpf::{
    CHECK_FUNCTION_ON_STACK, CHECK_RUNNING, CHECK_SWITCHED, CHECK_UNRELIABLE_STACK, EventKind,
    TaskCheck,
};

use crate::model::{BlockReason, TraceEvent};

pub struct TransitionTracer {
    events: RingBuf<MapData>,
    task_checks: HashMap<MapData, u32, TaskCheck>,
}

/// The kernel's standing verdict on one task, from the tracer's map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskVerdict {
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
    pub kthread: bool,
    /// None: switched.
    pub reason: Option<BlockReason>,
    pub function: Option<String>,
    pub failed_checks: u32,
    pub first_failure_ns: u64,
    pub last_failure_ns: u64,
}

impl TransitionTracer {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, MapError> {
        let events = ebpf.take_map("EVENTS").ok_or(MapError::InvalidName {
            name: "EVENTS".into(),
        })?;
        let task_checks = ebpf.take_map("TASK_CHECKS").ok_or(MapError::InvalidName {
            name: "TASK_CHECKS".into(),
        })?;
        Ok(Self {
            events: RingBuf::try_from(events)?,
            task_checks: HashMap::try_from(task_checks)?,
        })
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

    /// The kernel's current verdict on every task it has tried to switch.
    pub fn verdicts(&self) -> Vec<TaskVerdict> {
        self.task_checks
            .iter()
            .filter_map(Result::ok)
            .map(|(tid, check)| verdict(tid, &check))
            .collect()
    }

    /// Forgets the previous transition's verdicts.
    pub fn clear_verdicts(&mut self) {
        let tids: Vec<u32> = self.task_checks.keys().filter_map(Result::ok).collect();
        for tid in tids {
            // A task removed concurrently is not an error.
            let _ = self.task_checks.remove(&tid);
        }
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

fn verdict(tid: u32, check: &TaskCheck) -> TaskVerdict {
    let function = c_string(&check.function);
    TaskVerdict {
        tid,
        tgid: check.tgid,
        comm: c_string(&check.comm),
        kthread: check.kthread != 0,
        reason: block_reason(check.last_result),
        function: (!function.is_empty()).then_some(function),
        failed_checks: check.failed_checks,
        first_failure_ns: check.first_failure_ns,
        last_failure_ns: check.last_failure_ns,
    }
}

/// Decodes one ring-buffer record; None for a record of the wrong size or an
/// unknown kind (an object and binary out of step).
pub fn parse_event(bytes: &[u8]) -> Option<TraceEvent> {
    if bytes.len() < size_of::<livepatch_ebpf::TraceEvent>() {
        return None;
    }
    // SAFETY: size checked; TraceEvent is plain repr(C) data, read unaligned.
    let raw: livepatch_ebpf::TraceEvent =
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    decode(&raw)
}

pub fn decode(raw: &livepatch_ebpf::TraceEvent) -> Option<TraceEvent> {
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
            }
        }
        EventKind::Start => TraceEvent::Start { timestamp_ns },
        EventKind::Round => TraceEvent::Round {
            timestamp_ns,
            duration_ns: raw.duration_ns,
            complete: raw.result != 0,
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

    fn raw(kind: EventKind, result: i32) -> livepatch_ebpf::TraceEvent {
        let mut function = [0u8; 64];
        function[..17].copy_from_slice(b"cmdline_proc_show");
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"cat");
        livepatch_ebpf::TraceEvent {
            timestamp_ns: 42,
            duration_ns: 7,
            kind: kind as u32,
            tid: 100,
            tgid: 99,
            result,
            kthread: 0,
            failed_checks: 3,
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
            }
        );
    }

    #[test]
    fn verdict_codes_map_to_reasons() {
        assert_eq!(block_reason(0), None);
        assert_eq!(block_reason(-16), Some(BlockReason::Running));
        assert_eq!(block_reason(-22), Some(BlockReason::UnreliableStack));
        assert_eq!(block_reason(-98), Some(BlockReason::FunctionOnStack));
    }

    #[test]
    fn rounds_carry_duration_and_completion() {
        assert_eq!(
            decode(&raw(EventKind::Round, 1)),
            Some(TraceEvent::Round {
                timestamp_ns: 42,
                duration_ns: 7,
                complete: true
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
