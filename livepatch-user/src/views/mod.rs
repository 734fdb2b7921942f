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
pub mod watch_event;
pub mod watch_lines;

pub use printable::{printable, printable_lines};

/// `noun` or its plural (an `s` added), as `n` asks: "1 task", "2 tasks",
/// "0 tasks".
pub fn noun(n: usize, noun: &str) -> String {
    if n == 1 {
        noun.to_owned()
    } else {
        format!("{noun}s")
    }
}

/// `n` and its noun: "1 task", "2 tasks".
pub fn counted(n: usize, singular: &str) -> String {
    format!("{n} {}", noun(n, singular))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(counted(1, "task"), "1 task");
        assert_eq!(counted(0, "task"), "0 tasks");
        assert_eq!(counted(2, "task"), "2 tasks");
        assert_eq!(noun(1, "warning"), "warning");
    }
}
