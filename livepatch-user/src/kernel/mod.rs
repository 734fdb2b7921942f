//! Readers of the kernel's state: the only code (with `probes`) that touches
//! the kernel. Each takes a root path, so tests can point it at a fixture tree.
