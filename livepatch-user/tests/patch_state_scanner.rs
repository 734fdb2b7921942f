//! `PatchStateScanner` against `scan_patch_states`: on fixture trees (where
//! files rewritten in place read anew through a kept descriptor, as procfs
//! files do), and on the real /proc with threads the tests spawn.
mod common;

use std::{
    fs::File,
    path::Path,
    process::Command,
    sync::mpsc,
    thread::{self, JoinHandle},
};

use common::fixture::{Fixture, Thread};
use livepatch_user::{
    kernel::{PatchStateScanner, scan_patch_states},
    model::{Known, ThreadPatchState},
};

fn sorted(mut threads: Vec<ThreadPatchState>) -> Vec<(u32, u32, Known<String>)> {
    threads.sort_by_key(|t| (t.pid, t.tid));
    threads
        .into_iter()
        .map(|t| {
            let state = match t.patch_state {
                Known::Value(state) => Known::Value(format!("{state:?}")),
                Known::Unknown { unknown } => Known::Unknown { unknown },
            };
            (t.pid, t.tid, state)
        })
        .collect()
}

fn assert_same(scanner: &mut PatchStateScanner, root: &Path) {
    assert_eq!(
        sorted(scanner.scan().unwrap()),
        sorted(scan_patch_states(root).unwrap())
    );
}

/// Idle, patched, unpatched, malformed, missing and unreadable threads.
fn mixed_fixture() -> Fixture {
    let fixture = Fixture::livepatch_kernel();
    fixture
        .user_thread(1, 1, "-1")
        .user_thread(1, 2, "1")
        .user_thread(7, 7, "0")
        .user_thread(8, 8, "")
        .user_thread(8, 9, "garbage")
        .user_thread(8, 10, "18446744073709551616")
        .thread(Thread {
            pid: 2,
            tid: 2,
            comm: "kthreadd",
            state: 'S',
            kthread: true,
            patch_state: None,
            stack: None,
        })
        .user_thread(3, 3, "-1")
        // A folder where the file should be: opens, but fails to read.
        .dir("proc/3/task/3/patch_state");
    fixture
}

#[test]
fn fixture_scans_match_the_one_shot_reader() {
    let fixture = mixed_fixture();
    let mut scanner = PatchStateScanner::new(fixture.root()).unwrap();
    assert_same(&mut scanner, fixture.root());
    assert_eq!(scanner.scan().unwrap().len(), 8);
    assert_same(&mut scanner, fixture.root());
}

#[test]
fn fixture_changes_show_in_the_next_scan() {
    let fixture = mixed_fixture();
    let mut scanner = PatchStateScanner::new(fixture.root()).unwrap();
    scanner.scan().unwrap();
    fixture
        // Rewritten in place: the kept descriptor reads the new value.
        .file("proc/1/task/1/patch_state", "1\n")
        .file("proc/8/task/8/patch_state", "0\n")
        // A thread and a process exit; a thread and a process appear.
        .remove("proc/1/task/2")
        .remove("proc/7")
        .user_thread(8, 11, "1")
        .user_thread(20, 20, "0");
    assert_same(&mut scanner, fixture.root());
    let ids: Vec<(u32, u32)> = scanner
        .scan()
        .unwrap()
        .iter()
        .map(|t| (t.pid, t.tid))
        .collect();
    assert!(!ids.contains(&(1, 2)) && !ids.contains(&(7, 7)), "{ids:?}");
    assert!(ids.contains(&(8, 11)) && ids.contains(&(20, 20)), "{ids:?}");
}

#[test]
fn a_missing_proc_is_an_error() {
    let fixture = Fixture::livepatch_kernel();
    fixture.remove("proc");
    assert!(PatchStateScanner::new(fixture.root()).is_err());
}

/// A thread of this process that reports its tid, renames itself on
/// request, and exits when its sender is dropped.
struct Sleeper {
    tid: u32,
    rename: mpsc::Sender<String>,
    handle: JoinHandle<()>,
}

impl Sleeper {
    fn spawn(name: &str) -> Self {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (rename, renames) = mpsc::channel::<String>();
        let handle = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                tid_tx.send(unsafe { libc::gettid() } as u32).unwrap();
                for name in renames {
                    let name = std::ffi::CString::new(name).unwrap();
                    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
                    tid_tx.send(0).unwrap();
                }
            })
            .unwrap();
        let tid = tid_rx.recv().unwrap();
        // Keep the channel for rename acknowledgements.
        std::mem::forget(tid_rx);
        Sleeper {
            tid,
            rename,
            handle,
        }
    }

    fn exit(self) {
        drop(self.rename);
        self.handle.join().unwrap();
    }
}

fn state_of(
    threads: &[ThreadPatchState],
    tid: u32,
) -> Option<&Known<livepatch_user::model::PatchState>> {
    threads
        .iter()
        .find(|t| t.tid == tid)
        .map(|t| &t.patch_state)
}

#[test]
fn real_proc_matches_the_one_shot_reader() {
    let sleepers: Vec<Sleeper> = (0..20)
        .map(|i| Sleeper::spawn(&format!("klp-s{i}")))
        .collect();
    let root = Path::new("/");
    let mut scanner = PatchStateScanner::new(root).unwrap();
    for _ in 0..2 {
        let scanned = scanner.scan().unwrap();
        let one_shot = scan_patch_states(root).unwrap();
        // Other tests' threads come and go: compare ours, and pid 1.
        for sleeper in &sleepers {
            assert!(state_of(&scanned, sleeper.tid).is_some());
            assert_eq!(
                state_of(&scanned, sleeper.tid),
                state_of(&one_shot, sleeper.tid)
            );
        }
        assert_eq!(state_of(&scanned, 1), state_of(&one_shot, 1));
    }
    sleepers.into_iter().for_each(Sleeper::exit);
}

#[test]
fn real_threads_exit_and_appear_between_scans() {
    let root = Path::new("/");
    let first = Sleeper::spawn("klp-first");
    let mut scanner = PatchStateScanner::new(root).unwrap();
    assert!(state_of(&scanner.scan().unwrap(), first.tid).is_some());
    let gone = first.tid;
    first.exit();
    let second = Sleeper::spawn("klp-second");
    let scanned = scanner.scan().unwrap();
    // Unless the new thread got the old tid, which the scan handles too.
    if second.tid != gone {
        assert!(state_of(&scanned, gone).is_none());
    }
    assert!(state_of(&scanned, second.tid).is_some());
    second.exit();
}

/// Procfs regenerates a file on each read at offset 0: the kept `comm`
/// descriptor shows the thread's new name. (comm is not a patch_state, so
/// it comes back as the reason it does not parse.)
#[test]
fn real_proc_files_regenerate_on_pread() {
    let sleeper = Sleeper::spawn("klp-before");
    let mut scanner = PatchStateScanner::with_file(Path::new("/"), "comm").unwrap();
    let reason =
        |scanner: &mut PatchStateScanner| match state_of(&scanner.scan().unwrap(), sleeper.tid) {
            Some(Known::Unknown { unknown }) => unknown.clone(),
            other => panic!("{other:?}"),
        };
    assert!(reason(&mut scanner).contains("klp-before"));
    sleeper.rename.send("klp-after".into()).unwrap();
    // Wait for the thread to have renamed itself: it scans its own comm.
    while !std::fs::read_to_string(format!("/proc/self/task/{}/comm", sleeper.tid))
        .unwrap()
        .contains("klp-after")
    {
        thread::yield_now();
    }
    assert!(reason(&mut scanner).contains("klp-after"));
    sleeper.exit();
}

const CHILD_ENV: &str = "KLPSCOPE_TEST_FD_LIMIT_CHILD";

/// With few descriptors left, the scanner runs into EMFILE, closes what it
/// kept and reads the rest with open+read+close: same results, no error.
/// (In a fixture only task directories are kept: one process per thread.)
/// In a child process, as it lowers the descriptor limit for good.
#[test]
fn running_out_of_descriptors_is_not_an_error() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return fd_limit_child();
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "running_out_of_descriptors_is_not_an_error",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}

fn fd_limit_child() {
    let fixture = Fixture::livepatch_kernel();
    for pid in 100..400 {
        fixture.user_thread(pid, pid, if pid % 2 == 0 { "0" } else { "1" });
    }
    let limit = libc::rlimit {
        rlim_cur: 256,
        rlim_max: 256,
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let mut scanner = PatchStateScanner::new(fixture.root()).unwrap();
    // The scanner may keep 256 - 64 descriptors: take most of its reserve.
    let hogs: Vec<File> = (0..60).map(|_| File::open("/dev/null").unwrap()).collect();
    for _ in 0..3 {
        let scanned = scanner.scan().unwrap();
        assert_eq!(scanned.len(), 300);
        assert_eq!(
            sorted(scanned),
            sorted(scan_patch_states(fixture.root()).unwrap())
        );
    }
    drop(hogs);
}
