//! Calls per patched function, split by the version that ran.
use aya::{
    Btf, Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
};
use livepatch_ebpf::{
    CALL_SLOTS, SLOT_ASK_TASK_ELSE_NEW, SLOT_ASK_TASK_ELSE_OLD, SLOT_NEW, SLOT_OLD, VERSION_NEW,
    VERSION_OLD, call_index,
};
use serde::Serialize;

use crate::model::{Direction, FunctionState};

use super::{
    capabilities::Capabilities,
    loader::{Hook, attach},
};

pub struct CallCounter {
    /// Function per slot; None where attaching failed.
    slots: Vec<Option<String>>,
    calls: PerCpuArray<MapData, u64>,
    /// The programs' `SLOT_MODES` global, one value of CALL_SLOTS modes.
    slot_modes: Array<MapData, [u32; CALL_SLOTS]>,
    // An LRU hash map in the kernel; aya reads it as a HashMap.
    old_calls_by_task: HashMap<MapData, u32, u64>,
}

/// Total calls so far of one function, per version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallCount {
    pub function: String,
    pub old: u64,
    pub new: u64,
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
pub(super) fn initial_slot_modes(functions: &[(String, FunctionState)]) -> [u32; CALL_SLOTS] {
    let mut modes = [SLOT_OLD; CALL_SLOTS];
    for (mode, (_, state)) in modes.iter_mut().zip(functions) {
        *mode = slot_mode(*state);
    }
    modes
}

fn map_named<T: TryFrom<aya::maps::Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T, MapError> {
    let map = ebpf.take_map(name).ok_or(MapError::InvalidName {
        name: name.to_string(),
    })?;
    T::try_from(map)
}

impl CallCounter {
    /// Attaches one slot program per function; a function that cannot be
    /// traced is reported in `caps` and left uncounted.
    pub(super) fn attach(
        ebpf: &mut Ebpf,
        btf: &Btf,
        functions: &[(String, FunctionState)],
        caps: &mut Capabilities,
    ) -> Result<Self, MapError> {
        let mut slots = Vec::new();
        for (slot, (function, _)) in functions.iter().enumerate() {
            let name = format!("calls:{function}");
            if slot >= CALL_SLOTS {
                caps.missing(
                    name,
                    format!("klpscope counts at most {CALL_SLOTS} functions at once"),
                );
                continue;
            }
            match attach(
                ebpf,
                btf,
                &format!("count_calls_{slot}"),
                function,
                Hook::Entry,
            ) {
                Ok(()) => {
                    caps.available(name);
                    slots.push(Some(function.clone()));
                }
                Err(reason) => {
                    caps.missing(name, reason);
                    slots.push(None);
                }
            }
        }
        Ok(Self {
            slots,
            calls: map_named(ebpf, "CALLS")?,
            slot_modes: map_named(ebpf, ".data.slots")?,
            old_calls_by_task: map_named(ebpf, "OLD_CALLS_BY_TASK")?,
        })
    }

    /// Tells the counter which version of `function` runs now, as sysfs
    /// says: outside a transition the probe then reads no task state.
    pub fn set_state(&mut self, function: &str, state: FunctionState) -> Result<(), MapError> {
        let mode = slot_mode(state);
        let mut modes = self.slot_modes.get(&0, 0)?;
        for (slot, name) in self.slots.iter().enumerate() {
            if name.as_deref() == Some(function) {
                modes[slot] = mode;
            }
        }
        self.slot_modes.set(0, modes, 0)
    }

    /// Running totals per counted function.
    pub fn counts(&self) -> Result<Vec<CallCount>, MapError> {
        let sum =
            |index: u32| -> Result<u64, MapError> { Ok(self.calls.get(&index, 0)?.iter().sum()) };
        let mut out = Vec::new();
        for (slot, function) in self.slots.iter().enumerate() {
            if let Some(function) = function {
                out.push(CallCount {
                    function: function.clone(),
                    old: sum(call_index(slot, VERSION_OLD))?,
                    new: sum(call_index(slot, VERSION_NEW))?,
                });
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
