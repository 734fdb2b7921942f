//! Every task in one pass: klpscope's iter/task programs, run by reading
//! an iterator's file, their records decoded into the same model types as
//! the procfs readers give.
use std::{
    fs::File,
    io::{self, Read},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use aya::{
    Btf, Ebpf,
    programs::{Iter, ProgramError},
};
use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd};
use livepatch_ebpf::{
    PATCH_STATE_ABSENT, PF_KTHREAD, PatchStateRecord, TASK_STACK_DEPTH, TaskRecord,
};

use super::{stack_symbols::KernelSymbols, tracer::c_string};
use crate::{
    kernel::procfs_tasks::NO_PATCH_STATE,
    model::{Known, PatchState, StackFrame, Task, ThreadPatchState},
};

/// The three scans, one program each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    PatchStates,
    Tasks,
    TasksWithStacks,
}

impl Scan {
    const ALL: [Scan; 3] = [Scan::PatchStates, Scan::Tasks, Scan::TasksWithStacks];

    fn program(self) -> &'static str {
        match self {
            Scan::PatchStates => "task_iter_patch_states",
            Scan::Tasks => "task_iter_tasks",
            Scan::TasksWithStacks => "task_iter_tasks_with_stacks",
        }
    }
}

/// The iterator programs, one link each; dropping it unloads them. The
/// links hold the programs, so the object that loaded them may go (the
/// feed's, shared with the tracer, or one of its own). A scan makes an
/// iterator file from its link, reads it and closes it.
pub struct TaskIterator {
    links: [OwnedFd; 3],
    /// Holds a scan's bytes; kept, so that later scans need no new memory.
    buf: Vec<u8>,
}

/// A `read()` of an iterator returns at most the kernel's seq buffer
/// (8 pages); asking for more wastes nothing and never splits a read.
const READ_CHUNK: usize = 64 * 1024;

impl TaskIterator {
    /// Loads and links the three programs of `ebpf`, an object loaded with
    /// `TASK_ITER_OFFSETS` set.
    pub fn link(ebpf: &mut Ebpf, btf: &Btf) -> Result<Self, String> {
        let mut links = Vec::new();
        for scan in Scan::ALL {
            let name = scan.program();
            let program: &mut Iter = ebpf
                .program_mut(name)
                .ok_or_else(|| format!("program {name} is missing from klpscope's eBPF object"))?
                .try_into()
                .map_err(|e: ProgramError| format!("program {name}: {e}"))?;
            program.load("task", btf).map_err(|e| {
                format!(
                    "the kernel refused the task iterator {name}: {}",
                    describe(&e)
                )
            })?;
            let fd = program.fd().map_err(|e| format!("program {name}: {e}"))?;
            let link = link_create(fd.as_fd())
                .map_err(|e| format!("cannot link the task iterator {name}: {e}"))?;
            links.push(link);
        }
        Ok(TaskIterator {
            links: links.try_into().expect("one link per scan"),
            buf: Vec::new(),
        })
    }

    /// Runs one scan: an iterator file made from its link, read to its
    /// end and closed.
    fn run(&mut self, scan: Scan) -> io::Result<&[u8]> {
        // The links are in the order of Scan::ALL, the variants' order.
        let mut file = File::from(iter_create(self.links[scan as usize].as_fd())?);
        let mut len = 0;
        loop {
            if self.buf.len() - len < READ_CHUNK {
                self.buf.resize(len + READ_CHUNK, 0);
            }
            match file.read(&mut self.buf[len..]) {
                Ok(0) => return Ok(&self.buf[..len]),
                Ok(read) => len += read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Every task's patch_state.
    pub fn patch_states(&mut self) -> io::Result<Vec<ThreadPatchState>> {
        let bytes = self.run(Scan::PatchStates)?;
        Ok(records::<PatchStateRecord>(bytes)
            .map(|record| ThreadPatchState {
                pid: record.tgid,
                tid: record.tid,
                patch_state: patch_state(record.patch_state),
            })
            .collect())
    }

    /// Every task; with `symbols`, with its kernel stack. Also the
    /// indices of the tasks whose stack `symbols` cannot name (a frame in
    /// a module or in BPF): /proc names those.
    pub fn tasks(
        &mut self,
        symbols: Option<&mut KernelSymbols>,
    ) -> io::Result<(Vec<Task>, Vec<usize>)> {
        let Some(symbols) = symbols else {
            let bytes = self.run(Scan::Tasks)?;
            let tasks = records::<TaskRecord>(bytes)
                .map(|record| task(&record, Known::unknown("stack not read")))
                .collect();
            return Ok((tasks, Vec::new()));
        };
        let bytes = self.run(Scan::TasksWithStacks)?;
        let (mut tasks, mut unnamed) = (Vec::new(), Vec::new());
        let mut at = 0;
        while let Some(record) = read_record::<TaskRecord>(bytes, at) {
            at += size_of::<TaskRecord>();
            let stack = match usize::try_from(record.stack_bytes) {
                Ok(len) => {
                    let len = len.min(TASK_STACK_DEPTH * 8).min(bytes.len() - at);
                    let frames = bytes[at..at + len]
                        .chunks_exact(8)
                        .map(|a| symbols.frame(u64::from_ne_bytes(a.try_into().expect("8 bytes"))))
                        .collect::<Option<Vec<_>>>();
                    at += len;
                    frames.map(Known::Value).unwrap_or_else(|| {
                        unnamed.push(tasks.len());
                        Known::unknown("a frame outside the core kernel")
                    })
                }
                Err(_) => stack_error(record.stack_bytes),
            };
            tasks.push(task(&record, stack));
        }
        Ok((tasks, unnamed))
    }
}

/// An iterator link for a loaded iter/task program. aya makes a link's
/// iterator file only once (`IterLink::into_file` consumes the link); a
/// link kept makes one per scan, and lets the programs outlive their
/// object.
fn link_create(program: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: all-zero is a valid bpf_attr (a union of plain integers).
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.link_create.__bindgen_anon_1.prog_fd = program.as_raw_fd() as u32;
    attr.link_create.attach_type = bpf_attach_type::BPF_TRACE_ITER as u32;
    bpf_new_fd(bpf_cmd::BPF_LINK_CREATE, &mut attr)
}

/// A new iterator file of `link`: reading it runs the program over every
/// task once.
fn iter_create(link: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: as in link_create.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.iter_create.link_fd = link.as_raw_fd() as u32;
    bpf_new_fd(bpf_cmd::BPF_ITER_CREATE, &mut attr)
}

fn bpf_new_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a whole bpf_attr, its size passed with it (the
    // kernel takes a larger one when the tail is zero); both commands
    // return a new descriptor, or -1 and errno.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf returned no descriptor"))?;
    // SAFETY: the kernel just made this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The maps the iterator programs use: kept as they are.
const OWN_MAPS: [&str; 1] = ["TASK_ITER_SCRATCH"];

/// aya creates every map of the object; for the iterator alone, the other
/// programs' maps (tens of thousands of preallocated entries, megabytes of
/// kernel memory) are made as small as they can be: nothing uses them.
/// The sizes, by map name, to load them with.
pub(super) fn unused_map_sizes(object: &[u8]) -> Vec<(String, u32)> {
    let maps = aya_obj::Object::parse(object)
        .map(|object| object.maps)
        .unwrap_or_default();
    maps.iter()
        .filter_map(|(name, map)| Some((name.clone(), smallest(name, map.map_type())?)))
        .collect()
}

/// The fewest entries a map of this type may have, for a map that is
/// created but never used; None to leave it alone (globals, other types).
fn smallest(name: &str, map_type: u32) -> Option<u32> {
    use aya_obj::generated::bpf_map_type::*;
    if OWN_MAPS.contains(&name) || name.starts_with('.') {
        return None;
    }
    match map_type {
        // One page: a ring buffer's size is a power-of-2 number of pages.
        // SAFETY: sysconf has no preconditions.
        t if t == BPF_MAP_TYPE_RINGBUF as u32 => {
            u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()
        }
        t if [
            BPF_MAP_TYPE_HASH,
            BPF_MAP_TYPE_LRU_HASH,
            BPF_MAP_TYPE_PERCPU_HASH,
            BPF_MAP_TYPE_ARRAY,
            BPF_MAP_TYPE_PERCPU_ARRAY,
        ]
        .iter()
        .any(|&kind| t == kind as u32) =>
        {
            Some(1)
        }
        _ => None,
    }
}

fn describe(error: &ProgramError) -> String {
    match error {
        ProgramError::LoadError { io_error, .. } => io_error.to_string(),
        ProgramError::SyscallError(failed) => {
            format!("{} failed: {}", failed.call, failed.io_error)
        }
        other => other.to_string(),
    }
}

/// Decodes `bytes` as records of `T` back to back.
fn records<T: Copy>(bytes: &[u8]) -> impl Iterator<Item = T> + '_ {
    (0..bytes.len() / size_of::<T>()).filter_map(move |i| read_record(bytes, i * size_of::<T>()))
}

fn read_record<T: Copy>(bytes: &[u8], at: usize) -> Option<T> {
    let bytes = bytes.get(at..at + size_of::<T>())?;
    // SAFETY: the length is checked; T is plain repr(C) data, for which any
    // bit pattern is a value, read unaligned.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

fn patch_state(raw: i32) -> Known<PatchState> {
    match raw {
        -1 => Known::Value(PatchState::Idle),
        0 => Known::Value(PatchState::Unpatched),
        1 => Known::Value(PatchState::Patched),
        PATCH_STATE_ABSENT => Known::unknown(NO_PATCH_STATE),
        other => Known::unknown(format!("patch_state: expected -1, 0 or 1, found {other}")),
    }
}

fn task(record: &TaskRecord, stack: Known<Vec<StackFrame>>) -> Task {
    Task {
        pid: record.tgid,
        tid: record.tid,
        comm: c_string(&record.comm),
        kthread: record.flags & PF_KTHREAD != 0,
        state: state_letter(record.state, record.exit_state),
        patch_state: patch_state(record.patch_state),
        stack,
    }
}

/// A task whose stack is gone (it is exiting) reads as an empty stack in
/// /proc/<pid>/stack, and as EFAULT here.
fn stack_error(result: i64) -> Known<Vec<StackFrame>> {
    let errno = i32::try_from(-result).unwrap_or(libc::EINVAL);
    if errno == libc::EFAULT {
        return Known::Value(Vec::new());
    }
    Known::unknown(format!(
        "stack: bpf_get_task_stack: {}",
        io::Error::from_raw_os_error(errno)
    ))
}

/// The scheduler's state bits (include/linux/sched.h), the same on every
/// kernel klpscope supports. The bits below `REPORT_IDLE` index the
/// letters that /proc/<pid>/stat shows.
const TASK_REPORT: u32 = 0x7f;
const TASK_UNINTERRUPTIBLE: u32 = 0x2;
const TASK_NOLOAD: u32 = 0x400;
const TASK_IDLE: u32 = TASK_UNINTERRUPTIBLE | TASK_NOLOAD;
/// From 5.15 and 6.1: reported as uninterruptible sleeps.
const TASK_RTLOCK_WAIT: u32 = 0x1000;
const TASK_FROZEN: u32 = 0x8000;
const TASK_REPORT_IDLE: u32 = TASK_REPORT + 1;
const STATE_LETTERS: [char; 9] = ['R', 'S', 'D', 'T', 't', 'X', 'Z', 'P', 'I'];

/// The letter of `/proc/<pid>/stat`, as fs/proc/array.c derives it from
/// `__state` and `exit_state` (`__task_state_index`).
fn state_letter(state: u32, exit_state: u32) -> char {
    let mut report = (state | exit_state) & TASK_REPORT;
    if state & TASK_IDLE == TASK_IDLE {
        report = TASK_REPORT_IDLE;
    }
    if state & (TASK_RTLOCK_WAIT | TASK_FROZEN) != 0 {
        report = TASK_UNINTERRUPTIBLE;
    }
    // fls(): the highest bit set, counted from 1; 0 for none.
    let index = (u32::BITS - report.leading_zeros()) as usize;
    STATE_LETTERS.get(index).copied().unwrap_or('?')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_letters_as_proc_shows_them() {
        assert_eq!(state_letter(0, 0), 'R');
        assert_eq!(state_letter(0x1, 0), 'S');
        assert_eq!(state_letter(0x2, 0), 'D');
        // A killable sleep (TASK_WAKEKILL | TASK_UNINTERRUPTIBLE).
        assert_eq!(state_letter(0x102, 0), 'D');
        assert_eq!(state_letter(0x4, 0), 'T');
        assert_eq!(state_letter(0x8, 0), 't');
        assert_eq!(state_letter(0x80, 0x10), 'X');
        assert_eq!(state_letter(0x80, 0x20), 'Z');
        assert_eq!(state_letter(0x40, 0), 'P');
        assert_eq!(state_letter(TASK_IDLE, 0), 'I');
        assert_eq!(state_letter(TASK_RTLOCK_WAIT, 0), 'D');
        assert_eq!(state_letter(TASK_FROZEN | 0x1, 0), 'D');
    }

    #[test]
    fn patch_states_and_their_absence() {
        assert_eq!(patch_state(-1), Known::Value(PatchState::Idle));
        assert_eq!(patch_state(0), Known::Value(PatchState::Unpatched));
        assert_eq!(patch_state(1), Known::Value(PatchState::Patched));
        assert_eq!(
            patch_state(PATCH_STATE_ABSENT),
            Known::unknown(NO_PATCH_STATE)
        );
        assert!(matches!(patch_state(7), Known::Unknown { .. }));
    }

    #[test]
    fn records_decode_back_to_back_and_a_torn_tail_is_dropped() {
        let record = PatchStateRecord {
            tid: 7,
            tgid: 5,
            patch_state: 1,
        };
        let mut bytes = Vec::new();
        for _ in 0..3 {
            // SAFETY: plain repr(C) data viewed as bytes.
            bytes.extend_from_slice(unsafe {
                std::slice::from_raw_parts(
                    (&raw const record).cast::<u8>(),
                    size_of::<PatchStateRecord>(),
                )
            });
        }
        bytes.extend_from_slice(&[1, 2, 3]);
        let decoded: Vec<_> = records::<PatchStateRecord>(&bytes).collect();
        assert_eq!(decoded, [record; 3]);
    }

    #[test]
    fn a_stackless_task_has_an_empty_stack_other_errors_say_why() {
        assert_eq!(
            stack_error(-i64::from(libc::EFAULT)),
            Known::Value(Vec::new())
        );
        let Known::Unknown { unknown } = stack_error(-i64::from(libc::EINVAL)) else {
            panic!("EINVAL is not a stack");
        };
        assert!(unknown.contains("bpf_get_task_stack"), "{unknown}");
    }
}
