//! The objects, functions, callbacks and symbol references of a livepatch
//! module file (.ko), read from its ELF without loading it, in the layout
//! of each producer: a static `klp_patch` (the kernel's samples, hand-made
//! patches: samples.rs), klp-build's `klp_object_ext` sections
//! (klp_build.rs) and kpatch-build's `.kpatch.funcs` (kpatch_build.rs).
//!
//! The file is untrusted input: it is read only if it is a regular file of
//! at most [`MODULE_SIZE_MAX`] bytes, every offset, addend and size taken
//! from it is checked before any arithmetic (elf.rs), names are bounded by
//! the kernel's own limit, and the search for a static `klp_patch` has a
//! step budget, so a hostile file gets one error line, never a panic or a
//! hang.
mod elf;
mod klp_build;
mod kpatch_build;
mod references;
mod samples;

use std::{
    collections::HashMap,
    fs::{File, FileType, OpenOptions},
    io::Read,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
};

use object::{Object, ObjectSection, read::File as ObjectFile};
use schemars::JsonSchema;
use serde::Serialize;

use crate::model::PatchFunction;
// Replace is model data; the check report names it from here.
pub use crate::model::Replace;
use elf::{Elf, Place, field_of};

/// What a livepatch module would patch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LivepatchModule {
    /// The module's name, which becomes the patch's name in sysfs.
    pub name: String,
    /// The layout its klp_patch was found in, which names the tool that
    /// made it.
    pub producer: Producer,
    /// Atomic replace: loading it reverts every patch loaded before.
    pub replace: Replace,
    /// A signature is appended (whether the kernel trusts the key is another
    /// matter).
    pub signed: bool,
    /// The kernel it was built for, as .modinfo says: release, then flags
    /// ("6.12.117+deb12-amd64 SMP preempt mod_unload modversions").
    pub vermagic: Option<String>,
    pub objects: Vec<ModuleObject>,
    /// The symbols of the patched objects that its code uses, which the
    /// kernel resolves at load (`.klp.sym.OBJECT.NAME,POS`).
    pub references: Vec<Reference>,
}

/// Which tool's layout the module has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Producer {
    /// A static `klp_patch` pointing at the module itself, as the kernel's
    /// samples/livepatch and hand-written patches have.
    Samples,
    /// The kernel's scripts/livepatch/klp-build (6.19+).
    KlpBuild,
    /// dynup/kpatch's kpatch-build.
    KpatchBuild,
}

impl Producer {
    pub fn name(self) -> &'static str {
        match self {
            Producer::Samples => "samples",
            Producer::KlpBuild => "klp-build",
            Producer::KpatchBuild => "kpatch-build",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ModuleObject {
    /// None: vmlinux.
    pub name: Option<String>,
    /// sympos as written in the module: 0 means "the only one".
    pub functions: Vec<PatchFunction>,
    /// The object's callbacks that are set, in the order the kernel runs
    /// them.
    pub callbacks: Vec<Callback>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Callback {
    pub hook: Hook,
    /// The function of the module it calls.
    pub function: String,
}

/// When the kernel runs a callback (struct klp_callbacks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    PrePatch,
    PostPatch,
    PreUnpatch,
    PostUnpatch,
}

impl Hook {
    /// In struct klp_callbacks' order.
    pub const ALL: [Hook; 4] = [
        Hook::PrePatch,
        Hook::PostPatch,
        Hook::PreUnpatch,
        Hook::PostUnpatch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hook::PrePatch => "pre_patch",
            Hook::PostPatch => "post_patch",
            Hook::PreUnpatch => "pre_unpatch",
            Hook::PostUnpatch => "post_unpatch",
        }
    }
}

/// A symbol the patch's code needs from an object, resolved by the kernel
/// at load.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, JsonSchema)]
pub struct Reference {
    /// None: vmlinux.
    pub object: Option<String>,
    pub name: String,
    /// 0: the only one of that name in the object.
    pub sympos: u32,
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
    let (producer, (objects, replace)) = if elf.section(kpatch_build::FUNCS_SECTION).is_some() {
        (Producer::KpatchBuild, kpatch_build::decode(&elf)?)
    } else if let Some(section) = klp_build::objects_section(&elf) {
        (Producer::KlpBuild, klp_build::decode(&elf, section)?)
    } else if samples::present(&elf) {
        (Producer::Samples, samples::decode(&elf)?)
    } else {
        return Err(Failure::Layout(
            "no layout explains it: no static klp_patch (nothing points at __this_module), \
             no klp-build sections (.init.klp_objects, __klp_objects), no kpatch-build \
             .kpatch.funcs"
                .into(),
        ));
    };
    Ok(LivepatchModule {
        name: modinfo
            .get("name")
            .cloned()
            .unwrap_or_else(|| fallback_name.to_owned()),
        producer,
        replace,
        signed: bytes.ends_with(SIGNATURE_MAGIC),
        vermagic: modinfo.get("vermagic").cloned(),
        objects,
        references: references::read(&file)?,
    })
}

/// The four callback pointers of a `struct klp_callbacks` at `at`, the set
/// ones named by their function.
fn read_callbacks(elf: &Elf, at: Place) -> Result<Vec<Callback>, Failure> {
    let mut callbacks = Vec::new();
    for (slot, hook) in (0u64..).zip(Hook::ALL) {
        let place = field_of(at, slot * elf::POINTER, "a callback")?;
        if let Some(function) = elf.function(place, "a callback")? {
            callbacks.push(Callback { hook, function });
        }
    }
    Ok(callbacks)
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
