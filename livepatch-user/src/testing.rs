//! Builders of model values for tests, shared by the unit tests and the
//! integration tests (feature `test-support`, enabled only for them). Each
//! builds the plain case; a test changes the fields it is about.
use crate::{
    analysis::{
        blockers::{Blocker, VerdictSource},
        observation::{KernelPoll, Observation},
    },
    model::{
        BlockReason, Direction, Known, Patch, PatchFunction, PatchObject, PatchState, StackFrame,
        Task, ThreadPatchState,
    },
};

/// A patch with no objects, `force` write-only as sysfs has it.
pub fn patch(name: &str, enabled: bool, transition: bool) -> Patch {
    Patch {
        name: name.into(),
        enabled: Known::Value(enabled),
        transition: Known::Value(transition),
        force: Known::unknown("write-only"),
        replace: None,
        stack_order: None,
        objects: Vec::new(),
        gone: false,
    }
}

/// `patch` replacing `functions` of `object` (each a unique symbol, sympos
/// 1 as sysfs shows it).
pub fn patch_of(
    name: &str,
    enabled: bool,
    transition: bool,
    object: &str,
    functions: &[&str],
) -> Patch {
    Patch {
        objects: vec![PatchObject {
            name: object.into(),
            patched: Known::Value(enabled),
            functions: functions
                .iter()
                .map(|function| PatchFunction {
                    name: (*function).into(),
                    sympos: 1,
                })
                .collect(),
        }],
        ..patch(name, enabled, transition)
    }
}

/// A frame of `function` in `module` (None: vmlinux).
pub fn frame(function: &str, module: Option<&str>) -> StackFrame {
    StackFrame {
        function: function.into(),
        offset: 0x10,
        size: 0x80,
        module: module.map(Into::into),
    }
}

/// A user thread that is its own process, named `task<tid>`.
pub fn task(tid: u32, state: char, patch_state: PatchState, stack: Vec<StackFrame>) -> Task {
    Task {
        pid: tid,
        tid,
        comm: format!("task{tid}"),
        kthread: false,
        state,
        patch_state: Known::Value(patch_state),
        stack: Known::Value(stack),
    }
}

pub fn thread(tid: u32, patch_state: PatchState) -> ThreadPatchState {
    ThreadPatchState {
        pid: tid,
        tid,
        patch_state: Known::Value(patch_state),
    }
}

/// An inferred blocker in cmdline_proc_show, asleep, with no stack.
pub fn blocker(tid: u32, reason: BlockReason) -> Blocker {
    Blocker {
        pid: tid,
        tid,
        comm: format!("task{tid}"),
        kthread: false,
        state: 'S',
        reason,
        function: Some("cmdline_proc_show".into()),
        version: None,
        unexplained: None,
        stack: Vec::new(),
        marked_frame: None,
        blocked_secs: None,
        failed_checks: None,
        failed_rounds: None,
        source: VerdictSource::Inferred,
    }
}

/// A raw poll at `at_secs` of `total` threads, `pending` of them short of
/// `direction`'s target, with `blocking` as the pending tasks read with
/// their stacks; `patches` as sysfs shows them (their `enabled` tells the
/// direction). No direction: every thread idle.
pub fn poll(
    at_secs: u64,
    patches: Vec<Patch>,
    direction: Option<Direction>,
    (total, pending): (u32, u32),
    blocking: Vec<Task>,
) -> Observation {
    let threads = (0..total)
        .map(|i| {
            let state = match direction {
                Some(direction) if i < pending => direction.opposite().target(),
                Some(direction) => direction.target(),
                None => PatchState::Idle,
            };
            thread(1000 + i, state)
        })
        .collect();
    Observation::Poll(KernelPoll {
        at_ns: at_secs * 1_000_000_000,
        read_ns: at_secs * 1_000_000_000,
        patches,
        threads: Some(threads),
        pending: blocking,
        verdicts: None,
        log: Some(Vec::new()),
    })
}
