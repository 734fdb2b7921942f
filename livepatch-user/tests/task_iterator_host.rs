//! The BPF task iterator against the procfs readers on this host's kernel,
//! with 10k extra threads alive: the same tasks, the same values, and
//! patch_state reported the same way (absent where the kernel has no
//! livepatch). The iterator must load here: where it cannot, these tests
//! fail and say why.
//!
//! The machine keeps running other work meanwhile, so each comparison
//! brackets the iterator's scan between two procfs scans and holds the
//! iterator to what both procfs scans agree on.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{
        Arc, Barrier, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};

use livepatch_user::{
    kernel::{Stacks, ThreadId, read_task, read_tasks, scan_patch_states},
    model::{Known, StackFrame, Task},
    probes::{TaskSource, task_iter_offsets},
};

const EXTRA_THREADS: usize = 10_000;
/// Their comm, as the kernel stores it (at most 15 bytes).
const EXTRA_COMM: &str = "klp-iter-test";

/// The threads sleep until dropped. Small stacks: 10k default 8 MiB stacks
/// would be 80 GiB of address space.
struct SleepingThreads {
    release: Arc<Barrier>,
    handles: Vec<thread::JoinHandle<()>>,
    tids: BTreeSet<u32>,
}

impl SleepingThreads {
    fn spawn(count: usize) -> Self {
        let release = Arc::new(Barrier::new(count + 1));
        let started = Arc::new(Barrier::new(count + 1));
        let tids = Arc::new(Mutex::new(BTreeSet::new()));
        let waiting = Arc::new(AtomicUsize::new(0));
        let handles = (0..count)
            .map(|_| {
                let (release, started, tids, waiting) = (
                    release.clone(),
                    started.clone(),
                    tids.clone(),
                    waiting.clone(),
                );
                thread::Builder::new()
                    .name(EXTRA_COMM.into())
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        // SAFETY: gettid has no preconditions.
                        let tid = unsafe { libc::gettid() };
                        tids.lock().unwrap().insert(tid as u32);
                        started.wait();
                        waiting.fetch_add(1, Ordering::SeqCst);
                        release.wait();
                    })
                    .expect("spawn a sleeping thread (raise kernel.threads-max?)")
            })
            .collect();
        started.wait();
        let tids = tids.lock().unwrap().clone();
        let sleeping = SleepingThreads {
            release,
            handles,
            tids,
        };
        sleeping.settle(&waiting);
        sleeping
    }

    /// Waits until every thread is asleep in its last barrier, as procfs
    /// shows in two scans in a row. Asleep alone is not enough: on a busy
    /// machine a thread also sleeps on the barrier's own lock on its way
    /// there, and wakes again.
    fn settle(&self, waiting: &AtomicUsize) {
        let mut asleep_before = false;
        for _ in 0..200 {
            let asleep = waiting.load(Ordering::SeqCst) == self.tids.len()
                && read_tasks(Path::new("/"), Stacks::Skip)
                    .expect("procfs lists every thread")
                    .iter()
                    .filter(|task| self.tids.contains(&task.tid) && task.state == 'S')
                    .count()
                    == self.tids.len();
            if asleep && asleep_before {
                return;
            }
            asleep_before = asleep;
            thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the extra threads are not all asleep after 10 s");
    }
}

impl Drop for SleepingThreads {
    fn drop(&mut self) {
        self.release.wait();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// One test at a time: each holds 10k threads, and each must see only its own.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn iterator() -> TaskSource {
    let source = TaskSource::open(Path::new("/"), false).expect("TaskSource opens");
    let capability = source.capability();
    assert!(
        capability.available,
        "the BPF task iterator must load on this host (root, BTF, iter/task allowed), but: {}",
        capability.reason.as_deref().unwrap_or("no reason given")
    );
    source
}

fn by_tid(tasks: Vec<Task>) -> BTreeMap<u32, Task> {
    tasks.into_iter().map(|task| (task.tid, task)).collect()
}

fn procfs_tasks() -> BTreeMap<u32, Task> {
    by_tid(read_tasks(Path::new("/"), Stacks::Skip).expect("procfs lists every thread"))
}

fn alive(tid: u32) -> bool {
    Path::new(&format!("/proc/{tid}")).exists()
}

/// A task the kernel keeps even root from looking into (an LSM refuses to
/// read its namespaces): the build hosts' own supervisor is such a task, and
/// their kernel leaves it out of BPF task iterators too.
fn shielded(tid: u32) -> bool {
    std::fs::read_link(format!("/proc/{tid}/ns/pid"))
        .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
}

/// The iterator saw every thread alive through both procfs scans (but
/// those the kernel shields), and no thread that procfs could have seen but
/// did not.
fn assert_same_tids(before: &BTreeSet<u32>, iterated: &BTreeSet<u32>, after: &BTreeSet<u32>) {
    let missed: Vec<_> = before
        .intersection(after)
        .filter(|tid| !iterated.contains(tid) && !shielded(**tid))
        .collect();
    assert!(
        missed.is_empty(),
        "threads procfs listed before and after, missing from the iterator: {missed:?}"
    );
    let unknown: Vec<_> = iterated
        .iter()
        .filter(|tid| !before.contains(tid) && !after.contains(tid) && alive(**tid))
        .collect();
    assert!(
        unknown.is_empty(),
        "threads only the iterator listed, still alive: {unknown:?}"
    );
}

/// One round: procfs, iterator, procfs. Returns the tids whose state
/// letter the iterator gave differently from two agreeing procfs scans.
fn compare_tasks_once(source: &mut TaskSource, extra: &SleepingThreads) -> BTreeSet<u32> {
    let before = procfs_tasks();
    let iterated = by_tid(source.tasks(Stacks::Skip).expect("the iterator scans"));
    let after = procfs_tasks();
    let keys = |m: &BTreeMap<u32, Task>| m.keys().copied().collect::<BTreeSet<_>>();
    assert_same_tids(&keys(&before), &keys(&iterated), &keys(&after));

    for tid in &extra.tids {
        let task = iterated
            .get(tid)
            .unwrap_or_else(|| panic!("extra thread {tid} not iterated"));
        assert_eq!(
            (task.comm.as_str(), task.kthread, task.state, task.pid),
            (EXTRA_COMM, false, 'S', std::process::id()),
            "extra thread {tid}"
        );
    }

    let mut state_differs = BTreeSet::new();
    for (tid, seen) in &iterated {
        let (Some(first), Some(second)) = (before.get(tid), after.get(tid)) else {
            continue;
        };
        assert_eq!(seen.pid, first.pid, "tid {tid}: pid");
        assert_eq!(
            seen.kthread, first.kthread,
            "tid {tid} ({}): kthread",
            first.comm
        );
        assert_eq!(
            seen.patch_state, first.patch_state,
            "tid {tid} ({}): patch_state",
            first.comm
        );
        if first.comm == second.comm {
            if seen.kthread {
                // /proc names a workqueue worker with its current work, and
                // (6.x) a kthread by its full name: it starts with the comm.
                assert!(
                    first.comm.starts_with(&seen.comm) && !seen.comm.is_empty(),
                    "kthread {tid}: comm {:?}, /proc says {:?}",
                    seen.comm,
                    first.comm
                );
            } else {
                assert_eq!(seen.comm, first.comm, "tid {tid}: comm");
            }
        }
        if first.state == second.state && seen.state != first.state {
            state_differs.insert(*tid);
        }
    }
    state_differs
}

#[test]
fn the_iterator_sees_the_tasks_procfs_sees_with_the_same_values() {
    let _one = one_at_a_time();
    let mut source = iterator();
    let extra = SleepingThreads::spawn(EXTRA_THREADS);
    // A task may change state between scans; a wrong decoding differs in
    // every round.
    let mut persistent: Option<BTreeSet<u32>> = None;
    for _ in 0..3 {
        let differs = compare_tasks_once(&mut source, &extra);
        persistent = Some(match persistent {
            None => differs,
            Some(earlier) => earlier.intersection(&differs).copied().collect(),
        });
    }
    let persistent = persistent.unwrap();
    assert!(
        persistent.is_empty(),
        "the iterator's state letter differs from procfs in every round for tids {persistent:?}"
    );
}

#[test]
fn patch_state_scans_agree_and_absence_is_reported_as_procfs_does() {
    let _one = one_at_a_time();
    let mut source = iterator();
    let extra = SleepingThreads::spawn(EXTRA_THREADS);
    let root = Path::new("/");
    let before = scan_patch_states(root).expect("procfs scan");
    let iterated = source.patch_states().expect("iterator scan");
    let after = scan_patch_states(root).expect("procfs scan");
    let tids = |states: &[livepatch_user::model::ThreadPatchState]| {
        states.iter().map(|s| s.tid).collect::<BTreeSet<_>>()
    };
    assert_same_tids(&tids(&before), &tids(&iterated), &tids(&after));
    assert!(
        extra.tids.is_subset(&tids(&iterated)),
        "every extra thread is scanned"
    );

    let kernel_has_patch_state = Path::new("/proc/self/patch_state").exists();
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("this host has BTF");
    let offsets = task_iter_offsets(&btf).expect("task_struct offsets from BTF");
    assert_eq!(
        offsets.has_patch_state != 0,
        kernel_has_patch_state,
        "task_struct has patch_state exactly when /proc has the file"
    );
    let procfs: BTreeMap<u32, _> = before.into_iter().map(|s| (s.tid, s)).collect();
    for state in &iterated {
        let Some(expected) = procfs.get(&state.tid) else {
            continue;
        };
        assert_eq!(state, expected, "tid {}", state.tid);
        if !kernel_has_patch_state {
            assert!(
                matches!(&state.patch_state, Known::Unknown { unknown } if unknown.contains("CONFIG_LIVEPATCH")),
                "no livepatch here: patch_state is absent, and said so: {:?}",
                state.patch_state
            );
        }
    }
}

/// One round over `candidates`: procfs, iterator, procfs. Returns the tids
/// whose two procfs stacks agree and the iterator's matched, and those
/// where it did not (tid, the iterator's stack, procfs's).
#[allow(clippy::type_complexity)]
fn compare_stacks_once(
    source: &mut TaskSource,
    candidates: &[Task],
) -> (
    Vec<u32>,
    Vec<(u32, Known<Vec<StackFrame>>, Known<Vec<StackFrame>>)>,
) {
    let root = Path::new("/");
    let stack_of = |task: &Task| {
        let thread = ThreadId {
            pid: task.pid,
            tid: task.tid,
        };
        read_task(root, thread, Stacks::Read).map(|fresh| fresh.stack)
    };
    let before: Vec<_> = candidates.iter().map(stack_of).collect();
    let iterated = by_tid(
        source
            .tasks(Stacks::Read)
            .expect("iterator scan with stacks"),
    );
    let after: Vec<_> = candidates.iter().map(stack_of).collect();
    let (mut matched, mut mismatched) = (Vec::new(), Vec::new());
    for ((task, before), after) in candidates.iter().zip(&before).zip(&after) {
        let (Some(Known::Value(frames)), Some(after)) = (before, after) else {
            continue;
        };
        if before.as_ref() != Some(after) {
            continue;
        }
        assert!(
            !frames.is_empty(),
            "tid {}: a sleeping task has a kernel stack",
            task.tid
        );
        let seen = &iterated
            .get(&task.tid)
            .unwrap_or_else(|| panic!("tid {} ({}) not iterated", task.tid, task.comm))
            .stack;
        if seen == after {
            matched.push(task.tid);
        } else {
            mismatched.push((task.tid, seen.clone(), after.clone()));
        }
    }
    (matched, mismatched)
}

#[test]
fn the_iterators_stacks_are_the_ones_proc_prints() {
    let _one = one_at_a_time();
    let mut source = iterator();
    let extra = SleepingThreads::spawn(EXTRA_THREADS);
    // Tasks whose stacks hold still: the extra threads (asleep in one
    // place for good) and idle kthreads (which may wake meanwhile and come
    // back to the same place: such a one is compared again).
    let mut candidates: Vec<Task> = read_tasks(Path::new("/"), Stacks::Skip)
        .expect("procfs lists every thread")
        .into_iter()
        .filter(|task| extra.tids.contains(&task.tid) || (task.kthread && task.state == 'I'))
        .collect();
    let (matched, mut mismatched) = compare_stacks_once(&mut source, &candidates);
    let extra_compared = matched.iter().filter(|t| extra.tids.contains(t)).count();
    let mut kthreads_compared = matched.len() - extra_compared;
    for (tid, seen, procfs) in &mismatched {
        assert!(
            !extra.tids.contains(tid),
            "extra thread {tid}, asleep: the iterator's stack {seen:?}, /proc's {procfs:?}"
        );
    }
    for _ in 0..2 {
        if mismatched.is_empty() {
            break;
        }
        candidates.retain(|task| mismatched.iter().any(|(tid, ..)| *tid == task.tid));
        let (matched, again) = compare_stacks_once(&mut source, &candidates);
        kthreads_compared += matched.len();
        mismatched.retain(|(tid, ..)| again.iter().any(|(t, ..)| t == tid));
    }
    assert!(
        mismatched.is_empty(),
        "kthreads whose stack held still around the iterator's in three rounds, yet differed each time: {mismatched:?}"
    );
    assert!(
        extra_compared >= EXTRA_THREADS / 2,
        "compared the stacks of {extra_compared} of {EXTRA_THREADS} sleeping threads"
    );
    assert!(
        kthreads_compared > 0,
        "no idle kthread's stack held still to compare"
    );
}
