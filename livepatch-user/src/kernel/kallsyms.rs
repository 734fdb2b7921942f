//! Kernel symbols (/proc/kallsyms) and the functions ftrace can attach to
//! (available_filter_functions), looked up for a given set of names.
//!
//! kallsyms has 100k-200k lines and callers ask about a handful of functions,
//! so both files are streamed once and only matching lines are parsed and
//! kept: no full index is built.
use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{self, BufRead, BufReader},
    path::Path,
};

use super::kernel_facts::tracefs_mount;
use crate::model::Known;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSymbol {
    /// 0 for everyone when kptr_restrict hides addresses (not root).
    pub address: u64,
    /// nm's type letter: `t`/`T` text, `d`/`D` data, ...
    pub kind: char,
    /// None for vmlinux.
    pub module: Option<String>,
}

#[derive(Debug, Default)]
pub struct SymbolTable {
    symbols: HashMap<String, Vec<KernelSymbol>>,
}

impl SymbolTable {
    /// Every symbol of that name, in kallsyms order, which is the order
    /// livepatch's sympos counts in.
    pub fn lookup(&self, name: &str) -> &[KernelSymbol] {
        self.symbols.get(name).map_or(&[], Vec::as_slice)
    }

    /// The symbol a livepatch means by `name,sympos` in `object` (None for
    /// vmlinux). sympos 0 asks for the only one, as the kernel does.
    pub fn resolve(&self, name: &str, object: Option<&str>, sympos: u32) -> Option<&KernelSymbol> {
        let mut candidates = self
            .lookup(name)
            .iter()
            .filter(|symbol| symbol.module.as_deref() == object);
        match sympos {
            0 => {
                let only = candidates.next()?;
                candidates.next().is_none().then_some(only)
            }
            n => candidates.nth(n as usize - 1),
        }
    }
}

pub fn read_kallsyms(root: &Path, names: &[&str]) -> io::Result<SymbolTable> {
    let wanted: HashSet<&str> = names.iter().copied().collect();
    let mut table = SymbolTable::default();
    for_each_line(&root.join("proc/kallsyms"), |line| {
        let mut fields = line.split_ascii_whitespace();
        let (Some(address), Some(kind), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            return;
        };
        if !wanted.contains(name) {
            return;
        }
        let (Ok(address), Some(kind)) = (u64::from_str_radix(address, 16), kind.chars().next())
        else {
            return;
        };
        let module = fields.next().and_then(module_name);
        table
            .symbols
            .entry(name.to_owned())
            .or_default()
            .push(KernelSymbol {
                address,
                kind,
                module,
            });
    })?;
    Ok(table)
}

/// The traceable functions among the names asked about: a livepatch can
/// only redirect a function ftrace can attach to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FilterFunctions {
    /// Name to the objects (None for vmlinux) it is traceable in.
    functions: HashMap<String, Vec<Option<String>>>,
}

impl FilterFunctions {
    pub fn traceable(&self, name: &str, object: Option<&str>) -> bool {
        self.functions
            .get(name)
            .is_some_and(|objects| objects.iter().any(|o| o.as_deref() == object))
    }
}

/// Unknown when tracefs is not mounted or the list is unreadable (not root).
pub fn read_filter_functions(root: &Path, names: &[&str]) -> Known<FilterFunctions> {
    let Some(tracefs) = tracefs_mount(root) else {
        return Known::unknown("tracefs is not mounted");
    };
    let path = root
        .join(tracefs.trim_start_matches('/'))
        .join("available_filter_functions");
    let wanted: HashSet<&str> = names.iter().copied().collect();
    let mut found = FilterFunctions::default();
    let result = for_each_line(&path, |line| {
        let mut fields = line.split_ascii_whitespace();
        let Some(name) = fields.next().filter(|name| wanted.contains(name)) else {
            return;
        };
        let module = fields.next().and_then(module_name);
        found
            .functions
            .entry(name.to_owned())
            .or_default()
            .push(module);
    });
    match result {
        Ok(()) => Known::Value(found),
        Err(error) => Known::unknown(format!("{}: {error}", path.display())),
    }
}

/// `[module]` to `module`.
fn module_name(field: &str) -> Option<String> {
    Some(field.strip_prefix('[')?.strip_suffix(']')?.to_owned())
}

/// One reused line buffer for the whole file; lines that are not UTF-8 are
/// skipped, not fatal.
fn for_each_line(path: &Path, mut visit: impl FnMut(&str)) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 16, File::open(path)?);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if let Ok(text) = std::str::from_utf8(&line) {
            visit(text);
        }
    }
}
