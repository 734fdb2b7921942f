//! What a livepatch module file holds, as klpscope reports it: the patch,
//! its objects, functions, callbacks and symbol references; and why a file
//! is refused.
use schemars::JsonSchema;
use serde::Serialize;

// Replace is model data; the check report names it from here.
use crate::model::PatchFunction;
pub use crate::model::Replace;

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

/// An error before the path is attached.
#[derive(Debug)]
pub enum Failure {
    NotElf,
    Corrupt(String),
    NotLivepatch(String),
    Layout(String),
}

impl Failure {
    pub(super) fn at(self, path: String) -> ModuleError {
        match self {
            Failure::NotElf => ModuleError::NotElf { path },
            Failure::Corrupt(why) => ModuleError::Corrupt { path, why },
            Failure::NotLivepatch(why) => ModuleError::NotLivepatch { path, why },
            Failure::Layout(why) => ModuleError::Layout { path, why },
        }
    }
}
