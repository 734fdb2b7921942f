//! /proc/<pid>/task/<tid>/stack, each frame printed back as the views do.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livepatch_user::kernel::procfs_tasks::parse_stack;

fuzz_target!(|bytes: &[u8]| {
    for frame in parse_stack(&String::from_utf8_lossy(bytes)) {
        let _ = frame.to_string();
    }
});
