//! /proc/<pid>/task/<tid>/stat.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livepatch_user::kernel::procfs_tasks::parse_stat;

fuzz_target!(|bytes: &[u8]| {
    let _ = parse_stat(&String::from_utf8_lossy(bytes));
});
