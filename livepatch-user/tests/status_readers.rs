//! The kernel readers over fixture trees: each test builds the /proc and
//! /sys it needs in a temporary folder.
mod common;

use common::fixture::{Fixture, RELEASE, Thread};
use livepatch_user::{
    analysis::transition::transition,
    feed::snapshot::read_snapshot,
    kernel::{
        Stacks, ThreadId, read_filter_functions, read_kallsyms, read_kallsyms_with_extents,
        read_kernel, read_patch, read_patches, read_task, scan_patch_states,
    },
    model::{Direction, Known, PatchState, Snapshot, Transition},
};

/// The transition the snapshot shows, as diagnose works it out.
fn transition_of(snapshot: &Snapshot) -> Option<Transition> {
    transition(
        &snapshot.patches,
        snapshot.log.value().map(Vec::as_slice),
        snapshot.tasks.iter().map(|task| &task.patch_state),
    )
}

fn reason<T: std::fmt::Debug>(value: &Known<T>) -> &str {
    match value {
        Known::Unknown { unknown } => unknown,
        Known::Value(value) => panic!("expected unknown, got {value:?}"),
    }
}

#[test]
fn no_livepatch_support_is_explained_from_the_config() {
    let fixture = Fixture::without_livepatch();
    fixture.thread(Thread {
        pid: 1,
        tid: 1,
        comm: "init",
        state: 'S',
        kthread: false,
        patch_state: None,
        stack: None,
    });
    let snapshot = read_snapshot(fixture.root()).unwrap();
    assert_eq!(snapshot.kernel.release, RELEASE);
    assert!(!snapshot.kernel.livepatch.is_supported());
    assert!(
        snapshot.kernel.problems[0].contains("CONFIG_LIVEPATCH is not set in /proc/config.gz"),
        "{:?}",
        snapshot.kernel.problems
    );
    assert!(snapshot.kernel.problems[0].contains("CONFIG_MODULES"));
    assert!(snapshot.patches.is_empty());
    assert_eq!(transition_of(&snapshot), None);
    assert!(reason(&snapshot.tasks[0].patch_state).contains("CONFIG_LIVEPATCH"));
}

#[test]
fn the_boot_config_is_the_fallback() {
    let fixture = Fixture::without_livepatch();
    fixture.remove("proc/config.gz").file(
        &format!("boot/config-{RELEASE}"),
        "CONFIG_MODULES=y\n# CONFIG_LIVEPATCH is not set\n",
    );
    let kernel = read_kernel(fixture.root());
    assert!(!kernel.livepatch.is_supported());
    let expected = format!("CONFIG_LIVEPATCH is not set in /boot/config-{RELEASE}");
    assert!(
        kernel.problems[0].contains(&expected),
        "{:?}",
        kernel.problems
    );
    assert!(!kernel.problems[0].contains("CONFIG_MODULES"));
}

/// From 7.x Debian also ships the config in the modules folder.
#[test]
fn the_modules_folder_config_is_read_when_boot_has_none() {
    let fixture = Fixture::without_livepatch();
    fixture.remove("proc/config.gz").file(
        &format!("usr/lib/modules/{RELEASE}/config"),
        "CONFIG_MODULES=y\nCONFIG_LIVEPATCH=y\nCONFIG_HAVE_RELIABLE_STACKTRACE=y\n",
    );
    let kernel = read_kernel(fixture.root());
    assert_eq!(
        kernel.reliable_stacktrace,
        Some(true),
        "{:?}",
        kernel.problems
    );
}

#[test]
fn no_config_anywhere_names_the_places_tried() {
    let fixture = Fixture::without_livepatch();
    fixture.remove("proc/config.gz");
    let kernel = read_kernel(fixture.root());
    assert!(!kernel.livepatch.is_supported());
    assert_eq!(kernel.reliable_stacktrace, None);
    let problem = &kernel.problems[0];
    assert!(problem.contains("no kernel config found"), "{problem}");
    assert!(
        problem.contains("/proc/config.gz")
            && problem.contains("/boot/config-")
            && problem.contains("/usr/lib/modules/"),
        "{problem}"
    );
}

#[test]
fn kernel_facts_of_a_livepatch_kernel() {
    let fixture = Fixture::livepatch_kernel();
    fixture
        .file(
            "proc/sys/kernel/tainted",
            &format!("{}\n", (1u64 << 15) | (1 << 12)),
        )
        .file(
            "sys/kernel/security/lockdown",
            "none [integrity] confidentiality\n",
        )
        .file("sys/module/module/parameters/sig_enforce", "Y\n");
    let kernel = read_kernel(fixture.root());
    assert!(kernel.livepatch.is_supported());
    assert_eq!(kernel.reliable_stacktrace, Some(true));
    assert_eq!(kernel.ftrace_enabled, Some(true));
    assert_eq!(kernel.lockdown.as_deref(), Some("integrity"));
    assert_eq!(kernel.module_sig_enforce, Some(true));
    assert!(kernel.btf);
    assert_eq!(kernel.tracefs.as_deref(), Some("/sys/kernel/tracing"));
    let taint: Vec<char> = kernel.taint.iter().map(|flag| flag.letter).collect();
    assert_eq!(taint, ['O', 'K']);
    assert_eq!(
        kernel.problems,
        [
            "lockdown is integrity: unsigned livepatch modules are refused",
            "module signatures are enforced: a livepatch module must be signed",
        ]
    );
}

#[test]
fn missing_facts_become_problems() {
    let fixture = Fixture::livepatch_kernel();
    fixture
        .config("CONFIG_MODULES=y\nCONFIG_LIVEPATCH=y\n")
        .file("proc/sys/kernel/ftrace_enabled", "0\n")
        .file("proc/mounts", "proc /proc proc rw 0 0\n")
        .remove("sys/kernel/btf/vmlinux")
        .remove("sys/kernel/security/lockdown");
    let kernel = read_kernel(fixture.root());
    assert!(kernel.livepatch.is_supported());
    assert_eq!(kernel.reliable_stacktrace, Some(false));
    assert_eq!(kernel.ftrace_enabled, Some(false));
    assert_eq!(kernel.lockdown, None);
    assert!(!kernel.btf);
    assert_eq!(kernel.tracefs, None);
    let problems = kernel.problems.join("\n");
    for expected in [
        "reliable stacktrace",
        "ftrace is disabled",
        "no BTF",
        "tracefs is not mounted",
    ] {
        assert!(
            problems.contains(expected),
            "{expected} missing from {problems}"
        );
    }
}

#[test]
fn tracefs_under_debugfs_counts() {
    let fixture = Fixture::livepatch_kernel();
    fixture
        .file("proc/mounts", "debugfs /sys/kernel/debug debugfs rw 0 0\n")
        .dir("sys/kernel/debug/tracing");
    assert_eq!(
        read_kernel(fixture.root()).tracefs.as_deref(),
        Some("/sys/kernel/debug/tracing")
    );
}

fn idle_patches() -> Fixture {
    let fixture = Fixture::livepatch_kernel();
    fixture
        .patch("klp_b", "1", "0", Some("1"))
        .object(
            "klp_b",
            "vmlinux",
            "1",
            &["cmdline_proc_show,1", "meminfo_proc_show,2"],
        )
        .object("klp_b", "klp_test_target", "0", &["klp_test_park_wait,1"])
        .patch("klp_a", "0", "0", None)
        .object("klp_a", "vmlinux", "0", &["version_proc_show,1"])
        .user_thread(100, 100, "-1")
        .user_thread(100, 101, "-1");
    fixture
}

#[test]
fn idle_patches_with_objects_and_functions() {
    let fixture = idle_patches();
    let snapshot = read_snapshot(fixture.root()).unwrap();
    assert_eq!(transition_of(&snapshot), None);
    let names: Vec<_> = snapshot.patches.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["klp_a", "klp_b"]);

    let [a, b] = &snapshot.patches[..] else {
        unreachable!()
    };
    assert_eq!(a.enabled, Known::Value(false));
    assert_eq!(a.replace, None, "a kernel before 6.11 has no replace file");
    assert_eq!(b.enabled, Known::Value(true));
    assert_eq!(b.transition, Known::Value(false));
    assert_eq!(b.replace, Some(Known::Value(true)));
    assert!(!b.gone);

    let objects: Vec<_> = b
        .objects
        .iter()
        .map(|o| (o.name.as_str(), o.patched.clone()))
        .collect();
    assert_eq!(
        objects,
        [
            ("klp_test_target", Known::Value(false)),
            ("vmlinux", Known::Value(true))
        ]
    );
    let functions: Vec<_> = b.objects[1]
        .functions
        .iter()
        .map(|f| (f.name.as_str(), f.sympos))
        .collect();
    assert_eq!(
        functions,
        [("cmdline_proc_show", 1), ("meminfo_proc_show", 2)]
    );

    assert_eq!(snapshot.tasks.len(), 2);
    assert!(
        snapshot
            .tasks
            .iter()
            .all(|t| t.patch_state == Known::Value(PatchState::Idle))
    );
    assert!(reason(&snapshot.tasks[0].stack).contains("not read"));
}

/// Threads 1..=4: two switched, one not, one unreadable (a folder where
/// patch_state should be).
fn transition_fixture(enabled: &str, switched: &str, unswitched: &str) -> Fixture {
    let fixture = Fixture::livepatch_kernel();
    fixture
        .patch("klp_idle", "1", "0", Some("0"))
        .patch("klp_t", enabled, "1", Some("0"))
        .object("klp_t", "vmlinux", "1", &["cmdline_proc_show,1"])
        .user_thread(10, 10, switched)
        .user_thread(10, 11, switched)
        .thread(Thread {
            pid: 20,
            tid: 20,
            comm: "parked",
            state: 'S',
            kthread: false,
            patch_state: Some(unswitched),
            stack: Some("[<0>] klp_test_park_wait+0x3c/0x80 [klp_test_target]\n[<0>] do_syscall_64+0x82/0x190\n"),
        })
        .thread(Thread {
            pid: 2,
            tid: 2,
            comm: "kthreadd",
            state: 'S',
            kthread: true,
            patch_state: None,
            stack: None,
        })
        .dir("proc/2/task/2/patch_state");
    fixture
}

#[test]
fn transition_while_patching() {
    let fixture = transition_fixture("1", "1", "0");
    let snapshot = read_snapshot(fixture.root()).unwrap();
    assert_eq!(
        transition_of(&snapshot),
        Some(Transition {
            patch: "klp_t".into(),
            direction: Direction::Patching,
            tasks_total: 4,
            tasks_pending: 2,
        })
    );
    let parked = snapshot.tasks.iter().find(|t| t.tid == 20).unwrap();
    assert_eq!(parked.comm, "parked");
    assert!(!parked.kthread);
    let stack = parked
        .stack
        .value()
        .expect("pending threads have their stack read");
    assert_eq!(stack[0].function, "klp_test_park_wait");
    assert_eq!(stack[0].module.as_deref(), Some("klp_test_target"));

    let kthreadd = snapshot.tasks.iter().find(|t| t.tid == 2).unwrap();
    assert!(kthreadd.kthread);
    assert!(reason(&kthreadd.patch_state).contains("patch_state"));
    assert!(reason(&kthreadd.stack).contains("no stack file"));

    let switched = snapshot.tasks.iter().find(|t| t.tid == 10).unwrap();
    assert!(reason(&switched.stack).contains("not read"));
}

#[test]
fn transition_while_unpatching() {
    let fixture = transition_fixture("0", "0", "1");
    let snapshot = read_snapshot(fixture.root()).unwrap();
    let transition = transition_of(&snapshot).unwrap();
    assert_eq!(transition.direction, Direction::Unpatching);
    assert_eq!((transition.tasks_total, transition.tasks_pending), (4, 2));
}

#[test]
fn the_fast_scan_agrees_with_the_full_read() {
    let fixture = transition_fixture("1", "1", "0");
    let mut states = scan_patch_states(fixture.root()).unwrap();
    states.sort_by_key(|s| s.tid);
    let found: Vec<_> = states
        .iter()
        .map(|s| (s.tid, s.patch_state.value().copied()))
        .collect();
    assert_eq!(
        found,
        [
            (2, None),
            (10, Some(PatchState::Patched)),
            (11, Some(PatchState::Patched)),
            (20, Some(PatchState::Unpatched))
        ]
    );
    let patches = read_patches(fixture.root()).unwrap();
    let transition = transition(&patches, None, states.iter().map(|s| &s.patch_state));
    assert_eq!(transition.map(|t| t.tasks_pending), Some(2));
}

#[test]
fn a_transition_with_unknown_direction_is_not_claimed() {
    let fixture = transition_fixture("garbage", "1", "0");
    assert_eq!(transition_of(&read_snapshot(fixture.root()).unwrap()), None);
}

#[test]
fn a_patch_unloaded_between_two_reads() {
    let fixture = idle_patches();
    assert_eq!(read_patches(fixture.root()).unwrap().len(), 2);
    fixture.remove("sys/kernel/livepatch/klp_b");
    let after = read_patches(fixture.root()).unwrap();
    assert_eq!(
        after.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["klp_a"]
    );

    // What read_patches does for a name it listed whose folder is then
    // removed before its files are read.
    let gone = read_patch(fixture.root(), "klp_b");
    assert!(gone.gone);
    assert!(reason(&gone.enabled).contains("no such file"));
    assert!(gone.objects.is_empty());
}

/// Seen on 7.3 right after a quick unpatching: the kernel had removed the
/// patch's attribute files, not yet its folder.
#[test]
fn a_patch_whose_attributes_are_removed_is_gone() {
    let fixture = idle_patches();
    fixture.remove("sys/kernel/livepatch/klp_b/enabled");
    fixture.remove("sys/kernel/livepatch/klp_b/transition");
    let freed = read_patch(fixture.root(), "klp_b");
    assert!(freed.gone, "{freed:?}");
    assert!(!read_patch(fixture.root(), "klp_a").gone);
}

#[test]
fn a_thread_that_exits_mid_scan_is_skipped() {
    let fixture = idle_patches();
    fixture.remove("proc/100/task/101");
    let thread = ThreadId { pid: 100, tid: 101 };
    assert!(read_task(fixture.root(), thread, Stacks::Read).is_none());
    assert_eq!(scan_patch_states(fixture.root()).unwrap().len(), 1);
}

/// Root ignores permission bits, so EACCES cannot be made here with chmod:
/// a folder in place of the file is refused as not a regular file (sysfs
/// attributes) or gives EISDIR (thread files), which take the same path
/// (any error other than "not found" is an unknown with its reason).
/// status_cli.rs makes a real EACCES by running the binary as nobody.
#[test]
fn unreadable_files_are_unknown_with_the_reason() {
    let fixture = idle_patches();
    fixture
        .dir("sys/kernel/livepatch/klp_b/enabled")
        .dir("sys/kernel/livepatch/klp_b/vmlinux/patched")
        .dir("proc/100/task/100/patch_state")
        .dir("proc/100/task/100/stat")
        .dir("proc/100/task/100/stack");
    let patch = read_patch(fixture.root(), "klp_b");
    assert!(!patch.gone);
    assert!(
        reason(&patch.enabled).contains("not a regular file"),
        "{:?}",
        patch.enabled
    );
    let vmlinux = patch.objects.iter().find(|o| o.name == "vmlinux").unwrap();
    assert!(reason(&vmlinux.patched).contains("patched"));

    let task = read_task(
        fixture.root(),
        ThreadId { pid: 100, tid: 100 },
        Stacks::Read,
    )
    .unwrap();
    assert!(reason(&task.patch_state).contains("Is a directory"));
    assert!(reason(&task.stack).contains("Is a directory"));
    assert_eq!((task.comm.as_str(), task.state), ("", '?'));
}

#[test]
fn malformed_values_never_panic() {
    let huge = "99999999999999999999999999999999999999";
    for bad in ["", "garbage", huge, "-7", "\u{fffd}\0\n\n"] {
        let fixture = Fixture::livepatch_kernel();
        fixture
            .file("proc/sys/kernel/osrelease", bad)
            .file("proc/sys/kernel/tainted", bad)
            .file("proc/sys/kernel/ftrace_enabled", bad)
            .file("sys/kernel/security/lockdown", bad)
            .file("proc/mounts", bad)
            .file("proc/config.gz", bad)
            .patch("klp_bad", bad, bad, Some(bad))
            .object(
                "klp_bad",
                "vmlinux",
                bad,
                &["nocomma", "f,x", &format!("g,{huge}")],
            )
            .thread(Thread {
                pid: 7,
                tid: 7,
                comm: bad,
                state: 'S',
                kthread: false,
                patch_state: Some(bad),
                stack: Some(bad),
            })
            .file("proc/8/task/8/stat", bad)
            .file("proc/8/task/8/patch_state", bad)
            .file(&format!("proc/{huge}/task/1/patch_state"), "1");
        let snapshot = read_snapshot(fixture.root()).unwrap();
        let patch = &snapshot.patches[0];
        assert!(
            reason(&patch.enabled).contains("expected 0 or 1"),
            "{bad:?}"
        );
        assert_eq!(transition_of(&snapshot), None);
        assert!(
            snapshot
                .tasks
                .iter()
                .all(|t| t.patch_state.value().is_none()),
            "{bad:?}"
        );
        let kernel = &snapshot.kernel;
        assert!(!kernel.problems.is_empty());
        let _ = serde_json::to_string(&snapshot).unwrap();
    }
}

#[test]
fn kallsyms_lookup_with_sympos_and_modules() {
    let fixture = Fixture::livepatch_kernel();
    fixture.file(
        "proc/kallsyms",
        "ffffffff81000000 T _stext\n\
         ffffffff81100000 t dup_fn\n\
         ffffffff81200000 t dup_fn\n\
         ffffffffc0001000 t dup_fn\t[klp_test_target]\n\
         ffffffff81300000 T cmdline_proc_show\n\
         garbage line\n\
         zzzz T bad_address\n",
    );
    let table = read_kallsyms(
        fixture.root(),
        &["dup_fn", "cmdline_proc_show", "absent", "bad_address"],
    )
    .unwrap();
    assert_eq!(table.lookup("dup_fn").len(), 3);
    assert!(table.lookup("absent").is_empty());
    assert!(table.lookup("bad_address").is_empty());
    assert_eq!(
        table.resolve("dup_fn", None, 2).unwrap().address,
        0xffffffff81200000
    );
    assert_eq!(
        table.resolve("dup_fn", None, 0),
        None,
        "sympos 0 needs a unique name"
    );
    assert_eq!(
        table
            .resolve("dup_fn", Some("klp_test_target"), 0)
            .unwrap()
            .kind,
        't'
    );
    assert_eq!(
        table.resolve("cmdline_proc_show", None, 0).unwrap().kind,
        'T'
    );
}

#[test]
fn filter_functions_from_tracefs() {
    let fixture = Fixture::livepatch_kernel();
    fixture.file(
        "sys/kernel/tracing/available_filter_functions",
        "cmdline_proc_show\nklp_test_park_wait [klp_test_target]\nother\n",
    );
    let names = ["cmdline_proc_show", "klp_test_park_wait", "inlined_fn"];
    // Addresses hidden (as for a user without CAP_SYSLOG): by name.
    fixture.file(
        "proc/kallsyms",
        "0000000000000000 t cmdline_proc_show\n\
         0000000000000000 t klp_test_park_wait\t[klp_test_target]\n\
         0000000000000000 t inlined_fn\n",
    );
    let symbols = read_kallsyms(fixture.root(), &names).unwrap();
    let functions = read_filter_functions(fixture.root(), &symbols);
    let functions = functions.value().expect("tracefs is mounted");
    let traceable = |name: &str, object: Option<&str>| {
        functions.traceable(name, object, symbols.resolve(name, object, 0))
    };
    assert!(traceable("cmdline_proc_show", None));
    assert!(traceable("klp_test_park_wait", Some("klp_test_target")));
    assert!(!traceable("klp_test_park_wait", None));
    assert!(!traceable("inlined_fn", None));

    fixture.file("proc/mounts", "");
    assert!(reason(&read_filter_functions(fixture.root(), &symbols)).contains("not mounted"));
}

/// kallsyms for a syscall defined with SYSCALL_DEFINE0: the arch entry
/// point is an alias of `__do_sys_getpid`, the one name ftrace lists.
const GETPID_KALLSYMS: &str = "ffffffff82389ce0 t __do_sys_getpid\n\
     ffffffff82389ce0 T __x64_sys_getpid\n\
     ffffffff82389d10 T __ia32_sys_getppid\n\
     ffffffff82389d40 t dup_fn\n\
     ffffffff82389d80 t dup_fn\n\
     ffffffff82389dc0 T _etext\n";

#[test]
fn an_alias_is_traceable_under_the_name_ftrace_lists() {
    let fixture = Fixture::livepatch_kernel();
    fixture.file("proc/kallsyms", GETPID_KALLSYMS).file(
        "sys/kernel/tracing/available_filter_functions",
        "__do_sys_getpid\ndup_fn\n",
    );
    let symbols = read_kallsyms_with_extents(fixture.root(), &["__x64_sys_getpid"]).unwrap();
    let symbol = symbols.resolve("__x64_sys_getpid", None, 0).unwrap();
    assert_eq!(symbol.aliases, ["__do_sys_getpid"]);
    assert_eq!(symbol.size, Some(0x30));
    let functions = read_filter_functions(fixture.root(), &symbols);
    let functions = functions.value().unwrap();
    assert!(functions.traceable("__x64_sys_getpid", None, Some(symbol)));
    // By name alone, as before: the alias is not listed.
    assert!(!functions.traceable("__x64_sys_getpid", None, None));
}

#[test]
fn where_ftrace_lists_sites_by_address_each_symbol_is_judged_by_its_own() {
    let fixture = Fixture::livepatch_kernel();
    // 6.5+: the site follows the ENDBR instruction, 4 bytes in. Only the
    // second dup_fn has one; the first is notrace.
    fixture.file("proc/kallsyms", GETPID_KALLSYMS).file(
        "sys/kernel/tracing/available_filter_functions_addrs",
        "ffffffff82389ce4 __do_sys_getpid\nffffffff82389d84 dup_fn\n",
    );
    let symbols =
        read_kallsyms_with_extents(fixture.root(), &["__x64_sys_getpid", "dup_fn"]).unwrap();
    let functions = read_filter_functions(fixture.root(), &symbols);
    let functions = functions.value().unwrap();
    let traceable =
        |name: &str, sympos| functions.traceable(name, None, symbols.resolve(name, None, sympos));
    assert!(traceable("__x64_sys_getpid", 0));
    assert!(!traceable("dup_fn", 1));
    assert!(traceable("dup_fn", 2));
    // sympos 0 of a duplicated name resolves to no one symbol: by name.
    assert!(traceable("dup_fn", 0));
}

#[test]
fn stacks_longer_than_the_first_buffer_are_read_whole() {
    let fixture = idle_patches();
    let stack: String = (0..200)
        .map(|i| format!("[<0>] some_deep_kernel_function_{i:03}+0x10/0x200 [a_module]\n"))
        .collect();
    assert!(stack.len() > 8192);
    fixture.file("proc/100/task/100/stack", &stack);
    let task = read_task(
        fixture.root(),
        ThreadId { pid: 100, tid: 100 },
        Stacks::Read,
    )
    .unwrap();
    let frames = task.stack.value().unwrap();
    assert_eq!(frames.len(), 200);
    assert_eq!(frames[199].function, "some_deep_kernel_function_199");
}

/// 7.x tells each patch's place in the stack; earlier kernels have no file.
#[test]
fn stack_order_is_read_where_the_kernel_has_it() {
    let fixture = Fixture::livepatch_kernel();
    fixture
        .patch("klp_a", "1", "0", Some("0"))
        .patch("klp_b", "1", "0", Some("0"))
        .file("sys/kernel/livepatch/klp_b/stack_order", "2\n")
        .file("sys/kernel/livepatch/klp_a/stack_order", "0\n");
    let patches = read_patches(fixture.root()).unwrap();
    assert_eq!(
        patches[1].stack_order,
        Some(livepatch_user::model::Known::Value(2))
    );
    assert!(
        matches!(&patches[0].stack_order, Some(livepatch_user::model::Known::Unknown { unknown }) if unknown.contains("a number from 1")),
        "0 is not a place in the stack: {:?}",
        patches[0].stack_order
    );
    fixture.remove("sys/kernel/livepatch/klp_a/stack_order");
    assert_eq!(read_patch(fixture.root(), "klp_a").stack_order, None);
}
