//! klpscope's loaded eBPF object: its programs attached to kernel functions
//! by name, its maps taken by name, and what the kernel said when it
//! refused an attachment, in one line.
use aya::{
    Btf, Ebpf,
    maps::{Map, MapError},
    programs::{FEntry, KProbe, ProgramError},
};

/// Where a kprobe goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KprobeSite<'a> {
    /// A symbol the kernel resolves itself: `name`, or `module:name`.
    Symbol(&'a str),
    /// An address from /proc/kallsyms: exact where names are ambiguous
    /// (several static functions of one name) or aliases.
    Address(u64),
}

/// Loads the fentry `program` against kernel function `function` (a vmlinux
/// function the BTF describes) and attaches it. klpscope has no fexit: its
/// trampoline would stay on the stack of the traced function's callers
/// (see `TracerProgram::hook`).
pub fn attach_fentry(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program: &str,
    function: &str,
) -> Result<(), String> {
    let prog = ebpf.program_mut(program).ok_or_else(|| missing(program))?;
    <&mut FEntry>::try_from(prog)
        .and_then(|p| p.load(function, btf).and_then(|()| p.attach().map(drop)))
        .map_err(|e| describe(function, &e))
}

/// Loads the kprobe `program` and attaches it at `site`; `function` names
/// it in messages.
pub fn attach_kprobe(
    ebpf: &mut Ebpf,
    program: &str,
    function: &str,
    site: KprobeSite,
) -> Result<(), String> {
    let prog = ebpf.program_mut(program).ok_or_else(|| missing(program))?;
    let kprobe = <&mut KProbe>::try_from(prog).map_err(|e| describe(function, &e))?;
    kprobe.load().map_err(|e| describe(function, &e))?;
    // The perf kprobe interface takes either a symbol (and an offset into
    // it) or, with an empty symbol, an address in the offset's place.
    let attached = match site {
        KprobeSite::Symbol(symbol) => kprobe.attach(symbol, 0),
        KprobeSite::Address(address) => kprobe.attach("", address),
    };
    attached.map(drop).map_err(|e| describe(function, &e))
}

/// Loads and unloads the fentry `program` against `function`: learns
/// whether the kernel has the function and accepts the program there,
/// leaving nothing attached (no trampoline exists until a program attaches).
pub fn fentry_loads_here(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program: &str,
    function: &str,
) -> Result<(), String> {
    let describe = |e: ProgramError| describe(function, &e);
    let prog = ebpf.program_mut(program).ok_or_else(|| missing(program))?;
    let prog = <&mut FEntry>::try_from(prog).map_err(describe)?;
    prog.load(function, btf).map_err(describe)?;
    prog.unload().map_err(describe)
}

/// A map of the object, typed.
pub fn map_named<T: TryFrom<Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T, MapError> {
    let map = ebpf.take_map(name).ok_or(MapError::InvalidName {
        name: name.to_owned(),
    })?;
    T::try_from(map)
}

fn missing(program: &str) -> String {
    format!("program {program} is missing from klpscope's eBPF object")
}

/// What the kernel's refusal means, in one line.
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
        match failed.io_error.raw_os_error() {
            // Before 6.0 a BPF trampoline cannot share a function with an
            // IPMODIFY ftrace user, and livepatch is one.
            Some(libc::EBUSY) => {
                return format!(
                    "the kernel refused an fentry on {function} (EBUSY): another ftrace user \
                     that rewrites its return address holds it, such as livepatch on a patched \
                     function (kernels before 6.0 cannot share a function that way)"
                );
            }
            Some(libc::EADDRNOTAVAIL) => {
                return format!(
                    "the kernel refused a kprobe on {function} (EADDRNOTAVAIL): several \
                     symbols have that name"
                );
            }
            _ => {}
        }
        // aya's message names the syscall only: add what the kernel said.
        return format!(
            "cannot attach to {function}: {} failed: {}",
            failed.call, failed.io_error
        );
    }
    format!("cannot attach to {function}: {error}")
}
