//! Watches the kernel's livepatch transition as it decides, task by task.
use aya_ebpf::{
    helpers::{
        bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::{fentry, kprobe, kretprobe, map},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{FEntryContext, ProbeContext, RetProbeContext},
};
use aya_log_ebpf::info;
use livepatch_ebpf::{
    CHECK_FUNCTION_ON_STACK, CHECK_SWITCHED, EventKind, FUNC_NAME_LEN, TASK_COMM_LEN, TaskCheck,
    TraceRecord,
};

use super::task;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// The kernel's latest verdict per task, keyed by `task_struct` address:
/// the per-CPU idle tasks all have tid 0. An entry of an earlier
/// transition (its `generation` is not the current one) is stale: it is
/// neither reported as a verdict nor compared against, so no task's switch
/// goes unreported however late user space reads. LRU: entries of tasks
/// long gone make room by themselves.
#[map]
static TASK_CHECKS: LruHashMap<u64, TaskCheck> = LruHashMap::with_max_entries(65536, 0);

/// The current transition's generation, at index 0: one more each time the
/// kernel starts a transition or reverses one. At index 1, the retry round
/// of that generation under way (1 from its first round).
#[map]
static GENERATION: Array<u32> = Array::with_max_entries(2, 0);
const GENERATION_INDEX: u32 = 0;
const ROUND_INDEX: u32 = 1;

#[inline(always)]
fn generation() -> u32 {
    GENERATION.get(GENERATION_INDEX).copied().unwrap_or(0)
}

#[inline(always)]
fn round() -> u32 {
    GENERATION.get(ROUND_INDEX).copied().unwrap_or(0)
}

/// Called under the kernel's klp_mutex: starts and reversals never race.
#[inline(always)]
fn next_generation() {
    if let Some(generation) = GENERATION.get_ptr_mut(GENERATION_INDEX) {
        unsafe { *generation = (*generation).wrapping_add(1) };
    }
    if let Some(round) = GENERATION.get_ptr_mut(ROUND_INDEX) {
        unsafe { *round = 0 };
    }
}

/// This transition's verdict on `task` so far, if any.
#[inline(always)]
fn current_check(key: u64, generation: u32) -> Option<TaskCheck> {
    unsafe { TASK_CHECKS.get(key) }
        .copied()
        .filter(|check| check.generation == generation)
}

#[inline(always)]
fn new_check(task: *const u8, generation: u32) -> TaskCheck {
    let mut check = TaskCheck {
        first_failure_ns: 0,
        last_failure_ns: 0,
        failed_checks: 0,
        failed_rounds: 0,
        last_failed_round: 0,
        last_result: 1, // never seen: any result is a change
        tid: task::pid(task),
        tgid: task::tgid(task),
        kthread: task::is_kthread(task) as u32,
        generation,
        comm: [0; TASK_COMM_LEN],
        function: [0; FUNC_NAME_LEN],
    };
    task::comm(task, &mut check.comm);
    check
}

#[inline(always)]
fn emit(fill: impl FnOnce(&mut TraceRecord)) {
    if let Some(mut entry) = EVENTS.reserve::<TraceRecord>(0) {
        // SAFETY: the reservation is sized for a TraceRecord; every field is
        // written before submit.
        let event = unsafe { &mut *entry.as_mut_ptr() };
        event.timestamp_ns = unsafe { bpf_ktime_get_ns() };
        event.kind = 0;
        event.tid = 0;
        event.tgid = 0;
        event.result = 0;
        event.kthread = 0;
        event.failed_checks = 0;
        event.failed_rounds = 0;
        event.comm = [0; TASK_COMM_LEN];
        event.function = [0; FUNC_NAME_LEN];
        fill(event);
        entry.submit(0);
    }
}

fn emit_kind(kind: EventKind) -> u32 {
    emit(|event| event.kind = kind as u32);
    0
}

/// The arguments of the `klp_check_and_switch_task` call under way on this
/// CPU, from its entry probe to its return probe. The kernel runs the check
/// with preemption off (under the task's rq lock, or from a task checking
/// itself with preemption disabled), so entry and return meet on one CPU
/// with no other check between them.
#[map]
static CHECK_ARGS: PerCpuArray<CheckArgs> = PerCpuArray::with_max_entries(1, 0);

#[derive(Clone, Copy)]
struct CheckArgs {
    task: u64,
    name_slot: u64,
}

/// `int klp_check_and_switch_task(struct task_struct *task, void *arg)`:
/// `arg` is a `const char **` that names the patched function found on the
/// stack when the result is -EADDRINUSE.
///
/// A kprobe and a kretprobe, never an fexit: an fexit's trampoline calls
/// the function and so stays on the stack of a task that checks itself
/// (the transition worker, the loading task, a kthread in cond_resched),
/// and the kernel's reliable unwinder cannot walk BPF code: that task
/// would fail its own check. A kprobe leaves nothing on the stack, and the
/// unwinder recovers a kretprobe's return address.
#[kprobe]
pub fn klp_check_and_switch_task_entry(ctx: ProbeContext) -> u32 {
    let (Some(task), Some(name_slot)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    if let Some(args) = CHECK_ARGS.get_ptr_mut(0) {
        unsafe { *args = CheckArgs { task, name_slot } };
    }
    0
}

#[kretprobe]
pub fn klp_check_and_switch_task_exit(ctx: RetProbeContext) -> u32 {
    let Some(args) = CHECK_ARGS.get(0).copied() else {
        return 0;
    };
    let result: i32 = ctx.ret();
    let task = args.task as *const u8;
    let key = args.task;
    let now = unsafe { bpf_ktime_get_ns() };
    let (generation, round) = (generation(), round());

    let mut check = current_check(key, generation).unwrap_or_else(|| new_check(task, generation));
    let changed = check.last_result != result;
    let new_round = result != CHECK_SWITCHED && check.last_failed_round != round;
    if result != CHECK_SWITCHED {
        if check.failed_checks == 0 {
            check.first_failure_ns = now;
        }
        check.last_failure_ns = now;
        check.failed_checks += 1;
        if new_round {
            check.failed_rounds += 1;
            check.last_failed_round = round;
        }
    }
    if result == CHECK_FUNCTION_ON_STACK {
        if let Ok(name) = unsafe { bpf_probe_read_kernel(args.name_slot as *const *const u8) } {
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, &mut check.function) };
        }
    } else {
        check.function = [0; FUNC_NAME_LEN];
    }
    check.last_result = result;
    let _ = TASK_CHECKS.insert(key, check, 0);
    if changed || new_round {
        emit_check(&check, EventKind::Check);
    }
    0
}

#[inline(always)]
fn emit_check(check: &TaskCheck, kind: EventKind) {
    emit(|event| {
        event.kind = kind as u32;
        event.tid = check.tid;
        event.tgid = check.tgid;
        event.result = check.last_result;
        event.kthread = check.kthread;
        event.failed_checks = check.failed_checks;
        event.failed_rounds = check.failed_rounds;
        event.comm = check.comm;
        event.function = check.function;
    });
}

#[fentry(function = "klp_start_transition")]
pub fn klp_start_transition(ctx: FEntryContext) -> u32 {
    info!(&ctx, "livepatch transition starting");
    next_generation();
    emit_kind(EventKind::Start)
}

/// A retry round begins: the kernel tries every task once. An fentry
/// only (its trampoline returns before the function body runs); the
/// round's end is the next round's start, or the completion.
#[fentry(function = "klp_try_complete_transition")]
pub fn klp_try_complete_transition(_ctx: FEntryContext) -> u32 {
    let Some(round) = GENERATION.get_ptr_mut(ROUND_INDEX) else {
        return 0;
    };
    let round = unsafe {
        *round = (*round).wrapping_add(1);
        *round
    };
    emit(|event| {
        event.kind = EventKind::Round as u32;
        event.result = round as i32;
    });
    0
}

/// Each task's patch_state as its `klp_update_patch_state` call began, keyed
/// by the task: the kernel only ever passes `current`, and on the way to
/// user space the task may be preempted and move to another CPU between
/// the entry and the return probe.
#[map]
static STATE_BEFORE_UPDATE: LruHashMap<u64, i32> = LruHashMap::with_max_entries(4096, 0);

/// `void klp_update_patch_state(struct task_struct *task)` runs on every idle
/// loop and every exit to user space with a patch pending; only a call that
/// changed the task's patch_state is a switch worth reporting. Probes, not
/// fentry/fexit, for the same reason as the check's.
#[kprobe]
pub fn klp_update_patch_state_entry(ctx: ProbeContext) -> u32 {
    let Some(task) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let _ = STATE_BEFORE_UPDATE.insert(task, task::patch_state(task as *const u8), 0);
    0
}

/// A switch here is also this transition's verdict on the task: an idle
/// task that failed a check while its CPU was busy and then switched in
/// its idle loop is no blocker any more.
#[kretprobe]
pub fn klp_update_patch_state_exit(_ctx: RetProbeContext) -> u32 {
    let key = unsafe { bpf_get_current_task() };
    let task = key as *const u8;
    let before = unsafe { STATE_BEFORE_UPDATE.get(key) }
        .copied()
        .unwrap_or(-1);
    let _ = STATE_BEFORE_UPDATE.remove(key);
    let after = task::patch_state(task);
    if before == after || after < 0 {
        return 0;
    }
    let generation = generation();
    let mut check = current_check(key, generation).unwrap_or_else(|| new_check(task, generation));
    check.last_result = CHECK_SWITCHED;
    check.function = [0; FUNC_NAME_LEN];
    let _ = TASK_CHECKS.insert(key, check, 0);
    emit_check(&check, EventKind::SelfSwitch);
    0
}

/// A reversal starts a new transition the other way: each task is checked
/// anew. The kernel calls `klp_start_transition` from here too, which
/// counts again unless the compiler inlined that call: two steps are as
/// good as one.
#[fentry(function = "klp_reverse_transition")]
pub fn klp_reverse_transition(_ctx: FEntryContext) -> u32 {
    next_generation();
    emit_kind(EventKind::Reverse)
}

#[fentry(function = "klp_force_transition")]
pub fn klp_force_transition(_ctx: FEntryContext) -> u32 {
    emit_kind(EventKind::Force)
}

#[fentry(function = "klp_complete_transition")]
pub fn klp_complete_transition(_ctx: FEntryContext) -> u32 {
    emit_kind(EventKind::Complete)
}

#[fentry(function = "klp_cancel_transition")]
pub fn klp_cancel_transition(_ctx: FEntryContext) -> u32 {
    emit_kind(EventKind::Cancel)
}
