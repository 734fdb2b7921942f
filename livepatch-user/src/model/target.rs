//! A function as livepatch names it: in its object, with its sympos. What
//! a patch redirects, what check looks up and what the counters count.
use std::fmt;

use schemars::JsonSchema;
use serde::Serialize;

/// How sysfs and module files name the kernel's own object.
pub const VMLINUX: &str = "vmlinux";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
pub struct Target {
    /// The module it is in; None for vmlinux.
    pub object: Option<String>,
    pub name: String,
    /// Which of several symbols of that name in its object, from 1, as
    /// livepatch counts them; 0 (or 1) for the only one.
    pub sympos: u32,
}

impl Target {
    pub fn vmlinux(name: &str) -> Self {
        Target {
            object: None,
            name: name.to_owned(),
            sympos: 0,
        }
    }

    /// `object` as sysfs and module files name it.
    pub fn in_object(object: &str, name: &str, sympos: u32) -> Self {
        Target {
            object: (object != VMLINUX).then(|| object.to_owned()),
            name: name.to_owned(),
            sympos,
        }
    }

    pub fn object_name(&self) -> &str {
        self.object.as_deref().unwrap_or(VMLINUX)
    }
}

/// `name`, `module:name`, with `,sympos` when it picks one of several.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(module) = &self.object {
            write!(f, "{module}:")?;
        }
        f.write_str(&self.name)?;
        if self.sympos > 1 {
            write!(f, ",{}", self.sympos)?;
        }
        Ok(())
    }
}
