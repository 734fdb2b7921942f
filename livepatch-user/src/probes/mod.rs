//! klpscope's eBPF programs from user space: loading, capabilities, events.
// A command or probe longer than a screen does more than one thing.
#![warn(clippy::too_many_lines)]
mod btf;
mod call_counter;
mod capabilities;
mod loader;
mod object;
mod stack_symbols;
mod task_iterator;
mod task_source;
mod tracer;

pub use btf::{BtfError, TaskLayout, task_iter_offsets, task_layout};
pub use call_counter::CallCounter;
pub use capabilities::{Capabilities, Capability, Facility};
pub use loader::{Loaded, ProbeRequest, Probes, load};
pub use stack_symbols::KernelSymbols;
pub use task_iterator::TaskIterator;
// The kernel's verdicts are model data; commands and the feed name them
// from here.
pub use crate::model::TaskVerdict;
pub use task_source::{TASK_SOURCE_ENV, TaskSource, TaskSourceError};
pub use tracer::{TracerHook, TracerProgram, TransitionTracer, block_reason, decode, parse_event};
