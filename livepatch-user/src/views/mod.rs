//! Rendering of analysis results: text, JSON and the TUI. Views never reach
//! back into the kernel.
pub mod check_report;
pub mod diagnose_report;
pub mod exposition;
pub mod json_output;
pub(crate) mod printable;
pub mod rollout_lines;
pub mod status;
pub mod style;
pub mod tui;
pub mod watch_lines;

pub use printable::{printable, printable_lines};
