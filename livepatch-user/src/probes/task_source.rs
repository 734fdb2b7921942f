//! Where every thread's state comes from: the BPF task iterator when the
//! kernel and klpscope's privileges allow it, procfs otherwise. Chosen once,
//! said in one line; both give the same records (the procfs readers'
//! types), so nothing downstream can tell them apart.
//!
//! `KLPSCOPE_TASK_SOURCE` overrides the choice: `procfs` never tries the
//! iterator, `iterator` makes its absence an error (the VM lab runs each
//! check both ways with it), `auto` (or unset) chooses.
use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    capabilities::{Capability, Facility},
    loader::{ProbeRequest, load},
    stack_symbols::KernelSymbols,
    task_iterator::TaskIterator,
};
use crate::{
    kernel::{PatchStateScanner, Stacks, ThreadId, read_task, read_tasks, scan_patch_states},
    model::{Task, ThreadPatchState},
};

pub const TASK_SOURCE_ENV: &str = "KLPSCOPE_TASK_SOURCE";

/// How often stacks are worth sampling: with every stack in one read, ten
/// times a second costs little; through procfs, twice.
const SAMPLE_ITERATOR: Duration = Duration::from_millis(100);
const SAMPLE_PROCFS: Duration = Duration::from_millis(500);

/// Up to this many threads cost less read one by one from procfs (about
/// 10 syscalls each, 25 µs with the stack) than a pass of the iterator over
/// every task (about 1.5 µs per task with stacks, and /proc/kallsyms read
/// once to name the frames: 50 ms, half a second under TCG).
const FEW_THREADS: usize = 64;

/// How many times, and how far apart, a kthread caught on a CPU is read
/// again: a kthread that wakes in a loop runs for microseconds, one that
/// never sleeps costs three reads a poll.
const ON_CPU_REREADS: usize = 3;
const ON_CPU_REREAD_GAP: Duration = Duration::from_millis(1);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TaskSourceError(String);

pub struct TaskSource {
    root: PathBuf,
    reader: Reader,
    capability: Capability,
}

enum Reader {
    Iterator {
        iterator: Box<TaskIterator>,
        stacks: IteratorStacks,
        procfs: ProcfsTasks,
    },
    Procfs(ProcfsTasks),
}

/// The procfs readers under a root. A patch_state scan asked for again is
/// being polled: from the second one on, the scanner keeps its descriptors
/// open between scans.
struct ProcfsTasks {
    root: PathBuf,
    scanner: Option<PatchStateScanner>,
    scanned: bool,
}

impl ProcfsTasks {
    fn new(root: &Path) -> Self {
        ProcfsTasks {
            root: root.to_owned(),
            scanner: None,
            scanned: false,
        }
    }

    fn patch_states(&mut self) -> io::Result<Vec<ThreadPatchState>> {
        if !std::mem::replace(&mut self.scanned, true) {
            return scan_patch_states(&self.root);
        }
        let scanner = match &mut self.scanner {
            Some(scanner) => scanner,
            None => self.scanner.insert(PatchStateScanner::new(&self.root)?),
        };
        scanner.scan()
    }

    fn tasks(&mut self, stacks: Stacks) -> io::Result<Vec<Task>> {
        read_tasks(&self.root, stacks)
    }

    fn tasks_of(&mut self, threads: &[ThreadId], stacks: Stacks) -> Vec<Task> {
        threads
            .iter()
            .filter_map(|&thread| read_task(&self.root, thread, stacks))
            .collect()
    }

    fn task(&mut self, thread: ThreadId, stacks: Stacks) -> Option<Task> {
        read_task(&self.root, thread, stacks)
    }
}

/// How the iterator's stacks get their names: the kernel's symbols are
/// read on first need.
enum IteratorStacks {
    NotYet,
    Symbols(Box<KernelSymbols>),
    /// /proc/kallsyms is no use (hidden addresses): stacks come from procfs.
    FromProcfs,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Auto,
    Iterator,
    Procfs,
}

impl Wanted {
    fn from_env() -> Result<Self, TaskSourceError> {
        match std::env::var(TASK_SOURCE_ENV).as_deref() {
            Err(_) | Ok("" | "auto") => Ok(Wanted::Auto),
            Ok("iterator") => Ok(Wanted::Iterator),
            Ok("procfs") => Ok(Wanted::Procfs),
            Ok(other) => Err(TaskSourceError(format!(
                "{TASK_SOURCE_ENV}={other:?}: expected auto, iterator or procfs"
            ))),
        }
    }
}

impl TaskSource {
    /// The iterator if it loads, procfs otherwise. `no_ebpf` (the user's
    /// --no-ebpf) means procfs. Err only when `KLPSCOPE_TASK_SOURCE` asks
    /// for what cannot be had.
    pub fn open(root: &Path, no_ebpf: bool) -> Result<Self, TaskSourceError> {
        Self::open_with(root, no_ebpf, || load_iterator(root))
    }

    /// As `open`, with the iterator from `load`, called only when the
    /// iterator is to be tried (the feed links it from the tracer's
    /// object). Err is why it cannot be had, in one line.
    pub fn open_with(
        root: &Path,
        no_ebpf: bool,
        load: impl FnOnce() -> Result<TaskIterator, String>,
    ) -> Result<Self, TaskSourceError> {
        let wanted = Wanted::from_env()?;
        let iterator = if no_ebpf {
            Err("not tried (--no-ebpf)".to_string())
        } else if wanted == Wanted::Procfs {
            Err(format!("not tried ({TASK_SOURCE_ENV}=procfs)"))
        } else if root != Path::new("/") {
            Err("--root points at another tree, not this kernel".into())
        } else {
            load()
        };
        let source = match iterator {
            Ok(iterator) => TaskSource {
                root: root.to_owned(),
                reader: Reader::Iterator {
                    iterator: Box::new(iterator),
                    stacks: IteratorStacks::NotYet,
                    procfs: ProcfsTasks::new(root),
                },
                capability: Capability {
                    facility: Facility::TaskIterator,
                    available: true,
                    reason: None,
                },
            },
            Err(reason) if wanted == Wanted::Iterator && !no_ebpf => {
                return Err(TaskSourceError(format!(
                    "{TASK_SOURCE_ENV}=iterator, but the task iterator is unavailable: {reason}"
                )));
            }
            Err(reason) => TaskSource::procfs_because(root, reason),
        };
        match &source.capability.reason {
            None => log::info!("tasks: read with the BPF task iterator"),
            Some(reason) => log::info!("tasks: read from procfs; no task iterator: {reason}"),
        }
        Ok(source)
    }

    /// procfs under `root`, never the iterator: for trees that are not this
    /// kernel (fixtures), and readers that never want eBPF.
    pub fn procfs(root: &Path) -> Self {
        Self::procfs_because(root, "not tried: procfs asked for".into())
    }

    fn procfs_because(root: &Path, reason: String) -> Self {
        TaskSource {
            root: root.to_owned(),
            reader: Reader::Procfs(ProcfsTasks::new(root)),
            capability: Capability {
                facility: Facility::TaskIterator,
                available: false,
                reason: Some(reason),
            },
        }
    }

    /// Whether the iterator is in use, and if not why, for the reports.
    pub fn capability(&self) -> &Capability {
        &self.capability
    }

    /// How far apart stack samples should be with this source.
    pub fn sample_interval(&self) -> Duration {
        match self.reader {
            Reader::Iterator { .. } => SAMPLE_ITERATOR,
            Reader::Procfs(_) => SAMPLE_PROCFS,
        }
    }

    /// A scan of the iterator failed: procfs from now on, said once.
    fn give_up_iterator(&mut self, error: &io::Error) {
        let reason = format!("the task iterator failed ({error}): procfs from now on");
        log::warn!("tasks: {reason}");
        self.reader = Reader::Procfs(ProcfsTasks::new(&self.root));
        self.capability.available = false;
        self.capability.reason = Some(reason);
    }

    /// Every thread's patch_state and nothing else: the polled hot path.
    pub fn patch_states(&mut self) -> io::Result<Vec<ThreadPatchState>> {
        match &mut self.reader {
            Reader::Iterator { iterator, .. } => match iterator.patch_states() {
                Ok(states) => return Ok(states),
                Err(error) => self.give_up_iterator(&error),
            },
            Reader::Procfs(procfs) => return procfs.patch_states(),
        }
        self.patch_states()
    }

    /// Every thread, with its kernel stack if asked.
    pub fn tasks(&mut self, stacks: Stacks) -> io::Result<Vec<Task>> {
        match &mut self.reader {
            Reader::Procfs(procfs) => return procfs.tasks(stacks),
            Reader::Iterator {
                iterator,
                stacks: names,
                procfs,
            } => {
                let result = match stacks {
                    Stacks::Skip => iterator.tasks(None),
                    Stacks::Read => match names.symbols(&self.root) {
                        Some(symbols) => iterator.tasks(Some(symbols)),
                        None => return procfs.tasks(Stacks::Read),
                    },
                };
                match result {
                    Ok((tasks, unnamed)) => return Ok(named_by_procfs(procfs, tasks, &unnamed)),
                    Err(error) => self.give_up_iterator(&error),
                }
            }
        }
        self.tasks(stacks)
    }

    /// These threads read again; those that exited are left out. A few
    /// through procfs (the kernel names their frames itself), many in one
    /// pass of the iterator over every task.
    /// With stacks, a kthread caught on a CPU is read again (see
    /// `ON_CPU_REREADS`).
    pub fn tasks_of(&mut self, threads: &[ThreadId], stacks: Stacks) -> io::Result<Vec<Task>> {
        let mut tasks = match &mut self.reader {
            Reader::Procfs(procfs) => procfs.tasks_of(threads, stacks),
            Reader::Iterator { procfs, .. } if threads.len() <= FEW_THREADS => {
                procfs.tasks_of(threads, stacks)
            }
            Reader::Iterator { .. } => {
                let mut wanted: Vec<u32> = threads.iter().map(|t| t.tid).collect();
                wanted.sort_unstable();
                let mut tasks = self.tasks(stacks)?;
                tasks.retain(|task| wanted.binary_search(&task.tid).is_ok());
                tasks
            }
        };
        if stacks == Stacks::Read {
            reread_kthreads_on_a_cpu(&mut tasks, |thread| self.task(thread, Stacks::Read));
        }
        Ok(tasks)
    }

    /// One thread, through procfs whatever the source: a pass over every
    /// task would cost more. None if it exited.
    pub fn task(&mut self, thread: ThreadId, stacks: Stacks) -> Option<Task> {
        match &mut self.reader {
            Reader::Iterator { procfs, .. } | Reader::Procfs(procfs) => procfs.task(thread, stacks),
        }
    }
}

/// A kthread caught on a CPU has no stack to read; a moment later it is
/// most likely asleep again, and its stack shows where. A user task so
/// caught may well be in user space, where it switches by itself, and
/// there may be many: they are left as read. A kthread that exited since
/// is left out.
fn reread_kthreads_on_a_cpu(tasks: &mut Vec<Task>, mut read: impl FnMut(ThreadId) -> Option<Task>) {
    tasks.retain_mut(|task| {
        if !(task.kthread && task.caught_on_a_cpu()) {
            return true;
        }
        let thread = ThreadId {
            pid: task.pid,
            tid: task.tid,
        };
        for _ in 0..ON_CPU_REREADS {
            std::thread::sleep(ON_CPU_REREAD_GAP);
            let Some(fresh) = read(thread) else {
                return false;
            };
            *task = fresh;
            if !task.caught_on_a_cpu() {
                break;
            }
        }
        true
    });
}

/// `tasks` with the stacks at `unnamed` read again from /proc, which
/// names module and BPF frames; a thread that exited since is left out.
fn named_by_procfs(procfs: &mut ProcfsTasks, mut tasks: Vec<Task>, unnamed: &[usize]) -> Vec<Task> {
    let mut exited = Vec::new();
    for &at in unnamed {
        let task = &mut tasks[at];
        let thread = ThreadId {
            pid: task.pid,
            tid: task.tid,
        };
        match procfs.task(thread, Stacks::Read) {
            Some(fresh) => task.stack = fresh.stack,
            None => exited.push(at),
        }
    }
    for at in exited.into_iter().rev() {
        tasks.remove(at);
    }
    tasks
}

impl IteratorStacks {
    /// The core kernel's symbols; None when they cannot be had (said
    /// once, then stacks come from procfs).
    fn symbols(&mut self, root: &Path) -> Option<&mut KernelSymbols> {
        if let IteratorStacks::NotYet = self {
            *self = match KernelSymbols::read(root) {
                Ok(symbols) => IteratorStacks::Symbols(Box::new(symbols)),
                Err(error) => {
                    log::warn!(
                        "tasks: kernel stacks from procfs: cannot name the iterator's addresses: {error}"
                    );
                    IteratorStacks::FromProcfs
                }
            };
        }
        match self {
            IteratorStacks::Symbols(symbols) => Some(symbols),
            _ => None,
        }
    }
}

/// The iterator's programs loaded on their own, or why not in one line.
fn load_iterator(root: &Path) -> Result<TaskIterator, String> {
    let request = ProbeRequest {
        task_iterator: true,
        ..ProbeRequest::default()
    };
    load(root, &request)
        .task_iterator
        .expect("asked for the iterator")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::PatchState,
        testing::{frame, task},
    };

    fn kthread(tid: u32, state: char, stack: Vec<crate::model::StackFrame>) -> Task {
        Task {
            kthread: true,
            ..task(tid, state, PatchState::Unpatched, stack)
        }
    }

    fn in_its_loop(tid: u32) -> Task {
        kthread(
            tid,
            'S',
            vec![frame("__schedule", None), frame("klp_test_busy_loop", None)],
        )
    }

    #[test]
    fn a_kthread_caught_on_a_cpu_is_read_again_until_its_stack_shows() {
        let mut tasks = vec![
            kthread(1, 'R', vec![]),
            task(2, 'R', PatchState::Unpatched, vec![]),
            kthread(3, 'R', vec![]),
            kthread(4, 'R', vec![]),
        ];
        let mut reads = Vec::new();
        reread_kthreads_on_a_cpu(&mut tasks, |thread| {
            reads.push(thread.tid);
            match thread.tid {
                // Asleep in its loop on the second read.
                1 if reads.iter().filter(|&&t| t == 1).count() == 2 => Some(in_its_loop(1)),
                1 | 4 => Some(kthread(thread.tid, 'R', vec![])),
                _ => None,
            }
        });
        // The user task is never read again; the kthread that exited (3)
        // is left out; one that never sleeps (4) is read three times.
        assert_eq!(reads, [1, 1, 3, 4, 4, 4]);
        let tids: Vec<u32> = tasks.iter().map(|t| t.tid).collect();
        assert_eq!(tids, [1, 2, 4]);
        assert_eq!(tasks[0].stack.value().map(Vec::len), Some(2));
        assert!(tasks[2].caught_on_a_cpu());
    }
}
