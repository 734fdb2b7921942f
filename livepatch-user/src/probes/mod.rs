//! klpscope's eBPF programs from user space: loading, capabilities, events.
mod btf;
mod call_counter;
mod capabilities;
mod loader;
mod object;
mod tracer;

pub use btf::{BtfError, TaskLayout, task_layout};
pub use call_counter::{CallCount, CallCounter, CountedFunction};
pub use capabilities::{Capabilities, Capability, Facility};
pub use loader::{ProbeRequest, Probes, load};
pub use tracer::{TaskVerdict, TracerProgram, TransitionTracer, block_reason, decode, parse_event};
