//! /proc/sys/kernel/tainted decoded into the kernel's taint letters
//! (kernel/panic.c, taint_flags).
use crate::model::TaintFlag;

const TAINTS: &[(char, &str)] = &[
    ('P', "proprietary module loaded"),
    ('F', "module force-loaded"),
    ('S', "CPU out of spec"),
    ('R', "module force-unloaded"),
    ('M', "machine check"),
    ('B', "bad page"),
    ('U', "tainted by user"),
    ('D', "kernel died (oops)"),
    ('A', "ACPI table overridden"),
    ('W', "kernel warning"),
    ('C', "staging driver loaded"),
    ('I', "firmware bug workaround"),
    ('O', "out-of-tree module loaded"),
    ('E', "unsigned module loaded"),
    ('L', "soft lockup"),
    ('K', "kernel livepatched"),
    ('X', "auxiliary taint"),
    ('T', "struct randomization"),
    ('N', "test module loaded"),
    ('J', "fwctl used"),
];

/// Every set bit, in bit order. Bits newer than this table are kept as `?`
/// so that a taint is never hidden.
pub fn decode_taint(mask: u64) -> Vec<TaintFlag> {
    (0..64)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| {
            let (letter, meaning) = TAINTS
                .get(bit as usize)
                .copied()
                .unwrap_or(('?', "unknown taint bit"));
            TaintFlag {
                letter,
                bit,
                meaning,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn livepatch_and_unknown_bits() {
        let flags = decode_taint((1 << 15) | (1 << 12) | (1 << 63));
        let letters: Vec<_> = flags.iter().map(|f| (f.letter, f.bit)).collect();
        assert_eq!(letters, [('O', 12), ('K', 15), ('?', 63)]);
        assert!(decode_taint(0).is_empty());
    }
}
