//! /proc/<pid>/task/<tid>/patch_state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livepatch_user::kernel::procfs_tasks::parse_patch_state;

fuzz_target!(|bytes: &[u8]| {
    let _ = parse_patch_state(&String::from_utf8_lossy(bytes));
});
