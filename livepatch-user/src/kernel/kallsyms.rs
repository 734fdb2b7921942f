//! Kernel symbols (/proc/kallsyms) and the functions ftrace can attach to
//! (available_filter_functions), looked up for a given set of names.
//!
//! The kernel goes by address: a function is traceable when an ftrace site
//! lies within it (from its address up to the next symbol), whatever name
//! ftrace lists it under; a syscall's `__x64_sys_getpid` is an alias of
//! `__do_sys_getpid`, and ftrace lists only the latter. So each symbol
//! asked about carries its extent and its aliases.
//!
//! kallsyms has 100k-200k lines and callers ask about a handful of functions,
//! so the files are streamed and only matching lines are kept: kallsyms
//! twice (once for the names, once for their neighbours and aliases, which
//! may come first), the ftrace lists once.
//!
//! This is the one reader of kallsyms' lines ([`for_each_symbol`]): the
//! stack symbolizer (probes/stack_symbols.rs) and the near-miss
//! suggestions (kallsyms_near.rs) read through it too.
use std::{
    collections::{HashMap, HashSet},
    io::{self, BufRead, BufReader, Read},
    path::Path,
};

use super::{attr::open_regular, kernel_facts::tracefs_mount};
use crate::model::{FilterFunctions, KernelSymbol, Known, SymbolTable};

/// The symbols of these names, with their addresses: one pass.
pub fn read_kallsyms(root: &Path, names: &[&str]) -> io::Result<SymbolTable> {
    let wanted: HashSet<&str> = names.iter().copied().collect();
    let mut table = SymbolTable::default();
    for_each_symbol(root, |symbol| {
        if !wanted.contains(symbol.name) {
            return;
        }
        table
            .symbols
            .entry(symbol.name.to_owned())
            .or_default()
            .push(KernelSymbol {
                address: symbol.address,
                kind: symbol.kind,
                module: symbol.module.map(str::to_owned),
                size: None,
                aliases: Vec::new(),
            });
    })?;
    Ok(table)
}

/// The symbols of these names with their extents and aliases, which
/// traceability goes by: a second pass over kallsyms, since an alias or the
/// next symbol may come before a name (module symbols are not sorted).
pub fn read_kallsyms_with_extents(root: &Path, names: &[&str]) -> io::Result<SymbolTable> {
    let mut table = read_kallsyms(root, names)?;
    let at: HashSet<u64> = table
        .symbols
        .values()
        .flatten()
        .map(|s| s.address)
        .filter(|&address| address != 0)
        .collect();
    if at.is_empty() {
        return Ok(table);
    }
    // Every address, for the next one after each symbol, and the names at
    // the symbols' own addresses.
    let mut addresses = Vec::new();
    let mut names_at: HashMap<u64, Vec<(String, Option<String>)>> = HashMap::new();
    for_each_symbol(root, |symbol| {
        addresses.push(symbol.address);
        if at.contains(&symbol.address) {
            names_at
                .entry(symbol.address)
                .or_default()
                .push((symbol.name.to_owned(), symbol.module.map(str::to_owned)));
        }
    })?;
    addresses.sort_unstable();
    addresses.dedup();
    for (name, symbols) in &mut table.symbols {
        for symbol in symbols.iter_mut().filter(|s| s.address != 0) {
            let next = addresses.partition_point(|&a| a <= symbol.address);
            symbol.size = addresses.get(next).map(|&a| a - symbol.address);
            symbol.aliases = names_at
                .get(&symbol.address)
                .into_iter()
                .flatten()
                .filter(|(other, module)| other != name && *module == symbol.module)
                .map(|(other, _)| other.clone())
                .collect();
        }
    }
    Ok(table)
}

/// One line of /proc/kallsyms.
pub(crate) struct KallsymsLine<'a> {
    /// 0 when kptr_restrict hides addresses (not root).
    pub address: u64,
    /// nm's type letter: `t`/`T` text, `w`/`W` weak, `d`/`D` data, ...
    pub kind: char,
    pub name: &'a str,
    /// None for the core kernel; a module's name, or `bpf`,
    /// `__builtin__ftrace` and the like for code made at run time.
    pub module: Option<&'a str>,
}

/// Every well-formed line of `<root>/proc/kallsyms`, in the file's order,
/// streamed: nothing of the file is kept but what `visit` keeps.
pub(crate) fn for_each_symbol(
    root: &Path,
    mut visit: impl FnMut(KallsymsLine<'_>),
) -> io::Result<()> {
    for_each_line(&root.join("proc/kallsyms"), |line| {
        if let Some(symbol) = parse_kallsyms_line(line) {
            visit(symbol);
        }
    })
}

/// `ADDRESS KIND NAME [MODULE]`; None for anything else.
fn parse_kallsyms_line(line: &str) -> Option<KallsymsLine<'_>> {
    let mut fields = line.split_ascii_whitespace();
    let (address, kind, name) = (fields.next()?, fields.next()?, fields.next()?);
    Some(KallsymsLine {
        address: u64::from_str_radix(address, 16).ok()?,
        kind: kind.chars().next()?,
        name,
        module: fields.next().and_then(module_name),
    })
}

/// Unknown when tracefs is not mounted or the list is unreadable (not root).
pub fn read_filter_functions(root: &Path, symbols: &SymbolTable) -> Known<FilterFunctions> {
    let Some(tracefs) = tracefs_mount(root) else {
        return Known::unknown("tracefs is not mounted");
    };
    let tracefs = root.join(tracefs.trim_start_matches('/'));
    let wanted: HashSet<&str> = symbols.names_and_aliases().into_iter().collect();
    let extents: Vec<&KernelSymbol> = symbols
        .symbols
        .values()
        .flatten()
        .filter(|s| s.address != 0 && s.size.is_some())
        .collect();
    let mut found = FilterFunctions::default();
    let mut listed = |name: &str, module: Option<&str>| {
        if wanted.contains(name) {
            found
                .listed
                .entry(name.to_owned())
                .or_default()
                .push(module.map(str::to_owned));
        }
    };
    // Lines are `ADDRESS NAME [MODULE]` there, `NAME [MODULE]` in the list
    // by name that every kernel has.
    let by_address = tracefs.join("available_filter_functions_addrs");
    let mut sites = Vec::new();
    let result = match for_each_line(&by_address, |line| {
        let mut fields = line.split_ascii_whitespace();
        let (Some(address), Some(name)) = (fields.next(), fields.next()) else {
            return;
        };
        let Ok(address) = u64::from_str_radix(address, 16) else {
            return;
        };
        listed(name, fields.next().and_then(module_name));
        if extents.iter().any(|s| s.contains(address)) {
            sites.push(address);
        }
    }) {
        Ok(()) => {
            found.sites = Some(sites);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            for_each_line(&tracefs.join("available_filter_functions"), |line| {
                let mut fields = line.split_ascii_whitespace();
                if let Some(name) = fields.next() {
                    listed(name, fields.next().and_then(module_name));
                }
            })
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Known::Value(found),
        Err(error) => Known::unknown(format!(
            "{}: {error}",
            tracefs.join("available_filter_functions").display()
        )),
    }
}

/// `[module]` to `module`.
fn module_name(field: &str) -> Option<&str> {
    field.strip_prefix('[')?.strip_suffix(']')
}

/// kallsyms is about 10 MB under Debian 6.12, available_filter_functions
/// less: a symbol file past this is not the kernel's.
const SYMBOL_FILE_MAX: u64 = 256 << 20;

/// Bytes per read of a symbol file: the kernel's seq_file fills what it is
/// given, so fewer, larger reads cost fewer syscalls over 10 MB.
const READ_CHUNK: usize = 256 << 10;

/// One reused line buffer for the whole file; lines that are not UTF-8 are
/// skipped, not fatal.
fn for_each_line(path: &Path, mut visit: impl FnMut(&str)) -> io::Result<()> {
    let mut reader =
        BufReader::with_capacity(READ_CHUNK, open_regular(path)?.take(SYMBOL_FILE_MAX));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_well_formed_line_is_one_symbol_with_its_module() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("proc")).unwrap();
        std::fs::write(
            dir.path().join("proc/kallsyms"),
            "ffffffff81000000 T _stext\n\
             not a symbol\n\
             ffffffffc0001000 t klp_test_busy_loop\t[klp_test_target]\n\
             ffffffffc0002000 t bpf_prog_6deef7357e7b4530\t[bpf]\n",
        )
        .unwrap();
        let mut seen = Vec::new();
        for_each_symbol(dir.path(), |s| {
            seen.push((
                s.address,
                s.kind,
                s.name.to_owned(),
                s.module.map(str::to_owned),
            ));
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                (0xffffffff81000000, 'T', "_stext".into(), None),
                (
                    0xffffffffc0001000,
                    't',
                    "klp_test_busy_loop".into(),
                    Some("klp_test_target".into())
                ),
                (
                    0xffffffffc0002000,
                    't',
                    "bpf_prog_6deef7357e7b4530".into(),
                    Some("bpf".into())
                ),
            ]
        );
    }
}
