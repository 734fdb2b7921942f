//! klpscope's library: the binary is a thin shell over it, and tests and
//! benchmarks use it directly.
//!
//! Data flows one way: `kernel` readers and `probes` fill the `model`;
//! `analysis` turns it into progress, blockers and verdicts; `views` render
//! those; `commands` compose the three.
pub mod analysis;
pub mod cli;
pub mod commands;
pub mod kernel;
pub mod model;
pub mod probes;
pub mod views;
