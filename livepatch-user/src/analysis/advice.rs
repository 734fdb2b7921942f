//! What kind of problem a blocker is, whether it will clear by itself, and
//! what an administrator can do. The scheduler state decides much of it:
//! the kernel's fake signal wakes only interruptible sleeps (user tasks get
//! a signal, kthreads a wake-up of TASK_INTERRUPTIBLE), so a task in `D`
//! inside a patched function stays there.
use schemars::JsonSchema;
use serde::Serialize;

use super::blockers::Blocker;
use crate::model::{BlockReason, Direction};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BlockerKind {
    /// A user task in an interruptible sleep in a patched function: the
    /// fake signal restarts its syscall and it switches on the way out.
    UserTaskAsleepInPatchedFunction,
    /// In a patched function, in an uninterruptible sleep or stopped:
    /// neither signal nor wake-up moves it.
    UninterruptibleInPatchedFunction,
    /// A kthread inside a patched function: it never returns to user space,
    /// so it may never switch.
    KthreadInPatchedFunction,
    /// Running on a CPU whenever the kernel looks.
    RunningInKernel,
    UnreliableStack,
    /// A CPU's idle task (swapper/N): it switches itself in its CPU's idle
    /// loop, which the kernel kicks every round.
    IdleTask,
    /// Pending, and klpscope cannot tell why.
    Unexplained,
}

/// Whether the blocker goes away without anyone acting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Forecast {
    /// The kernel's fake signal (after 15 failed rounds) moves it.
    ClearsAfterSignals,
    /// The fake signal or wake-up helps only if the task then leaves the
    /// patched function (a kthread's loop, a vCPU thread's return to user
    /// space).
    MayClearAfterSignals,
    /// Nothing the kernel does moves it: someone must act.
    WillNotClearByItself,
    /// Usually gone by the next retry round.
    Transient,
    /// Not known: see why the task is unexplained.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Advice {
    pub kind: BlockerKind,
    pub forecast: Forecast,
    pub advice: String,
}

/// The kernel signals the remaining tasks after this many failed rounds, one
/// round a second (SIGNALS_TIMEOUT in kernel/livepatch/transition.c).
pub const SIGNALS_AFTER_ROUNDS: u32 = 15;

/// Asleep or stopped in a way no signal interrupts: `D` (uninterruptible,
/// killable included), `T`/`t` (stopped, traced).
fn beyond_signals(state: char) -> bool {
    matches!(state, 'D' | 'T' | 't')
}

/// `signals_in_secs`: how long until the kernel sends its fake signals;
/// None when they were sent already (or the time is unknown).
pub fn advise(
    blocker: &Blocker,
    direction: Direction,
    patch: &str,
    signals_in_secs: Option<f64>,
) -> Advice {
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
    let signals = match signals_in_secs {
        Some(secs) => format!("in about {secs:.0} s"),
        None => "already sent".to_owned(),
    };
    let state = blocker.state;
    if blocker.is_idle_task() {
        return Advice {
            kind: BlockerKind::IdleTask,
            forecast: Forecast::Transient,
            advice: format!(
                "{}, the idle task of its CPU, has not switched ({}): it switches itself when \
                 the CPU passes through its idle loop, and the kernel wakes idle CPUs every \
                 round for that. If it persists, that CPU never gets there: it is busy with \
                 interrupts or softirqs, or stuck in a driver's idle state; find what keeps \
                 it busy (/proc/interrupts, /proc/softirqs), or {undo}.",
                blocker.comm,
                blocker.reason.words()
            ),
        };
    }
    let (kind, forecast, advice) = match (blocker.reason, blocker.kthread) {
        (BlockReason::FunctionOnStack, _) if beyond_signals(state) => (
            BlockerKind::UninterruptibleInPatchedFunction,
            Forecast::WillNotClearByItself,
            format!(
                "{who} is inside {function} in state {state} (uninterruptible sleep or \
                 stopped): the kernel's fake signals and wake-ups do not move it, so it will \
                 not clear by itself. Make it leave: complete or cancel what it waits for \
                 (I/O, a lock, a device), restart or stop its service, or {undo}."
            ),
        ),
        (BlockReason::FunctionOnStack, false) if state == 'S' => (
            BlockerKind::UserTaskAsleepInPatchedFunction,
            Forecast::ClearsAfterSignals,
            format!(
                "{who} is asleep (interruptible) inside {function}. The kernel's fake signal \
                 ({signals}, after {SIGNALS_AFTER_ROUNDS} failed rounds) restarts its syscall and it \
                 switches on the way out: it should clear then. If it still blocks, the \
                 call goes straight back to sleep in the kernel: restart or stop that \
                 service, or {undo}."
            ),
        ),
        (BlockReason::FunctionOnStack, false) => (
            BlockerKind::UserTaskAsleepInPatchedFunction,
            Forecast::MayClearAfterSignals,
            format!(
                "{who} is inside {function} (state {state}). The kernel's fake signal \
                 ({signals}) moves it only if that makes it return to user space (a vCPU \
                 thread does; a busy syscall may not): if it still blocks after the signal, \
                 pause or restart that work, or {undo}."
            ),
        ),
        (BlockReason::FunctionOnStack, true) => (
            BlockerKind::KthreadInPatchedFunction,
            if state == 'S' {
                Forecast::MayClearAfterSignals
            } else {
                Forecast::WillNotClearByItself
            },
            format!(
                "kernel thread {who} is inside {function} (state {state}) and never returns \
                 to user space; the kernel's wake-up ({signals}) only helps if its loop \
                 leaves {function}. If it loops there, it will never switch: {undo}, or as a \
                 last resort {force}."
            ),
        ),
        (BlockReason::Running, _) => (
            BlockerKind::RunningInKernel,
            Forecast::Transient,
            format!(
                "{who} was running on a CPU each time the kernel checked it. Usually \
                 transient; if it persists, it is busy in the kernel without scheduling \
                 (a vCPU thread or a CPU-bound syscall): pause or reschedule that work, \
                 or {undo}."
            ),
        ),
        (BlockReason::UnreliableStack, _) => (
            BlockerKind::UnreliableStack,
            Forecast::Transient,
            format!(
                "the kernel cannot walk {who}'s stack reliably (for example in an interrupt, \
                 an exception or code without ORC data). Usually transient; if it persists, \
                 wait for the task to leave that path or {undo}."
            ),
        ),
        (BlockReason::Unexplained, _) => (
            BlockerKind::Unexplained,
            Forecast::Unknown,
            format!(
                "{who} has not switched and klpscope cannot tell why ({}). Run klpscope as \
                 root to see its stack, or with eBPF to hear the kernel's own verdict.",
                blocker.unexplained.as_deref().unwrap_or("no verdict")
            ),
        ),
    };
    Advice {
        kind,
        forecast,
        advice,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn blocker(reason: BlockReason, kthread: bool) -> Blocker {
        Blocker {
            pid: 7,
            tid: 7,
            comm: "worker".into(),
            kthread,
            function: Some("klp_test_busy_loop".into()),
            ..testing::blocker(7, reason)
        }
    }

    #[test]
    fn a_looping_kthread_is_offered_reverse_and_force_with_the_risk() {
        let a = advise(
            &blocker(BlockReason::FunctionOnStack, true),
            Direction::Patching,
            "p",
            Some(12.0),
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
            Some(12.0),
        );
        assert_eq!(a.kind, BlockerKind::UserTaskAsleepInPatchedFunction);
        assert!(a.advice.contains("fake signal"));
        assert!(a.advice.contains("in about 12 s"), "{}", a.advice);
        assert_eq!(a.forecast, Forecast::ClearsAfterSignals);
        assert!(
            !a.advice.contains("force"),
            "force is not the first answer here"
        );
    }

    /// The fake signal wakes only interruptible sleeps: a task in D inside
    /// the function, user task or kthread, is not promised that it clears.
    #[test]
    fn an_uninterruptible_sleep_will_not_clear_by_itself() {
        for kthread in [false, true] {
            let mut sleeper = blocker(BlockReason::FunctionOnStack, kthread);
            sleeper.state = 'D';
            let a = advise(&sleeper, Direction::Patching, "p", Some(3.0));
            assert_eq!(a.kind, BlockerKind::UninterruptibleInPatchedFunction);
            assert_eq!(a.forecast, Forecast::WillNotClearByItself);
            assert!(
                a.advice.contains("will not clear by itself"),
                "{}",
                a.advice
            );
            assert!(!a.advice.contains("should clear"), "{}", a.advice);
        }
    }

    #[test]
    fn an_unexplained_task_says_what_would_explain_it() {
        let mut unknown = blocker(BlockReason::Unexplained, false);
        unknown.unexplained = Some("cannot read its stack (EACCES)".into());
        let a = advise(&unknown, Direction::Patching, "p", None);
        assert_eq!(a.forecast, Forecast::Unknown);
        assert!(a.advice.contains("EACCES") && a.advice.contains("root"));
    }

    #[test]
    fn undo_while_unpatching_means_enabling_again() {
        let a = advise(
            &blocker(BlockReason::Running, false),
            Direction::Unpatching,
            "p",
            None,
        );
        assert_eq!(a.kind, BlockerKind::RunningInKernel);
        assert!(
            a.advice
                .contains("echo 1 > /sys/kernel/livepatch/p/enabled")
        );
    }
}
