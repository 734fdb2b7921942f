//! Watches the kernel's livepatch transition as it decides, task by task.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::{fentry, fexit, map},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{FEntryContext, FExitContext},
};
use aya_log_ebpf::info;
use livepatch_ebpf::{CHECK_FUNCTION_ON_STACK, EventKind, TaskCheck, TraceEvent};

use super::task;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// The kernel's latest verdict per thread id. User space clears it when a
/// transition starts.
#[map]
static TASK_CHECKS: HashMap<u32, TaskCheck> = HashMap::with_max_entries(65536, 0);

/// The current retry round: when it started, and whether it completed the
/// transition. Rounds never overlap.
#[map]
static ROUND_STATE: HashMap<u32, u64> = HashMap::with_max_entries(2, 0);
const ROUND_STARTED: u32 = 0;
const ROUND_COMPLETED: u32 = 1;

#[inline(always)]
fn emit(fill: impl FnOnce(&mut TraceEvent)) {
    if let Some(mut entry) = EVENTS.reserve::<TraceEvent>(0) {
        // SAFETY: the reservation is sized for a TraceEvent; every field is
        // written before submit.
        let event = unsafe { &mut *entry.as_mut_ptr() };
        event.timestamp_ns = unsafe { bpf_ktime_get_ns() };
        event.duration_ns = 0;
        event.kind = 0;
        event.tid = 0;
        event.tgid = 0;
        event.result = 0;
        event.kthread = 0;
        event.failed_checks = 0;
        event.comm = [0; 16];
        event.function = [0; 64];
        fill(event);
        entry.submit(0);
    }
}

fn emit_kind(kind: EventKind) -> u32 {
    emit(|event| event.kind = kind as u32);
    0
}

/// `int klp_check_and_switch_task(struct task_struct *task, void *arg)`:
/// `arg` is a `const char **` that names the patched function found on the
/// stack when the result is -EADDRINUSE.
#[fexit(function = "klp_check_and_switch_task")]
pub fn klp_check_and_switch_task(ctx: FExitContext) -> u32 {
    let task: *const u8 = ctx.arg(0);
    let name_slot: *const *const u8 = ctx.arg(1);
    let result: i32 = ctx.arg(2);
    let tid = task::pid(task);
    let now = unsafe { bpf_ktime_get_ns() };

    let previous = unsafe { TASK_CHECKS.get(tid) }.copied();
    let mut check = previous.unwrap_or(TaskCheck {
        first_failure_ns: 0,
        last_failure_ns: 0,
        failed_checks: 0,
        last_result: 1, // never seen: any result is a change
        tgid: task::tgid(task),
        kthread: task::is_kthread(task) as u32,
        comm: [0; 16],
        function: [0; 64],
    });
    if previous.is_none() {
        task::comm(task, &mut check.comm);
    }
    let changed = check.last_result != result;
    if result != 0 {
        if check.failed_checks == 0 {
            check.first_failure_ns = now;
        }
        check.last_failure_ns = now;
        check.failed_checks += 1;
    }
    if result == CHECK_FUNCTION_ON_STACK {
        if let Ok(name) = unsafe { bpf_probe_read_kernel(name_slot) } {
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, &mut check.function) };
        }
    } else {
        check.function = [0; 64];
    }
    check.last_result = result;
    let _ = TASK_CHECKS.insert(tid, check, 0);

    if changed {
        emit(|event| {
            event.kind = EventKind::Check as u32;
            event.tid = tid;
            event.tgid = check.tgid;
            event.result = result;
            event.kthread = check.kthread;
            event.failed_checks = check.failed_checks;
            event.comm = check.comm;
            event.function = check.function;
        });
    }
    0
}

#[fentry(function = "klp_start_transition")]
pub fn klp_start_transition(ctx: FEntryContext) -> u32 {
    info!(&ctx, "livepatch transition starting");
    emit_kind(EventKind::Start)
}

#[fentry(function = "klp_try_complete_transition")]
pub fn klp_try_complete_transition_entry(_ctx: FEntryContext) -> u32 {
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = ROUND_STATE.insert(ROUND_STARTED, now, 0);
    0
}

/// The round's result cannot be read: the kernel's BTF does not let fexit
/// read this function's return value. A round completed the transition when
/// it called `klp_complete_transition`, whose hook marks it.
#[fexit(function = "klp_try_complete_transition")]
pub fn klp_try_complete_transition_exit(_ctx: FExitContext) -> u32 {
    let now = unsafe { bpf_ktime_get_ns() };
    let started = unsafe { ROUND_STATE.get(ROUND_STARTED) }
        .copied()
        .unwrap_or(now);
    let completed = unsafe { ROUND_STATE.get(ROUND_COMPLETED) }.is_some_and(|&c| c != 0);
    let _ = ROUND_STATE.insert(ROUND_COMPLETED, 0, 0);
    emit(|event| {
        event.kind = EventKind::Round as u32;
        event.result = completed as i32;
        event.duration_ns = now.saturating_sub(started);
    });
    0
}

/// The calling CPU's task patch_state as `klp_update_patch_state` began.
#[map]
static STATE_BEFORE_UPDATE: PerCpuArray<i32> = PerCpuArray::with_max_entries(1, 0);

/// `void klp_update_patch_state(struct task_struct *task)` runs on every idle
/// loop and every exit to user space with a patch pending; only a call that
/// changed the task's patch_state is a switch worth reporting.
#[fentry(function = "klp_update_patch_state")]
pub fn klp_update_patch_state_entry(ctx: FEntryContext) -> u32 {
    let task: *const u8 = ctx.arg(0);
    if let Some(slot) = STATE_BEFORE_UPDATE.get_ptr_mut(0) {
        unsafe { *slot = task::patch_state(task) };
    }
    0
}

#[fexit(function = "klp_update_patch_state")]
pub fn klp_update_patch_state_exit(ctx: FExitContext) -> u32 {
    let task: *const u8 = ctx.arg(0);
    let before = STATE_BEFORE_UPDATE.get(0).copied().unwrap_or(-1);
    let after = task::patch_state(task);
    if before == after || after < 0 {
        return 0;
    }
    emit(|event| {
        event.kind = EventKind::SelfSwitch as u32;
        event.tid = task::pid(task);
        event.tgid = task::tgid(task);
        event.result = after;
        event.kthread = task::is_kthread(task) as u32;
        task::comm(task, &mut event.comm);
    });
    0
}

#[fentry(function = "klp_reverse_transition")]
pub fn klp_reverse_transition(_ctx: FEntryContext) -> u32 {
    emit_kind(EventKind::Reverse)
}

#[fentry(function = "klp_force_transition")]
pub fn klp_force_transition(_ctx: FEntryContext) -> u32 {
    emit_kind(EventKind::Force)
}

#[fentry(function = "klp_complete_transition")]
pub fn klp_complete_transition(_ctx: FEntryContext) -> u32 {
    let _ = ROUND_STATE.insert(ROUND_COMPLETED, 1, 0);
    emit_kind(EventKind::Complete)
}

#[fentry(function = "klp_cancel_transition")]
pub fn klp_cancel_transition(_ctx: FEntryContext) -> u32 {
    emit_kind(EventKind::Cancel)
}
