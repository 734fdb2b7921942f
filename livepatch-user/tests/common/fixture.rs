//! A fake kernel root (/proc and /sys) in a temporary folder, built file by
//! file, so the readers can be tested against states this host cannot show.
// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use flate2::{Compression, write::GzEncoder};
use tempfile::TempDir;

pub const RELEASE: &str = "6.12.0-fixture";

pub struct Fixture {
    dir: TempDir,
}

/// One thread's files under /proc/<pid>/task/<tid>.
pub struct Thread<'a> {
    pub pid: u32,
    pub tid: u32,
    pub comm: &'a str,
    pub state: char,
    pub kthread: bool,
    /// None: no patch_state file (a kernel without CONFIG_LIVEPATCH).
    pub patch_state: Option<&'a str>,
    pub stack: Option<&'a str>,
}

impl Fixture {
    /// A kernel built with livepatch but with no patch loaded: release,
    /// config, ftrace on, untainted, BTF, tracefs mounted.
    pub fn livepatch_kernel() -> Self {
        let fixture = Fixture::bare();
        fixture
            .config("CONFIG_MODULES=y\nCONFIG_LIVEPATCH=y\nCONFIG_HAVE_RELIABLE_STACKTRACE=y\n")
            .dir("sys/kernel/livepatch");
        fixture
    }

    /// The same kernel facts but no livepatch: like this build host.
    pub fn without_livepatch() -> Self {
        let fixture = Fixture::bare();
        fixture.config("# CONFIG_MODULES is not set\nCONFIG_HAVE_RELIABLE_STACKTRACE=y\n");
        fixture
    }

    fn bare() -> Self {
        let fixture = Fixture {
            dir: TempDir::new().expect("temporary folder"),
        };
        fixture
            .file("proc/sys/kernel/osrelease", &format!("{RELEASE}\n"))
            .file("proc/sys/kernel/ftrace_enabled", "1\n")
            .file("proc/sys/kernel/tainted", "0\n")
            .file(
                "proc/mounts",
                "proc /proc proc rw 0 0\ntracefs /sys/kernel/tracing tracefs rw 0 0\n",
            )
            .file("sys/kernel/btf/vmlinux", "")
            .file(
                "sys/kernel/security/lockdown",
                "[none] integrity confidentiality\n",
            )
            .file("sys/module/module/parameters/sig_enforce", "N\n")
            .dir("sys/kernel/tracing");
        fixture
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root().join(relative)
    }

    pub fn file(&self, relative: &str, content: &str) -> &Self {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().expect("a file has a parent")).expect("mkdir");
        // A test may turn a file into a folder (or back) to fake an error.
        let _ = fs::remove_dir_all(&path);
        fs::write(&path, content).expect("write fixture file");
        self
    }

    /// Write then rename, as sysfs and procfs never show a half-written
    /// value to a reader running meanwhile.
    pub fn rewrite(&self, relative: &str, content: &str) -> &Self {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().expect("a file has a parent")).expect("mkdir");
        let temporary = path.with_extension("tmp");
        fs::write(&temporary, content).expect("write fixture file");
        fs::rename(temporary, path).expect("rename fixture file");
        self
    }

    pub fn dir(&self, relative: &str) -> &Self {
        let path = self.path(relative);
        let _ = fs::remove_file(&path);
        fs::create_dir_all(path).expect("mkdir");
        self
    }

    pub fn remove(&self, relative: &str) -> &Self {
        let path = self.path(relative);
        if path.is_dir() {
            fs::remove_dir_all(path).expect("remove fixture folder");
        } else {
            fs::remove_file(path).expect("remove fixture file");
        }
        self
    }

    /// /proc/config.gz with these lines.
    pub fn config(&self, text: &str) -> &Self {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(text.as_bytes()).expect("gzip");
        let path = self.path("proc/config.gz");
        fs::create_dir_all(path.parent().unwrap()).expect("mkdir");
        fs::write(path, gz.finish().expect("gzip")).expect("write config.gz");
        self
    }

    /// A patch folder with `enabled`, `transition`, a write-only-looking
    /// `force` and, when given, `replace` (6.11+).
    pub fn patch(
        &self,
        name: &str,
        enabled: &str,
        transition: &str,
        replace: Option<&str>,
    ) -> &Self {
        let dir = format!("sys/kernel/livepatch/{name}");
        self.file(&format!("{dir}/enabled"), &format!("{enabled}\n"))
            .file(&format!("{dir}/transition"), &format!("{transition}\n"))
            .file(&format!("{dir}/force"), "0\n");
        if let Some(replace) = replace {
            self.file(&format!("{dir}/replace"), &format!("{replace}\n"));
        }
        self
    }

    /// An object of a patch with its `patched` flag and `function,sympos`
    /// folders.
    pub fn object(&self, patch: &str, object: &str, patched: &str, functions: &[&str]) -> &Self {
        let dir = format!("sys/kernel/livepatch/{patch}/{object}");
        self.file(&format!("{dir}/patched"), &format!("{patched}\n"));
        for function in functions {
            self.dir(&format!("{dir}/{function}"));
        }
        self
    }

    pub fn thread(&self, thread: Thread) -> &Self {
        let dir = format!("proc/{}/task/{}", thread.pid, thread.tid);
        let flags = if thread.kthread {
            0x0020_8040
        } else {
            0x0040_0100
        };
        let stat = format!(
            "{} ({}) {} 1 0 0 0 -1 {flags} 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0\n",
            thread.tid, thread.comm, thread.state
        );
        self.file(&format!("{dir}/stat"), &stat);
        if let Some(patch_state) = thread.patch_state {
            self.file(&format!("{dir}/patch_state"), &format!("{patch_state}\n"));
        }
        if let Some(stack) = thread.stack {
            self.file(&format!("{dir}/stack"), stack);
        }
        self
    }

    /// A user thread sleeping in userspace with this patch_state.
    pub fn user_thread(&self, pid: u32, tid: u32, patch_state: &str) -> &Self {
        self.thread(Thread {
            pid,
            tid,
            comm: "worker",
            state: 'S',
            kthread: false,
            patch_state: Some(patch_state),
            stack: Some(
                "[<0>] do_nanosleep+0x6d/0x1a0\n[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e\n",
            ),
        })
    }
}
