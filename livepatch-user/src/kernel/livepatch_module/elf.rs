//! The relocatable ELF under every layout: a pointer field is a zero in the
//! section data plus a 64-bit absolute relocation, so values are read
//! through the relocations. Every offset, addend and size taken from the
//! file is checked before any arithmetic.
use std::collections::{BTreeMap, HashMap};

use object::{
    Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex, SectionKind,
    read::File as ObjectFile,
};

use super::Failure;

pub const POINTER: u64 = 8;
/// KSYM_NAME_LEN: no function or module name is longer, with its NUL.
pub const NAME_MAX: usize = 512;
const THIS_MODULE: &str = "__this_module";

/// Where a relocated pointer points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Into a section of this file, at an offset.
    Local(SectionIndex, u64),
    /// Into a section of this file, but before its start or past the end of
    /// the address space: nowhere a struct or string can be.
    Stray,
    /// At `__this_module`, the samples layout's anchor.
    ThisModule,
    /// At another symbol outside this file (its name in
    /// [`Elf::external_names`]).
    External,
}

/// A place in a section: the start of a struct, array or field.
pub type Place = (SectionIndex, u64);

/// The place `by` bytes after `place`, if the address space has room.
pub fn field((section, offset): Place, by: u64) -> Option<Place> {
    Some((section, offset.checked_add(by)?))
}

/// The place of a field, or the error that it lies past the address space.
pub fn field_of(place: Place, by: u64, what: &str) -> Result<Place, Failure> {
    field(place, by).ok_or_else(|| {
        Failure::Corrupt(format!(
            "{what} at {:#x} + {by} lies past the address space",
            place.1
        ))
    })
}

/// The place of entry `index` of an array of `stride`-byte entries.
pub fn entry_of(start: Place, index: u64, stride: u64, what: &str) -> Result<Place, Failure> {
    index
        .checked_mul(stride)
        .and_then(|by| field(start, by))
        .ok_or_else(|| {
            Failure::Corrupt(format!(
                "{what} {index} of the array at {:#x} lies past the address space",
                start.1
            ))
        })
}

pub struct Elf<'a> {
    file: &'a ObjectFile<'a>,
    /// Per section, its 64-bit absolute relocations by offset.
    pub pointers: HashMap<SectionIndex, BTreeMap<u64, Target>>,
    /// Sized data symbols: (section, start) to size.
    pub sizes: HashMap<Place, u64>,
    kinds: HashMap<SectionIndex, SectionKind>,
    /// Functions by where they start: what a callback pointer names.
    functions: HashMap<Place, String>,
    /// The symbol each pointer to outside the file names, by where the
    /// pointer is.
    external_names: HashMap<Place, String>,
}

impl<'a> Elf<'a> {
    pub fn new(file: &'a ObjectFile<'a>) -> Result<Self, Failure> {
        let mut pointers: HashMap<SectionIndex, BTreeMap<u64, Target>> = HashMap::new();
        let mut external_names = HashMap::new();
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
                    Target::ThisModule
                } else {
                    match symbol.section_index() {
                        Some(section) => symbol
                            .address()
                            .checked_add_signed(relocation.addend())
                            .map_or(Target::Stray, |offset| Target::Local(section, offset)),
                        None => {
                            let name = symbol.name().unwrap_or_default();
                            external_names.insert((section.index(), offset), name.to_owned());
                            Target::External
                        }
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
        let functions = file
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text)
            .filter_map(|s| {
                let name = s.name().ok().filter(|n| !n.is_empty())?;
                Some(((s.section_index()?, s.address()), name.to_owned()))
            })
            .collect();
        let kinds = file.sections().map(|s| (s.index(), s.kind())).collect();
        Ok(Elf {
            file,
            pointers,
            sizes,
            kinds,
            functions,
            external_names,
        })
    }

    pub fn pointer(&self, (section, offset): Place) -> Option<Target> {
        self.pointers.get(&section)?.get(&offset).copied()
    }

    pub fn points_to_text(&self, place: Place) -> bool {
        matches!(self.pointer(place), Some(Target::Local(s, _)) if self.is_text(s))
    }

    fn is_text(&self, section: SectionIndex) -> bool {
        self.kinds.get(&section) == Some(&SectionKind::Text)
    }

    pub fn points_to_data(&self, place: Place) -> bool {
        matches!(self.pointer(place), Some(Target::Local(s, _)) if matches!(
            self.kinds.get(&s),
            Some(SectionKind::Data | SectionKind::UninitializedData)
        ))
    }

    /// In .bss: all zeros.
    pub fn in_zeroed_data(&self, section: SectionIndex) -> bool {
        self.kinds.get(&section) == Some(&SectionKind::UninitializedData)
    }

    /// The section named `name`, with its size.
    pub fn section(&self, name: &str) -> Option<(SectionIndex, u64)> {
        self.file
            .section_by_name(name)
            .map(|section| (section.index(), section.size()))
    }

    /// The function a code pointer at `place` names: None for a NULL
    /// pointer (no relocation, zero bytes). A pointer into code where no
    /// function symbol starts is named by its section and offset; one to a
    /// symbol outside the module (a kernel function) by that symbol.
    pub fn function(&self, place: Place, what: &str) -> Result<Option<String>, Failure> {
        match self.pointer(place) {
            None => {
                if self.u64_at(place)? != 0 {
                    return Err(Failure::Layout(format!(
                        "{what} at {:#x} holds a value, not a relocated pointer",
                        place.1
                    )));
                }
                Ok(None)
            }
            Some(Target::Local(section, offset)) if self.is_text(section) => Ok(Some(
                self.functions
                    .get(&(section, offset))
                    .cloned()
                    .unwrap_or_else(|| {
                        let name = self
                            .file
                            .section_by_index(section)
                            .ok()
                            .and_then(|s| s.name().ok().map(str::to_owned))
                            .unwrap_or_default();
                        format!("{name}+{offset:#x}")
                    }),
            )),
            Some(Target::External) => Ok(Some(
                self.external_names.get(&place).cloned().unwrap_or_default(),
            )),
            Some(_) => Err(Failure::Layout(format!(
                "{what} at {:#x} does not point at code",
                place.1
            ))),
        }
    }

    /// The string a pointer at `place` leads to; None for NULL.
    pub fn optional_string(&self, place: Place) -> Result<Option<String>, Failure> {
        match self.pointer(place) {
            None if self.u64_at(place)? == 0 => Ok(None),
            _ => self.string(place).map(Some),
        }
    }

    pub fn string(&self, place: Place) -> Result<String, Failure> {
        let (section, offset) = match self.pointer(place) {
            Some(Target::Local(section, offset)) => (section, offset),
            Some(Target::Stray) => {
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

    pub fn u64_at(&self, place: Place) -> Result<u64, Failure> {
        let bytes: [u8; 8] = self
            .bytes(place, 8)?
            .try_into()
            .map_err(|_| Failure::Corrupt(format!("a field at {:#x} is cut short", place.1)))?;
        Ok(u64::from_le_bytes(bytes))
    }

    pub fn u32_at(&self, place: Place) -> Result<u32, Failure> {
        let bytes: [u8; 4] = self
            .bytes(place, 4)?
            .try_into()
            .map_err(|_| Failure::Corrupt(format!("a field at {:#x} is cut short", place.1)))?;
        Ok(u32::from_le_bytes(bytes))
    }

    pub fn byte(&self, place: Place) -> Result<u8, Failure> {
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

    pub fn data(&self, section: SectionIndex) -> Result<&'a [u8], Failure> {
        self.file
            .section_by_index(section)
            .and_then(|s| s.data())
            .map_err(|e| Failure::Corrupt(e.to_string()))
    }

    /// A sympos field: a plain number that fits the kernel's `unsigned
    /// long`, read as the u32 sysfs shows.
    pub fn sympos(&self, place: Place, what: &str) -> Result<u32, Failure> {
        if self.pointer(place).is_some() {
            return Err(Failure::Layout(format!(
                "{what} holds a pointer: not the expected struct"
            )));
        }
        let sympos = self.u64_at(place)?;
        u32::try_from(sympos)
            .map_err(|_| Failure::Layout(format!("{what} {sympos} is not a symbol position")))
    }
}
