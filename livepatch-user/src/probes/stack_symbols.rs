//! Kernel return addresses as the frames /proc/<pid>/stack prints them:
//! `function+offset/size`, from the core kernel's symbols in
//! /proc/kallsyms. The kernel prints a return address with `%pB`: it names
//! the function holding the call (address - 1, which matters when the call
//! is a function's last instruction) and prints the offset of the address
//! itself.
//!
//! Only the core kernel's symbols are kept: they never change, so the
//! table is read once. Modules, BPF programs and trampolines come and go
//! (a livepatch transition starts with a module load), and reading all of
//! /proc/kallsyms again costs 50 ms, half a second under TCG; a frame in
//! them is not named here, and the caller asks /proc for that task's stack.
use std::{collections::HashMap, io, path::Path};

use crate::{kernel::kallsyms::for_each_symbol, model::StackFrame};

/// The core kernel's text symbols sorted by address.
pub struct KernelSymbols {
    symbols: Vec<Symbol>,
    /// Every symbol name, back to back: one allocation instead of 100k.
    names: String,
    /// Frames already resolved: a scan's stacks share most addresses.
    frames: HashMap<u64, Option<StackFrame>>,
}

struct Symbol {
    address: u64,
    name_at: u32,
    name_len: u16,
}

/// Resolved frames kept at most; a long watch sees ever new offsets of
/// running tasks.
const FRAMES_KEPT: usize = 1 << 16;

impl KernelSymbols {
    /// Reads `<root>/proc/kallsyms`. Fails when it cannot be read, or hides
    /// the addresses (kptr_restrict, or not root).
    /// Streamed (kernel::kallsyms reads the lines): the whole file is
    /// about 10 MB, twice what is kept, and it is read just as a transition
    /// starts, when other loads run.
    pub fn read(root: &Path) -> io::Result<Self> {
        let mut symbols = KernelSymbols {
            symbols: Vec::new(),
            names: String::new(),
            frames: HashMap::new(),
        };
        for_each_symbol(root, |symbol| {
            // A module's symbol (and a BPF program's, a trampoline's) names
            // its module; only the core kernel's text is kept.
            if symbol.module.is_some() || !matches!(symbol.kind, 't' | 'T' | 'w' | 'W') {
                return;
            }
            let (Ok(name_len), Ok(name_at)) = (
                u16::try_from(symbol.name.len()),
                u32::try_from(symbols.names.len()),
            ) else {
                return;
            };
            symbols.names.push_str(symbol.name);
            symbols.symbols.push(Symbol {
                address: symbol.address,
                name_at,
                name_len,
            });
        })?;
        if symbols.symbols.iter().all(|s| s.address == 0) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "/proc/kallsyms hides the kernel's addresses (kernel.kptr_restrict, or not root)",
            ));
        }
        // Stable: among symbols at one address the kernel names the first
        // listed.
        symbols.symbols.sort_by_key(|s| s.address);
        symbols.symbols.shrink_to_fit();
        symbols.names.shrink_to_fit();
        Ok(symbols)
    }

    /// The frame of one return address; None when it is not in the core
    /// kernel's text (a module, BPF), or past its last symbol.
    pub fn frame(&mut self, address: u64) -> Option<StackFrame> {
        if let Some(frame) = self.frames.get(&address) {
            return frame.clone();
        }
        let frame = self.resolve(address);
        if self.frames.len() >= FRAMES_KEPT {
            self.frames.clear();
        }
        self.frames.insert(address, frame.clone());
        frame
    }

    fn resolve(&self, address: u64) -> Option<StackFrame> {
        let wanted = address.wrapping_sub(1);
        let after = self.symbols.partition_point(|s| s.address <= wanted);
        let start = self.symbols[after.checked_sub(1)?].address;
        // The first of the symbols at that address.
        let first = self.symbols[..after].partition_point(|s| s.address < start);
        let symbol = &self.symbols[first];
        // Its size reaches to the next symbol; the last one has no known
        // end, and nothing past it is named.
        let end = self.symbols.get(after)?.address;
        let name_at = symbol.name_at as usize;
        Some(StackFrame {
            function: self.names[name_at..name_at + usize::from(symbol.name_len)].to_owned(),
            offset: address - start,
            size: end - start,
            module: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(kallsyms: &str) -> KernelSymbols {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/kallsyms"), kallsyms).unwrap();
        KernelSymbols::read(dir.path()).unwrap()
    }

    const KALLSYMS: &str = "\
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81000010 t do_one
ffffffff81000080 T do_two
ffffffff810000c0 T do_three
ffffffffc0001000 t klp_test_park_wait\t[klp_test_target]
ffffffffc0001080 t klp_test_busy_loop\t[klp_test_target]
ffffffffc0001100 t __pfx_end\t[klp_test_target]
";

    fn named(symbols: &mut KernelSymbols, address: u64) -> String {
        symbols
            .frame(address)
            .expect("a core kernel frame")
            .to_string()
    }

    #[test]
    fn return_addresses_name_the_calling_function_as_proc_does() {
        let mut symbols = table(KALLSYMS);
        assert_eq!(named(&mut symbols, 0xffffffff81000020), "do_one+0x10/0x70");
        // A call that is the last instruction of do_one returns to do_two's
        // first byte: the frame is do_one's.
        assert_eq!(named(&mut symbols, 0xffffffff81000080), "do_one+0x70/0x70");
        assert_eq!(named(&mut symbols, 0xffffffff81000001), "_stext+0x1/0x10");
    }

    #[test]
    fn modules_and_what_no_symbol_covers_are_left_to_proc() {
        let mut symbols = table(KALLSYMS);
        // Before the first symbol, past the last core one, in a module.
        for address in [0x1000, 0xffffffff810000d0, 0xffffffffc000103c] {
            assert_eq!(symbols.frame(address), None, "{address:#x}");
        }
    }

    #[test]
    fn hidden_addresses_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("proc")).unwrap();
        std::fs::write(
            dir.path().join("proc/kallsyms"),
            "0000000000000000 T _stext\n0000000000000000 t do_one\n",
        )
        .unwrap();
        let error = KernelSymbols::read(dir.path()).err().expect("no addresses");
        assert!(error.to_string().contains("kptr_restrict"), "{error}");
    }
}
