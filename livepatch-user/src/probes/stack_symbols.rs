//! Kernel return addresses as the frames /proc/<pid>/stack prints them:
//! `function+offset/size [module]`, from /proc/kallsyms. The kernel prints
//! a return address with `%pB`: it names the function holding the call
//! (address - 1, which matters when the call is a function's last
//! instruction) and prints the offset of the address itself.
use std::{
    collections::HashMap,
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
};

use crate::model::StackFrame;

/// Text symbols sorted by address, with what tells when they went stale.
pub struct KernelSymbols {
    root: PathBuf,
    symbols: Vec<Symbol>,
    /// Every symbol name, back to back: one allocation instead of 100k.
    names: String,
    /// Index 0 is vmlinux (printed with no module).
    modules: Vec<Option<String>>,
    /// /proc/modules as it read with the table: a module loaded or
    /// unloaded since then changes it.
    modules_listing: Vec<u8>,
    /// Frames already resolved: a scan's stacks share most addresses.
    frames: HashMap<u64, StackFrame>,
}

struct Symbol {
    address: u64,
    name_at: u32,
    name_len: u16,
    module: u16,
}

/// Resolved frames kept at most; a long watch sees ever new offsets of
/// running tasks.
const FRAMES_KEPT: usize = 1 << 16;

/// Names in /proc/kallsyms that are not modules but the kernel's own
/// generated code: the kernel prints their frames with no module.
const NOT_MODULES: [&str; 3] = ["bpf", "__builtin__ftrace", "__builtin__kprobes"];

impl KernelSymbols {
    /// Reads `<root>/proc/kallsyms`. Fails when it cannot be read, or hides
    /// the addresses (kptr_restrict, or not root).
    pub fn read(root: &Path) -> io::Result<Self> {
        let mut symbols = KernelSymbols {
            root: root.to_owned(),
            symbols: Vec::new(),
            names: String::new(),
            modules: vec![None],
            modules_listing: read_all(&root.join("proc/modules")).unwrap_or_default(),
            frames: HashMap::new(),
        };
        symbols.load()?;
        Ok(symbols)
    }

    fn load(&mut self) -> io::Result<()> {
        let text = read_all(&self.root.join("proc/kallsyms"))?;
        self.symbols.clear();
        self.names.clear();
        self.modules.truncate(1);
        self.frames.clear();
        let mut module_index: HashMap<&str, u16> = HashMap::new();
        for line in text.split(|&b| b == b'\n') {
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            let (symbol, module) = match line.split_once('\t') {
                Some((symbol, module)) => (symbol, Some(module.trim_matches(['[', ']', ' ']))),
                None => (line, None),
            };
            let mut fields = symbol.split_ascii_whitespace();
            let (Some(address), Some(kind), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let (Ok(address), Ok(name_len)) =
                (u64::from_str_radix(address, 16), u16::try_from(name.len()))
            else {
                continue;
            };
            let module = match module {
                None => 0,
                Some(module) if NOT_MODULES.contains(&module) => 0,
                Some(module) => match module_index.get(module) {
                    Some(&index) => index,
                    None => {
                        let index = u16::try_from(self.modules.len()).unwrap_or(u16::MAX);
                        self.modules.push(Some(module.to_owned()));
                        module_index.insert(module, index);
                        index
                    }
                },
            };
            let Ok(name_at) = u32::try_from(self.names.len()) else {
                break;
            };
            self.names.push_str(name);
            self.symbols.push(Symbol {
                address,
                name_at,
                name_len,
                module,
            });
        }
        if self.symbols.iter().all(|s| s.address == 0) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "/proc/kallsyms hides the kernel's addresses (kernel.kptr_restrict, or not root)",
            ));
        }
        // Stable: among symbols at one address the kernel names the first
        // listed.
        self.symbols.sort_by_key(|s| s.address);
        Ok(())
    }

    /// Reads the symbols again when a module came or went since the last
    /// read. Call it once per scan, before resolving its stacks.
    pub fn refresh(&mut self) -> io::Result<()> {
        let listing = read_all(&self.root.join("proc/modules")).unwrap_or_default();
        if listing != self.modules_listing {
            self.modules_listing = listing;
            self.load()?;
        }
        Ok(())
    }

    /// The frame of one return address.
    pub fn frame(&mut self, address: u64) -> StackFrame {
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

    fn resolve(&self, address: u64) -> StackFrame {
        let unknown = StackFrame {
            function: format!("{address:#x}"),
            offset: 0,
            size: 0,
            module: None,
        };
        let wanted = address.wrapping_sub(1);
        let after = self.symbols.partition_point(|s| s.address <= wanted);
        let Some(last) = after.checked_sub(1) else {
            return unknown;
        };
        let start = self.symbols[last].address;
        // The first of the symbols at that address.
        let first = self.symbols[..=last].partition_point(|s| s.address < start);
        let symbol = &self.symbols[first];
        // Its size reaches to the next symbol of the same object; the last
        // one of an object has no known end, and nothing past it is named.
        let end = self.symbols[after..]
            .iter()
            .find(|s| s.module == symbol.module)
            .map(|s| s.address);
        let Some(end) = end else {
            return unknown;
        };
        let name_at = symbol.name_at as usize;
        StackFrame {
            function: self.names[name_at..name_at + usize::from(symbol.name_len)].to_owned(),
            offset: address - start,
            size: end - start,
            module: self.modules[usize::from(symbol.module)].clone(),
        }
    }
}

fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
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

    #[test]
    fn return_addresses_name_the_calling_function_as_proc_does() {
        let mut symbols = table(KALLSYMS);
        assert_eq!(
            symbols.frame(0xffffffff81000020).to_string(),
            "do_one+0x10/0x70"
        );
        // A call that is the last instruction of do_one returns to do_two's
        // first byte: the frame is do_one's.
        assert_eq!(
            symbols.frame(0xffffffff81000080).to_string(),
            "do_one+0x70/0x70"
        );
        assert_eq!(
            symbols.frame(0xffffffff81000001).to_string(),
            "_stext+0x1/0x10"
        );
        assert_eq!(
            symbols.frame(0xffffffffc000103c).to_string(),
            "klp_test_park_wait+0x3c/0x80 [klp_test_target]"
        );
    }

    #[test]
    fn what_no_symbol_covers_is_an_address() {
        let mut symbols = table(KALLSYMS);
        for address in [0x1000, 0xffffffff810000d0, 0xffffffffc0001110] {
            let frame = symbols.frame(address);
            assert_eq!(frame.function, format!("{address:#x}"));
            assert_eq!((frame.offset, frame.size, frame.module), (0, 0, None));
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
