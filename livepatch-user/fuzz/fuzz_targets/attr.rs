//! One-value sysfs and procfs files: a flag, a number, and the reasons
//! given when they hold something else.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use livepatch_user::kernel::attr::{Attr, parse_flag};

fuzz_target!(|bytes: &[u8]| {
    // As read_attr makes it.
    let text = String::from_utf8_lossy(bytes).trim().to_owned();
    let path = Path::new("/sys/kernel/livepatch/p/enabled");
    let _ = Attr::Text(text.clone()).parse(path, "0 or 1", parse_flag);
    let _ = Attr::Text(text.clone()).parse(path, "a number", |t| t.parse::<u64>().ok());
    let _ = Attr::Unreadable(text).parse(path, "0 or 1", parse_flag);
});
