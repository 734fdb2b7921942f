//! `klpscope serve` idle on a machine with 10k more threads: its CPU time
//! and RSS over 30 s of scrapes every 5 s, beside the goal (1 % of a CPU,
//! 30 MB) and beside node_exporter (textfile collector alone) measured the
//! same way.
//!
//! serve idles only where the kernel can livepatch, which this host's
//! cannot, so it reads a root made of this host's /proc and /dev (the 10k
//! sleeping threads of this process among the host's own, the kernel log)
//! and a /sys/kernel/livepatch holding one applied patch. With a --root
//! other than / eBPF stays off: an attached, idle tracer would add one
//! drain of an empty ring buffer per poll.
use std::{
    fs,
    io::{BufRead, BufReader},
    os::unix::fs::symlink,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

const EXTRA_THREADS: usize = 10_000;
const MEASURE_FOR: Duration = Duration::from_secs(30);
const SCRAPE_EVERY: Duration = Duration::from_secs(5);
/// Before measuring: start-up (the first scan of every thread) is not idle.
const SETTLE: Duration = Duration::from_secs(3);

/// Threads that sleep until dropped. Small stacks: 10k default 8 MiB
/// stacks would be 80 GiB of address space.
struct SleepingThreads {
    release: Arc<Barrier>,
    handles: Vec<thread::JoinHandle<()>>,
}

impl SleepingThreads {
    fn spawn(count: usize) -> Self {
        let release = Arc::new(Barrier::new(count + 1));
        let handles = (0..count)
            .map(|_| {
                let release = Arc::clone(&release);
                thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        release.wait();
                    })
                    .expect("spawn a sleeping thread (raise kernel.threads-max?)")
            })
            .collect();
        SleepingThreads { release, handles }
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

/// This host's /proc and /dev, and one applied patch in sysfs.
fn idle_root(dir: &Path) {
    symlink("/proc", dir.join("proc")).expect("link /proc");
    symlink("/dev", dir.join("dev")).expect("link /dev");
    let patch = dir.join("sys/kernel/livepatch/klp_bench");
    fs::create_dir_all(patch.join("vmlinux/cmdline_proc_show,1")).expect("mkdir");
    for (file, value) in [
        ("enabled", "1"),
        ("transition", "0"),
        ("force", "0"),
        ("replace", "0"),
        ("vmlinux/patched", "1"),
    ] {
        fs::write(patch.join(file), format!("{value}\n")).expect("write sysfs fixture");
    }
}

/// A server under test, killed when dropped.
struct Server {
    child: Child,
    metrics_url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn klpscope_serve(root: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .arg("--root")
        .arg(root)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start klpscope serve");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    stderr.read_line(&mut first).expect("serve's first line");
    thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let url = first
        .trim()
        .strip_prefix("klpscope: serving metrics on ")
        .unwrap_or_else(|| panic!("serve says where it listens: {first:?}"))
        .to_owned();
    Server {
        child,
        metrics_url: url,
    }
}

fn node_exporter(textfiles: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("prometheus-node-exporter")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(["--collector.disable-defaults", "--collector.textfile"])
        .arg(format!(
            "--collector.textfile.directory={}",
            textfiles.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus-node-exporter (Debian's package; cargo xtask bench installs it)");
    Server {
        child,
        metrics_url: format!("http://127.0.0.1:{port}/metrics"),
    }
}

/// One scrape; None while the server is not ready.
fn scrape(url: &str) -> Option<usize> {
    let mut response = ureq::get(url).call().ok()?;
    Some(response.body_mut().read_to_string().ok()?.len())
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after_comm = &stat[stat.rfind(')').expect("stat's comm") + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat, counted from the state (field 3).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / per_sec
}

/// VmRSS and VmHWM of a process, in MB.
fn rss_mb(pid: u32) -> (f64, f64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn measure(name: &str, server: &Server) {
    let pid = server.child.id();
    let started = Instant::now();
    while scrape(&server.metrics_url).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name} never answered on {}",
            server.metrics_url
        );
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(SETTLE);
    let (cpu_before, at) = (cpu_secs(pid), Instant::now());
    let mut scrapes = 0;
    let mut bytes = 0;
    while at.elapsed() < MEASURE_FOR {
        bytes = scrape(&server.metrics_url).expect("a scrape");
        scrapes += 1;
        thread::sleep(SCRAPE_EVERY.min(MEASURE_FOR.saturating_sub(at.elapsed())));
    }
    let cpu = (cpu_secs(pid) - cpu_before) / at.elapsed().as_secs_f64() * 100.0;
    let (rss, peak) = rss_mb(pid);
    println!(
        "  {name:<34} CPU {cpu:5.2} % of one core   RSS {rss:5.1} MB (peak {peak:5.1} MB)   \
         {scrapes} scrapes of {bytes} bytes"
    );
}

fn main() {
    // `cargo bench` passes --bench; this measurement has no options.
    let threads = SleepingThreads::spawn(EXTRA_THREADS);
    let in_proc = fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    println!(
        "serve idle: {} s, a scrape every {} s, {in_proc} threads in this process \
         (goal: under 1 % of a CPU and 30 MB RSS)",
        MEASURE_FOR.as_secs(),
        SCRAPE_EVERY.as_secs()
    );
    let root = tempfile::tempdir().expect("a temporary folder");
    idle_root(root.path());
    measure(
        "klpscope serve (one applied patch)",
        &klpscope_serve(root.path()),
    );
    let textfiles = tempfile::tempdir().expect("a temporary folder");
    let written = Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .arg("--root")
        .arg(root.path())
        .args(["metrics", "--output"])
        .arg(textfiles.path().join("klpscope.prom"))
        .status()
        .expect("run klpscope metrics");
    assert!(written.success(), "klpscope metrics --output failed");
    measure(
        "node_exporter (textfile collector)",
        &node_exporter(textfiles.path()),
    );
    drop(threads);
}
