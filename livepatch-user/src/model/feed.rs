/// What a live feed could attach, and why not: where its facts come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedCapabilities {
    /// Why the eBPF tracer is not used: the feed polls /proc and /sys
    /// alone. None while the tracer runs.
    pub polling: Option<String>,
    /// With the tracer: why the kernel's own per-task verdicts are not
    /// heard (the hook is missing or off on this kernel); blockers are
    /// then inferred.
    pub verdicts_inferred: Option<String>,
    /// Why the threads are read from procfs, not by the BPF task iterator.
    pub tasks_from_procfs: Option<String>,
}

impl FeedCapabilities {
    pub fn ebpf(&self) -> bool {
        self.polling.is_none()
    }

    /// The kernel's verdicts are traced, not inferred.
    pub fn kernel_verdicts(&self) -> bool {
        self.ebpf() && self.verdicts_inferred.is_none()
    }
}
