//! Task iterators (iter/task): the kernel runs the program once for every
//! task, and one `read()` of the iterator's file takes up to 32 KiB of the
//! fixed-size records they write. Three programs, one per scan, so that each
//! reads only what its scan needs.
//!
//! aya-ebpf 0.2 has no `#[iter]` macro: a function in an `iter/task`
//! section is what aya loads as an `Iter` program.
use core::ffi::c_void;

use aya_ebpf::{
    bindings::task_struct,
    helpers::{
        bpf_get_task_stack, bpf_probe_read_kernel, bpf_probe_read_kernel_buf, bpf_seq_write,
    },
    macros::map,
    maps::PerCpuArray,
};
use livepatch_ebpf::{
    PATCH_STATE_ABSENT, PatchStateRecord, TASK_STACK_DEPTH, TaskIterOffsets, TaskRecord,
};

#[unsafe(no_mangle)]
static TASK_ITER_OFFSETS: TaskIterOffsets = TaskIterOffsets {
    pid: 0,
    tgid: 4,
    comm: 0,
    flags: 0,
    state: 0,
    exit_state: 0,
    patch_state: 0,
    has_patch_state: 0,
};

/// `struct bpf_iter_meta`, up to the one field read here.
#[repr(C)]
struct IterMeta {
    seq: *mut c_void,
}

/// `struct bpf_iter__task`: `task` is null in the last call, when the walk
/// is over.
#[repr(C)]
struct IterTaskContext {
    meta: *const IterMeta,
    task: *const u8,
}

/// A record and its stack, written with one `bpf_seq_write`. Too large for
/// the program's 512-byte stack: one per CPU in a map.
#[repr(C)]
struct TaskWithStack {
    record: TaskRecord,
    stack: [u64; TASK_STACK_DEPTH],
}

#[map]
static TASK_ITER_SCRATCH: PerCpuArray<TaskWithStack> = PerCpuArray::with_max_entries(1, 0);

const STACK_BYTES: u32 = (TASK_STACK_DEPTH * size_of::<u64>()) as u32;

#[inline(always)]
fn offsets() -> TaskIterOffsets {
    // Volatile: the loader rewrites this global, the compiler must not fold it.
    unsafe { core::ptr::read_volatile(&TASK_ITER_OFFSETS) }
}

#[inline(always)]
fn field<T: Default>(task: *const u8, offset: u32) -> T {
    unsafe { bpf_probe_read_kernel(task.add(offset as usize) as *const T) }.unwrap_or_default()
}

/// The seq_file and the task of this call; None in the last call.
#[inline(always)]
fn context(ctx: *mut c_void) -> Option<(*mut c_void, *const u8)> {
    let ctx = ctx as *const IterTaskContext;
    // Direct loads: the verifier types them from BTF (a seq_file pointer
    // for the helper, a task that may be null).
    let task = unsafe { (*ctx).task };
    if task.is_null() {
        return None;
    }
    let seq = unsafe { (*(*ctx).meta).seq };
    Some((seq, task))
}

/// `pid` and `tgid` in one read: tgid follows pid (user space checks).
/// Each read of kernel memory is a helper call, the bulk of a task's cost.
#[inline(always)]
fn pid_tgid(task: *const u8, offsets: &TaskIterOffsets) -> [u32; 2] {
    field::<[u32; 2]>(task, offsets.pid)
}

#[inline(always)]
fn patch_state(task: *const u8, offsets: &TaskIterOffsets) -> i32 {
    if offsets.has_patch_state == 0 {
        return PATCH_STATE_ABSENT;
    }
    field::<i32>(task, offsets.patch_state)
}

#[inline(always)]
fn fill(record: &mut TaskRecord, task: *const u8) {
    let offsets = offsets();
    [record.tid, record.tgid] = pid_tgid(task, &offsets);
    record.flags = field::<u32>(task, offsets.flags);
    record.state = field::<u32>(task, offsets.state);
    record.exit_state = field::<u32>(task, offsets.exit_state);
    record.patch_state = patch_state(task, &offsets);
    record.stack_bytes = 0;
    let comm = unsafe { task.add(offsets.comm as usize) };
    let _ = unsafe { bpf_probe_read_kernel_buf(comm, &mut record.comm) };
}

#[inline(always)]
fn write<T>(seq: *mut c_void, record: *const T, len: u32) {
    // A full buffer is the kernel's business: it takes the record back and
    // shows this task again in the next read.
    unsafe { bpf_seq_write(seq.cast(), record.cast(), len) };
}

/// pid, tgid and patch_state of every task: watch's hot path.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn task_iter_patch_states(ctx: *mut c_void) -> i32 {
    let Some((seq, task)) = context(ctx) else {
        return 0;
    };
    let offsets = offsets();
    let [tid, tgid] = pid_tgid(task, &offsets);
    let record = PatchStateRecord {
        tid,
        tgid,
        patch_state: patch_state(task, &offsets),
    };
    write(seq, &record, size_of::<PatchStateRecord>() as u32);
    0
}

/// Every task without its stack.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn task_iter_tasks(ctx: *mut c_void) -> i32 {
    let Some((seq, task)) = context(ctx) else {
        return 0;
    };
    let mut record = TaskRecord::default();
    fill(&mut record, task);
    write(seq, &record, size_of::<TaskRecord>() as u32);
    0
}

/// Every task with its kernel stack, as /proc/<pid>/stack walks it
/// (`stack_trace_save_tsk`).
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn task_iter_tasks_with_stacks(ctx: *mut c_void) -> i32 {
    let Some((seq, task)) = context(ctx) else {
        return 0;
    };
    let Some(scratch) = TASK_ITER_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let scratch = unsafe { &mut *scratch };
    fill(&mut scratch.record, task);
    let bytes = unsafe {
        bpf_get_task_stack(
            task as *mut task_struct,
            scratch.stack.as_mut_ptr().cast(),
            STACK_BYTES,
            0,
        )
    };
    scratch.record.stack_bytes = bytes;
    // Bounded for the verifier, which cannot know the helper's limit.
    let stack_len = if bytes > 0 {
        (bytes as u32).min(STACK_BYTES)
    } else {
        0
    };
    write(
        seq,
        scratch as *const TaskWithStack,
        size_of::<TaskRecord>() as u32 + stack_len,
    );
    0
}
