use std::borrow::Cow;

use serde::Serialize;

use super::LogEntry;
use schemars::JsonSchema;

/// A value the reader could not get, and why (not root, malformed, gone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Known<T> {
    Value(T),
    // Borrowed when the reason is a constant: a scan of 10k threads
    // that all lack patch_state then allocates nothing for it.
    Unknown { unknown: Cow<'static, str> },
}

impl<T> Known<T> {
    pub fn unknown(reason: impl Into<Cow<'static, str>>) -> Self {
        Known::Unknown {
            unknown: reason.into(),
        }
    }

    pub fn value(&self) -> Option<&T> {
        match self {
            Known::Value(v) => Some(v),
            Known::Unknown { .. } => None,
        }
    }
}

/// Everything klpscope knows about the kernel's livepatch state at one time.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Snapshot {
    pub kernel: Kernel,
    pub patches: Vec<Patch>,
    pub tasks: Vec<Task>,
    /// The kernel's livepatch messages, read with the rest.
    pub log: Known<Vec<LogEntry>>,
}

#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct Kernel {
    pub release: String,
    #[serde(rename = "livepatch_supported")]
    pub livepatch: LivepatchSupport,
    /// Why livepatching (or klpscope's view of it) is limited here, one line
    /// each.
    pub problems: Vec<String>,
    pub reliable_stacktrace: Option<bool>,
    pub ftrace_enabled: Option<bool>,
    /// The active lockdown mode: none, integrity or confidentiality.
    pub lockdown: Option<String>,
    pub taint: Vec<TaintFlag>,
    pub btf: bool,
    pub module_sig_enforce: Option<bool>,
    pub tracefs: Option<String>,
}

/// Whether this kernel can livepatch at all; if not, the one line that
/// says why (also among the kernel's `problems`). Serialized as the bool
/// `livepatch_supported`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LivepatchSupport {
    Supported,
    Unsupported { why: String },
}

impl LivepatchSupport {
    pub fn is_supported(&self) -> bool {
        *self == LivepatchSupport::Supported
    }

    pub fn unsupported(&self) -> Option<&str> {
        match self {
            LivepatchSupport::Supported => None,
            LivepatchSupport::Unsupported { why } => Some(why),
        }
    }
}

impl Default for LivepatchSupport {
    /// Nothing read yet: nothing known to work.
    fn default() -> Self {
        LivepatchSupport::Unsupported {
            why: "livepatch unsupported: the kernel was not read".to_owned(),
        }
    }
}

impl Serialize for LivepatchSupport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(self.is_supported())
    }
}

impl JsonSchema for LivepatchSupport {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        bool::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        bool::json_schema(generator)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct TaintFlag {
    pub letter: char,
    pub bit: u32,
    pub meaning: &'static str,
}

/// One livepatch, from /sys/kernel/livepatch/<name>.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Patch {
    pub name: String,
    pub enabled: Known<bool>,
    pub transition: Known<bool>,
    pub force: Known<bool>,
    /// None on kernels before 6.11, which have no `replace` file.
    pub replace: Option<Known<bool>>,
    /// The patch's place in the kernel's patch stack, from 1 (oldest);
    /// later patches' functions run in place of earlier ones'. None on
    /// kernels before 7.x, which have no `stack_order` file.
    pub stack_order: Option<Known<u32>>,
    pub objects: Vec<PatchObject>,
    /// The patch's directory vanished while it was being read.
    pub gone: bool,
}

/// A patched object: `vmlinux` or a module name.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct PatchObject {
    pub name: String,
    pub patched: Known<bool>,
    pub functions: Vec<PatchFunction>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PatchFunction {
    pub name: String,
    /// The symbol's position among same-named symbols in its object. sysfs
    /// shows 1 for a unique symbol (a patch's sympos 0).
    pub sympos: u32,
}

/// One thread, from /proc/<pid>/task/<tid>.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Task {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub kthread: bool,
    /// The scheduler state letter from `stat` (R, S, D, ...).
    pub state: char,
    pub patch_state: Known<PatchState>,
    /// Kernel stack from /proc/.../stack: needs root.
    pub stack: Known<Vec<StackFrame>>,
}

impl Task {
    /// Read while it ran on a CPU: a live task's kernel stack always holds
    /// a frame, at least the scheduler's, but the unwinder does not walk a
    /// task running elsewhere and gives none (its state letter, read a
    /// moment apart, may already say asleep). An exited task has no stack
    /// left.
    pub fn caught_on_a_cpu(&self) -> bool {
        self.stack.value().is_some_and(Vec::is_empty) && !matches!(self.state, 'Z' | 'X')
    }
}

/// One thread's patch_state alone: what the once-a-second scan reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ThreadPatchState {
    pub pid: u32,
    pub tid: u32,
    pub patch_state: Known<PatchState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PatchState {
    /// -1: no transition in progress.
    Idle,
    /// 0: the task still runs the old (unpatched) code.
    Unpatched,
    /// 1: the task runs the new (patched) code.
    Patched,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct StackFrame {
    pub function: String,
    pub offset: u64,
    pub size: u64,
    pub module: Option<String>,
}

/// As the kernel prints it in /proc/<pid>/stack: `func+0x1c/0x80 [module]`.
impl std::fmt::Display for StackFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{:#x}/{:#x}", self.function, self.offset, self.size)?;
        match &self.module {
            Some(module) => write!(f, " [{module}]"),
            None => Ok(()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Patching,
    Unpatching,
}

impl Direction {
    /// The patch_state every task must reach.
    pub fn target(self) -> PatchState {
        match self {
            Direction::Patching => PatchState::Patched,
            Direction::Unpatching => PatchState::Unpatched,
        }
    }

    /// Where a reversal takes the transition.
    pub fn opposite(self) -> Self {
        match self {
            Direction::Patching => Direction::Unpatching,
            Direction::Unpatching => Direction::Patching,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Patching => "patching",
            Direction::Unpatching => "unpatching",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Transition {
    pub patch: String,
    pub direction: Direction,
    pub tasks_total: usize,
    pub tasks_pending: usize,
}
