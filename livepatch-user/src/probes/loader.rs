//! Loads klpscope's eBPF object, the one way every command does: the
//! tracer, the call counters and the task iterator are options of one
//! load. Attaches what the kernel allows, and says what it could not.
use std::path::Path;

use aya::EbpfLoader;
use aya_log::EbpfLogger;

use super::{
    btf::KernelBtf,
    call_counter::{CallCounter, initial_slot_modes},
    capabilities::{Capabilities, Facility},
    object::{KprobeSite, attach_fentry, attach_kprobe, fentry_loads_here},
    task_iterator::{TaskIterator, unused_map_sizes},
    tracer::{TracerHook, TracerProgram, TransitionTracer, event_ring_bytes},
};
use crate::{
    kernel::procfs_tasks::thread_count,
    memory::give_back_freed_memory,
    model::{FunctionState, Target},
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
    pub count_calls: Vec<(Target, FunctionState)>,
    /// Link the BPF task iterator's programs too.
    pub task_iterator: bool,
}

impl ProbeRequest {
    /// The iterator alone needs no fentry, nor the other programs' maps.
    fn iterator_only(&self) -> bool {
        !self.tracer && self.count_calls.is_empty()
    }
}

/// What a load gave.
pub struct Loaded {
    /// None when an essential piece is missing; `capabilities` say why.
    pub probes: Option<Probes>,
    pub capabilities: Capabilities,
    /// When asked for: the iterator, or why not in one line. It needs no
    /// fentry, so it may be there when the probes are not.
    pub task_iterator: Option<Result<TaskIterator, String>>,
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

/// The one root check before anything is loaded.
fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Loads and attaches what `request` asks for, from one object and one
/// parse of the kernel's BTF.
pub fn load(root: &Path, request: &ProbeRequest) -> Loaded {
    let mut capabilities = Capabilities::default();
    let mut iterator = None;
    let probes = try_load(root, request, &mut capabilities, &mut iterator);
    give_back_freed_memory();
    for cap in &capabilities.items {
        match &cap.reason {
            None => log::info!("eBPF {}: available", cap.facility),
            Some(reason) => log::info!("eBPF {}: unavailable: {reason}", cap.facility),
        }
    }
    let task_iterator = request.task_iterator.then(|| {
        iterator.unwrap_or_else(|| {
            Err(capabilities
                .unavailable_reason()
                .unwrap_or_else(|| "klpscope's eBPF object did not load".into()))
        })
    });
    Loaded {
        probes,
        capabilities,
        task_iterator,
    }
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

/// With `request.task_iterator`, `iterator` holds the iterator's outcome
/// once the object is loaded; it stays None when the object did not load.
fn try_load(
    root: &Path,
    request: &ProbeRequest,
    caps: &mut Capabilities,
    iterator: &mut Option<Result<TaskIterator, String>>,
) -> Option<Probes> {
    if !on_this_kernel_as_root(root, caps) {
        return None;
    }
    let shrunk = if request.iterator_only() {
        unused_map_sizes(OBJECT)
    } else {
        Vec::new()
    };
    let mut loader = bare_loader();
    let kernel_btf = kernel_btf(root, caps)?;
    let (btf, layout) = (&kernel_btf.btf, &kernel_btf.layout);
    let slot_modes = initial_slot_modes(&request.count_calls);
    loader
        .override_global("TASK_OFFSETS", &layout.offsets, true)
        .override_global("SLOT_MODES", &slot_modes, true);
    if request.task_iterator
        && let Ok(offsets) = &kernel_btf.iter_offsets
    {
        loader.override_global("TASK_ITER_OFFSETS", offsets, true);
    }
    for (name, entries) in &shrunk {
        loader.map_max_entries(name, *entries);
    }
    if request.tracer {
        let threads = thread_count(root).unwrap_or(0);
        loader.map_max_entries("EVENTS", event_ring_bytes(threads));
    }
    let mut ebpf = load_object(&mut loader, caps)?;
    if request.task_iterator {
        *iterator = Some(match &kernel_btf.iter_offsets {
            Ok(_) => TaskIterator::link(&mut ebpf, btf),
            Err(reason) => Err(reason.clone()),
        });
    }
    if request.iterator_only() {
        return None;
    }

    // The floor program loaded and unloaded: klpscope attaches nothing it
    // does not need.
    match fentry_loads_here(&mut ebpf, btf, "count_calls_floor", FENTRY_PROBE_FUNCTION) {
        Ok(()) => caps.available(Facility::Fentry),
        Err(reason) => {
            caps.missing(
                Facility::Fentry,
                format!("fentry programs are refused: {reason}"),
            );
            return None;
        }
    }
    let tracer = request
        .tracer
        .then(|| attach_tracer(&mut ebpf, btf, caps))
        .flatten();
    let call_counter = (!request.count_calls.is_empty())
        .then(|| attach_counters(&mut ebpf, btf, root, &request.count_calls, caps))
        .flatten();
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

/// eBPF follows the kernel klpscope runs on, and only root may load it.
fn on_this_kernel_as_root(root: &Path, caps: &mut Capabilities) -> bool {
    if root != Path::new("/") {
        caps.missing(
            Facility::Root,
            "eBPF is off: --root points at another tree, not this kernel",
        );
        return false;
    }
    if !is_root() {
        caps.missing(
            Facility::Root,
            "not root: loading eBPF needs root (run with sudo)",
        );
        return false;
    }
    caps.available(Facility::Root);
    true
}

/// The kernel's BTF, which gives task_struct's layout.
fn kernel_btf(root: &Path, caps: &mut Capabilities) -> Option<KernelBtf> {
    let kernel_btf = match KernelBtf::read(root) {
        Ok(kernel_btf) => kernel_btf,
        Err(reason) => {
            caps.missing(Facility::Btf, reason);
            return None;
        }
    };
    caps.available(Facility::Btf);
    if kernel_btf.layout.has_patch_state {
        caps.available(Facility::TaskPatchState);
    } else {
        caps.missing(
            Facility::TaskPatchState,
            "task_struct has no patch_state: this kernel has no CONFIG_LIVEPATCH",
        );
    }
    Some(kernel_btf)
}

fn load_object(loader: &mut EbpfLoader<'_>, caps: &mut Capabilities) -> Option<aya::Ebpf> {
    if OBJECT.is_empty() {
        caps.missing(
            Facility::EbpfObject,
            "this klpscope was built without its eBPF programs (a plain cargo build): \
             build it with `cargo xtask build` or run it with `cargo xtask run`",
        );
        return None;
    }
    match loader.load(OBJECT) {
        Ok(ebpf) => {
            caps.available(Facility::EbpfObject);
            Some(ebpf)
        }
        Err(e) => {
            caps.missing(
                Facility::EbpfObject,
                format!("cannot load klpscope's eBPF object: {e}"),
            );
            None
        }
    }
}

/// The transition tracer's programs, each attached where the kernel
/// allows; the tracer once its maps are taken.
fn attach_tracer(
    ebpf: &mut aya::Ebpf,
    btf: &aya::Btf,
    caps: &mut Capabilities,
) -> Option<TransitionTracer> {
    for program in TracerProgram::ALL {
        let (name, function) = (program.program(), program.function());
        let attached = match program.hook() {
            TracerHook::Fentry => attach_fentry(ebpf, btf, name, function),
            TracerHook::Kprobe | TracerHook::Kretprobe => {
                attach_kprobe(ebpf, name, function, KprobeSite::Symbol(function))
            }
        };
        match attached {
            Ok(()) => caps.available(Facility::Tracer(program)),
            Err(reason) => caps.missing(Facility::Tracer(program), reason),
        }
    }
    match TransitionTracer::take(ebpf) {
        Ok(tracer) => {
            caps.available(Facility::TracerMaps);
            Some(tracer)
        }
        Err(e) => {
            caps.missing(Facility::TracerMaps, format!("transition tracer maps: {e}"));
            None
        }
    }
}

/// The call counters, one slot per function.
fn attach_counters(
    ebpf: &mut aya::Ebpf,
    btf: &aya::Btf,
    root: &Path,
    functions: &[(Target, FunctionState)],
    caps: &mut Capabilities,
) -> Option<CallCounter> {
    match CallCounter::attach(ebpf, btf, root, functions) {
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
