//! Calls per patched function, split by the version that ran.
//!
//! Each function gets a slot, and its slot's fentry program where the
//! kernel's BTF has the function by that name and the kernel accepts the
//! fentry; otherwise (module functions, aliases such as a syscall's
//! `__x64_sys_*`, a function an older kernel's livepatch holds) its slot's
//! kprobe, placed by the address kallsyms gives, as the kernel itself goes
//! by address. Both count alike: the version comes from the slot's mode and,
//! during a transition, the calling task's patch_state.
use std::path::Path;

use aya::{
    Btf, Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
};
use livepatch_ebpf::{
    CALL_SLOTS, SLOT_ASK_TASK_ELSE_NEW, SLOT_ASK_TASK_ELSE_OLD, SLOT_NEW, SLOT_OLD, VERSION_NEW,
    VERSION_OLD, call_index,
};

use super::object::{KprobeSite, attach_fentry, attach_kprobe, map_named};
use crate::{
    kernel::read_kallsyms,
    model::{CallCount, Direction, FunctionState, SymbolTable, Target},
};

/// How a counted function's slot program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    Fentry,
    Kprobe,
}

pub struct CallCounter {
    /// Function per slot; None where attaching failed.
    slots: Vec<Option<Target>>,
    calls: PerCpuArray<MapData, u64>,
    /// The programs' `SLOT_MODES` global, one value of CALL_SLOTS modes.
    slot_modes: Array<MapData, [u32; CALL_SLOTS]>,
    // An LRU hash map in the kernel; aya reads it as a HashMap.
    old_calls_by_task: HashMap<MapData, u32, u64>,
}

/// How a slot's program tells the version of a call in this state.
fn slot_mode(state: FunctionState) -> u32 {
    match state {
        FunctionState::Unpatched => SLOT_OLD,
        FunctionState::Patched => SLOT_NEW,
        FunctionState::InTransition(Direction::Patching) => SLOT_ASK_TASK_ELSE_NEW,
        FunctionState::InTransition(Direction::Unpatching) => SLOT_ASK_TASK_ELSE_OLD,
    }
}

/// The slots' modes the programs are loaded with, one slot per function in
/// order (the order `attach` gives them).
pub(super) fn initial_slot_modes(functions: &[(Target, FunctionState)]) -> [u32; CALL_SLOTS] {
    let mut modes = [SLOT_OLD; CALL_SLOTS];
    for (mode, (_, state)) in modes.iter_mut().zip(functions) {
        *mode = slot_mode(*state);
    }
    modes
}

/// The outcome of attaching one function's counter.
pub(super) type Attached = (Target, Result<Attachment, String>);

impl CallCounter {
    /// Attaches one slot program per function, in order. A function that
    /// cannot be counted gets the kernel's reason in the outcomes and is
    /// left uncounted.
    pub(super) fn attach(
        ebpf: &mut Ebpf,
        btf: &Btf,
        root: &Path,
        functions: &[(Target, FunctionState)],
    ) -> Result<(Self, Vec<Attached>), MapError> {
        let mut kallsyms = Kallsyms {
            root,
            names: functions.iter().map(|(f, _)| f.name.as_str()).collect(),
            table: None,
        };
        let mut slots = Vec::new();
        let mut outcomes = Vec::new();
        for (slot, (function, _)) in functions.iter().enumerate() {
            if slot >= CALL_SLOTS {
                let why = format!("klpscope counts at most {CALL_SLOTS} functions at once");
                outcomes.push((function.clone(), Err(why)));
                continue;
            }
            let outcome = attach_slot(ebpf, btf, slot, function, &mut kallsyms);
            match &outcome {
                Ok(how) => log::info!("calls of {function} counted by {how:?}"),
                Err(why) => log::info!("calls of {function} not counted: {why}"),
            }
            slots.push(outcome.is_ok().then(|| function.clone()));
            outcomes.push((function.clone(), outcome));
        }
        let counter = Self {
            slots,
            calls: map_named(ebpf, "CALLS")?,
            slot_modes: map_named(ebpf, ".data.slots")?,
            old_calls_by_task: map_named(ebpf, "OLD_CALLS_BY_TASK")?,
        };
        Ok((counter, outcomes))
    }

    /// Tells the counter which version of `function` runs now, as sysfs
    /// says: outside a transition the probe then reads no task state.
    pub fn set_state(&mut self, function: &Target, state: FunctionState) -> Result<(), MapError> {
        let mode = slot_mode(state);
        let mut modes = self.slot_modes.get(&0, 0)?;
        for (slot, counted) in self.slots.iter().enumerate() {
            if counted.as_ref() == Some(function) {
                modes[slot] = mode;
            }
        }
        self.slot_modes.set(0, modes, 0)
    }

    /// Running totals per counted function.
    pub fn counts(&self) -> Result<Vec<CallCount>, MapError> {
        Ok(self
            .counts_by_function()?
            .into_iter()
            .map(|(_, count)| count)
            .collect())
    }

    /// Running totals, each with the function it counts.
    pub fn counts_by_function(&self) -> Result<Vec<(Target, CallCount)>, MapError> {
        let sum =
            |index: u32| -> Result<u64, MapError> { Ok(self.calls.get(&index, 0)?.iter().sum()) };
        let mut out = Vec::new();
        for (slot, function) in self.slots.iter().enumerate() {
            if let Some(function) = function {
                let count = CallCount {
                    function: function.name.clone(),
                    old: sum(call_index(slot, VERSION_OLD))?,
                    new: sum(call_index(slot, VERSION_NEW))?,
                };
                out.push((function.clone(), count));
            }
        }
        Ok(out)
    }

    /// Per thread id: calls that ran the old version during a transition.
    pub fn old_calls_by_task(&self) -> Vec<(u32, u64)> {
        self.old_calls_by_task
            .iter()
            .filter_map(Result::ok)
            .collect()
    }
}

/// kallsyms for the counted functions: read once, and only when a kprobe
/// needs an address (reading it is slow on a large kernel).
struct Kallsyms<'a> {
    root: &'a Path,
    names: Vec<&'a str>,
    /// None until read; then None inside when unreadable.
    table: Option<Option<SymbolTable>>,
}

impl Kallsyms<'_> {
    /// None when kallsyms cannot be read: the kernel then resolves names
    /// itself.
    fn table(&mut self) -> Option<&SymbolTable> {
        self.table
            .get_or_insert_with(|| {
                read_kallsyms(self.root, &self.names)
                    .map_err(|e| log::warn!("reading /proc/kallsyms for the call counter: {e}"))
                    .ok()
            })
            .as_ref()
    }
}

/// fentry for a vmlinux function the BTF names (the kernel attaches it to
/// the first symbol of that name, which is sympos 1), else a kprobe at the
/// address kallsyms gives for the function's sympos; the kprobe's reason is
/// the one given when both fail, after the fentry's.
fn attach_slot(
    ebpf: &mut Ebpf,
    btf: &Btf,
    slot: usize,
    function: &Target,
    kallsyms: &mut Kallsyms,
) -> Result<Attachment, String> {
    let fentry = if function.object.is_none() && function.sympos <= 1 {
        let program = format!("count_calls_{slot}");
        match attach_fentry(ebpf, btf, &program, &function.name) {
            Ok(()) => return Ok(Attachment::Fentry),
            Err(why) => Some(why),
        }
    } else {
        None
    };
    let address = match kallsyms.table() {
        Some(symbols) => {
            let of_name = symbols
                .lookup(&function.name)
                .iter()
                .filter(|s| s.module == function.object)
                .count();
            let symbol = symbols.resolve(
                &function.name,
                function.object.as_deref(),
                function.sympos.max(1),
            );
            match (symbol, &function.object) {
                (Some(symbol), _) => Some(symbol.address).filter(|&address| address != 0),
                (None, Some(module)) if of_name == 0 => {
                    return Err(format!(
                        "{function} is not in kallsyms: module {module} is not loaded, or has \
                         no such function"
                    ));
                }
                // Not in kallsyms: let the kernel say what it makes of the
                // name.
                (None, None) if of_name == 0 => None,
                (None, _) => {
                    return Err(format!(
                        "{function}: sympos {} is out of range ({of_name} symbols of that name)",
                        function.sympos
                    ));
                }
            }
        }
        None => None,
    };
    let qualified;
    let site = match address {
        Some(address) => KprobeSite::Address(address),
        None => match &function.object {
            None => KprobeSite::Symbol(&function.name),
            Some(module) => {
                qualified = format!("{module}:{}", function.name);
                KprobeSite::Symbol(&qualified)
            }
        },
    };
    let program = format!("count_calls_kprobe_{slot}");
    match attach_kprobe(ebpf, &program, &function.to_string(), site) {
        Ok(()) => Ok(Attachment::Kprobe),
        Err(kprobe) => Err(match fentry {
            Some(fentry) => format!("fentry: {fentry}; kprobe: {kprobe}"),
            None => kprobe,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_function_is_named_as_a_livepatch_names_it() {
        assert_eq!(
            Target::vmlinux("cmdline_proc_show").to_string(),
            "cmdline_proc_show"
        );
        let in_module = Target {
            object: Some("kvm".into()),
            name: "kvm_vcpu_ioctl".into(),
            sympos: 2,
        };
        assert_eq!(in_module.to_string(), "kvm:kvm_vcpu_ioctl,2");
    }

    #[test]
    fn slots_start_in_the_version_that_runs() {
        let functions = [
            (Target::vmlinux("a"), FunctionState::Patched),
            (
                Target::vmlinux("b"),
                FunctionState::InTransition(Direction::Patching),
            ),
        ];
        let modes = initial_slot_modes(&functions);
        assert_eq!(modes[0], SLOT_NEW);
        assert_eq!(modes[1], SLOT_ASK_TASK_ELSE_NEW);
        assert_eq!(modes[2], SLOT_OLD);
    }
}
