use std::{path::Path, process::ExitCode};

use anyhow::{Result, bail};

use crate::cli::WatchArgs;

pub fn run(_root: &Path, _args: &WatchArgs) -> Result<ExitCode> {
    bail!("watch: not implemented yet")
}
