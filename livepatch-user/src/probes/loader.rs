//! Loads klpscope's eBPF object, attaches what the kernel allows, and says
//! what it could not.
use std::{os::unix::fs::MetadataExt, path::Path};

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{FEntry, FExit, ProgramError},
};
use aya_log::EbpfLogger;

use super::{
    btf::task_layout,
    call_counter::{CallCounter, initial_slot_modes},
    capabilities::Capabilities,
    tracer::TransitionTracer,
};
use crate::model::FunctionState;

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
    /// vmlinux functions whose calls to count, one slot each, with the
    /// version that runs when the counters attach: the programs count from
    /// their first call, so the version must be right from the start.
    pub count_calls: Vec<(String, FunctionState)>,
}

/// Loaded and attached programs. Dropping it detaches every program: aya
/// owns the links, and they are never pinned.
pub struct Probes {
    pub tracer: Option<TransitionTracer>,
    pub call_counter: Option<CallCounter>,
    /// Messages from the programs (aya-log), when klpscope logs to a file.
    ebpf_log: Option<EbpfLogger<&'static dyn log::Log>>,
    /// Owns the attached programs: they stay attached while this lives.
    _ebpf: Ebpf,
}

#[derive(Clone, Copy)]
pub(super) enum Hook {
    Entry,
    Exit,
}

/// The transition tracer's programs and the kernel function each attaches to.
const TRACER_HOOKS: [(&str, &str, Hook); 10] = [
    (
        "klp_check_and_switch_task",
        "klp_check_and_switch_task",
        Hook::Exit,
    ),
    ("klp_start_transition", "klp_start_transition", Hook::Entry),
    (
        "klp_try_complete_transition_entry",
        "klp_try_complete_transition",
        Hook::Entry,
    ),
    (
        "klp_try_complete_transition_exit",
        "klp_try_complete_transition",
        Hook::Exit,
    ),
    (
        "klp_update_patch_state_entry",
        "klp_update_patch_state",
        Hook::Entry,
    ),
    (
        "klp_update_patch_state_exit",
        "klp_update_patch_state",
        Hook::Exit,
    ),
    (
        "klp_reverse_transition",
        "klp_reverse_transition",
        Hook::Entry,
    ),
    ("klp_force_transition", "klp_force_transition", Hook::Entry),
    (
        "klp_complete_transition",
        "klp_complete_transition",
        Hook::Entry,
    ),
    (
        "klp_cancel_transition",
        "klp_cancel_transition",
        Hook::Entry,
    ),
];

/// fexit programs whose trampoline frame is on the stack of the task that
/// runs the transition's checks while it checks itself.
const ON_THE_CHECKERS_STACK: [&str; 2] = [
    "klp_check_and_switch_task",
    "klp_try_complete_transition_exit",
];

/// The first kernel series on which a task's reliable stack walk was seen to
/// pass through BPF trampoline frames (6.12 in the VM lab; 6.1 fails).
const RELIABLE_THROUGH_TRAMPOLINES: (u32, u32) = (6, 12);

/// Whether fexit hooks on the transition worker's own call chain are safe on
/// this kernel release, e.g. "6.12.117+deb12-amd64".
fn exit_hooks_safe(release: &str) -> bool {
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= RELIABLE_THROUGH_TRAMPOLINES,
        // Unknown release: stay on the safe side.
        _ => false,
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Loads and attaches what `request` asks for. Returns no probes when an
/// essential piece is missing; the capabilities say why, one reason each.
pub fn load(root: &Path, request: &ProbeRequest) -> (Option<Probes>, Capabilities) {
    let mut caps = Capabilities::default();
    let probes = try_load(root, request, &mut caps);
    for cap in &caps.items {
        match &cap.reason {
            None => log::info!("eBPF {}: available", cap.name),
            Some(reason) => log::info!("eBPF {}: unavailable: {reason}", cap.name),
        }
    }
    (probes, caps)
}

fn try_load(root: &Path, request: &ProbeRequest, caps: &mut Capabilities) -> Option<Probes> {
    if root != Path::new("/") {
        caps.missing(
            "root",
            "eBPF is off: --root points at another tree, not this kernel",
        );
        return None;
    }
    if !is_root() {
        caps.missing("root", "not root: loading eBPF needs root (run with sudo)");
        return None;
    }
    caps.available("root");

    let btf_path = root.join("sys/kernel/btf/vmlinux");
    let layout = match std::fs::read(&btf_path) {
        Ok(raw) => match task_layout(&raw) {
            Ok(layout) => layout,
            Err(e) => {
                caps.missing("btf", format!("{}: {e}", btf_path.display()));
                return None;
            }
        },
        Err(e) => {
            caps.missing(
                "btf",
                format!(
                    "no kernel BTF at {} ({e}): the kernel needs CONFIG_DEBUG_INFO_BTF",
                    btf_path.display()
                ),
            );
            return None;
        }
    };
    let btf = match Btf::from_sys_fs() {
        Ok(btf) => btf,
        Err(e) => {
            caps.missing("btf", format!("cannot parse the kernel's BTF: {e}"));
            return None;
        }
    };
    caps.available("btf");
    if layout.has_patch_state {
        caps.available("task_patch_state");
    } else {
        caps.missing(
            "task_patch_state",
            "task_struct has no patch_state: this kernel has no CONFIG_LIVEPATCH",
        );
    }

    if OBJECT.is_empty() {
        caps.missing(
            "ebpf_object",
            "this klpscope was built without its eBPF programs (a plain cargo build): \
             build it with `cargo xtask build` or run it with `cargo xtask run`",
        );
        return None;
    }
    let mut ebpf = match EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("TASK_OFFSETS", &layout.offsets, true)
        .override_global(
            "SLOT_MODES",
            &initial_slot_modes(&request.count_calls),
            true,
        )
        .load(OBJECT)
    {
        Ok(ebpf) => ebpf,
        Err(e) => {
            caps.missing(
                "ebpf_object",
                format!("cannot load klpscope's eBPF object: {e}"),
            );
            return None;
        }
    };
    caps.available("ebpf_object");

    match probe_fentry(&mut ebpf, &btf) {
        Ok(()) => caps.available("fentry"),
        Err(reason) => {
            caps.missing("fentry", format!("fentry programs are refused: {reason}"));
            return None;
        }
    }

    let release =
        std::fs::read_to_string(root.join("proc/sys/kernel/osrelease")).unwrap_or_default();
    let exit_hooks_safe = exit_hooks_safe(&release);
    let tracer = request.tracer.then(|| {
        for (program, function, hook) in TRACER_HOOKS {
            let name = format!("tracer:{program}");
            if !exit_hooks_safe && ON_THE_CHECKERS_STACK.contains(&program) {
                caps.missing(
                    name,
                    format!(
                        "the fexit on {function} is off on kernel {}: its trampoline would sit \
                         on the transition worker's own stack, which this kernel cannot walk \
                         reliably, so the worker could never switch itself (seen on 6.1; fine \
                         from {}.{}); verdicts are inferred instead",
                        release.trim(),
                        RELIABLE_THROUGH_TRAMPOLINES.0,
                        RELIABLE_THROUGH_TRAMPOLINES.1
                    ),
                );
                continue;
            }
            match attach(&mut ebpf, &btf, program, function, hook) {
                Ok(()) => caps.available(name),
                Err(reason) => caps.missing(name, reason),
            }
        }
        TransitionTracer::take(&mut ebpf)
    });
    let tracer = match tracer {
        Some(Ok(tracer)) => Some(tracer),
        Some(Err(e)) => {
            caps.missing("tracer", format!("transition tracer maps: {e}"));
            None
        }
        None => None,
    };

    let call_counter = if request.count_calls.is_empty() {
        None
    } else {
        match CallCounter::attach(&mut ebpf, &btf, &request.count_calls, caps) {
            Ok(counter) => Some(counter),
            Err(e) => {
                caps.missing("call_counter", format!("call counter maps: {e}"));
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

/// Loads the floor program against a function every kernel has, to learn
/// whether the kernel accepts fentry at all, then unloads it: klpscope
/// attaches nothing it does not need.
fn probe_fentry(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    let describe = |e: ProgramError| describe(FENTRY_PROBE_FUNCTION, &e);
    let program = ebpf
        .program_mut("count_calls_floor")
        .ok_or("program count_calls_floor is missing from klpscope's eBPF object")?;
    let program = <&mut FEntry>::try_from(program).map_err(describe)?;
    program.load(FENTRY_PROBE_FUNCTION, btf).map_err(describe)?;
    program.unload().map_err(describe)
}

/// Loads `program` against kernel function `function` and attaches it.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program: &str,
    function: &str,
    hook: Hook,
) -> Result<(), String> {
    let Some(prog) = ebpf.program_mut(program) else {
        return Err(format!(
            "program {program} is missing from klpscope's eBPF object"
        ));
    };
    let result = match hook {
        Hook::Entry => <&mut FEntry>::try_from(prog)
            .and_then(|p| p.load(function, btf).and_then(|()| p.attach().map(drop))),
        Hook::Exit => <&mut FExit>::try_from(prog)
            .and_then(|p| p.load(function, btf).and_then(|()| p.attach().map(drop))),
    };
    result.map_err(|e| describe(function, &e))
}

fn describe(function: &str, error: &ProgramError) -> String {
    if let ProgramError::Btf(_) = error {
        return format!("{function} is not in the kernel's BTF (absent, inlined, or in a module)");
    }
    if let ProgramError::LoadError { io_error, .. } = error {
        if io_error.raw_os_error() == Some(libc::EPERM) {
            return format!(
                "the kernel refused a tracing program on {function} (EPERM): \
                 fentry/fexit are blocked here (lockdown, LSM or kernel policy)"
            );
        }
    }
    if let ProgramError::SyscallError(failed) = error {
        if failed.io_error.raw_os_error() == Some(libc::EBUSY) {
            // Before 6.0 a BPF trampoline cannot share a function with an
            // IPMODIFY ftrace user, and livepatch is one.
            return format!(
                "the kernel refused an fentry on {function} (EBUSY): another ftrace user \
                 that rewrites its return address holds it, such as livepatch on a patched \
                 function (kernels before 6.0 cannot share a function that way)"
            );
        }
        // aya's message names the syscall only: add what the kernel said.
        return format!(
            "cannot attach to {function}: {} failed: {}",
            failed.call, failed.io_error
        );
    }
    format!("cannot attach to {function}: {error}")
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
