//! A function's directory name under /sys/kernel/livepatch/<patch>/<object>.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livepatch_user::kernel::sysfs_livepatch::parse_function_dir;

fuzz_target!(|bytes: &[u8]| {
    let _ = parse_function_dir(&String::from_utf8_lossy(bytes));
});
