use std::{path::Path, process::ExitCode};

use anyhow::{Result, bail};

use crate::cli::StatusArgs;

pub fn run(_root: &Path, _args: &StatusArgs) -> Result<ExitCode> {
    bail!("status: not implemented yet")
}
