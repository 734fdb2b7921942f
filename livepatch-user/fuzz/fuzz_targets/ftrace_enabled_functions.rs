//! tracefs enabled_functions, asked about the names its lines start with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livepatch_user::kernel::ftrace_users::parse_enabled_functions;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split_ascii_whitespace().next())
        .take(16)
        .collect();
    names.push("cmdline_proc_show");
    let _ = parse_enabled_functions(&text, &names);
});
