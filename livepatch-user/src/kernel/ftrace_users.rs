//! Who already holds a function through ftrace, from tracefs
//! `enabled_functions`: a livepatch needs the function's ftrace site with
//! IPMODIFY, which only one user at a time may have.
//!
//! Lines look like `cmdline_proc_show (2) R I   \ttramp: ...`, with
//! `[module]` after the name for module functions. The flags (6.x): R saves
//! registers, I modifies the IP (livepatch, some kprobes), D a direct
//! trampoline (BPF fentry/fexit), O call ops, M modified.
use std::{collections::HashSet, path::Path};

use super::{attr::read_text_capped, tracefs_mount};
use crate::model::{FtraceUse, Known};

/// The enabled sites among the names asked about.
pub fn read_ftrace_users(root: &Path, names: &[&str]) -> Known<Vec<FtraceUse>> {
    let Some(tracefs) = tracefs_mount(root) else {
        return Known::unknown("tracefs is not mounted");
    };
    let path = root
        .join(tracefs.trim_start_matches('/'))
        .join("enabled_functions");
    // A line per enabled site: every function of the kernel at worst.
    match read_text_capped(&path, 64 << 20) {
        Ok(text) => Known::Value(parse_enabled_functions(&text, names)),
        Err(error) => Known::unknown(format!("{}: {error}", path.display())),
    }
}

pub fn parse_enabled_functions(text: &str, names: &[&str]) -> Vec<FtraceUse> {
    let wanted: HashSet<&str> = names.iter().copied().collect();
    text.lines()
        .filter_map(|line| {
            // Whatever follows a tab names trampolines and ops, not flags.
            let head = line.split('\t').next()?;
            let mut fields = head.split_ascii_whitespace().peekable();
            let function = fields.next().filter(|name| wanted.contains(name))?;
            let module = fields
                .next_if(|field| field.starts_with('['))
                .and_then(|field| field.strip_prefix('[')?.strip_suffix(']'))
                .map(str::to_owned);
            let users = fields
                .next()?
                .strip_prefix('(')?
                .strip_suffix(')')?
                .parse()
                .ok()?;
            let flags: Vec<&str> = fields.collect();
            Some(FtraceUse {
                function: function.to_owned(),
                module,
                users,
                ipmodify: flags.contains(&"I"),
                direct: flags.contains(&"D"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_modules() {
        let text = "cmdline_proc_show (1) R I       \ttramp: 0xffffffffc0201000 (klp_ftrace_handler+0x0/0x1a0) ->ftrace_ops_assist_func+0x0/0xf0\n\
                    vfs_read (2)    D O    \tdirect-->bpf_trampoline_6442+0x0/0x80\n\
                    klp_test_park_wait [klp_test_target] (1) R         \n\
                    other (1) R I\n\
                    garbage\n";
        let uses = parse_enabled_functions(
            text,
            &[
                "cmdline_proc_show",
                "vfs_read",
                "klp_test_park_wait",
                "absent",
            ],
        );
        assert_eq!(uses.len(), 3);
        assert!(uses[0].ipmodify && !uses[0].direct && uses[0].users == 1);
        assert!(uses[1].direct && !uses[1].ipmodify && uses[1].users == 2);
        assert_eq!(uses[2].module.as_deref(), Some("klp_test_target"));
        assert!(!uses[2].ipmodify);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "cmdline_proc_show\ncmdline_proc_show (x) I\ncmdline_proc_show [m\n";
        assert!(parse_enabled_functions(text, &["cmdline_proc_show"]).is_empty());
    }
}
