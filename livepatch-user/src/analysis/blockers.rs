//! Who keeps a transition from completing, and why.
//!
//! The kernel's own verdicts (from the tracer) are preferred; without them
//! the verdict is inferred the way the kernel makes it: a task whose stack
//! holds a function of the patch cannot switch, nor can one running on a CPU.
use serde::Serialize;

use crate::{
    model::{BlockReason, Direction, Patch, PatchState, StackFrame, Task},
    probes::TaskVerdict,
};

/// Where a blocker's verdict comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictSource {
    /// `klp_check_and_switch_task`'s own result, seen by the tracer.
    Kernel,
    /// Inferred from patch_state, scheduler state and the kernel stack.
    Inferred,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Blocker {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub kthread: bool,
    pub reason: BlockReason,
    /// The patched function found on the stack: the old version while
    /// patching, the new one (in the patch module) while unpatching.
    pub function: Option<String>,
    pub stack: Vec<StackFrame>,
    /// Index into `stack` of the frame that blocks.
    pub marked_frame: Option<usize>,
    /// How long the kernel has been failing to switch it, when known.
    pub blocked_secs: Option<f64>,
    pub failed_checks: Option<u32>,
    pub source: VerdictSource,
}

/// Which stack frames belong to the code a transition waits for.
pub struct PatchedCode<'a> {
    pub patch: &'a Patch,
    pub direction: Direction,
}

impl PatchedCode<'_> {
    /// The index of the first frame that runs code the transition must wait
    /// for. While patching, that is an old function (named as the patched
    /// one, in its object); while unpatching, a new function, which lives in
    /// the patch's own module.
    pub fn blocking_frame(&self, stack: &[StackFrame]) -> Option<usize> {
        stack.iter().position(|frame| match self.direction {
            Direction::Unpatching => frame.module.as_deref() == Some(self.patch.name.as_str()),
            Direction::Patching => self.patch.objects.iter().any(|object| {
                let in_object = match frame.module.as_deref() {
                    None => object.name == "vmlinux",
                    Some(module) => module == object.name,
                };
                in_object && object.functions.iter().any(|f| f.name == frame.function)
            }),
        })
    }
}

/// The blockers among the tasks still pending, using the kernel's verdicts
/// where the tracer has them. `now_ns` is on the same clock as the verdicts'
/// timestamps (CLOCK_MONOTONIC).
pub fn find_blockers(
    tasks: &[Task],
    code: &PatchedCode,
    verdicts: Option<&[TaskVerdict]>,
    now_ns: u64,
) -> Vec<Blocker> {
    let target = code.direction.target();
    let mut blockers: Vec<Blocker> = tasks
        .iter()
        .filter(|task| {
            task.patch_state
                .value()
                .is_some_and(|state| *state != target && *state != PatchState::Idle)
        })
        .filter_map(|task| match verdicts {
            Some(verdicts) => from_kernel(task, code, verdicts, now_ns),
            None => inferred(task, code),
        })
        .collect();
    blockers.sort_by_key(|b| (b.reason != BlockReason::FunctionOnStack, b.pid, b.tid));
    blockers
}

fn stack_of(task: &Task) -> Vec<StackFrame> {
    task.stack.value().cloned().unwrap_or_default()
}

fn blocker(task: &Task, reason: BlockReason, code: &PatchedCode) -> Blocker {
    let stack = stack_of(task);
    let marked_frame = code.blocking_frame(&stack);
    Blocker {
        pid: task.pid,
        tid: task.tid,
        comm: task.comm.clone(),
        kthread: task.kthread,
        reason,
        function: marked_frame.map(|i| stack[i].function.clone()),
        stack,
        marked_frame,
        blocked_secs: None,
        failed_checks: None,
        source: VerdictSource::Inferred,
    }
}

fn inferred(task: &Task, code: &PatchedCode) -> Option<Blocker> {
    let stack = task.stack.value()?;
    if code.blocking_frame(stack).is_some() {
        Some(blocker(task, BlockReason::FunctionOnStack, code))
    } else if task.state == 'R' {
        Some(blocker(task, BlockReason::Running, code))
    } else {
        // Asleep with none of the patch on its stack: the next retry round
        // switches it.
        None
    }
}

fn from_kernel(
    task: &Task,
    code: &PatchedCode,
    verdicts: &[TaskVerdict],
    now_ns: u64,
) -> Option<Blocker> {
    let verdict = verdicts.iter().find(|v| v.tid == task.tid)?;
    let reason = verdict.reason?;
    let mut blocker = blocker(task, reason, code);
    // The kernel names the old function; the stack tells which version.
    if blocker.function.is_none() {
        blocker.function = verdict.function.clone();
    }
    blocker.blocked_secs = Some(now_ns.saturating_sub(verdict.first_failure_ns) as f64 / 1e9);
    blocker.failed_checks = Some(verdict.failed_checks);
    blocker.source = VerdictSource::Kernel;
    Some(blocker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Known, PatchFunction, PatchObject};

    fn frame(function: &str, module: Option<&str>) -> StackFrame {
        StackFrame {
            function: function.into(),
            offset: 0x10,
            size: 0x80,
            module: module.map(Into::into),
        }
    }

    fn patch() -> Patch {
        Patch {
            name: "klp_test_patch_target".into(),
            enabled: Known::Value(true),
            transition: Known::Value(true),
            force: Known::Value(false),
            replace: None,
            stack_order: None,
            objects: vec![PatchObject {
                name: "klp_test_target".into(),
                patched: Known::Value(true),
                functions: vec![PatchFunction {
                    name: "klp_test_park_wait".into(),
                    sympos: 1,
                }],
            }],
            gone: false,
        }
    }

    fn task(tid: u32, state: char, patch_state: PatchState, stack: Vec<StackFrame>) -> Task {
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

    fn parked() -> Vec<StackFrame> {
        vec![
            frame("__schedule", None),
            frame("klp_test_park_wait", Some("klp_test_target")),
            frame("vfs_read", None),
        ]
    }

    #[test]
    fn patching_blocks_on_the_old_function_in_its_object() {
        let patch = patch();
        let code = PatchedCode {
            patch: &patch,
            direction: Direction::Patching,
        };
        let tasks = vec![
            task(10, 'S', PatchState::Unpatched, parked()),
            task(
                11,
                'S',
                PatchState::Unpatched,
                vec![frame("do_nanosleep", None)],
            ),
            task(12, 'R', PatchState::Unpatched, vec![]),
            task(13, 'S', PatchState::Patched, parked()),
        ];
        let blockers = find_blockers(&tasks, &code, None, 0);
        assert_eq!(blockers.len(), 2, "{blockers:#?}");
        assert_eq!(blockers[0].tid, 10);
        assert_eq!(blockers[0].reason, BlockReason::FunctionOnStack);
        assert_eq!(blockers[0].function.as_deref(), Some("klp_test_park_wait"));
        assert_eq!(blockers[0].marked_frame, Some(1));
        assert_eq!(blockers[1].tid, 12);
        assert_eq!(blockers[1].reason, BlockReason::Running);
    }

    #[test]
    fn a_same_named_function_in_another_object_does_not_block() {
        let patch = patch();
        let code = PatchedCode {
            patch: &patch,
            direction: Direction::Patching,
        };
        let tasks = vec![task(
            10,
            'S',
            PatchState::Unpatched,
            vec![frame("klp_test_park_wait", None)],
        )];
        assert!(find_blockers(&tasks, &code, None, 0).is_empty());
    }

    #[test]
    fn unpatching_blocks_on_the_new_function_in_the_patch_module() {
        let patch = patch();
        let code = PatchedCode {
            patch: &patch,
            direction: Direction::Unpatching,
        };
        let stack = vec![
            frame("__schedule", None),
            frame(
                "livepatch_klp_test_park_wait",
                Some("klp_test_patch_target"),
            ),
        ];
        let tasks = vec![
            task(20, 'S', PatchState::Patched, stack),
            // Already on the target state: not pending.
            task(21, 'S', PatchState::Unpatched, parked()),
        ];
        let blockers = find_blockers(&tasks, &code, None, 0);
        assert_eq!(blockers.len(), 1);
        assert_eq!(
            blockers[0].function.as_deref(),
            Some("livepatch_klp_test_park_wait")
        );
    }

    #[test]
    fn kernel_verdicts_win_and_carry_their_age() {
        let patch = patch();
        let code = PatchedCode {
            patch: &patch,
            direction: Direction::Patching,
        };
        let tasks = vec![
            task(10, 'S', PatchState::Unpatched, parked()),
            task(11, 'S', PatchState::Unpatched, vec![]),
        ];
        let verdicts = vec![
            TaskVerdict {
                tid: 10,
                tgid: 10,
                comm: "task10".into(),
                kthread: false,
                reason: Some(BlockReason::FunctionOnStack),
                function: Some("klp_test_park_wait".into()),
                failed_checks: 4,
                first_failure_ns: 1_000_000_000,
                last_failure_ns: 4_000_000_000,
            },
            TaskVerdict {
                tid: 11,
                tgid: 11,
                comm: "task11".into(),
                kthread: false,
                reason: Some(BlockReason::UnreliableStack),
                function: None,
                failed_checks: 1,
                first_failure_ns: 4_000_000_000,
                last_failure_ns: 4_000_000_000,
            },
        ];
        let blockers = find_blockers(&tasks, &code, Some(&verdicts), 5_500_000_000);
        assert_eq!(blockers.len(), 2);
        assert_eq!(blockers[0].source, VerdictSource::Kernel);
        assert_eq!(blockers[0].blocked_secs, Some(4.5));
        assert_eq!(blockers[0].failed_checks, Some(4));
        assert_eq!(blockers[1].reason, BlockReason::UnreliableStack);
    }

    #[test]
    fn without_a_readable_stack_nothing_is_inferred() {
        let patch = patch();
        let code = PatchedCode {
            patch: &patch,
            direction: Direction::Patching,
        };
        let mut t = task(10, 'S', PatchState::Unpatched, vec![]);
        t.stack = Known::unknown("not root");
        assert!(find_blockers(&[t], &code, None, 0).is_empty());
    }
}
