//! Loads klpscope's eBPF object, attaches what the kernel allows, and says
//! what it could not.
use std::{os::unix::fs::MetadataExt, path::Path};

use aya::EbpfLoader;
use aya_log::EbpfLogger;

use super::{
    btf::KernelBtf,
    call_counter::{CallCounter, CountedFunction, initial_slot_modes},
    capabilities::{Capabilities, Facility},
    object::{Hook, attach, loads_here},
    task_iterator::TaskIterator,
    tracer::{TracerProgram, TransitionTracer},
};
use crate::{
    kernel::attr::{Attr, read_attr},
    model::{FunctionState, KernelSeries},
};

pub(super) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/livepatch.bpf.o"));

/// A vmlinux function present on every kernel klpscope supports, used to
/// learn whether fentry programs may attach at all.
const FENTRY_PROBE_FUNCTION: &str = "cmdline_proc_show";

/// What the caller wants traced.
#[derive(Clone, Debug, Default)]
pub struct ProbeRequest {
    /// Attach the transition tracer.
    pub tracer: bool,
    /// Functions whose calls to count (vmlinux or modules), one slot each,
    /// with the version that runs when the counters attach: the programs
    /// count from their first call, so the version must be right from the
    /// start.
    pub count_calls: Vec<(CountedFunction, FunctionState)>,
}

/// Loaded and attached programs. Dropping it detaches every program: aya
/// owns the links, and they are never pinned.
pub struct Probes {
    pub tracer: Option<TransitionTracer>,
    pub call_counter: Option<CallCounter>,
    /// Messages from the programs (aya-log), when klpscope logs to a file.
    ebpf_log: Option<EbpfLogger<&'static dyn log::Log>>,
    /// Owns the attached programs: they stay attached while this lives.
    _ebpf: aya::Ebpf,
}

/// The first kernel series on which a task's reliable stack walk was seen to
/// pass through BPF trampoline frames (6.12 in the VM lab; 6.1 fails).
///
/// Before it, the fexits on the checking task's own call chain stay off:
/// their trampoline would sit on the stack of the task that checks itself
/// (the transition worker), which that kernel cannot walk reliably, so it
/// could never switch itself (seen on 6.1: a reversal hung). No run-time
/// probe tells the two apart (the kernel's reliable unwinder cannot be
/// asked from user space without a transition), so this is the one rule by
/// release; kernels between 6.1 and 6.12 were not tried and are treated as
/// 6.1.
const RELIABLE_THROUGH_TRAMPOLINES: KernelSeries = KernelSeries::new(6, 12);

/// Whether fexit hooks on the transition worker's own call chain are safe on
/// this kernel release, e.g. "6.12.117+deb12-amd64". An unknown release
/// stays on the safe side.
fn exit_hooks_safe(release: &str) -> bool {
    KernelSeries::of(release).is_some_and(|series| series >= RELIABLE_THROUGH_TRAMPOLINES)
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Loads and attaches what `request` asks for. Returns no probes when an
/// essential piece is missing; the capabilities say why, one reason each.
pub fn load(root: &Path, request: &ProbeRequest) -> (Option<Probes>, Capabilities) {
    let (probes, caps, _) = load_inner(root, request, false);
    (probes, caps)
}

/// As `load`, with the task iterator's programs linked from the same
/// object: one BTF parse and one object for both (the feed's start-up).
/// The iterator needs no fentry, so it may be there when the probes are
/// not; its Err is why not.
pub fn load_with_task_iterator(
    root: &Path,
    request: &ProbeRequest,
) -> (Option<Probes>, Capabilities, Result<TaskIterator, String>) {
    let (probes, caps, iterator) = load_inner(root, request, true);
    let iterator = iterator.unwrap_or_else(|| {
        Err(caps
            .unavailable_reason()
            .unwrap_or_else(|| "klpscope's eBPF object did not load".into()))
    });
    (probes, caps, iterator)
}

fn load_inner(
    root: &Path,
    request: &ProbeRequest,
    task_iterator: bool,
) -> (
    Option<Probes>,
    Capabilities,
    Option<Result<TaskIterator, String>>,
) {
    let mut caps = Capabilities::default();
    let mut iterator = None;
    let probes = try_load(root, request, &mut caps, task_iterator, &mut iterator);
    give_back_freed_memory();
    for cap in &caps.items {
        match &cap.reason {
            None => log::info!("eBPF {}: available", cap.facility),
            Some(reason) => log::info!("eBPF {}: unavailable: {reason}", cap.facility),
        }
    }
    (probes, caps, iterator)
}

/// An EbpfLoader without a kernel BTF. `EbpfLoader::new` parses the
/// kernel's BTF for CO-RE relocations, which Rust programs never have
/// (klpscope's object has none), and the parse is the larger part of a
/// load's memory (about 18 MB, kept until the loader goes). Made before
/// klpscope's own parse (KernelBtf), so that the two are never held at once.
pub(super) fn bare_loader<'a>() -> EbpfLoader<'a> {
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    loader
}

/// Makes glibc hand freed memory back at once, in every thread: to be
/// called first thing in main. By default, freeing a large block (the
/// kernel's BTF as read, 6 MB) raises the size below which the top of a
/// thread's heap is kept to twice that, which malloc_trim does not touch:
/// the call counters, loaded on a thread of their own, left 11 MB behind
/// in the TCG lab (RSS 19 MB instead of 8). Fixed thresholds end that.
pub fn return_freed_memory_promptly() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes two tunables of the allocator, before
    // any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
    }
}

/// Parsing the kernel's BTF takes about 20 MB of small allocations, all
/// freed once the programs are loaded; the allocator keeps them unless told
/// otherwise, and a long watch would carry them for nothing.
pub(super) fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// With `task_iterator`, `iterator` holds the iterator's outcome once the
/// object is loaded; it stays None when the object did not load.
fn try_load(
    root: &Path,
    request: &ProbeRequest,
    caps: &mut Capabilities,
    task_iterator: bool,
    iterator: &mut Option<Result<TaskIterator, String>>,
) -> Option<Probes> {
    if root != Path::new("/") {
        caps.missing(
            Facility::Root,
            "eBPF is off: --root points at another tree, not this kernel",
        );
        return None;
    }
    if !is_root() {
        caps.missing(
            Facility::Root,
            "not root: loading eBPF needs root (run with sudo)",
        );
        return None;
    }
    caps.available(Facility::Root);

    let mut loader = bare_loader();
    let kernel_btf = match KernelBtf::read(root) {
        Ok(kernel_btf) => kernel_btf,
        Err(reason) => {
            caps.missing(Facility::Btf, reason);
            return None;
        }
    };
    let (btf, layout) = (&kernel_btf.btf, &kernel_btf.layout);
    caps.available(Facility::Btf);
    if layout.has_patch_state {
        caps.available(Facility::TaskPatchState);
    } else {
        caps.missing(
            Facility::TaskPatchState,
            "task_struct has no patch_state: this kernel has no CONFIG_LIVEPATCH",
        );
    }

    if OBJECT.is_empty() {
        caps.missing(
            Facility::EbpfObject,
            "this klpscope was built without its eBPF programs (a plain cargo build): \
             build it with `cargo xtask build` or run it with `cargo xtask run`",
        );
        return None;
    }
    let slot_modes = initial_slot_modes(&request.count_calls);
    loader
        .override_global("TASK_OFFSETS", &layout.offsets, true)
        .override_global("SLOT_MODES", &slot_modes, true);
    if task_iterator && let Ok(offsets) = &kernel_btf.iter_offsets {
        loader.override_global("TASK_ITER_OFFSETS", offsets, true);
    }
    let mut ebpf = match loader.load(OBJECT) {
        Ok(ebpf) => ebpf,
        Err(e) => {
            caps.missing(
                Facility::EbpfObject,
                format!("cannot load klpscope's eBPF object: {e}"),
            );
            return None;
        }
    };
    caps.available(Facility::EbpfObject);
    if task_iterator {
        *iterator = Some(match &kernel_btf.iter_offsets {
            Ok(_) => TaskIterator::link(&mut ebpf, btf),
            Err(reason) => Err(reason.clone()),
        });
    }

    // The floor program loaded and unloaded: klpscope attaches nothing it
    // does not need.
    match loads_here(
        &mut ebpf,
        btf,
        "count_calls_floor",
        FENTRY_PROBE_FUNCTION,
        Hook::Entry,
    ) {
        Ok(()) => caps.available(Facility::Fentry),
        Err(reason) => {
            caps.missing(
                Facility::Fentry,
                format!("fentry programs are refused: {reason}"),
            );
            return None;
        }
    }

    let release = match read_attr(&root.join("proc/sys/kernel/osrelease")) {
        Attr::Text(release) => release,
        Attr::Missing | Attr::Unreadable(_) => String::new(),
    };
    let exit_hooks_safe = exit_hooks_safe(&release);
    let tracer = request.tracer.then(|| {
        for program in TracerProgram::ALL {
            let facility = Facility::Tracer(program);
            if !exit_hooks_safe && program.on_the_checkers_stack() {
                // Where the kernel has no such function (5.10 inlines the
                // check), that is the reason; else the release rule.
                let loads = loads_here(
                    &mut ebpf,
                    btf,
                    program.program(),
                    program.function(),
                    program.hook(),
                );
                if let Err(reason) = loads {
                    caps.missing(facility, reason);
                    continue;
                }
                caps.missing(
                    facility,
                    format!(
                        "the fexit on {} is off on kernel {}: its trampoline would sit on the \
                         transition worker's own stack, which this kernel cannot walk \
                         reliably, so the worker could never switch itself (seen on 6.1; fine \
                         from {}.{}); verdicts are inferred instead",
                        program.function(),
                        release.trim(),
                        RELIABLE_THROUGH_TRAMPOLINES.major,
                        RELIABLE_THROUGH_TRAMPOLINES.minor
                    ),
                );
                continue;
            }
            match attach(
                &mut ebpf,
                btf,
                program.program(),
                program.function(),
                program.hook(),
            ) {
                Ok(()) => caps.available(facility),
                Err(reason) => caps.missing(facility, reason),
            }
        }
        TransitionTracer::take(&mut ebpf)
    });
    let tracer = match tracer {
        Some(Ok(tracer)) => {
            caps.available(Facility::TracerMaps);
            Some(tracer)
        }
        Some(Err(e)) => {
            caps.missing(Facility::TracerMaps, format!("transition tracer maps: {e}"));
            None
        }
        None => None,
    };

    let call_counter = if request.count_calls.is_empty() {
        None
    } else {
        match CallCounter::attach(&mut ebpf, btf, root, &request.count_calls) {
            Ok((counter, outcomes)) => {
                caps.available(Facility::CallCounterMaps);
                for (function, outcome) in outcomes {
                    match outcome {
                        Ok(_) => caps.available(Facility::Calls(function)),
                        Err(reason) => caps.missing(Facility::Calls(function), reason),
                    }
                }
                Some(counter)
            }
            Err(e) => {
                caps.missing(Facility::CallCounterMaps, format!("call counter maps: {e}"));
                None
            }
        }
    };

    // Without a log file nobody reads the programs' messages: leave the
    // ring buffer alone.
    let ebpf_log = (log::max_level() > log::LevelFilter::Off)
        .then(|| EbpfLogger::init(&mut ebpf))
        .and_then(|logger| logger.map_err(|e| log::warn!("no eBPF log: {e}")).ok());

    Some(Probes {
        tracer,
        call_counter,
        ebpf_log,
        _ebpf: ebpf,
    })
}

impl Probes {
    /// Moves the programs' log messages into klpscope's log. Call it now and
    /// then; the messages wait in a ring buffer until then.
    pub fn flush_log(&mut self) {
        if let Some(logger) = &mut self.ebpf_log {
            logger.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::exit_hooks_safe;

    #[test]
    fn exit_hooks_on_the_checkers_stack_need_6_12() {
        assert!(exit_hooks_safe("6.12.117+deb12-amd64"));
        assert!(exit_hooks_safe("6.18.44-fc-v669\n"));
        assert!(exit_hooks_safe("7.0.0"));
        assert!(!exit_hooks_safe("6.1.0-56-amd64"));
        assert!(!exit_hooks_safe("5.15.0"));
        assert!(!exit_hooks_safe(""));
        assert!(!exit_hooks_safe("garbage"));
    }
}
