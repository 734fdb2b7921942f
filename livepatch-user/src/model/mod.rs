//! The typed picture of the kernel's livepatch state that every command
//! reasons over. Plain data: readers fill it, analysis reads it, views render
//! what analysis makes of it.
mod calls;
mod feed;
mod ftrace;
mod kernel_log;
mod livepatch_module;
mod release;
mod snapshot;
mod symbols;
mod target;
mod trace;

pub use calls::*;
pub use feed::*;
pub use ftrace::*;
pub use kernel_log::*;
pub use livepatch_module::*;
pub use release::KernelSeries;
pub use snapshot::*;
pub use symbols::*;
pub use target::*;
pub use trace::*;
