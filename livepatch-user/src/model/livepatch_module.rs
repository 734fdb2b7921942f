//! What a livepatch module's file says of the patch it carries.
use schemars::JsonSchema;
use serde::Serialize;

/// Atomic replace, as far as the file tells. In JSON a bool where the file
/// says it (a static klp_patch), an object naming the default where init
/// code sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Replace {
    /// Written in the file's klp_patch.
    InFile(bool),
    /// Set by the module's init code, which the file holds only as
    /// machine code: what the producer's init code does by default, and
    /// how a build turns it off.
    SetAtLoad { default: &'static str },
}
