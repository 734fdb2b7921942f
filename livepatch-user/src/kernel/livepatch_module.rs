//! The objects and functions a livepatch module file (.ko) patches, read
//! from its ELF without loading it.
//!
//! A .ko is a relocatable object: every pointer in the `klp_patch`,
//! `klp_object` and `klp_func` initialisers is a zero in the section data
//! plus a relocation. The walk starts at the one pointer every patch must
//! hold, `klp_patch.mod = THIS_MODULE` (a relocation against
//! `__this_module`), follows `objs`, then each object's `funcs`.
//!
//! Only the leading fields, stable since 4.15, are read (64-bit):
//! `klp_patch { mod @0, objs @8, states @16, replace @24 }` (5.5+),
//! `klp_object { name @0, funcs @8, callbacks @16..48 }`,
//! `klp_func { old_name @0, new_func @8, old_sympos @16 }`.
//! The size of each struct depends on the kernel config (kobject debug
//! fields), so the array strides are measured: from the array symbol's size
//! divided by its entries plus the empty terminator, or else from the gap
//! between two entries of one array.
use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::Path,
};

use object::{
    Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex, SectionKind,
    read::File as ObjectFile,
};
use serde::Serialize;

use crate::model::PatchFunction;
use Target::{External, Local};

/// What a livepatch module would patch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LivepatchModule {
    /// The module's name, which becomes the patch's name in sysfs.
    pub name: String,
    /// Atomic replace: loading it reverts every patch loaded before.
    pub replace: bool,
    /// A signature is appended (whether the kernel trusts the key is another
    /// matter).
    pub signed: bool,
    pub objects: Vec<ModuleObject>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModuleObject {
    /// None: vmlinux.
    pub name: Option<String>,
    /// sympos as written in the module: 0 means "the only one".
    pub functions: Vec<PatchFunction>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an ELF file (a livepatch module is a .ko)")]
    NotElf { path: String },
    #[error("{path} is truncated or corrupt: {why}")]
    Corrupt { path: String, why: String },
    #[error("{path} is not a livepatch module: {why}")]
    NotLivepatch { path: String, why: String },
    #[error(
        "{path}: cannot decode its klp_patch layout ({why}); name the functions with --function NAME[,SYMPOS] instead"
    )]
    Layout { path: String, why: String },
}

const SIGNATURE_MAGIC: &[u8] = b"~Module signature appended~\n";
const ELF_MAGIC: &[u8] = b"\x7fELF";
const THIS_MODULE: &str = "__this_module";

pub fn read_livepatch_module(path: &Path) -> Result<LivepatchModule, ModuleError> {
    let shown = path.display().to_string();
    let bytes = fs::read(path).map_err(|source| ModuleError::Io {
        path: shown.clone(),
        source,
    })?;
    let fallback_name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().replace('-', "_"))
        .unwrap_or_default();
    parse_livepatch_module(&bytes, &fallback_name).map_err(|failure| failure.at(shown))
}

/// An error before the path is attached.
#[derive(Debug)]
pub enum Failure {
    NotElf,
    Corrupt(String),
    NotLivepatch(String),
    Layout(String),
}

impl Failure {
    fn at(self, path: String) -> ModuleError {
        match self {
            Failure::NotElf => ModuleError::NotElf { path },
            Failure::Corrupt(why) => ModuleError::Corrupt { path, why },
            Failure::NotLivepatch(why) => ModuleError::NotLivepatch { path, why },
            Failure::Layout(why) => ModuleError::Layout { path, why },
        }
    }
}

/// `fallback_name` names the patch when .modinfo has no `name=` (modpost
/// adds it; a bare object file has none).
pub fn parse_livepatch_module(
    bytes: &[u8],
    fallback_name: &str,
) -> Result<LivepatchModule, Failure> {
    if !bytes.starts_with(ELF_MAGIC) {
        return Err(Failure::NotElf);
    }
    let file = ObjectFile::parse(bytes).map_err(|e| Failure::Corrupt(e.to_string()))?;
    if !file.is_64() || !file.is_little_endian() || file.kind() != object::ObjectKind::Relocatable {
        return Err(Failure::Layout(format!(
            "only 64-bit little-endian relocatable objects are decoded, this is a {:?} {:?}",
            file.architecture(),
            file.kind()
        )));
    }
    let modinfo = read_modinfo(&file)?;
    if modinfo.get("livepatch").map(String::as_str) != Some("Y") {
        return Err(Failure::NotLivepatch(
            "no livepatch=Y in its .modinfo (MODULE_INFO(livepatch, \"Y\"))".into(),
        ));
    }
    let elf = Elf::new(&file)?;
    let (objects, replace) = elf.patch()?;
    Ok(LivepatchModule {
        name: modinfo
            .get("name")
            .cloned()
            .unwrap_or_else(|| fallback_name.to_owned()),
        replace,
        signed: bytes.ends_with(SIGNATURE_MAGIC),
        objects,
    })
}

fn read_modinfo(file: &ObjectFile) -> Result<HashMap<String, String>, Failure> {
    let Some(section) = file.section_by_name(".modinfo") else {
        return Err(Failure::NotLivepatch(
            "it has no .modinfo section, so it is no kernel module".into(),
        ));
    };
    let data = section
        .data()
        .map_err(|e| Failure::Corrupt(format!(".modinfo: {e}")))?;
    Ok(data
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let (key, value) = std::str::from_utf8(entry).ok()?.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect())
}

/// Where a relocated pointer points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Into a section of this file, at an offset.
    Local(SectionIndex, u64),
    /// At an external symbol (index into `Elf::externals`).
    External(usize),
}

/// A place in a section: the start of a struct or array.
type Place = (SectionIndex, u64);

struct Elf<'a> {
    file: &'a ObjectFile<'a>,
    /// Per section, its 64-bit absolute relocations by offset.
    pointers: HashMap<SectionIndex, BTreeMap<u64, Target>>,
    externals: Vec<String>,
    /// Sized data symbols: (section, start) to size.
    sizes: HashMap<Place, u64>,
    kinds: HashMap<SectionIndex, SectionKind>,
}

const POINTER: u64 = 8;
const FUNC_FIELDS: u64 = 24;
const OBJECT_FIELDS: u64 = 48;
const REPLACE_OFFSET: u64 = 24;

impl<'a> Elf<'a> {
    fn new(file: &'a ObjectFile<'a>) -> Result<Self, Failure> {
        let mut externals = Vec::new();
        let mut pointers: HashMap<SectionIndex, BTreeMap<u64, Target>> = HashMap::new();
        for section in file.sections() {
            for (offset, relocation) in section.relocations() {
                // Pointer-sized absolute relocations are the initialisers of
                // pointer fields; anything else (PC-relative code) is not.
                if relocation.kind() != object::RelocationKind::Absolute || relocation.size() != 64
                {
                    continue;
                }
                let RelocationTarget::Symbol(index) = relocation.target() else {
                    continue;
                };
                let symbol = file
                    .symbol_by_index(index)
                    .map_err(|e| Failure::Corrupt(format!("relocation symbol: {e}")))?;
                // modpost links __this_module into the final .ko; in a bare
                // object it is undefined. Either way it is the anchor.
                let defined = symbol
                    .section_index()
                    .filter(|_| symbol.name() != Ok(THIS_MODULE));
                let target = match defined {
                    Some(section) => Local(
                        section,
                        symbol.address().wrapping_add_signed(relocation.addend()),
                    ),
                    None => {
                        externals.push(symbol.name().unwrap_or_default().to_owned());
                        External(externals.len() - 1)
                    }
                };
                pointers
                    .entry(section.index())
                    .or_default()
                    .insert(offset, target);
            }
        }
        let sizes = file
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Data && s.size() > 0)
            .filter_map(|s| Some(((s.section_index()?, s.address()), s.size())))
            .collect();
        let kinds = file.sections().map(|s| (s.index(), s.kind())).collect();
        Ok(Elf {
            file,
            pointers,
            externals,
            sizes,
            kinds,
        })
    }

    fn pointer(&self, (section, offset): Place) -> Option<Target> {
        self.pointers.get(&section)?.get(&offset).copied()
    }

    fn points_to_text(&self, place: Place) -> bool {
        matches!(self.pointer(place), Some(Local(s, _)) if self.kinds.get(&s) == Some(&SectionKind::Text))
    }

    fn points_to_data(&self, place: Place) -> bool {
        matches!(self.pointer(place), Some(Local(s, _)) if self.kinds.get(&s) == Some(&SectionKind::Data))
    }

    /// The klp_patch: a struct whose first field points at `__this_module`
    /// and whose second at a decodable array of klp_objects. Other structs
    /// (file_operations.owner, ...) also point at `__this_module`, at other
    /// offsets and without such an array, and are passed over.
    fn patch(&self) -> Result<(Vec<ModuleObject>, bool), Failure> {
        let mut why_not = None;
        for (&section, pointers) in &self.pointers {
            for (&offset, &target) in pointers {
                let External(name) = target else { continue };
                if self.externals[name] != THIS_MODULE {
                    continue;
                }
                let Some(Local(objs_section, objs_offset)) =
                    self.pointer((section, offset + POINTER))
                else {
                    continue;
                };
                match self.objects((objs_section, objs_offset)) {
                    Ok(objects) => {
                        let replace = self.byte((section, offset + REPLACE_OFFSET))? != 0;
                        return Ok((objects, replace));
                    }
                    Err(why) => why_not = Some(why),
                }
            }
        }
        Err(why_not.unwrap_or_else(|| {
            Failure::Layout(
                "no klp_patch found: no data points at __this_module followed by a klp_object array"
                    .into(),
            )
        }))
    }

    fn objects(&self, start: Place) -> Result<Vec<ModuleObject>, Failure> {
        // An object's `funcs` points into data; its callbacks point at code.
        let entries = self.entries(start, OBJECT_FIELDS, "klp_object", |place| {
            let funcs = (place.0, place.1 + POINTER);
            self.points_to_data(funcs)
        })?;
        entries
            .into_iter()
            .map(|entry| {
                let name = match self.pointer(entry) {
                    None => None,
                    Some(_) => Some(self.string(entry)?),
                };
                // entries() only yields objects whose funcs point into data.
                let functions = match self.pointer((entry.0, entry.1 + POINTER)) {
                    Some(Local(section, offset)) => self.functions((section, offset))?,
                    _ => Vec::new(),
                };
                Ok(ModuleObject { name, functions })
            })
            .collect()
    }

    fn functions(&self, start: Place) -> Result<Vec<PatchFunction>, Failure> {
        // old_name points at a string, new_func at code.
        let entries = self.entries(start, FUNC_FIELDS, "klp_func", |place| {
            matches!(self.pointer(place), Some(Local(..)))
                && !self.points_to_text(place)
                && self.points_to_text((place.0, place.1 + POINTER))
        })?;
        entries
            .into_iter()
            .map(|entry| {
                let sympos_at = (entry.0, entry.1 + 2 * POINTER);
                if self.pointer(sympos_at).is_some() {
                    return Err(Failure::Layout(
                        "klp_func.old_sympos holds a pointer: not the expected klp_func".into(),
                    ));
                }
                let sympos = self.u64_at(sympos_at)?;
                Ok(PatchFunction {
                    name: self.string(entry)?,
                    sympos: u32::try_from(sympos).map_err(|_| {
                        Failure::Layout(format!(
                            "klp_func.old_sympos {sympos} is not a symbol position"
                        ))
                    })?,
                })
            })
            .collect()
    }

    /// The entries of a zero-terminated array starting at `start`: the
    /// places where `is_entry` holds, one stride apart, up to the first gap.
    fn entries(
        &self,
        start: Place,
        min_size: u64,
        what: &str,
        is_entry: impl Fn(Place) -> bool,
    ) -> Result<Vec<Place>, Failure> {
        let (section, first) = start;
        let candidates: Vec<u64> = self
            .pointers
            .get(&section)
            .into_iter()
            .flat_map(|pointers| pointers.keys())
            .flat_map(|&offset| [Some(offset), offset.checked_sub(POINTER)])
            .flatten()
            .filter(|&offset| offset >= first && is_entry((section, offset)))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if candidates.first() != Some(&first) {
            return Err(Failure::Layout(format!(
                "no {what} at {:#x} where the pointer to it leads",
                first
            )));
        }
        let stride = match self.sizes.get(&start) {
            Some(&size) => {
                let count = candidates.iter().filter(|&&c| c < first + size).count() as u64;
                Some(size / (count + 1)).filter(|stride| stride * (count + 1) == size)
            }
            // No symbol size (stripped): two entries of one array sit
            // exactly one stride apart; entries of different arrays sit at
            // least two apart (a terminator between them).
            None => candidates.windows(2).map(|pair| pair[1] - pair[0]).min(),
        };
        let Some(stride) = stride.filter(|&s| s >= min_size && s % POINTER == 0) else {
            return Err(Failure::Layout(format!(
                "cannot size the {what} array at {first:#x}"
            )));
        };
        let mut entries = Vec::new();
        let mut next = first;
        while candidates.binary_search(&next).is_ok() {
            entries.push((section, next));
            next += stride;
        }
        Ok(entries)
    }

    fn string(&self, place: Place) -> Result<String, Failure> {
        let Some(Local(section, offset)) = self.pointer(place) else {
            return Err(Failure::Layout(format!(
                "expected a string pointer at {:#x}",
                place.1
            )));
        };
        let data = self.data(section)?;
        let tail = usize::try_from(offset)
            .ok()
            .and_then(|offset| data.get(offset..))
            .ok_or_else(|| {
                Failure::Corrupt(format!("a string at {offset:#x} lies outside its section"))
            })?;
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| Failure::Corrupt("an unterminated string".into()))?;
        String::from_utf8(tail[..end].to_vec())
            .map_err(|_| Failure::Layout("a function or object name is not UTF-8".into()))
    }

    fn u64_at(&self, (section, offset): Place) -> Result<u64, Failure> {
        let bytes = self.bytes((section, offset), 8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    fn byte(&self, place: Place) -> Result<u8, Failure> {
        Ok(self.bytes(place, 1)?[0])
    }

    fn bytes(&self, (section, offset): Place, len: usize) -> Result<&[u8], Failure> {
        let data = self.data(section)?;
        usize::try_from(offset)
            .ok()
            .and_then(|offset| data.get(offset..offset.checked_add(len)?))
            .ok_or_else(|| {
                Failure::Corrupt(format!("a field at {offset:#x} lies outside its section"))
            })
    }

    fn data(&self, section: SectionIndex) -> Result<&'a [u8], Failure> {
        self.file
            .section_by_index(section)
            .and_then(|s| s.data())
            .map_err(|e| Failure::Corrupt(e.to_string()))
    }
}
