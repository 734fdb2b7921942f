use std::{path::Path, process::ExitCode};

use anyhow::{Result, bail};

use crate::cli::CheckArgs;

pub fn run(_root: &Path, _args: &CheckArgs) -> Result<ExitCode> {
    bail!("check: not implemented yet")
}
