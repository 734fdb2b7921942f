use std::{path::Path, process::ExitCode};

use anyhow::{Result, bail};

use crate::cli::DiagnoseArgs;

pub fn run(_root: &Path, _args: &DiagnoseArgs) -> Result<ExitCode> {
    bail!("diagnose: not implemented yet")
}
