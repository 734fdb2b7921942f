//! Every thread under /proc/<pid>/task/<tid>: patch_state, comm, scheduler
//! state, kthread flag and kernel stack.
//!
//! Two speeds. `scan_patch_states` is watch's once-a-second hot path: one
//! small file per thread, read with open+read+close into a reused buffer.
//! `read_tasks` and `read_task` add `stat` and, when asked, the kernel stack,
//! which is costly and needs root: read it only for the threads that matter.
use std::{
    fmt::Write as _,
    fs::{self, OpenOptions},
    io::{self, Read},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use super::attr::not_regular;
use crate::model::{Known, PatchState, StackFrame, Task, ThreadPatchState};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadId {
    pub pid: u32,
    pub tid: u32,
}

/// Whether `read_task` also reads the kernel stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stacks {
    Skip,
    Read,
}

/// All threads of all processes. A process that exits while we list it is
/// skipped; only an unreadable /proc is an error.
pub fn list_threads(root: &Path) -> io::Result<Vec<ThreadId>> {
    let proc_dir = root.join("proc");
    let mut threads = Vec::new();
    for entry in fs::read_dir(&proc_dir)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = numeric_name(&entry.file_name()) else {
            continue;
        };
        let Ok(tasks) = fs::read_dir(entry.path().join("task")) else {
            continue;
        };
        threads.extend(
            tasks
                .filter_map(Result::ok)
                .filter_map(|task| numeric_name(&task.file_name()))
                .map(|tid| ThreadId { pid, tid }),
        );
    }
    Ok(threads)
}

fn numeric_name(name: &std::ffi::OsStr) -> Option<u32> {
    name.to_str()?.parse().ok()
}

/// The outcome of reading one thread's file.
#[derive(Debug)]
pub enum ThreadFile<'a> {
    Content(&'a [u8]),
    /// The thread exited: skip it.
    Gone,
    /// The thread is there but the file is not (a kernel without it).
    Missing,
    Unreadable(io::Error),
}

/// Reads `/proc/<pid>/task/<tid>/<file>` for many threads with one open,
/// one read and one close each: the path and the buffer are reused, and no
/// metadata call is made (as `fs::read` would, to size its buffer).
pub struct ThreadFileReader {
    proc_dir: String,
    path: String,
    buf: Vec<u8>,
}

/// Holds any `stat` line (52 fields of at most 20 digits plus a 15-byte
/// comm) in one read; only kernel stacks (up to 64 frames) may need more.
const THREAD_FILE_START: usize = 4096;
/// A thread file larger than this is not one we know: it is cut.
const THREAD_FILE_MAX: usize = 1 << 20;

impl ThreadFileReader {
    pub fn new(root: &Path) -> Self {
        ThreadFileReader {
            proc_dir: root.join("proc").to_string_lossy().into_owned(),
            path: String::new(),
            buf: vec![0; THREAD_FILE_START],
        }
    }

    pub fn read(&mut self, thread: ThreadId, file: &str) -> ThreadFile<'_> {
        self.path.clear();
        // Writing into a String cannot fail.
        let _ = write!(
            self.path,
            "{}/{}/task/{}/{file}",
            self.proc_dir, thread.pid, thread.tid
        );
        let buf = &mut self.buf;
        // O_NONBLOCK: a FIFO at the path would hold up the open until a
        // writer came, and its reads after.
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&self.path);
        let result = opened.and_then(|mut handle| {
            let mut len = 0;
            let len = loop {
                if len == buf.len() {
                    if len >= THREAD_FILE_MAX {
                        break len;
                    }
                    buf.resize(len * 2, 0);
                }
                let read = handle.read(&mut buf[len..])?;
                len += read;
                // These seq files hand over everything they have in one read
                // when it fits: a short read is the end, and skipping the
                // read that would return 0 keeps the scan at 3 syscalls.
                if read == 0 || len < buf.len() {
                    break len;
                }
            };
            // A thread file is never empty nor that long: only then is the
            // file's type worth a syscall, to refuse a FIFO or a device.
            if (len == 0 || len >= THREAD_FILE_MAX) && !handle.metadata()?.file_type().is_file() {
                return Err(not_regular());
            }
            Ok(len)
        });
        match result {
            Ok(len) => ThreadFile::Content(&self.buf[..len]),
            // ESRCH: the task died between open and read.
            Err(error) if error.raw_os_error() == Some(libc::ESRCH) => ThreadFile::Gone,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                // Only on this error path does it cost a syscall to tell an
                // exited thread from a kernel without the file.
                let dir = &self.path[..self.path.len() - file.len() - 1];
                if Path::new(dir).is_dir() {
                    ThreadFile::Missing
                } else {
                    ThreadFile::Gone
                }
            }
            Err(error) => ThreadFile::Unreadable(error),
        }
    }
}

/// The hot path: every thread's patch_state and nothing else.
pub fn scan_patch_states(root: &Path) -> io::Result<Vec<ThreadPatchState>> {
    let threads = list_threads(root)?;
    let mut reader = ThreadFileReader::new(root);
    Ok(threads
        .into_iter()
        .filter_map(|thread| {
            let patch_state = read_patch_state(&mut reader, thread)?;
            Some(ThreadPatchState {
                pid: thread.pid,
                tid: thread.tid,
                patch_state,
            })
        })
        .collect())
}

/// All threads with comm, state, kthread flag and patch_state; stacks only
/// if asked.
pub fn read_tasks(root: &Path, stacks: Stacks) -> io::Result<Vec<Task>> {
    let threads = list_threads(root)?;
    let mut reader = ThreadFileReader::new(root);
    Ok(threads
        .into_iter()
        .filter_map(|thread| read_task_with(&mut reader, thread, stacks))
        .collect())
}

/// One thread, e.g. a pending one whose stack watch wants. None if it exited.
pub fn read_task(root: &Path, thread: ThreadId, stacks: Stacks) -> Option<Task> {
    read_task_with(&mut ThreadFileReader::new(root), thread, stacks)
}

fn read_task_with(reader: &mut ThreadFileReader, thread: ThreadId, stacks: Stacks) -> Option<Task> {
    let stat = match reader.read(thread, "stat") {
        ThreadFile::Content(bytes) => parse_stat(&String::from_utf8_lossy(bytes)),
        ThreadFile::Gone => return None,
        ThreadFile::Missing | ThreadFile::Unreadable(_) => None,
    };
    let (comm, state, kthread) = stat.map_or((String::new(), '?', false), |stat| {
        (stat.comm, stat.state, stat.flags & PF_KTHREAD != 0)
    });
    let patch_state = read_patch_state(reader, thread)?;
    let stack = match stacks {
        Stacks::Skip => Known::unknown("stack not read"),
        Stacks::Read => read_stack(reader, thread)?,
    };
    Some(Task {
        pid: thread.pid,
        tid: thread.tid,
        comm,
        kthread,
        state,
        patch_state,
        stack,
    })
}

/// Why a thread has no patch_state, as every reader says it.
pub(crate) const NO_PATCH_STATE: &str = "no patch_state file: kernel without CONFIG_LIVEPATCH";

/// A patch_state file's content as a value, or why it is not one.
pub(crate) fn patch_state_from(bytes: &[u8]) -> Known<PatchState> {
    let text = String::from_utf8_lossy(bytes);
    match parse_patch_state(&text) {
        Some(state) => Known::Value(state),
        None => Known::unknown(format!(
            "patch_state: expected -1, 0 or 1, found {:?}",
            text.trim()
        )),
    }
}

fn read_patch_state(reader: &mut ThreadFileReader, thread: ThreadId) -> Option<Known<PatchState>> {
    Some(match reader.read(thread, "patch_state") {
        ThreadFile::Content(bytes) => patch_state_from(bytes),
        ThreadFile::Gone => return None,
        ThreadFile::Missing => Known::unknown(NO_PATCH_STATE),
        ThreadFile::Unreadable(error) => Known::unknown(format!("patch_state: {error}")),
    })
}

fn read_stack(reader: &mut ThreadFileReader, thread: ThreadId) -> Option<Known<Vec<StackFrame>>> {
    Some(match reader.read(thread, "stack") {
        ThreadFile::Content(bytes) => Known::Value(parse_stack(&String::from_utf8_lossy(bytes))),
        ThreadFile::Gone => return None,
        ThreadFile::Missing => Known::unknown("no stack file: kernel without CONFIG_STACKTRACE"),
        ThreadFile::Unreadable(error) => Known::unknown(format!("stack: {error} (needs root)")),
    })
}

/// How many threads the kernel has, from /proc/loadavg ("running/total"
/// in its fourth field): one small read where listing /proc is thousands.
pub fn thread_count(root: &Path) -> Option<usize> {
    parse_loadavg_threads(&fs::read_to_string(root.join("proc/loadavg")).ok()?)
}

fn parse_loadavg_threads(text: &str) -> Option<usize> {
    text.split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

pub fn parse_patch_state(text: &str) -> Option<PatchState> {
    match text.trim() {
        "-1" => Some(PatchState::Idle),
        "0" => Some(PatchState::Unpatched),
        "1" => Some(PatchState::Patched),
        _ => None,
    }
}

/// PF_KTHREAD from include/linux/sched.h. The flags field is the reliable
/// test: an empty cmdline also fits zombies and some user threads.
const PF_KTHREAD: u64 = 0x0020_0000;

#[derive(Debug, PartialEq, Eq)]
pub struct Stat {
    comm: String,
    state: char,
    flags: u64,
}

/// `pid (comm) state ppid pgrp session tty_nr tpgid flags ...`. The comm may
/// hold spaces and parentheses, so the fields start after the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_owned();
    let mut fields = line[close + 1..].split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let flags = fields.nth(5)?.parse().ok()?;
    Some(Stat { comm, state, flags })
}

/// Lines like `[<0>] klp_test_park_wait+0x3c/0x80 [klp_test_target]`. A line
/// without `+offset/size` keeps its text as the function, with zeros.
pub fn parse_stack(text: &str) -> Vec<StackFrame> {
    text.lines().filter_map(parse_stack_line).collect()
}

fn parse_stack_line(line: &str) -> Option<StackFrame> {
    let line = line.trim();
    // The `[<address>]` prefix is hidden (0) unless kptr_restrict allows it.
    let rest = match line.strip_prefix("[<") {
        Some(rest) => rest.split_once(">]")?.1.trim_start(),
        None => line,
    };
    let (symbol, module) = match rest.split_once(' ') {
        Some((symbol, module)) => (
            symbol,
            module
                .trim()
                .strip_prefix('[')
                .and_then(|m| m.strip_suffix(']'))
                .map(str::to_owned),
        ),
        None => (rest, None),
    };
    if symbol.is_empty() {
        return None;
    }
    let parsed = symbol.rsplit_once('+').and_then(|(function, place)| {
        let (offset, size) = place.split_once('/')?;
        Some((function, parse_hex(offset)?, parse_hex(size)?))
    });
    let (function, offset, size) = parsed.unwrap_or((symbol, 0, 0));
    Some(StackFrame {
        function: function.to_owned(),
        offset,
        size,
        module,
    })
}

fn parse_hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_count_is_loadavgs_total() {
        assert_eq!(
            parse_loadavg_threads("0.52 0.41 0.33 2/31337 4242\n"),
            Some(31337)
        );
        assert_eq!(parse_loadavg_threads("0.52 0.41 0.33"), None);
    }

    #[test]
    fn stat_with_a_tricky_comm() {
        let line = "42 (a) b (c)) S 2 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.comm, "a) b (c)");
        assert_eq!(stat.state, 'S');
        assert_ne!(stat.flags & PF_KTHREAD, 0);
    }

    #[test]
    fn malformed_stat_is_none() {
        for line in [
            "",
            "garbage",
            "1 (x)",
            "1 (x) S 1 2 3 4 5 notanumber",
            "1 (x) S 1 2 3 4 5 99999999999999999999999",
        ] {
            assert_eq!(parse_stat(line), None, "{line}");
        }
    }

    #[test]
    fn patch_states() {
        assert_eq!(parse_patch_state("-1\n"), Some(PatchState::Idle));
        assert_eq!(parse_patch_state("0"), Some(PatchState::Unpatched));
        assert_eq!(parse_patch_state("1\n"), Some(PatchState::Patched));
        for text in ["", "2", "x", "18446744073709551616"] {
            assert_eq!(parse_patch_state(text), None);
        }
    }

    #[test]
    fn stack_lines() {
        let frames = parse_stack(
            "[<0>] klp_test_park_wait+0x3c/0x80 [klp_test_target]\n\
             [<0>] do_syscall_64+0x82/0x190\n\
             [<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e\n",
        );
        assert_eq!(frames.len(), 3);
        assert_eq!(
            frames[0],
            StackFrame {
                function: "klp_test_park_wait".into(),
                offset: 0x3c,
                size: 0x80,
                module: Some("klp_test_target".into()),
            }
        );
        assert_eq!(frames[1].module, None);
    }

    #[test]
    fn odd_stack_lines_do_not_panic() {
        let frames = parse_stack("[<0>]\n[<0\n[<0>] 0xffffffff81000000\n[<0>] f+0xzz/0x10\n\n");
        let names: Vec<_> = frames
            .iter()
            .map(|f| (f.function.as_str(), f.offset))
            .collect();
        assert_eq!(names, [("0xffffffff81000000", 0), ("f+0xzz/0x10", 0)]);
    }
}
