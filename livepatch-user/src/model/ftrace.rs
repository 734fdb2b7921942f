//! What ftrace holds: a livepatch needs a function's ftrace site with
//! IPMODIFY, which only one user at a time may have.
use schemars::JsonSchema;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct FtraceUse {
    pub function: String,
    /// None for vmlinux.
    pub module: Option<String>,
    /// How many ftrace users are attached.
    pub users: u32,
    pub ipmodify: bool,
    pub direct: bool,
}
