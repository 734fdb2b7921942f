//! The kernel's livepatch messages, as the kernel log holds them.
use schemars::JsonSchema;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LivepatchMessage {
    /// "enabling patch '<patch>'": the kernel sets the patch up (sysfs,
    /// callbacks, code) before it starts the transition, or refuses it.
    Enabling { patch: String },
    /// "'<patch>': starting patching transition" (or unpatching).
    Starting { patch: String, unpatching: bool },
    /// "'<patch>': patching complete" (or unpatching).
    Complete { patch: String, unpatching: bool },
    /// "signaling remaining tasks".
    Signaling,
    /// "forcing remaining tasks to the patched state".
    Forcing,
    /// "pre-patch callback failed for object '<object>'": the load that
    /// follows is refused.
    PreCallbackFailed { object: String },
    /// The kernel refused to enable a patch: "failed to enable patch
    /// '<patch>'", or "Livepatch patch (<patch>) is not compatible with the
    /// already installed livepatches.".
    Refused {
        patch: String,
        incompatible_states: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LogEntry {
    /// Microseconds since boot, CLOCK_MONOTONIC.
    pub timestamp_us: u64,
    pub message: LivepatchMessage,
}
