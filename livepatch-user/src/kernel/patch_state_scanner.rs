//! Every thread's patch_state, scanned again and again (watch polls twice a
//! second during a transition) with the file descriptors kept open between
//! scans.
//!
//! `scan_patch_states` pays open+read+close per thread and a fresh listing
//! of every directory. Procfs regenerates a seq file's content on every read
//! at offset 0, so a kept descriptor needs one pread per thread, and a kept
//! directory one lseek and one getdents64. A steady scan therefore costs one
//! syscall per thread, two per process and a few for /proc.
//!
//! A kept descriptor pins its task, not its number: when a pid or tid is
//! reused, the old descriptor reads as gone (ESRCH/ENOENT) and the number is
//! opened again by name.
use std::{
    collections::HashMap,
    fmt::Write as _,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
    sync::Once,
};

use rustix::{
    fs::{AtFlags, Mode, OFlags, PROC_SUPER_MAGIC},
    io::Errno,
    process::{Resource, Rlimit},
};

use super::procfs_tasks::{NO_PATCH_STATE, patch_state_from};
use crate::model::{Known, PatchState, ThreadPatchState};

/// Scans `<root>/proc/*/task/*/patch_state`, keeping what it opened for the
/// next scan. Returns the same data as `scan_patch_states`.
pub struct PatchStateScanner {
    proc_dir: OwnedFd,
    /// Two procfs guarantees the shortcuts rest on; other file systems (test
    /// fixtures) get no such trust. A getdents64 reply is filled until the
    /// next entry does not fit, so one with room left is the end of the
    /// directory: that saves the call returning 0, a third syscall per
    /// process. And a thread's file is never replaced by another, so a kept
    /// descriptor reads its current value; a fixture may rename a new file
    /// into place, so there thread files are opened anew each scan.
    procfs: bool,
    file: String,
    processes: HashMap<u32, Process>,
    fds: Fds,
    scan: u64,
    dirents: Vec<u8>,
    value: Vec<u8>,
    path: String,
    tids: Vec<u32>,
}

struct Process {
    seen: u64,
    /// None when the descriptor budget ran out: listed by open+read+close.
    task_dir: Option<OwnedFd>,
    threads: HashMap<u32, Thread>,
}

struct Thread {
    seen: u64,
    file: Slot,
}

enum Slot {
    Open(OwnedFd),
    /// Not kept (budget, or an error last time): opened again by name.
    Closed,
    /// The thread has no such file. A kernel's config does not change, so
    /// this thread is not asked again.
    Missing,
}

/// How many descriptors we hold, and may hold.
struct Fds {
    kept: usize,
    budget: usize,
    /// False for the rest of a scan that hit EMFILE/ENFILE.
    keep: bool,
}

/// `struct linux_dirent64`: d_ino (8), d_off (8), d_reclen (2), d_type (1),
/// then the NUL-terminated name, padded to 8 bytes.
const DIRENT_NAME: usize = 19;
/// The largest entry a getdents64 reply can hold (a 255-byte name).
const DIRENT_MAX: usize = (DIRENT_NAME + 256).next_multiple_of(8);
/// /proc with a few hundred processes, or a process with 1k threads, in one
/// call; grown when a listing needs more.
const DIRENTS_START: usize = 32 * 1024;
/// A process with ~130k threads in one call; beyond that, several calls.
const DIRENTS_MAX: usize = 4 << 20;
/// patch_state is 2 or 3 bytes; a bench stand-in such as `stat` fits too.
/// A longer file is cut, which no valid patch_state would be.
const VALUE_MAX: usize = 4096;

static RAISE_FD_LIMIT: Once = Once::new();

impl PatchStateScanner {
    /// Fails only if `<root>/proc` cannot be opened.
    pub fn new(root: &Path) -> io::Result<Self> {
        Self::with_file(root, "patch_state")
    }

    /// Reads `file` instead of patch_state for every thread. This exists for
    /// the benchmark, so that it can run on a kernel without livepatch (e.g.
    /// with `comm`); values are still parsed as patch_state.
    pub fn with_file(root: &Path, file: &str) -> io::Result<Self> {
        RAISE_FD_LIMIT.call_once(raise_fd_limit);
        let proc_dir = rustix::fs::open(
            root.join("proc"),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let procfs = rustix::fs::fstatfs(&proc_dir)?.f_type == PROC_SUPER_MAGIC;
        Ok(PatchStateScanner {
            proc_dir,
            procfs,
            file: file.to_owned(),
            processes: HashMap::new(),
            fds: Fds {
                kept: 0,
                budget: fd_budget(),
                keep: true,
            },
            scan: 0,
            dirents: vec![0; DIRENTS_START],
            value: vec![0; VALUE_MAX],
            path: String::new(),
            tids: Vec::new(),
        })
    }

    /// Every thread's state, in listing order. Threads that exit during the
    /// scan are left out; only an unreadable /proc is an error.
    pub fn scan(&mut self) -> io::Result<Vec<ThreadPatchState>> {
        self.scan += 1;
        self.fds.keep = true;
        let mut pids = Vec::with_capacity(self.processes.len() + 64);
        list_numeric(
            self.proc_dir.as_fd(),
            &mut self.dirents,
            self.procfs,
            &mut pids,
        )?;
        let mut out = Vec::with_capacity(self.processes.values().map(|p| p.threads.len()).sum());
        for pid in pids {
            self.scan_process(pid, &mut out);
        }
        let now = self.scan;
        let kept = &mut self.fds.kept;
        self.processes.retain(|_, process| {
            let alive = process.seen == now;
            process.threads.retain(|_, thread| {
                let alive = alive && thread.seen == now;
                if !alive && matches!(thread.file, Slot::Open(_)) {
                    *kept -= 1;
                }
                alive
            });
            if !alive && process.task_dir.is_some() {
                *kept -= 1;
            }
            alive
        });
        Ok(out)
    }

    fn scan_process(&mut self, pid: u32, out: &mut Vec<ThreadPatchState>) {
        // Out of the map while scanned, so that running out of descriptors
        // can close the others' but not this one's.
        let mut process = self.processes.remove(&pid).unwrap_or(Process {
            seen: 0,
            task_dir: None,
            threads: HashMap::new(),
        });
        let mut tids = std::mem::take(&mut self.tids);
        tids.clear();
        // A kept directory that reads as gone may belong to an old process
        // whose pid was reused: then it is opened again by name.
        let listed = process.task_dir.as_ref().is_some_and(|dir| {
            list_numeric(dir.as_fd(), &mut self.dirents, self.procfs, &mut tids).is_ok()
        });
        if !listed {
            tids.clear();
            if process.task_dir.take().is_some() {
                self.fds.kept -= 1;
                self.fds.forget(&mut process.threads);
            }
            self.path.clear();
            let _ = write!(self.path, "{pid}/task");
            let opened = open_at(
                self.proc_dir.as_fd(),
                &self.path,
                OFlags::DIRECTORY,
                &mut self.fds,
                &mut self.processes,
            );
            // Exited or unreadable: skipped, as `scan_patch_states` does.
            let Ok(dir) = opened else {
                self.tids = tids;
                return;
            };
            if list_numeric(dir.as_fd(), &mut self.dirents, self.procfs, &mut tids).is_err() {
                self.tids = tids;
                return;
            }
            if self.fds.may_keep() {
                process.task_dir = Some(dir);
                self.fds.kept += 1;
            }
        }
        process.seen = self.scan;
        for &tid in &tids {
            let thread = process.threads.entry(tid).or_insert(Thread {
                seen: 0,
                file: Slot::Closed,
            });
            thread.seen = self.scan;
            let task_dir = process.task_dir.as_ref().map(AsFd::as_fd);
            if let Some(patch_state) = self.read_thread(task_dir, pid, tid, &mut thread.file) {
                out.push(ThreadPatchState {
                    pid,
                    tid,
                    patch_state,
                });
            }
        }
        self.tids = tids;
        self.processes.insert(pid, process);
    }

    /// None: the thread exited.
    fn read_thread(
        &mut self,
        task_dir: Option<BorrowedFd<'_>>,
        pid: u32,
        tid: u32,
        slot: &mut Slot,
    ) -> Option<Known<PatchState>> {
        match slot {
            Slot::Open(fd) => match pread(fd.as_fd(), &mut self.value) {
                Ok(len) => return Some(patch_state_from(&self.value[..len])),
                // A reused tid, if it is still listed: opened again below.
                Err(error) if is_gone(error) => {
                    *slot = Slot::Closed;
                    self.fds.kept -= 1;
                }
                Err(error) => return Some(unreadable_state(error)),
            },
            Slot::Missing => return Some(Known::unknown(NO_PATCH_STATE)),
            Slot::Closed => {}
        }
        self.path.clear();
        let dir = match task_dir {
            Some(dir) => dir,
            None => {
                let _ = write!(self.path, "{pid}/task/");
                self.proc_dir.as_fd()
            }
        };
        let _ = write!(self.path, "{tid}/{}", self.file);
        let file = match open_at(
            dir,
            &self.path,
            OFlags::empty(),
            &mut self.fds,
            &mut self.processes,
        ) {
            Ok(file) => file,
            Err(Errno::NOENT) => {
                // Only on this error path does it cost a syscall to tell an
                // exited thread from a kernel without the file.
                let thread_dir = &self.path[..self.path.len() - self.file.len() - 1];
                if rustix::fs::statat(dir, thread_dir, AtFlags::empty()).is_err() {
                    return None;
                }
                *slot = Slot::Missing;
                return Some(Known::unknown(NO_PATCH_STATE));
            }
            Err(error) if is_gone(error) => return None,
            Err(error) => return Some(unreadable_state(error)),
        };
        let read = pread(file.as_fd(), &mut self.value);
        if read.is_ok() && self.procfs && self.fds.may_keep() {
            *slot = Slot::Open(file);
            self.fds.kept += 1;
        }
        match read {
            Ok(len) => Some(patch_state_from(&self.value[..len])),
            Err(error) if is_gone(error) => None,
            Err(error) => Some(unreadable_state(error)),
        }
    }
}

impl Fds {
    fn may_keep(&self) -> bool {
        self.keep && self.kept < self.budget
    }

    /// Out of descriptors: close every kept one but the scanned process's,
    /// so that the rest of this scan can open, read and close; later scans
    /// keep at most half of what we held.
    fn release(&mut self, processes: &mut HashMap<u32, Process>) {
        self.budget = self.kept / 2;
        self.keep = false;
        for process in processes.values_mut() {
            if process.task_dir.take().is_some() {
                self.kept -= 1;
            }
            for thread in process.threads.values_mut() {
                if let Slot::Open(_) = thread.file {
                    thread.file = Slot::Closed;
                    self.kept -= 1;
                }
            }
        }
    }

    /// Drops the threads of a process that turned out to be gone.
    fn forget(&mut self, threads: &mut HashMap<u32, Thread>) {
        for (_, thread) in threads.drain() {
            if let Slot::Open(_) = thread.file {
                self.kept -= 1;
            }
        }
    }
}

fn open_at(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
    fds: &mut Fds,
    processes: &mut HashMap<u32, Process>,
) -> Result<OwnedFd, Errno> {
    // NONBLOCK: a FIFO at the path would hold up the open until a writer
    // came; pread on one then fails (ESPIPE), and a device is read no
    // further than the caller's buffer.
    let open = || {
        rustix::fs::openat(
            dir,
            path,
            flags | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
        )
    };
    match open() {
        Err(Errno::MFILE | Errno::NFILE) => {
            fds.release(processes);
            open()
        }
        result => result,
    }
}

fn pread(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    rustix::io::retry_on_intr(|| rustix::io::pread(fd, &mut *buf, 0))
}

/// ESRCH: the task exited after open; ENOENT: its directory is gone.
fn is_gone(error: Errno) -> bool {
    matches!(error, Errno::SRCH | Errno::NOENT)
}

fn unreadable_state(error: Errno) -> Known<PatchState> {
    Known::unknown(format!("patch_state: {}", io::Error::from(error)))
}

/// Appends the numeric names in `dir` from its start: one lseek, then
/// getdents64 until the end. `buf` grows when one call cannot hold it all.
fn list_numeric(
    dir: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    room_left_is_end: bool,
    out: &mut Vec<u32>,
) -> Result<(), Errno> {
    rustix::fs::seek(dir, rustix::fs::SeekFrom::Start(0))?;
    let mut total = 0;
    loop {
        let len = getdents64(dir, buf)?;
        total += len;
        let mut at = 0;
        while at + DIRENT_NAME < len {
            let reclen = usize::from(u16::from_ne_bytes([buf[at + 16], buf[at + 17]]));
            let name = &buf[at + DIRENT_NAME..at + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if let Some(number) = std::str::from_utf8(name).ok().and_then(|n| n.parse().ok()) {
                out.push(number);
            }
            at += reclen;
        }
        if len == 0 || (room_left_is_end && buf.len() - len >= DIRENT_MAX) {
            break;
        }
    }
    if total > buf.len() && buf.len() < DIRENTS_MAX {
        buf.resize((total + DIRENT_MAX).next_power_of_two().min(DIRENTS_MAX), 0);
    }
    Ok(())
}

fn getdents64(dir: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    rustix::io::retry_on_intr(|| {
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        let len = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        usize::try_from(len).map_err(|_| {
            let error = io::Error::last_os_error();
            Errno::from_raw_os_error(error.raw_os_error().unwrap_or(libc::EIO))
        })
    })
}

/// Watch keeps one descriptor per thread: raise the soft limit to the hard
/// one (often 1024 soft against 512k hard). Failing to is not an error; the
/// budget then follows the lower limit.
fn raise_fd_limit() {
    // An unlimited hard limit is left alone: the kernel refuses a soft
    // limit above fs.nr_open.
    let limit = rustix::process::getrlimit(Resource::Nofile);
    if let Some(maximum) = limit.maximum {
        let _ = rustix::process::setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            },
        );
    }
}

/// The descriptors we may keep: the soft limit less an eighth (at least 64)
/// left to the rest of the program and to open-read-close fallbacks.
fn fd_budget() -> usize {
    let current = rustix::process::getrlimit(Resource::Nofile)
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    current.saturating_sub((current / 8).max(64))
}
