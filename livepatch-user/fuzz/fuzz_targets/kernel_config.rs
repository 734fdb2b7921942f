//! /proc/config.gz (decompressed) or /boot/config-<release>.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livepatch_user::kernel::kernel_config::KernelConfig;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let config = KernelConfig::parse("fuzz", &text);
    for name in text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, _)| name)
    {
        let _ = config.get(name);
        let _ = config.enabled(name);
    }
    let _ = config.enabled("CONFIG_LIVEPATCH");
});
