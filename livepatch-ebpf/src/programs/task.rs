//! Reading `struct task_struct` fields through offsets from user space.
use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use livepatch_ebpf::{TASK_COMM_LEN, TaskOffsets};

#[unsafe(no_mangle)]
static TASK_OFFSETS: TaskOffsets = TaskOffsets {
    pid: 0,
    tgid: 0,
    comm: 0,
    flags: 0,
    patch_state: 0,
};

const PF_KTHREAD: u32 = 0x0020_0000;

#[inline(always)]
fn offsets() -> TaskOffsets {
    // Volatile: the loader rewrites this global, the compiler must not fold it.
    unsafe { core::ptr::read_volatile(&TASK_OFFSETS) }
}

#[inline(always)]
unsafe fn field<T>(task: *const u8, offset: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel(task.add(offset as usize) as *const T).ok() }
}

#[inline(always)]
pub fn pid(task: *const u8) -> u32 {
    unsafe { field::<i32>(task, offsets().pid) }.unwrap_or(0) as u32
}

#[inline(always)]
pub fn tgid(task: *const u8) -> u32 {
    unsafe { field::<i32>(task, offsets().tgid) }.unwrap_or(0) as u32
}

#[inline(always)]
pub fn is_kthread(task: *const u8) -> bool {
    unsafe { field::<u32>(task, offsets().flags) }.is_some_and(|f| f & PF_KTHREAD != 0)
}

/// -1 outside a transition, 0 unpatched, 1 patched.
#[inline(always)]
pub fn patch_state(task: *const u8) -> i32 {
    unsafe { field::<i32>(task, offsets().patch_state) }.unwrap_or(-1)
}

#[inline(always)]
pub fn comm(task: *const u8, out: &mut [u8; TASK_COMM_LEN]) {
    let src = unsafe { task.add(offsets().comm as usize) };
    let _ = unsafe { bpf_probe_read_kernel_buf(src, out) };
}
