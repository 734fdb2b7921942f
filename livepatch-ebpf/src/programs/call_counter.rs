//! Counts calls to the functions of a patch, split by the version that runs.
//!
//! Two programs per slot, an fentry and a kprobe, of which user space
//! attaches one to the N-th function it was asked about: fentry where the
//! kernel's BTF describes the function (vmlinux), a kprobe elsewhere
//! (module functions: aya cannot load fentry against a module's BTF) or
//! where the kernel refuses the fentry. A loaded program attaches to one
//! function, hence a program per slot.
use aya_ebpf::{
    helpers::bpf_get_current_task,
    macros::{fentry, kprobe, map},
    maps::{LruHashMap, PerCpuArray},
    programs::{FEntryContext, ProbeContext},
};
use livepatch_ebpf::{
    CALL_SLOTS, SLOT_ASK_TASK_ELSE_NEW, SLOT_ASK_TASK_ELSE_OLD, SLOT_OLD, VERSION_NEW, VERSION_OLD,
    call_index,
};

use super::task;

/// Calls per slot and version, indexed by [`call_index`].
#[map]
static CALLS: PerCpuArray<u64> = PerCpuArray::with_max_entries((CALL_SLOTS * 2) as u32, 0);

/// Per slot: how to tell the version of a call (`SLOT_*`). A global in its
/// own data section rather than a map: reading it costs one load, no lookup,
/// and this is the hot path. User space writes it as the `.data.slots` map.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".data.slots")]
static mut SLOT_MODES: [u32; CALL_SLOTS] = [SLOT_OLD; CALL_SLOTS];

/// Per thread id: calls that still ran the old version during a transition.
#[map]
static OLD_CALLS_BY_TASK: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

#[inline(always)]
fn count(slot: usize) -> u32 {
    // Volatile: user space rewrites it while the program runs.
    let mode = unsafe { core::ptr::read_volatile(&raw const SLOT_MODES[slot]) };
    let version = if mode < SLOT_ASK_TASK_ELSE_OLD {
        mode as usize
    } else {
        let current = unsafe { bpf_get_current_task() } as *const u8;
        match task::patch_state(current) {
            0 => {
                count_old_call(task::pid(current));
                VERSION_OLD
            }
            1 => VERSION_NEW,
            _ if mode == SLOT_ASK_TASK_ELSE_NEW => VERSION_NEW,
            _ => VERSION_OLD,
        }
    };
    if let Some(counter) = CALLS.get_ptr_mut(call_index(slot, version)) {
        unsafe { *counter += 1 };
    }
    0
}

#[inline(always)]
fn count_old_call(tid: u32) {
    match OLD_CALLS_BY_TASK.get_ptr_mut(tid) {
        Some(calls) => unsafe { *calls += 1 },
        None => {
            let _ = OLD_CALLS_BY_TASK.insert(tid, 1, 0);
        }
    }
}

macro_rules! call_slots {
    ($($fentry:ident, $kprobe:ident = $slot:literal),* $(,)?) => {
        $(
            #[fentry]
            pub fn $fentry(_ctx: FEntryContext) -> u32 {
                count($slot)
            }

            #[kprobe]
            pub fn $kprobe(_ctx: ProbeContext) -> u32 {
                count($slot)
            }
        )*
    };
}

call_slots!(
    count_calls_0,
    count_calls_kprobe_0 = 0,
    count_calls_1,
    count_calls_kprobe_1 = 1,
    count_calls_2,
    count_calls_kprobe_2 = 2,
    count_calls_3,
    count_calls_kprobe_3 = 3,
    count_calls_4,
    count_calls_kprobe_4 = 4,
    count_calls_5,
    count_calls_kprobe_5 = 5,
    count_calls_6,
    count_calls_kprobe_6 = 6,
    count_calls_7,
    count_calls_kprobe_7 = 7,
    count_calls_8,
    count_calls_kprobe_8 = 8,
    count_calls_9,
    count_calls_kprobe_9 = 9,
    count_calls_10,
    count_calls_kprobe_10 = 10,
    count_calls_11,
    count_calls_kprobe_11 = 11,
    count_calls_12,
    count_calls_kprobe_12 = 12,
    count_calls_13,
    count_calls_kprobe_13 = 13,
    count_calls_14,
    count_calls_kprobe_14 = 14,
    count_calls_15,
    count_calls_kprobe_15 = 15,
);

/// The floor for an fentry's cost: one per-CPU increment and nothing else.
/// The call-counter benchmark compares against it.
#[map]
static FLOOR_CALLS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[fentry]
pub fn count_calls_floor(_ctx: FEntryContext) -> u32 {
    if let Some(counter) = FLOOR_CALLS.get_ptr_mut(0) {
        unsafe { *counter += 1 };
    }
    0
}
