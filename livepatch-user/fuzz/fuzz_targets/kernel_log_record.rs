//! /dev/kmsg records (one per line here), and the transition read from them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livepatch_user::{
    analysis::transition::in_transition,
    kernel::kernel_log::parse_record,
    model::{Known, LivepatchMessage, Patch},
};

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let log: Vec<_> = text.split('\n').filter_map(parse_record).collect();
    for entry in &log {
        if let LivepatchMessage::Starting { patch, .. }
        | LivepatchMessage::Complete { patch, .. }
        | LivepatchMessage::Enabling { patch } = &entry.message
        {
            let patches = [Patch {
                name: patch.clone(),
                enabled: Known::Value(false),
                transition: Known::Value(true),
                force: Known::unknown("write-only"),
                replace: None,
                stack_order: None,
                objects: Vec::new(),
                gone: false,
            }];
            let _ = in_transition(&patches, Some(&log));
        }
    }
});
