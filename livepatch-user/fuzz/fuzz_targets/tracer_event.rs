//! A record of the tracer's ring buffer, as the eBPF side wrote it (or not).
#![no_main]

use libfuzzer_sys::fuzz_target;
use livepatch_user::probes::parse_event;

fuzz_target!(|bytes: &[u8]| {
    let _ = parse_event(bytes);
});
