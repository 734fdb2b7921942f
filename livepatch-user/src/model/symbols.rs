//! Kernel symbols and the functions ftrace can attach to, as the readers
//! found them for a given set of names (kernel::kallsyms fills them).
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSymbol {
    /// 0 for everyone when kptr_restrict hides addresses (not root).
    pub address: u64,
    /// nm's type letter: `t`/`T` text, `d`/`D` data, ...
    pub kind: char,
    /// None for vmlinux.
    pub module: Option<String>,
    /// Bytes up to the next symbol: the extent the kernel gives it
    /// (kallsyms_lookup_size_offset). None with hidden addresses, or for
    /// the last symbol.
    pub size: Option<u64>,
    /// Other names at the same address in the same object.
    pub aliases: Vec<String>,
}

impl KernelSymbol {
    /// Its name and its aliases.
    pub fn names<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        std::iter::once(name).chain(self.aliases.iter().map(String::as_str))
    }

    pub(crate) fn contains(&self, address: u64) -> bool {
        self.size
            .is_some_and(|size| address >= self.address && address - self.address < size)
    }
}

#[derive(Debug, Default)]
pub struct SymbolTable {
    pub(crate) symbols: HashMap<String, Vec<KernelSymbol>>,
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

impl SymbolTable {
    /// The names asked about and their aliases: what ftrace may list them as.
    pub fn names_and_aliases(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .symbols
            .iter()
            .flat_map(|(name, all)| all.iter().flat_map(|s| s.names(name)))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// What ftrace can attach to, among the symbols asked about: a livepatch
/// can only redirect a function ftrace can attach to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FilterFunctions {
    /// Name to the objects (None for vmlinux) it is listed in.
    pub(crate) listed: HashMap<String, Vec<Option<String>>>,
    /// The ftrace sites inside the symbols asked about, where the kernel
    /// lists sites by address (available_filter_functions_addrs, 6.5+).
    pub(crate) sites: Option<Vec<u64>>,
}

impl FilterFunctions {
    /// Whether ftrace can attach to the function `name` in `object`, which
    /// is `symbol` when kallsyms names exactly one (with its address): by
    /// address as the kernel decides, under whichever of its names ftrace
    /// lists; by name only when the address is unknown.
    pub fn traceable(
        &self,
        name: &str,
        object: Option<&str>,
        symbol: Option<&KernelSymbol>,
    ) -> bool {
        match symbol.filter(|s| s.address != 0) {
            Some(symbol) => match &self.sites {
                Some(sites) if symbol.size.is_some() => {
                    sites.iter().any(|&site| symbol.contains(site))
                }
                _ => symbol.names(name).any(|name| self.is_listed(name, object)),
            },
            None => self.is_listed(name, object),
        }
    }

    fn is_listed(&self, name: &str, object: Option<&str>) -> bool {
        self.listed
            .get(name)
            .is_some_and(|objects| objects.iter().any(|o| o.as_deref() == object))
    }
}
