//! What kind of problem a blocker is, and what an administrator can do.
use serde::Serialize;

use super::blockers::Blocker;
use crate::model::{BlockReason, Direction};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockerKind {
    /// A user task asleep in a patched function: the fake signal usually
    /// moves it.
    UserTaskAsleepInPatchedFunction,
    /// A kthread inside a patched function: it never returns to user space,
    /// so it may never switch.
    KthreadInPatchedFunction,
    /// Running on a CPU whenever the kernel looks.
    RunningInKernel,
    UnreliableStack,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Advice {
    pub kind: BlockerKind,
    pub advice: String,
}

/// The kernel signals the remaining tasks after this many failed rounds, one
/// round a second (SIGNALS_TIMEOUT in kernel/livepatch/transition.c).
pub const SIGNALS_AFTER_ROUNDS: u32 = 15;

pub fn advise(blocker: &Blocker, direction: Direction, patch: &str) -> Advice {
    let who = format!(
        "{} (pid {}, tid {})",
        blocker.comm, blocker.pid, blocker.tid
    );
    let function = blocker.function.as_deref().unwrap_or("a patched function");
    let undo = match direction {
        Direction::Patching => format!(
            "`echo 0 > /sys/kernel/livepatch/{patch}/enabled` reverses the transition \
             (safe: tasks go back to the old code)"
        ),
        Direction::Unpatching => format!(
            "`echo 1 > /sys/kernel/livepatch/{patch}/enabled` re-enables the patch \
             (safe: tasks stay on the new code)"
        ),
    };
    let force = format!(
        "`echo 1 > /sys/kernel/livepatch/{patch}/force` marks every remaining task switched \
         (unsafe: {who} may mix old and new code, and the patch module can never be unloaded)"
    );
    match (blocker.reason, blocker.kthread) {
        (BlockReason::FunctionOnStack, false) => Advice {
            kind: BlockerKind::UserTaskAsleepInPatchedFunction,
            advice: format!(
                "{who} is inside {function}. After {SIGNALS_AFTER_ROUNDS} failed rounds \
                 (about {SIGNALS_AFTER_ROUNDS} s) the kernel sends it a fake signal: an \
                 interruptible sleep then restarts its syscall and it switches on the way out. \
                 If it still blocks, the call does not return to user space (uninterruptible \
                 sleep or a long loop): restart or stop that service, or {undo}."
            ),
        },
        (BlockReason::FunctionOnStack, true) => Advice {
            kind: BlockerKind::KthreadInPatchedFunction,
            advice: format!(
                "kernel thread {who} is inside {function} and never returns to user space; \
                 the kernel's wake-up only helps if its loop leaves {function}. If it loops \
                 there, it will never switch: {undo}, or as a last resort {force}."
            ),
        },
        (BlockReason::Running, _) => Advice {
            kind: BlockerKind::RunningInKernel,
            advice: format!(
                "{who} was running on a CPU each time the kernel checked it. Usually \
                 transient; if it persists, it is busy in the kernel without scheduling \
                 (a vCPU thread or a CPU-bound syscall): pause or reschedule that work, \
                 or {undo}."
            ),
        },
        (BlockReason::UnreliableStack, _) => Advice {
            kind: BlockerKind::UnreliableStack,
            advice: format!(
                "the kernel cannot walk {who}'s stack reliably (for example in an interrupt, \
                 an exception or code without ORC data). Usually transient; if it persists, \
                 wait for the task to leave that path or {undo}."
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::blockers::VerdictSource;

    fn blocker(reason: BlockReason, kthread: bool) -> Blocker {
        Blocker {
            pid: 7,
            tid: 7,
            comm: "worker".into(),
            kthread,
            reason,
            function: Some("klp_test_busy_loop".into()),
            stack: vec![],
            marked_frame: None,
            blocked_secs: None,
            failed_checks: None,
            source: VerdictSource::Inferred,
        }
    }

    #[test]
    fn a_looping_kthread_is_offered_reverse_and_force_with_the_risk() {
        let a = advise(
            &blocker(BlockReason::FunctionOnStack, true),
            Direction::Patching,
            "p",
        );
        assert_eq!(a.kind, BlockerKind::KthreadInPatchedFunction);
        assert!(
            a.advice
                .contains("echo 0 > /sys/kernel/livepatch/p/enabled")
        );
        assert!(a.advice.contains("force"));
        assert!(a.advice.contains("never be unloaded"));
    }

    #[test]
    fn a_sleeping_user_task_is_told_about_the_fake_signal() {
        let a = advise(
            &blocker(BlockReason::FunctionOnStack, false),
            Direction::Patching,
            "p",
        );
        assert_eq!(a.kind, BlockerKind::UserTaskAsleepInPatchedFunction);
        assert!(a.advice.contains("fake signal"));
        assert!(
            !a.advice.contains("force"),
            "force is not the first answer here"
        );
    }

    #[test]
    fn undo_while_unpatching_means_enabling_again() {
        let a = advise(
            &blocker(BlockReason::Running, false),
            Direction::Unpatching,
            "p",
        );
        assert_eq!(a.kind, BlockerKind::RunningInKernel);
        assert!(
            a.advice
                .contains("echo 1 > /sys/kernel/livepatch/p/enabled")
        );
    }
}
