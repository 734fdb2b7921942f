//! klpscope's library: the binary is a thin shell over it, and tests and
//! benchmarks use it directly.
//!
//! Data flows one way: `kernel` readers and `probes` are the sources, which
//! `feed` composes, once or live, into the `model` and into observations;
//! `analysis` turns them into progress, blockers and verdicts; `views`
//! render those; `commands` compose the rest.
pub mod analysis;
pub mod cli;
pub mod commands;
pub mod exit_code;
pub mod feed;
pub mod kernel;
pub mod memory;
pub mod model;
pub mod probes;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod views;
