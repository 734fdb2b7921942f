//! klpscope's eBPF programs: the transition tracer and the call counter.
//!
//! On the host target this file is an empty binary, so that the workspace
//! can be checked with a stable toolchain; the programs exist only when built
//! for `bpfel-unknown-none`.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
