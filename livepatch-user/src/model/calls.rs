//! Calls of patched functions, counted per version.
use schemars::JsonSchema;
use serde::Serialize;

/// Total calls so far of one function, per version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct CallCount {
    pub function: String,
    pub old: u64,
    pub new: u64,
}
