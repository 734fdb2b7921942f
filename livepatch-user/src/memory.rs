//! klpscope's memory between loads: parsing the kernel's BTF allocates far
//! more than klpscope keeps, and a long watch should not carry it.
/// Makes glibc hand freed memory back at once, in every thread: to be
/// called first thing in main. By default, freeing a large block (the
/// kernel's BTF as read, 6 MB) raises the size below which the top of a
/// thread's heap is kept to twice that, which malloc_trim does not touch:
/// a thread that loaded probes (the call counters have one of their own)
/// would keep more than klpscope otherwise uses. Fixed thresholds end that.
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
pub fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
