//! klpscope's eBPF programs from user space: loading, capabilities, events.
