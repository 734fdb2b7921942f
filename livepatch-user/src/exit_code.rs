//! Every exit code klpscope ends with, in one place. Scripts branch on
//! them, so each command's `--help` and the README's table are checked
//! against this list (the tests below).

pub const SUCCESS: u8 = 0;
/// An error, said in one line on stderr.
pub const ERROR: u8 = 1;
/// clap's: the command line is wrong.
pub const USAGE: u8 = 2;
/// check: warnings; apply/revert: warnings nobody confirmed; diagnose:
/// some pending task could not be explained.
pub const WARNINGS: u8 = 3;
/// check, apply, revert: it cannot work here; nothing changed.
pub const NOT_READY: u8 = 4;
/// watch: the transition was reversed; apply/revert: backed out.
pub const REVERSED: u8 = 5;
pub const TIMED_OUT: u8 = 6;
/// The kernel refused the module or the write.
pub const REFUSED: u8 = 7;
/// apply/revert: the reversal stalled too; the patch is left in transition.
pub const BACKOUT_STALLED: u8 = 8;
/// 128 + the signal, as a shell reports a process the signal ended.
pub const HANGUP: u8 = 128 + libc::SIGHUP as u8;
pub const INTERRUPTED: u8 = 128 + libc::SIGINT as u8;
pub const OUTPUT_CLOSED: u8 = 128 + libc::SIGPIPE as u8;
pub const TERMINATED: u8 = 128 + libc::SIGTERM as u8;

/// The codes each command's `--help` lists.
pub const BY_COMMAND: &[(&str, &[u8])] = &[
    (
        "check",
        &[SUCCESS, WARNINGS, NOT_READY, ERROR, USAGE, OUTPUT_CLOSED],
    ),
    (
        "watch",
        &[
            SUCCESS,
            REVERSED,
            TIMED_OUT,
            REFUSED,
            ERROR,
            USAGE,
            OUTPUT_CLOSED,
            HANGUP,
            INTERRUPTED,
            TERMINATED,
        ],
    ),
    (
        "diagnose",
        &[SUCCESS, WARNINGS, ERROR, USAGE, OUTPUT_CLOSED],
    ),
    ("apply", ROLLOUT),
    ("revert", ROLLOUT),
    ("metrics", &[SUCCESS, ERROR, USAGE, OUTPUT_CLOSED]),
    ("serve", &[SUCCESS, ERROR, USAGE]),
];

const ROLLOUT: &[u8] = &[
    SUCCESS,
    WARNINGS,
    NOT_READY,
    REVERSED,
    REFUSED,
    BACKOUT_STALLED,
    ERROR,
    USAGE,
    OUTPUT_CLOSED,
    HANGUP,
    INTERRUPTED,
    TERMINATED,
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::CommandFactory;

    use super::*;
    use crate::cli::Cli;

    /// The numbers of the "Exit codes: ..." paragraph of a help text.
    fn listed(help: &str) -> BTreeSet<u8> {
        let paragraph = help
            .split("\n\n")
            .find(|p| p.starts_with("Exit codes:"))
            .unwrap_or_default();
        paragraph
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|number| number.parse().ok())
            .collect()
    }

    #[test]
    fn each_commands_help_lists_exactly_its_codes() {
        let cli = Cli::command();
        for (name, codes) in BY_COMMAND {
            let command = cli.find_subcommand(name).expect("a command of the CLI");
            let help = command.get_after_help().map(|h| h.to_string());
            let expected: BTreeSet<u8> = codes.iter().copied().collect();
            assert_eq!(listed(&help.unwrap_or_default()), expected, "{name} --help");
        }
    }

    #[test]
    fn the_readme_explains_every_code() {
        let readme = include_str!("../../README.md");
        let table = readme
            .split("### Exit codes")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").nth(1))
            .expect("README has an Exit codes table");
        let explained: BTreeSet<u8> = table
            .lines()
            .filter_map(|row| row.strip_prefix("| ")?.split(" |").next())
            .flat_map(|codes| codes.split(", ").filter_map(|code| code.parse().ok()))
            .collect();
        let used: BTreeSet<u8> = BY_COMMAND
            .iter()
            .flat_map(|(_, codes)| codes.iter().copied())
            .collect();
        assert_eq!(explained, used);
    }
}
