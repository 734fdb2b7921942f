//! klpscope's eBPF programs from user space: loading, capabilities, events.
mod btf;
mod call_counter;
mod capabilities;
mod loader;
mod tracer;

pub use btf::{BtfError, TaskLayout, task_layout};
pub use call_counter::{CallCount, CallCounter};
pub use capabilities::{Capabilities, Capability};
pub use loader::{ProbeRequest, Probes, load};
pub use tracer::{TaskVerdict, TransitionTracer, block_reason, decode, parse_event};
