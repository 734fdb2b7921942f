//! The watch hot path: one small file read for every thread in /proc, with
//! 1k and 10k extra sleeping threads, against kpatch's shell loop
//! (`for t in /proc/*/task/*; do cat $t/patch_state; done`) in the same run.
//!
//! Two readers: the one-shot `scan_patch_states` (open+read+close per
//! thread), and watch's `PatchStateScanner`, measured in its steady state
//! (after a first scan that opens everything) with its descriptors kept.
//!
//! Hosts without CONFIG_LIVEPATCH have no patch_state file, so all sides
//! read `stat` instead there: the same syscalls per thread, on a slightly
//! longer file.
//!
//! Syscalls are counted with `strace -f -c` on a child copy of this binary
//! that scans once and then twice (the scanner after its warm-up scan): the
//! difference is one scan, free of start-up noise. The sleeping threads
//! belong to the parent, so strace follows the scanner alone.
use std::{
    collections::BTreeMap,
    env,
    path::Path,
    process::Command,
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion};
use livepatch_user::kernel::{PatchStateScanner, ThreadFile, ThreadFileReader, list_threads};

const EXTRA_THREADS: [usize; 2] = [1_000, 10_000];
/// Set in the child that strace watches: `<scans>:<reader>`.
const CHILD_ENV: &str = "KLPSCOPE_BENCH_CHILD";

/// Picks another per-thread file, e.g. `comm`, whose kernel side is as cheap
/// as patch_state's (one value printed), unlike `stat`'s.
const FILE_ENV: &str = "KLPSCOPE_BENCH_FILE";

/// The file both sides read per thread.
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
fn scan(file: &str) -> usize {
    let root = Path::new("/");
    let threads = list_threads(root).expect("list /proc");
    let mut reader = ThreadFileReader::new(root);
    threads
        .into_iter()
        .filter(|&thread| matches!(reader.read(thread, file), ThreadFile::Content(_)))
        .count()
}

#[derive(Clone, Copy, Debug)]
enum Reader {
    OneShot,
    Scanner,
}

impl Reader {
    fn name(self) -> &'static str {
        match self {
            Reader::OneShot => "one-shot",
            Reader::Scanner => "scanner",
        }
    }

    fn parse(name: &str) -> Self {
        match name {
            "one-shot" => Reader::OneShot,
            "scanner" => Reader::Scanner,
            _ => panic!("unknown reader {name}"),
        }
    }
}

/// A scanner past its warm-up scan, which opened every descriptor.
fn warm_scanner(file: &str) -> PatchStateScanner {
    let mut scanner = PatchStateScanner::with_file(Path::new("/"), file).expect("open /proc");
    scanner.scan().expect("scan /proc");
    scanner
}

fn scanner_scan(scanner: &mut PatchStateScanner) -> usize {
    scanner.scan().expect("scan /proc").len()
}

/// Threads that sleep until the returned guard is dropped. Small stacks:
/// 10k default 8 MiB stacks would be 80 GiB of address space.
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

fn shell_loop(file: &str) -> Duration {
    let script = format!("for t in /proc/*/task/*; do cat $t/{file}; done >/dev/null 2>&1; true");
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

/// Syscalls of one scan by name, or why they could not be counted.
fn count_syscalls(reader: Reader) -> Result<(BTreeMap<String, u64>, usize), String> {
    let run = |scans: u32| -> Result<(BTreeMap<String, u64>, usize), String> {
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
    let file = thread_file();
    let mut seen = 0;
    match reader {
        Reader::OneShot => {
            for _ in 0..scans {
                seen = scan(&file);
            }
        }
        Reader::Scanner => {
            let mut scanner = warm_scanner(&file);
            for _ in 0..scans {
                seen = scanner_scan(&mut scanner);
            }
        }
    }
    println!("{seen}");
}

type Syscalls = Result<(BTreeMap<String, u64>, usize), String>;

struct Row {
    extra: usize,
    threads: usize,
    one_shot: Duration,
    scanner: Duration,
    shell: Duration,
    one_shot_syscalls: Syscalls,
    scanner_syscalls: Syscalls,
}

fn main() {
    if let Ok(spec) = env::var(CHILD_ENV) {
        return child(&spec);
    }
    let file = &thread_file();
    let mut criterion = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut rows = Vec::new();
    for extra in EXTRA_THREADS {
        let sleeping = SleepingThreads::spawn(extra);
        let mut group = criterion.benchmark_group("patch_state_scan");
        group.bench_with_input(
            BenchmarkId::new(format!("one_shot_{file}"), extra),
            &extra,
            |b, _| b.iter(|| scan(file)),
        );
        let mut scanner = warm_scanner(file);
        group.bench_with_input(
            BenchmarkId::new(format!("scanner_{file}"), extra),
            &extra,
            |b, _| b.iter(|| scanner_scan(&mut scanner)),
        );
        group.finish();
        let threads = scan(file);
        let one_shot = median((0..20).map(|_| timed(|| scan(file))).collect());
        let scanner = median(
            (0..20)
                .map(|_| timed(|| scanner_scan(&mut scanner)))
                .collect(),
        );
        let shell = median((0..3).map(|_| shell_loop(file)).collect());
        // Counted while this process holds the sleeping threads: the traced
        // child scans them without owning them, so strace follows one
        // thread, not thousands.
        let one_shot_syscalls = count_syscalls(Reader::OneShot);
        let scanner_syscalls = count_syscalls(Reader::Scanner);
        drop(sleeping);
        rows.push(Row {
            extra,
            threads,
            one_shot,
            scanner,
            shell,
            one_shot_syscalls,
            scanner_syscalls,
        });
    }
    print_table(file, &rows);
    criterion.final_summary();
}

fn timed(run: impl FnOnce() -> usize) -> Duration {
    let start = Instant::now();
    std::hint::black_box(run());
    start.elapsed()
}

fn print_table(file: &str, rows: &[Row]) {
    println!(
        "\nFull scan of /proc/*/task/*/{file} (patch_state where the kernel has it; this run: {file})"
    );
    println!(
        "{:>6} {:>7} {:>9} {:>12} {:>12} {:>9} {:>11} {:>11}",
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
        for (reader, time, syscalls) in [
            (Reader::OneShot, row.one_shot, &row.one_shot_syscalls),
            (Reader::Scanner, row.scanner, &row.scanner_syscalls),
        ] {
            let (total, per_thread) = match syscalls {
                Ok((calls, threads)) => {
                    let total: u64 = calls.values().sum();
                    (
                        total.to_string(),
                        format!("{:.2}", total as f64 / *threads as f64),
                    )
                }
                Err(_) => ("?".into(), "?".into()),
            };
            println!(
                "{:>6} {:>7} {:>9} {:>9.2} ms {:>9.1} ms {:>8.0}x {:>11} {:>11}",
                row.extra,
                row.threads,
                reader.name(),
                time.as_secs_f64() * 1e3,
                row.shell.as_secs_f64() * 1e3,
                row.shell.as_secs_f64() / time.as_secs_f64(),
                total,
                per_thread,
            );
        }
    }
    for row in rows {
        for (reader, syscalls) in [
            (Reader::OneShot, &row.one_shot_syscalls),
            (Reader::Scanner, &row.scanner_syscalls),
        ] {
            match syscalls {
                Ok((calls, threads)) => {
                    let detail: Vec<String> = calls
                        .iter()
                        .map(|(name, n)| format!("{name} {n}"))
                        .collect();
                    println!(
                        "  {} extra, {}: one scan of {threads} threads = {}",
                        row.extra,
                        reader.name(),
                        detail.join(", ")
                    );
                }
                Err(why) => println!(
                    "  {} extra, {}: syscalls not counted ({why})",
                    row.extra,
                    reader.name()
                ),
            }
        }
    }
}
