//! The typed picture of the kernel's livepatch state that every command
//! reasons over. Plain data: readers fill it, analysis reads it, views render
//! what analysis makes of it.
mod feed;
mod kernel_log;
mod release;
mod snapshot;
mod trace;

pub use feed::*;
pub use kernel_log::*;
pub use release::KernelSeries;
pub use snapshot::*;
pub use trace::*;
