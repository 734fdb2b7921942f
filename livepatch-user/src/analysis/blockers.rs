//! Who keeps a transition from completing, and why.
//!
//! The kernel's own verdicts (from the tracer) are preferred; without them
//! the verdict is inferred the way the kernel makes it: a task whose stack
//! holds a function of the patch cannot switch, nor can one running on a CPU.
use schemars::JsonSchema;
use serde::Serialize;

use crate::model::{
    BlockReason, Direction, Known, Patch, PatchFunction, PatchState, StackFrame, Task, TaskVerdict,
    VMLINUX,
};

/// Where a blocker's verdict comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerdictSource {
    /// `klp_check_and_switch_task`'s own result, seen by the tracer.
    Kernel,
    /// Inferred from patch_state, scheduler state and the kernel stack.
    Inferred,
}

/// Which version of a patched function a task is in: what the kernel
/// looks for depends on the patches already stacked on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CodeVersion {
    /// The function as its object (vmlinux or a module) was built.
    Original,
    /// A patch's replacement function, in that patch's own module.
    Replacement { patch: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Blocker {
    /// 0 (and tid 0) for a CPU's idle task, `swapper/N` in `comm`.
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub kthread: bool,
    /// The scheduler state letter (R running, S interruptible sleep, D
    /// uninterruptible, ...): it decides whether the fake signal helps.
    #[serde(serialize_with = "letter")]
    pub state: char,
    pub reason: BlockReason,
    /// The patched function found on the stack: the old version while
    /// patching (or an earlier patch's replacement of it), this patch's
    /// new one while unpatching.
    pub function: Option<String>,
    /// Which version of the function that frame runs.
    pub version: Option<CodeVersion>,
    /// Why a pending task could not be explained (reason `unexplained`).
    pub unexplained: Option<String>,
    pub stack: Vec<StackFrame>,
    /// Index into `stack` of the frame that blocks.
    pub marked_frame: Option<usize>,
    /// How long the kernel has been failing to switch it, when known.
    pub blocked_secs: Option<f64>,
    pub failed_checks: Option<u32>,
    /// In how many of the kernel's retry rounds in a row it failed, when
    /// the kernel's verdicts are heard.
    pub failed_rounds: Option<u32>,
    pub source: VerdictSource,
}

/// How many retry rounds in a row the kernel must fail a task before it is
/// a blocker. One failed round is no proof: a task caught running, or a
/// kthread caught in a patched function it is about to leave, passes the
/// next round as a rule. Counted by the kernel's rounds (a second apart),
/// not by checks: a task checks itself many times a millisecond in
/// cond_resched.
pub const BLOCKS_AFTER_ROUNDS: u32 = 2;

/// Whether the kernel's verdict on a task says it goes on blocking.
fn persists(verdict: &TaskVerdict) -> bool {
    verdict.failed_rounds >= BLOCKS_AFTER_ROUNDS
}

impl Blocker {
    /// One of the per-CPU idle tasks, which have no /proc entry.
    pub fn is_idle_task(&self) -> bool {
        self.tid == 0
    }
}

/// A scheduler state letter as a one-letter string.
pub(crate) fn letter<S: serde::Serializer>(state: &char, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(state)
}

/// The code a transition waits for, as the kernel decides it
/// (klp_check_stack_func in kernel/livepatch/transition.c): while
/// unpatching, this patch's new functions; while patching, for each
/// function, what runs now: the original, or the replacement from the
/// patch below in the kernel's func stack.
pub struct PatchedCode<'a> {
    pub patch: &'a Patch,
    pub direction: Direction,
    /// Every loaded patch (this one among them): enabled ones that patch
    /// the same functions sit below it in the func stack.
    pub loaded: &'a [Patch],
}

/// A frame the transition waits for, and which version it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockingFrame {
    pub index: usize,
    pub version: CodeVersion,
}

impl PatchedCode<'_> {
    /// The first frame that runs code the transition must wait for.
    pub fn blocking_frame(&self, stack: &[StackFrame]) -> Option<BlockingFrame> {
        stack.iter().enumerate().find_map(|(index, frame)| {
            let version = self.version_of(frame)?;
            Some(BlockingFrame { index, version })
        })
    }

    fn version_of(&self, frame: &StackFrame) -> Option<CodeVersion> {
        let module = frame.module.as_deref();
        match self.direction {
            Direction::Unpatching => {
                (module == Some(self.patch.name.as_str())).then(|| CodeVersion::Replacement {
                    patch: self.patch.name.clone(),
                })
            }
            Direction::Patching => {
                if self.patches_original(frame) {
                    return Some(CodeVersion::Original);
                }
                // A frame in an earlier patch's module: its replacement of a
                // function this patch patches again (an atomic replace takes
                // over every function of every earlier patch).
                let below = self
                    .stacked_below()
                    .find(|other| module == Some(&other.name))?;
                Some(CodeVersion::Replacement {
                    patch: below.name.clone(),
                })
            }
        }
    }

    /// Named as a patched function, in that function's object.
    fn patches_original(&self, frame: &StackFrame) -> bool {
        self.patch.objects.iter().any(|object| {
            let in_object = match frame.module.as_deref() {
                None => object.name == VMLINUX,
                Some(module) => module == object.name,
            };
            in_object && object.functions.iter().any(|f| f.name == frame.function)
        })
    }

    /// Enabled patches whose replacements run where this one takes over.
    fn stacked_below(&self) -> impl Iterator<Item = &Patch> {
        let replace = self.patch.replace.as_ref().and_then(Known::value) == Some(&true);
        self.loaded.iter().filter(move |other| {
            other.name != self.patch.name
                && !other.gone
                && other.enabled == Known::Value(true)
                && (replace || shares_a_function(self.patch, other))
        })
    }
}

fn shares_a_function(a: &Patch, b: &Patch) -> bool {
    a.objects.iter().any(|ao| {
        b.objects.iter().filter(|bo| bo.name == ao.name).any(|bo| {
            ao.functions
                .iter()
                .any(|f| bo.functions.iter().any(|g| same_symbol(f, g)))
        })
    })
}

/// sympos 0 (a module's "the only one") and 1 (what sysfs shows for a
/// unique symbol) name the same symbol.
fn same_symbol(a: &PatchFunction, b: &PatchFunction) -> bool {
    a.name == b.name && a.sympos.max(1) == b.sympos.max(1)
}

/// The blockers among the tasks still pending, using the kernel's verdicts
/// where the tracer has them. `now_ns` is on the same clock as the verdicts'
/// timestamps (CLOCK_MONOTONIC). A pending task whose stack cannot be read
/// is listed as unexplained: it may well block, and an empty list would
/// read as an all-clear.
pub fn find_blockers(
    tasks: &[Task],
    code: &PatchedCode,
    verdicts: Option<&[TaskVerdict]>,
    now_ns: u64,
) -> Vec<Blocker> {
    let target = code.direction.target();
    let mut blockers: Vec<Blocker> = tasks
        .iter()
        .filter_map(|task| {
            let pending = match &task.patch_state {
                Known::Value(state) => *state != target && *state != PatchState::Idle,
                Known::Unknown { unknown } => {
                    let why = format!("its patch_state is unknown: {unknown}");
                    return Some(unexplained(task, code, why));
                }
            };
            if !pending {
                return None;
            }
            match verdicts {
                Some(verdicts) => from_kernel(task, code, verdicts, now_ns),
                None => inferred(task, code),
            }
        })
        .collect();
    if let Some(verdicts) = verdicts {
        blockers.extend(idle_blockers(verdicts, now_ns));
    }
    blockers.sort_by_key(|b| (b.reason != BlockReason::FunctionOnStack, b.pid, b.tid));
    blockers
}

/// The per-CPU idle tasks the kernel failed to switch: they take part in
/// every transition but have no /proc entry, so only the tracer sees them.
/// All have tid 0; `swapper/N` names the CPU.
fn idle_blockers(verdicts: &[TaskVerdict], now_ns: u64) -> Vec<Blocker> {
    let mut idle: Vec<&TaskVerdict> = verdicts
        .iter()
        .filter(|v| v.tid == 0 && v.reason.is_some() && persists(v))
        .collect();
    idle.sort_by(|a, b| a.comm.cmp(&b.comm));
    idle.into_iter()
        .filter_map(|verdict| {
            Some(Blocker {
                pid: 0,
                tid: 0,
                comm: verdict.comm.clone(),
                kthread: true,
                // An idle task is always runnable: it is what its CPU runs
                // when nothing else does.
                state: 'R',
                reason: verdict.reason?,
                function: verdict.function.clone(),
                version: None,
                unexplained: None,
                stack: Vec::new(),
                marked_frame: None,
                blocked_secs: Some(now_ns.saturating_sub(verdict.first_failure_ns) as f64 / 1e9),
                failed_checks: Some(verdict.failed_checks),
                failed_rounds: Some(verdict.failed_rounds),
                source: VerdictSource::Kernel,
            })
        })
        .collect()
}

fn stack_of(task: &Task) -> Vec<StackFrame> {
    task.stack.value().cloned().unwrap_or_default()
}

fn blocker(task: &Task, reason: BlockReason, code: &PatchedCode) -> Blocker {
    let stack = stack_of(task);
    let marked = code.blocking_frame(&stack);
    Blocker {
        pid: task.pid,
        tid: task.tid,
        comm: task.comm.clone(),
        kthread: task.kthread,
        state: task.state,
        reason,
        function: marked.as_ref().map(|m| stack[m.index].function.clone()),
        version: marked.as_ref().map(|m| m.version.clone()),
        unexplained: None,
        marked_frame: marked.map(|m| m.index),
        stack,
        blocked_secs: None,
        failed_checks: None,
        failed_rounds: None,
        source: VerdictSource::Inferred,
    }
}

fn unexplained(task: &Task, code: &PatchedCode, why: String) -> Blocker {
    Blocker {
        unexplained: Some(why),
        ..blocker(task, BlockReason::Unexplained, code)
    }
}

fn inferred(task: &Task, code: &PatchedCode) -> Option<Blocker> {
    let stack = match &task.stack {
        Known::Value(stack) => stack,
        Known::Unknown { unknown } => {
            let why = format!("pending, reason unknown: cannot read its stack ({unknown})");
            return Some(unexplained(task, code, why));
        }
    };
    if code.blocking_frame(stack).is_some() {
        Some(blocker(task, BlockReason::FunctionOnStack, code))
    } else if task.state == 'R' || task.caught_on_a_cpu() {
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
    let verdict = verdicts
        .iter()
        .find(|v| v.tid == task.tid)
        .filter(|v| persists(v))?;
    let reason = verdict.reason?;
    let mut blocker = blocker(task, reason, code);
    // The kernel names the old function; the stack tells which version.
    if blocker.function.is_none() {
        blocker.function = verdict.function.clone();
    }
    blocker.blocked_secs = Some(now_ns.saturating_sub(verdict.first_failure_ns) as f64 / 1e9);
    blocker.failed_checks = Some(verdict.failed_checks);
    blocker.failed_rounds = Some(verdict.failed_rounds);
    blocker.source = VerdictSource::Kernel;
    Some(blocker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::Known,
        testing::{frame, patch_of, task},
    };

    /// The plain patch of klp_test_target's klp_test_park_wait, in
    /// transition.
    fn patch() -> Patch {
        patch_of(
            "klp_test_patch_target",
            true,
            true,
            "klp_test_target",
            &["klp_test_park_wait"],
        )
    }

    /// `patch` in transition towards `direction`, the only one loaded.
    fn alone(patch: &Patch, direction: Direction) -> PatchedCode<'_> {
        PatchedCode {
            patch,
            direction,
            loaded: std::slice::from_ref(patch),
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
        let code = alone(&patch, Direction::Patching);
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

    /// Its state letter read as asleep, its stack read empty a moment
    /// apart: it was on a CPU, where the kernel would fail it as running.
    #[test]
    fn an_empty_stack_is_a_task_caught_running_unless_it_exited() {
        let patch = patch();
        let code = alone(&patch, Direction::Patching);
        let tasks = vec![
            task(10, 'S', PatchState::Unpatched, vec![]),
            task(11, 'Z', PatchState::Unpatched, vec![]),
        ];
        let blockers = find_blockers(&tasks, &code, None, 0);
        assert_eq!(blockers.len(), 1, "{blockers:#?}");
        assert_eq!(blockers[0].tid, 10);
        assert_eq!(blockers[0].reason, BlockReason::Running);
        assert_eq!(blockers[0].function, None);
    }

    #[test]
    fn a_same_named_function_in_another_object_does_not_block() {
        let patch = patch();
        let code = alone(&patch, Direction::Patching);
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
        let code = alone(&patch, Direction::Unpatching);
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
    fn kernel_verdicts_win_carry_their_age_and_need_two_failed_rounds() {
        let patch = patch();
        let code = alone(&patch, Direction::Patching);
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
                failed_rounds: 3,
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
                failed_rounds: 1,
                first_failure_ns: 4_000_000_000,
                last_failure_ns: 4_000_000_000,
            },
        ];
        let blockers = find_blockers(&tasks, &code, Some(&verdicts), 5_500_000_000);
        assert_eq!(
            blockers.len(),
            1,
            "task 11 failed one round only: {blockers:?}"
        );
        assert_eq!(blockers[0].source, VerdictSource::Kernel);
        assert_eq!(blockers[0].blocked_secs, Some(4.5));
        assert_eq!(blockers[0].failed_checks, Some(4));
        assert_eq!(blockers[0].failed_rounds, Some(3));
        let mut verdicts = verdicts;
        verdicts[1].failed_rounds = BLOCKS_AFTER_ROUNDS;
        let blockers = find_blockers(&tasks, &code, Some(&verdicts), 5_500_000_000);
        assert_eq!(blockers.len(), 2);
        assert_eq!(blockers[1].reason, BlockReason::UnreliableStack);
    }

    /// Without root the stack is unreadable: a pending task is then
    /// unexplained, never silently dropped (that would read as all-clear).
    #[test]
    fn a_pending_task_with_an_unreadable_stack_is_unexplained() {
        let patch = patch();
        let code = alone(&patch, Direction::Patching);
        let mut hidden = task(10, 'S', PatchState::Unpatched, vec![]);
        hidden.stack = Known::unknown("/proc/10/task/10/stack: Permission denied");
        let mut garbled = task(11, 'S', PatchState::Unpatched, vec![]);
        garbled.patch_state = Known::unknown("expected -1, 0 or 1, found \"x\"");
        let mut switched = task(12, 'S', PatchState::Patched, vec![]);
        switched.stack = Known::unknown("Permission denied");
        let blockers = find_blockers(&[hidden, garbled, switched], &code, None, 0);
        assert_eq!(
            blockers
                .iter()
                .map(|b| (b.tid, b.reason))
                .collect::<Vec<_>>(),
            [
                (10, BlockReason::Unexplained),
                (11, BlockReason::Unexplained)
            ]
        );
        assert!(
            blockers[0]
                .unexplained
                .as_deref()
                .is_some_and(|why| why.contains("Permission denied"))
        );
    }

    fn stacked(name: &str, enabled: bool) -> Patch {
        Patch {
            name: name.into(),
            enabled: Known::Value(enabled),
            transition: Known::Value(false),
            ..patch()
        }
    }

    fn in_first_patch() -> Vec<StackFrame> {
        vec![
            frame("__schedule", None),
            frame(
                "livepatch_klp_test_park_wait",
                Some("klp_test_patch_target"),
            ),
            frame("vfs_read", None),
        ]
    }

    /// check --module reads sympos 0 from the .ko; sysfs shows the loaded
    /// patch's unique symbol as 1: the same function.
    #[test]
    fn a_planned_patch_with_sympos_0_stacks_on_a_loaded_one_with_1() {
        let first = stacked("klp_test_patch_target", true);
        let mut planned = stacked("klp_test_patch_target2", false);
        planned.objects[0].functions[0].sympos = 0;
        let loaded = [first];
        let code = PatchedCode {
            patch: &planned,
            direction: Direction::Patching,
            loaded: &loaded,
        };
        assert!(code.blocking_frame(&in_first_patch()).is_some());
    }

    /// A second patch of a function an enabled patch already replaced: the
    /// task runs (and sleeps in) the first patch's replacement, and that is
    /// what the kernel looks for.
    #[test]
    fn patching_over_an_earlier_patch_blocks_on_its_replacement() {
        let first = stacked("klp_test_patch_target", true);
        let second = Patch {
            transition: Known::Value(true),
            ..stacked("klp_test_patch_target2", true)
        };
        let loaded = [first, second.clone()];
        let code = PatchedCode {
            patch: &second,
            direction: Direction::Patching,
            loaded: &loaded,
        };
        let tasks = vec![
            task(10, 'S', PatchState::Unpatched, in_first_patch()),
            task(11, 'S', PatchState::Unpatched, parked()),
        ];
        let blockers = find_blockers(&tasks, &code, None, 0);
        assert_eq!(blockers.len(), 2, "{blockers:#?}");
        assert_eq!(
            blockers[0].function.as_deref(),
            Some("livepatch_klp_test_park_wait")
        );
        assert_eq!(
            blockers[0].version,
            Some(CodeVersion::Replacement {
                patch: "klp_test_patch_target".into()
            })
        );
        assert_eq!(blockers[0].marked_frame, Some(1));
        assert_eq!(blockers[1].version, Some(CodeVersion::Original));
    }

    /// A disabled patch's module runs nothing any more; a patch of other
    /// functions is not below this one in any func stack.
    #[test]
    fn only_enabled_patches_of_the_same_function_are_below() {
        let disabled = stacked("klp_test_patch_target", false);
        let mut elsewhere = stacked("klp_other", true);
        elsewhere.objects[0].functions[0].name = "klp_test_busy_loop".into();
        let second = stacked("klp_test_patch_target2", true);
        for below in [disabled, elsewhere] {
            let mut in_module = in_first_patch();
            in_module[1].module = Some(below.name.clone());
            let loaded = [below, second.clone()];
            let code = PatchedCode {
                patch: &second,
                direction: Direction::Patching,
                loaded: &loaded,
            };
            assert_eq!(code.blocking_frame(&in_module), None);
        }
    }

    /// An atomic replace takes over every function of every earlier patch.
    #[test]
    fn an_atomic_replace_waits_for_every_earlier_patch() {
        let mut elsewhere = stacked("klp_other", true);
        elsewhere.objects[0].functions[0].name = "klp_test_busy_loop".into();
        let replace = Patch {
            replace: Some(Known::Value(true)),
            ..stacked("klp_replace", true)
        };
        let loaded = [elsewhere, replace.clone()];
        let code = PatchedCode {
            patch: &replace,
            direction: Direction::Patching,
            loaded: &loaded,
        };
        let mut in_other = in_first_patch();
        in_other[1].module = Some("klp_other".into());
        assert_eq!(
            code.blocking_frame(&in_other).map(|f| f.version),
            Some(CodeVersion::Replacement {
                patch: "klp_other".into()
            })
        );
    }

    #[test]
    fn each_cpus_idle_task_the_kernel_failed_is_a_blocker() {
        let patch = patch();
        let code = alone(&patch, Direction::Patching);
        let idle = |cpu: u32, reason| TaskVerdict {
            tid: 0,
            tgid: 0,
            comm: format!("swapper/{cpu}"),
            kthread: true,
            reason,
            function: None,
            failed_checks: 3,
            failed_rounds: 2,
            first_failure_ns: 1_000_000_000,
            last_failure_ns: 3_000_000_000,
        };
        let verdicts = vec![
            idle(1, Some(BlockReason::Running)),
            idle(0, None),
            idle(2, Some(BlockReason::Running)),
        ];
        let blockers = find_blockers(&[], &code, Some(&verdicts), 4_000_000_000);
        let names: Vec<&str> = blockers.iter().map(|b| b.comm.as_str()).collect();
        assert_eq!(names, ["swapper/1", "swapper/2"]);
        assert!(blockers.iter().all(Blocker::is_idle_task));
        assert_eq!(blockers[0].blocked_secs, Some(3.0));
        assert_eq!(blockers[0].source, VerdictSource::Kernel);
        // Without the kernel's verdicts nothing sees them.
        assert!(find_blockers(&[], &code, None, 0).is_empty());
    }
}
