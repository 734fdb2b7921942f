//! Every thread's patch_state, and every thread's patch_state with its
//! kernel stack, with 1k, 10k and 50k extra sleeping threads, read four
//! ways side by side in one run:
//!
//! - the BPF task iterator (`TaskSource`): one pass of the kernel over every
//!   task, a few reads of its file;
//! - watch's `PatchStateScanner`, in its steady state (after a first scan
//!   that opened everything), with its descriptors kept; for stacks, a
//!   second scanner keeps the `stack` files open the same way;
//! - the one-shot readers (`scan_patch_states`, `read_tasks`): open, read
//!   and close per thread and file;
//! - kpatch's shell loop (`for t in /proc/*/task/*; do cat $t/patch_state;
//!   done`, and the same with `cat $t/stack`).
//!
//! Hosts without CONFIG_LIVEPATCH have no patch_state file, so the procfs
//! sides read `stat` instead there (the same syscalls per thread, on a
//! slightly longer file); the iterator reads task_struct as always.
//!
//! Syscalls are counted with `strace -f -c` on a child copy of this binary
//! that scans once and then twice (after a warm-up scan that opens
//! everything, loads the programs and the kernel's symbols): the difference
//! is one scan, free of start-up noise. The sleeping threads belong to the
//! parent, so strace follows the scanner alone.
use std::{
    collections::BTreeMap,
    env,
    path::Path,
    process::Command,
    sync::{Arc, Condvar, Mutex},
    thread,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion};
use livepatch_user::{
    kernel::{PatchStateScanner, Stacks, ThreadFile, ThreadFileReader, list_threads, read_tasks},
    probes::TaskSource,
};

const EXTRA_THREADS: [usize; 3] = [1_000, 10_000, 50_000];
/// Other sizes, e.g. `1000,10000` for a shorter run.
const THREADS_ENV: &str = "KLPSCOPE_BENCH_THREADS";
/// Set in the child that strace watches: `<scans>:<reader>`.
const CHILD_ENV: &str = "KLPSCOPE_BENCH_CHILD";

/// Picks another per-thread file, e.g. `comm`, whose kernel side is as cheap
/// as patch_state's (one value printed), unlike `stat`'s.
const FILE_ENV: &str = "KLPSCOPE_BENCH_FILE";

/// The file the procfs sides read per thread.
fn thread_file() -> String {
    if let Ok(file) = env::var(FILE_ENV) {
        return file;
    }
    let file = if Path::new("/proc/self/patch_state").exists() {
        "patch_state"
    } else {
        "stat"
    };
    file.to_owned()
}

/// What `scan_patch_states` does, for any per-thread file: list, then one
/// open+read+close each. Returns the threads read.
fn one_shot(file: &str) -> usize {
    let root = Path::new("/");
    let threads = list_threads(root).expect("list /proc");
    let mut reader = ThreadFileReader::new(root);
    threads
        .into_iter()
        .filter(|&thread| matches!(reader.read(thread, file), ThreadFile::Content(_)))
        .count()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reader {
    Iterator,
    Scanner,
    OneShot,
    IteratorStacks,
    ScannerStacks,
    OneShotStacks,
}

impl Reader {
    const PATCH_STATE: [Reader; 3] = [Reader::Iterator, Reader::Scanner, Reader::OneShot];
    const WITH_STACKS: [Reader; 3] = [
        Reader::IteratorStacks,
        Reader::ScannerStacks,
        Reader::OneShotStacks,
    ];

    fn name(self) -> &'static str {
        match self {
            Reader::Iterator => "iterator",
            Reader::Scanner => "scanner",
            Reader::OneShot => "one-shot",
            Reader::IteratorStacks => "iterator+stacks",
            Reader::ScannerStacks => "scanner+stacks",
            Reader::OneShotStacks => "one-shot+stacks",
        }
    }

    fn parse(name: &str) -> Self {
        [Self::PATCH_STATE, Self::WITH_STACKS]
            .concat()
            .into_iter()
            .find(|reader| reader.name() == name)
            .unwrap_or_else(|| panic!("unknown reader {name}"))
    }
}

/// A reader past its warm-up scan: descriptors open, programs loaded,
/// symbols read.
enum Warm {
    Iterator(Box<TaskSource>),
    Scanner(Vec<PatchStateScanner>),
    OneShot(String),
}

impl Warm {
    fn new(reader: Reader, file: &str) -> Result<Self, String> {
        let mut warm = match reader {
            Reader::Iterator | Reader::IteratorStacks => {
                let source = TaskSource::open(Path::new("/"), false).map_err(|e| e.to_string())?;
                if let Some(reason) = &source.capability().reason {
                    return Err(format!("no task iterator: {reason}"));
                }
                Warm::Iterator(Box::new(source))
            }
            Reader::Scanner => Warm::Scanner(vec![scanner(file)]),
            Reader::ScannerStacks => Warm::Scanner(vec![scanner(file), scanner("stack")]),
            Reader::OneShot | Reader::OneShotStacks => Warm::OneShot(file.to_owned()),
        };
        warm.scan(reader);
        Ok(warm)
    }

    /// One full scan; returns the threads read.
    fn scan(&mut self, reader: Reader) -> usize {
        let stacks = matches!(
            reader,
            Reader::IteratorStacks | Reader::ScannerStacks | Reader::OneShotStacks
        );
        match self {
            Warm::Iterator(source) if stacks => source.tasks(Stacks::Read).expect("iterate").len(),
            Warm::Iterator(source) => source.patch_states().expect("iterate").len(),
            Warm::Scanner(scanners) => scanners
                .iter_mut()
                .map(|scanner| scanner.scan().expect("scan /proc").len())
                .min()
                .unwrap_or(0),
            Warm::OneShot(_) if stacks => read_tasks(Path::new("/"), Stacks::Read)
                .expect("read /proc")
                .len(),
            Warm::OneShot(file) => one_shot(file),
        }
    }
}

fn scanner(file: &str) -> PatchStateScanner {
    PatchStateScanner::with_file(Path::new("/"), file).expect("open /proc")
}

/// Threads that sleep until the returned guard is dropped. Small stacks:
/// 50k default 8 MiB stacks would be 400 GiB of address space.
struct SleepingThreads {
    released: Arc<(Mutex<bool>, Condvar)>,
    handles: Vec<thread::JoinHandle<()>>,
}

/// Memory maps per thread: its stack and guard page, and the signal stack
/// and guard page std gives each thread.
const MAPS_PER_THREAD: usize = 4;

/// Whether this machine's limits leave room for `count` more threads. A
/// thread that std cannot give its signal stack aborts the process (mmap
/// fails past vm.max_map_count), so the limits are checked before.
fn room_for(count: usize) -> Result<(), String> {
    let read = |path: &str| -> usize {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(usize::MAX)
    };
    // What runs already, and some room to spare for it.
    let margin = 4096;
    let enough = count + margin <= read("/proc/sys/kernel/pid_max")
        && count + margin <= read("/proc/sys/kernel/threads-max")
        && count * MAPS_PER_THREAD + margin <= read("/proc/sys/vm/max_map_count");
    if enough { Ok(()) } else { Err(limits()) }
}

impl SleepingThreads {
    fn spawn(count: usize) -> Result<Self, String> {
        room_for(count)?;
        let mut sleeping = SleepingThreads {
            released: Arc::new((Mutex::new(false), Condvar::new())),
            handles: Vec::with_capacity(count),
        };
        for _ in 0..count {
            let released = Arc::clone(&sleeping.released);
            let spawned = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
                let (flag, wake) = &*released;
                let mut flag = flag.lock().unwrap();
                while !*flag {
                    flag = wake.wait(flag).unwrap();
                }
            });
            match spawned {
                Ok(handle) => sleeping.handles.push(handle),
                // Dropping `sleeping` lets the ones started go.
                Err(error) => {
                    return Err(format!(
                        "{} threads started, then: {error} ({})",
                        sleeping.handles.len(),
                        limits()
                    ));
                }
            }
        }
        Ok(sleeping)
    }
}

impl Drop for SleepingThreads {
    fn drop(&mut self) {
        let (flag, wake) = &*self.released;
        *flag.lock().unwrap() = true;
        wake.notify_all();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// What caps the number of threads here.
fn limits() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".into())
    };
    format!(
        "kernel.pid_max {}, kernel.threads-max {}, vm.max_map_count {}: raise them to run this size",
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
        read("/proc/sys/vm/max_map_count")
    )
}

fn shell_loop(files: &[&str]) -> Duration {
    let cats: Vec<String> = files.iter().map(|f| format!("cat $t/{f};")).collect();
    let script = format!(
        "for t in /proc/*/task/*; do {} done >/dev/null 2>&1; true",
        cats.join(" ")
    );
    let start = Instant::now();
    let status = Command::new("sh")
        .args(["-c", &script])
        .status()
        .expect("run sh");
    assert!(status.success(), "shell loop failed");
    start.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

type Syscalls = Result<(BTreeMap<String, u64>, usize), String>;

/// Syscalls of one scan by name, or why they could not be counted.
fn count_syscalls(reader: Reader) -> Syscalls {
    let run = |scans: u32| -> Syscalls {
        let out = env::temp_dir().join(format!(
            "klpscope-bench-strace-{}-{}-{scans}",
            std::process::id(),
            reader.name()
        ));
        let output = Command::new("strace")
            .args(["-f", "-c", "-o"])
            .arg(&out)
            .arg(env::current_exe().map_err(|e| e.to_string())?)
            .env(CHILD_ENV, format!("{scans}:{}", reader.name()))
            .output()
            .map_err(|e| format!("strace: {e}"))?;
        let threads = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("child failed: {}", String::from_utf8_lossy(&output.stderr)))?;
        let summary = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&out);
        Ok((parse_strace_summary(&summary), threads))
    };
    let (once, threads) = run(1)?;
    let (twice, _) = run(2)?;
    let one_scan = twice
        .iter()
        .map(|(name, calls)| {
            (
                name.clone(),
                calls.saturating_sub(*once.get(name).unwrap_or(&0)),
            )
        })
        .filter(|(_, calls)| *calls > 0)
        .collect();
    Ok((one_scan, threads))
}

/// `% time seconds usecs/call calls [errors] syscall` rows of `strace -c`.
fn parse_strace_summary(summary: &str) -> BTreeMap<String, u64> {
    summary
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let calls = fields.get(3)?.parse().ok()?;
            let name = *fields.last()?;
            (name != "total").then(|| (name.to_owned(), calls))
        })
        .collect()
}

fn child(spec: &str) {
    let (scans, reader) = spec.split_once(':').expect("<scans>:<reader>");
    let reader = Reader::parse(reader);
    let scans = scans.parse::<u32>().expect("scan count");
    let mut warm = Warm::new(reader, &thread_file()).expect("reader ready");
    let mut seen = 0;
    for _ in 0..scans {
        seen = warm.scan(reader);
    }
    println!("{seen}");
}

struct Measured {
    reader: Reader,
    /// Median per scan, or why there is none.
    time: Result<Duration, String>,
    syscalls: Syscalls,
}

struct Row {
    extra: usize,
    /// Threads in /proc during the run, or why the size could not be had.
    threads: Result<usize, String>,
    shell: Duration,
    shell_stacks: Duration,
    measured: Vec<Measured>,
}

fn main() {
    if let Ok(spec) = env::var(CHILD_ENV) {
        return child(&spec);
    }
    let file = &thread_file();
    let mut criterion = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let sizes: Vec<usize> = match env::var(THREADS_ENV) {
        Ok(sizes) => sizes
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("KLPSCOPE_BENCH_THREADS: numbers, comma-separated")
            })
            .collect(),
        Err(_) => EXTRA_THREADS.to_vec(),
    };
    let mut rows = Vec::new();
    for extra in sizes {
        let sleeping = match SleepingThreads::spawn(extra) {
            Ok(sleeping) => sleeping,
            Err(why) => {
                rows.push(Row {
                    extra,
                    threads: Err(why),
                    shell: Duration::ZERO,
                    shell_stacks: Duration::ZERO,
                    measured: Vec::new(),
                });
                continue;
            }
        };
        let mut group = criterion.benchmark_group("task_scan");
        let mut measured = Vec::new();
        for reader in [Reader::PATCH_STATE, Reader::WITH_STACKS].concat() {
            let time = Warm::new(reader, file).map(|mut warm| {
                group.bench_with_input(BenchmarkId::new(reader.name(), extra), &extra, |b, _| {
                    b.iter(|| warm.scan(reader))
                });
                median(samples(extra, || timed(|| warm.scan(reader))))
            });
            // Counted while this process holds the sleeping threads: the
            // traced child scans them without owning them, so strace
            // follows one thread, not thousands.
            let syscalls = match &time {
                Ok(_) => count_syscalls(reader),
                Err(why) => Err(why.clone()),
            };
            measured.push(Measured {
                reader,
                time,
                syscalls,
            });
        }
        group.finish();
        let runs = if extra >= 50_000 { 1 } else { 3 };
        let shell = median((0..runs).map(|_| shell_loop(&[file])).collect());
        let shell_stacks = median((0..runs).map(|_| shell_loop(&[file, "stack"])).collect());
        let threads = one_shot(file);
        drop(sleeping);
        rows.push(Row {
            extra,
            threads: Ok(threads),
            shell,
            shell_stacks,
            measured,
        });
    }
    print_table(file, &rows);
    criterion.final_summary();
}

/// At least 20 scans (5 at 50k), and as many more as fit in two seconds:
/// a median of a few millisecond-long scans on a busy 2-core host wanders
/// by a third from run to run.
fn samples(extra: usize, mut scan: impl FnMut() -> Duration) -> Vec<Duration> {
    let least = if extra >= 50_000 { 5 } else { 20 };
    let start = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < least
        || (start.elapsed() < Duration::from_secs(2) && samples.len() < 2000)
    {
        samples.push(scan());
    }
    samples
}

fn timed(run: impl FnOnce() -> usize) -> Duration {
    let start = Instant::now();
    std::hint::black_box(run());
    start.elapsed()
}

fn print_table(file: &str, rows: &[Row]) {
    println!(
        "\nFull scan of every thread: patch_state (procfs: /proc/*/task/*/{file} on this run), then patch_state + kernel stack"
    );
    println!(
        "{:>6} {:>7} {:>16} {:>12} {:>12} {:>10} {:>9} {:>11}",
        "extra",
        "threads",
        "reader",
        "per scan",
        "shell loop",
        "speed-up",
        "syscalls",
        "per thread"
    );
    for row in rows {
        let threads = match &row.threads {
            Ok(threads) => *threads,
            Err(why) => {
                println!("{:>6}  not measured: {why}", row.extra);
                continue;
            }
        };
        for m in &row.measured {
            let shell = if Reader::WITH_STACKS.contains(&m.reader) {
                row.shell_stacks
            } else {
                row.shell
            };
            let (total, per_thread) = match &m.syscalls {
                Ok((calls, threads)) => {
                    let total: u64 = calls.values().sum();
                    (
                        total.to_string(),
                        format!("{:.3}", total as f64 / *threads as f64),
                    )
                }
                Err(_) => ("?".into(), "?".into()),
            };
            match &m.time {
                Ok(time) => println!(
                    "{:>6} {:>7} {:>16} {:>9.2} ms {:>9.1} ms {:>9.0}x {:>9} {:>11}",
                    row.extra,
                    threads,
                    m.reader.name(),
                    time.as_secs_f64() * 1e3,
                    shell.as_secs_f64() * 1e3,
                    shell.as_secs_f64() / time.as_secs_f64(),
                    total,
                    per_thread,
                ),
                Err(why) => println!(
                    "{:>6} {:>7} {:>16}  not measured: {why}",
                    row.extra,
                    threads,
                    m.reader.name()
                ),
            }
        }
    }
    for row in rows {
        for m in &row.measured {
            match &m.syscalls {
                Ok((calls, threads)) => {
                    let detail: Vec<String> = calls
                        .iter()
                        .map(|(name, n)| format!("{name} {n}"))
                        .collect();
                    println!(
                        "  {} extra, {}: one scan of {threads} threads = {}",
                        row.extra,
                        m.reader.name(),
                        detail.join(", ")
                    );
                }
                Err(why) => println!(
                    "  {} extra, {}: syscalls not counted ({why})",
                    row.extra,
                    m.reader.name()
                ),
            }
        }
    }
}
