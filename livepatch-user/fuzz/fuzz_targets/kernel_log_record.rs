//! /dev/kmsg records (one per line here), and the direction read from them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livepatch_user::{
    analysis::transition::logged_direction, kernel::kernel_log::parse_record,
    model::LivepatchMessage,
};

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let log: Vec<_> = text.split('\n').filter_map(parse_record).collect();
    for entry in &log {
        if let LivepatchMessage::Starting { patch, .. } | LivepatchMessage::Complete { patch, .. } =
            &entry.message
        {
            let _ = logged_direction(&log, patch);
        }
    }
});
