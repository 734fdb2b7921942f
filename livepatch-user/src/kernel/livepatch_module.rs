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
//!
//! The file is untrusted input: it is read only if it is a regular file of
//! at most [`MODULE_SIZE_MAX`] bytes, every offset, addend and size taken
//! from it is checked before any arithmetic, names are bounded by the
//! kernel's own limit, and the search for the `klp_patch` has a step budget,
//! so a hostile file gets one error line, never a panic or a hang.
use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, HashMap},
    fs::{File, FileType, OpenOptions},
    io::Read,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
    rc::Rc,
};

use object::{
    Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex, SectionKind,
    read::File as ObjectFile,
};
use schemars::JsonSchema;
use serde::Serialize;

use crate::model::PatchFunction;
use Target::{External, Local, Stray, ThisModule};

/// What a livepatch module would patch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LivepatchModule {
    /// The module's name, which becomes the patch's name in sysfs.
    pub name: String,
    /// Atomic replace: loading it reverts every patch loaded before.
    pub replace: bool,
    /// A signature is appended (whether the kernel trusts the key is another
    /// matter).
    pub signed: bool,
    /// The kernel it was built for, as .modinfo says: release, then flags
    /// ("6.12.117+deb12-amd64 SMP preempt mod_unload modversions").
    pub vermagic: Option<String>,
    pub objects: Vec<ModuleObject>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ModuleObject {
    /// None: vmlinux.
    pub name: Option<String>,
    /// sympos as written in the module: 0 means "the only one".
    pub functions: Vec<PatchFunction>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    // The cause follows in the error chain: naming it here too would print
    // it twice.
    #[error("cannot read {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is {kind}, not a regular file (a livepatch module is a .ko file)")]
    NotRegularFile { path: String, kind: &'static str },
    #[error("{path} is {size} bytes, more than the 64 MiB a livepatch module can be")]
    TooLarge { path: String, size: u64 },
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

/// The largest file read as a module. Livepatch modules hold a few patched
/// functions: kilobytes, a few megabytes with debug info.
pub const MODULE_SIZE_MAX: u64 = 64 << 20;

pub fn read_livepatch_module(path: &Path) -> Result<LivepatchModule, ModuleError> {
    open_livepatch_module(path).map(|(module, _)| module)
}

/// A module file kept open with the bytes that were decoded from it: what
/// is loaded must be what was checked.
pub struct ModuleImage {
    pub path: String,
    pub file: File,
    pub bytes: Vec<u8>,
}

/// Decodes the module and keeps the file open for loading it.
pub fn open_livepatch_module(path: &Path) -> Result<(LivepatchModule, ModuleImage), ModuleError> {
    let shown = path.display().to_string();
    let (file, bytes) = read_module_file(path, &shown)?;
    let fallback_name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().replace('-', "_"))
        .unwrap_or_default();
    let module = parse_livepatch_module(&bytes, &fallback_name)
        .map_err(|failure| failure.at(shown.clone()))?;
    let image = ModuleImage {
        path: shown,
        file,
        bytes,
    };
    Ok((module, image))
}

/// The bytes of a regular file of at most [`MODULE_SIZE_MAX`] bytes. The type
/// and size are those of the opened file (fstat), not of the path, and the
/// read stops past the cap even if the file grows meanwhile.
fn read_module_file(path: &Path, shown: &str) -> Result<(File, Vec<u8>), ModuleError> {
    let io = |source| ModuleError::Io {
        path: shown.to_owned(),
        source,
    };
    // Non-blocking: opening a FIFO must not wait for a writer (it is then
    // refused as not a regular file). No effect on a regular file.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if !metadata.is_file() {
        return Err(ModuleError::NotRegularFile {
            path: shown.to_owned(),
            kind: file_kind(metadata.file_type()),
        });
    }
    let too_large = |size| ModuleError::TooLarge {
        path: shown.to_owned(),
        size,
    };
    if metadata.len() > MODULE_SIZE_MAX {
        return Err(too_large(metadata.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    (&file)
        .take(MODULE_SIZE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    match u64::try_from(bytes.len()) {
        Ok(read) if read <= MODULE_SIZE_MAX => Ok((file, bytes)),
        // It grew while being read.
        Ok(read) => Err(too_large(read)),
        Err(_) => Err(too_large(u64::MAX)),
    }
}

fn file_kind(kind: FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a named pipe (FIFO)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "something else"
    }
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
        vermagic: modinfo.get("vermagic").cloned(),
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
    /// Into a section of this file, but before its start or past the end of
    /// the address space: nowhere a struct or string can be.
    Stray,
    /// At `__this_module`, the anchor.
    ThisModule,
    /// At another symbol outside this file.
    External,
}

/// A place in a section: the start of a struct or array.
type Place = (SectionIndex, u64);

/// The place `by` bytes after `place`, if the address space has room.
fn field((section, offset): Place, by: u64) -> Option<Place> {
    Some((section, offset.checked_add(by)?))
}

struct Elf<'a> {
    file: &'a ObjectFile<'a>,
    /// Per section, its 64-bit absolute relocations by offset.
    pointers: HashMap<SectionIndex, BTreeMap<u64, Target>>,
    /// Sized data symbols: (section, start) to size.
    sizes: HashMap<Place, u64>,
    kinds: HashMap<SectionIndex, SectionKind>,
    /// Where entries can start, by section and kind of entry.
    candidates: RefCell<HashMap<(SectionIndex, &'static str), Rc<Candidates>>>,
    /// Array entries walked so far by the klp_patch search.
    steps: Cell<usize>,
}

/// The places in one section where one kind of array entry can start.
struct Candidates {
    /// Sorted.
    offsets: Vec<u64>,
    /// For each index, the smallest gap between neighbouring offsets from
    /// there on.
    min_gap_from: Vec<Option<u64>>,
}

impl Candidates {
    fn new(offsets: Vec<u64>) -> Self {
        let mut min_gap_from: Vec<Option<u64>> = offsets
            .windows(2)
            .rev()
            .scan(None, |min: &mut Option<u64>, pair| {
                *min = (*min).into_iter().chain(pair[1].checked_sub(pair[0])).min();
                Some(*min)
            })
            .collect();
        min_gap_from.reverse();
        min_gap_from.push(None);
        Candidates {
            offsets,
            min_gap_from,
        }
    }
}

const POINTER: u64 = 8;
const FUNC_FIELDS: u64 = 24;
const OBJECT_FIELDS: u64 = 48;
const REPLACE_OFFSET: u64 = 24;
/// KSYM_NAME_LEN: no function or module name is longer, with its NUL.
const NAME_MAX: usize = 512;
/// A real module walks a few hundred klp_object and klp_func entries. A file
/// built so that thousands of candidate klp_patch structs each walk a long
/// array before failing would otherwise take time quadratic in its size.
const STEP_BUDGET: usize = 100_000;

impl<'a> Elf<'a> {
    fn new(file: &'a ObjectFile<'a>) -> Result<Self, Failure> {
        let mut pointers: HashMap<SectionIndex, BTreeMap<u64, Target>> = HashMap::new();
        for section in file.sections() {
            let size = section.size();
            for (offset, relocation) in section.relocations() {
                // Pointer-sized absolute relocations are the initialisers of
                // pointer fields; anything else (PC-relative code) is not.
                if relocation.kind() != object::RelocationKind::Absolute || relocation.size() != 64
                {
                    continue;
                }
                if offset.checked_add(POINTER).is_none_or(|end| end > size) {
                    return Err(Failure::Corrupt(format!(
                        "a relocation at {offset:#x} lies outside its section {} ({size:#x} bytes)",
                        section.name().unwrap_or("?")
                    )));
                }
                let RelocationTarget::Symbol(index) = relocation.target() else {
                    continue;
                };
                let symbol = file
                    .symbol_by_index(index)
                    .map_err(|e| Failure::Corrupt(format!("relocation symbol: {e}")))?;
                // modpost links __this_module into the final .ko; in a bare
                // object it is undefined. Either way it is the anchor.
                let target = if symbol.name() == Ok(THIS_MODULE) {
                    ThisModule
                } else {
                    match symbol.section_index() {
                        Some(section) => symbol
                            .address()
                            .checked_add_signed(relocation.addend())
                            .map_or(Stray, |offset| Local(section, offset)),
                        None => External,
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
            sizes,
            kinds,
            candidates: RefCell::default(),
            steps: Cell::new(0),
        })
    }

    fn pointer(&self, (section, offset): Place) -> Option<Target> {
        self.pointers.get(&section)?.get(&offset).copied()
    }

    fn points_to_text(&self, place: Place) -> bool {
        matches!(self.pointer(place), Some(Local(s, _)) if self.kinds.get(&s) == Some(&SectionKind::Text))
    }

    fn points_to_data(&self, place: Place) -> bool {
        matches!(self.pointer(place), Some(Local(s, _)) if matches!(
            self.kinds.get(&s),
            Some(SectionKind::Data | SectionKind::UninitializedData)
        ))
    }

    /// In .bss: all zeros, so an array there is only its terminator (a
    /// callbacks-only klp_object's `funcs`, as the kernel's selftests have).
    fn in_zeroed_data(&self, section: SectionIndex) -> bool {
        self.kinds.get(&section) == Some(&SectionKind::UninitializedData)
    }

    /// Counts `steps` of work against the budget.
    fn spend(&self, steps: usize) -> Result<(), Failure> {
        let total = self.steps.get().saturating_add(steps);
        self.steps.set(total);
        if total > STEP_BUDGET {
            return Err(self.exhausted());
        }
        Ok(())
    }

    fn exhausted(&self) -> Failure {
        Failure::Layout(format!(
            "gave up after walking {STEP_BUDGET} klp_object and klp_func entries: too many structures point at __this_module"
        ))
    }

    /// The klp_patch: a struct whose first field points at `__this_module`
    /// and whose second at a decodable array of klp_objects. Other structs
    /// (file_operations.owner, ...) also point at `__this_module`, at other
    /// offsets and without such an array, and are passed over.
    fn patch(&self) -> Result<(Vec<ModuleObject>, bool), Failure> {
        let mut why_not = None;
        // In file order, so that a file with several candidates gets the
        // same answer on every run.
        let mut sections: Vec<_> = self.pointers.iter().collect();
        sections.sort_by_key(|(section, _)| section.0);
        for (&section, pointers) in sections {
            for (&offset, &target) in pointers {
                if target != ThisModule {
                    continue;
                }
                let patch = (section, offset);
                let Some(Local(objs_section, objs_offset)) =
                    field(patch, POINTER).and_then(|objs| self.pointer(objs))
                else {
                    continue;
                };
                match self.objects((objs_section, objs_offset)) {
                    Ok(objects) => {
                        let replace_at = field(patch, REPLACE_OFFSET).ok_or_else(|| {
                            Failure::Corrupt(format!(
                                "klp_patch.replace at {offset:#x} + {REPLACE_OFFSET} lies past the address space"
                            ))
                        })?;
                        let replace = self.byte(replace_at)? != 0;
                        return Ok((objects, replace));
                    }
                    Err(why) => {
                        if self.steps.get() > STEP_BUDGET {
                            return Err(self.exhausted());
                        }
                        why_not = Some(why);
                    }
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
            field(place, POINTER).is_some_and(|funcs| self.points_to_data(funcs))
        })?;
        entries
            .into_iter()
            .map(|entry| {
                let name = match self.pointer(entry) {
                    None => None,
                    Some(_) => Some(self.string(entry)?),
                };
                // entries() only yields objects whose funcs point into data.
                let functions = match field(entry, POINTER).and_then(|funcs| self.pointer(funcs)) {
                    Some(Local(section, _)) if self.in_zeroed_data(section) => Vec::new(),
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
                && field(place, POINTER).is_some_and(|new_func| self.points_to_text(new_func))
        })?;
        entries
            .into_iter()
            .map(|entry| {
                let sympos_at = field(entry, 2 * POINTER).ok_or_else(|| {
                    Failure::Corrupt(format!(
                        "klp_func.old_sympos at {:#x} + 16 lies past the address space",
                        entry.1
                    ))
                })?;
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
    /// `is_entry` must be the same test for every call with that `what`.
    fn entries(
        &self,
        start: Place,
        min_size: u64,
        what: &'static str,
        is_entry: impl Fn(Place) -> bool,
    ) -> Result<Vec<Place>, Failure> {
        let (section, first) = start;
        let all = self.candidates(section, what, is_entry);
        let from = all.offsets.partition_point(|&c| c < first);
        let candidates = all.offsets.get(from..).unwrap_or_default();
        if candidates.first() != Some(&first) {
            return Err(Failure::Layout(format!(
                "no {what} at {:#x} where the pointer to it leads",
                first
            )));
        }
        let stride = match self.sizes.get(&start) {
            // The entries within the symbol, plus the empty terminator.
            Some(&size) => first.checked_add(size).and_then(|end| {
                let count = u64::try_from(candidates.partition_point(|&c| c < end)).ok()?;
                let slots = count.checked_add(1)?;
                let stride = size / slots;
                (stride.checked_mul(slots)? == size).then_some(stride)
            }),
            // No symbol size (stripped): two entries of one array sit
            // exactly one stride apart; entries of different arrays sit at
            // least two apart (a terminator between them).
            None => all.min_gap_from.get(from).copied().flatten(),
        };
        let Some(stride) = stride.filter(|&s| s >= min_size && s % POINTER == 0) else {
            return Err(Failure::Layout(format!(
                "cannot size the {what} array at {first:#x}"
            )));
        };
        // At most one entry per candidate, each a stride (> 0) further.
        let mut entries = Vec::new();
        let mut next = Some(first);
        while let Some(at) = next.filter(|at| candidates.binary_search(at).is_ok()) {
            self.spend(1)?;
            entries.push((section, at));
            next = at.checked_add(stride);
        }
        Ok(entries)
    }

    /// Where a `what` can start in `section`: at a pointer or one pointer
    /// before it, where `is_entry` holds. Found once per section and kind,
    /// however many candidate klp_patch structs lead there.
    fn candidates(
        &self,
        section: SectionIndex,
        what: &'static str,
        is_entry: impl Fn(Place) -> bool,
    ) -> Rc<Candidates> {
        if let Some(found) = self.candidates.borrow().get(&(section, what)) {
            return Rc::clone(found);
        }
        let mut offsets: Vec<u64> = self
            .pointers
            .get(&section)
            .into_iter()
            .flat_map(|pointers| pointers.keys())
            .flat_map(|&offset| [Some(offset), offset.checked_sub(POINTER)])
            .flatten()
            .filter(|&offset| is_entry((section, offset)))
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        let found = Rc::new(Candidates::new(offsets));
        self.candidates
            .borrow_mut()
            .insert((section, what), Rc::clone(&found));
        found
    }

    fn string(&self, place: Place) -> Result<String, Failure> {
        let (section, offset) = match self.pointer(place) {
            Some(Local(section, offset)) => (section, offset),
            Some(Stray) => {
                return Err(Failure::Corrupt(format!(
                    "the string pointer at {:#x} leads outside its section",
                    place.1
                )));
            }
            _ => {
                return Err(Failure::Layout(format!(
                    "expected a string pointer at {:#x}",
                    place.1
                )));
            }
        };
        let data = self.data(section)?;
        let tail = usize::try_from(offset)
            .ok()
            .and_then(|offset| data.get(offset..))
            .ok_or_else(|| {
                Failure::Corrupt(format!("a string at {offset:#x} lies outside its section"))
            })?;
        let end = match tail.iter().take(NAME_MAX).position(|&b| b == 0) {
            Some(end) => end,
            None if tail.len() >= NAME_MAX => {
                return Err(Failure::Layout(format!(
                    "the name at {offset:#x} is longer than the kernel's {} bytes: not a function or object name",
                    NAME_MAX - 1
                )));
            }
            None => return Err(Failure::Corrupt("an unterminated string".into())),
        };
        String::from_utf8(tail[..end].to_vec())
            .map_err(|_| Failure::Layout("a function or object name is not UTF-8".into()))
    }

    fn u64_at(&self, (section, offset): Place) -> Result<u64, Failure> {
        let bytes = self.bytes((section, offset), 8)?;
        let bytes: [u8; 8] = bytes
            .try_into()
            .map_err(|_| Failure::Corrupt(format!("a field at {offset:#x} is cut short")))?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn byte(&self, place: Place) -> Result<u8, Failure> {
        self.bytes(place, 1)?
            .first()
            .copied()
            .ok_or_else(|| Failure::Corrupt(format!("a field at {:#x} is cut short", place.1)))
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
