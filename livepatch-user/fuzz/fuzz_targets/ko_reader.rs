//! A livepatch module file (.ko) as `klpscope check --module` reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livepatch_user::kernel::livepatch_module::parse_livepatch_module;

fuzz_target!(|bytes: &[u8]| {
    let _ = parse_livepatch_module(bytes, "fuzz");
});
