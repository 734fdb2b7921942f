//! The readiness analysis on its own, where the samples can differ: a task
//! seen in every sample is a persistent blocker, one seen in some is a
//! passer-by.
mod common;

use common::fixture::Fixture;
use livepatch_user::{
    analysis::readiness::{CallWindow, CheckInputs, Plan, Verdict, assess, resolve},
    kernel::{read_filter_functions, read_kallsyms, read_kernel},
    model::{Known, PatchState, StackFrame, Target, Task},
};

fn task(tid: u32, in_target: bool) -> Task {
    let frame = |function: &str| StackFrame {
        function: function.into(),
        offset: 0x10,
        size: 0x100,
        module: None,
    };
    let stack = if in_target {
        vec![
            frame("__schedule"),
            frame("cmdline_proc_show"),
            frame("seq_read_iter"),
        ]
    } else {
        vec![frame("__schedule"), frame("do_nanosleep")]
    };
    Task {
        pid: tid,
        tid,
        comm: format!("t{tid}"),
        kthread: false,
        state: 'S',
        patch_state: Known::Value(PatchState::Idle),
        stack: Known::Value(stack),
    }
}

fn kthread(task: Task) -> Task {
    Task {
        kthread: true,
        ..task
    }
}

/// Read while it ran on a CPU: the unwinder gives no stack.
fn on_a_cpu(task: Task) -> Task {
    Task {
        state: 'R',
        stack: Known::Value(Vec::new()),
        ..task
    }
}

#[test]
fn persistent_blockers_are_told_from_passers_by() {
    let fixture = Fixture::livepatch_kernel();
    fixture
        .file("proc/kallsyms", "ffffffff817876b0 t cmdline_proc_show\n")
        .file(
            "sys/kernel/tracing/available_filter_functions",
            "cmdline_proc_show\n",
        );
    let root = fixture.root();
    let kernel = read_kernel(root);
    let names = ["cmdline_proc_show"];
    let symbols = read_kallsyms(root, &names).unwrap();
    let filter = read_filter_functions(root, &symbols);
    let targets = [Target {
        name: "cmdline_proc_show".into(),
        object: None,
        sympos: 0,
    }];
    // Task 1 sits in the target throughout; task 2 passes through once.
    // Kthread 3 is caught on a CPU once, where no stack can be read: it
    // never returns to user space, so it is still in the target. User task
    // 4, caught so, may have been in user space, where it switches.
    let samples = vec![
        vec![
            task(1, true),
            task(2, false),
            kthread(task(3, true)),
            task(4, true),
        ],
        vec![
            task(1, true),
            task(2, true),
            on_a_cpu(kthread(task(3, true))),
            on_a_cpu(task(4, true)),
        ],
        vec![
            task(1, true),
            task(2, false),
            kthread(task(3, true)),
            task(4, true),
        ],
    ];
    let ftrace_users = Known::Value(Vec::new());
    let resolutions = [resolve(&symbols, None, &targets[0])];
    let base = CheckInputs {
        kernel: &kernel,
        patches: &[],
        plan: &Plan::Functions,
        targets: &targets,
        resolutions: &resolutions,
        references: &[],
        symbols: &symbols,
        loaded_modules: None,
        filter_functions: &filter,
        ftrace_users: &ftrace_users,
        calls: &[Known::Value(CallWindow {
            per_sec: 12.5,
            old: 25,
            new: 0,
        })],
        ebpf_wanted: true,
        ebpf_unavailable: None,
        privileged: true,
        samples: &samples,
    };
    let readiness = assess(&base);
    let blockers: Vec<(u32, bool, usize, usize)> = readiness
        .predicted_blockers
        .iter()
        .map(|b| (b.tid, b.persistent, b.seen_in, b.on_cpu_in))
        .collect();
    assert_eq!(
        blockers,
        [
            (1, true, 3, 0),
            (3, true, 2, 1),
            (2, false, 1, 0),
            (4, false, 2, 0)
        ]
    );
    assert!(
        readiness.predicted_blockers[2]
            .why
            .contains("1 of 3 samples")
    );
    assert!(
        readiness.predicted_blockers[0]
            .why
            .contains("fake signal wakes it")
    );
    assert_eq!(readiness.predicted_blockers[0].marked_frame, 1);
    assert_eq!(readiness.functions[0].calls_per_sec, Some(12.5));
    // Everything else passes: the persistent blocker alone makes warnings.
    assert_eq!(readiness.verdict, Verdict::Warnings, "{readiness:#?}");
    let fentry = |readiness: &livepatch_user::analysis::readiness::Readiness| {
        let check = readiness.kernel_checks.iter().find(|c| c.id == "fentry");
        check.map(|c| (c.status, c.detail.clone())).unwrap()
    };
    assert_eq!(
        fentry(&readiness).0,
        livepatch_user::analysis::readiness::Status::Pass
    );

    // fentry works, but not on this function (5.10: livepatch holds it):
    // the kernel check must not say calls are counted.
    let refused = assess(&CheckInputs {
        calls: &[Known::unknown("cannot attach to cmdline_proc_show (EBUSY)")],
        ..base
    });
    let (status, detail) = fentry(&refused);
    assert_eq!(status, livepatch_user::analysis::readiness::Status::Warn);
    assert!(
        detail.contains("cmdline_proc_show: cannot attach"),
        "{detail}"
    );
}

#[test]
fn a_call_window_is_the_counters_totals_over_its_length() {
    use livepatch_user::{analysis::readiness::call_window, model::CallCount};
    let count = CallCount {
        function: "cmdline_proc_show".into(),
        old: 50,
        new: 50,
    };
    let window = call_window(&count, 2.0);
    assert_eq!(window.per_sec, 50.0);
    assert_eq!((window.old, window.new), (50, 50));
    assert_eq!(call_window(&count, 0.0).per_sec, 0.0);
}
