//! `klpscope metrics`: one reading of the livepatch state as a Prometheus
//! exposition, on stdout or written atomically for node_exporter's textfile
//! collector.
use std::{
    fs::{self, Permissions},
    io::{self, Write},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::ExitCode,
};

use anyhow::{Context, Result, bail};
use tempfile::NamedTempFile;

use crate::{
    analysis::fleet_metrics::FleetMetrics,
    cli::MetricsArgs,
    commands::output,
    feed::snapshot::read_snapshot,
    kernel::{
        ReadError, clock::monotonic_ns, kernel_log::read_livepatch_log, read_kernel, read_patches,
    },
    model::{Known, Snapshot},
    views::exposition,
};

pub fn run(root: &Path, args: &MetricsArgs) -> Result<ExitCode> {
    let snapshot = read(root)?;
    let metrics = FleetMetrics::from_snapshot(&snapshot, monotonic_ns() / 1000);
    let text =
        exposition::render(&metrics, env!("CARGO_PKG_VERSION")).context("encoding the metrics")?;
    match &args.output {
        Some(path) => write_atomically(path, &text)?,
        None => output::print(&text)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The whole snapshot only while a patch is in transition: scanning every
/// thread of an idle machine would tell nothing more, and this runs every
/// minute on every host.
fn read(root: &Path) -> Result<Snapshot> {
    let patches = read_patches(root)
        .map_err(|source| ReadError::new(root, "sys/kernel/livepatch", source))?;
    if patches.iter().any(|p| p.transition == Known::Value(true)) {
        return Ok(read_snapshot(root)?);
    }
    Ok(Snapshot {
        kernel: read_kernel(root),
        patches,
        tasks: Vec::new(),
        log: read_livepatch_log(root),
    })
}

/// A temporary file beside `path`, renamed over it: the textfile collector
/// never reads half a file. Its name does not end in `.prom`, so the
/// collector skips it; it is made readable to all (the collector runs as
/// its own user) before the rename. Only a regular file is replaced: run
/// as root, the rename would as well replace /dev/null, a device or a
/// symlink to anything.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let cannot = || format!("cannot write {}", path.display());
    match fs::symlink_metadata(path) {
        Ok(existing) if !existing.is_file() => {
            bail!(
                "cannot write {}: not a regular file, left as it is",
                path.display()
            )
        }
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            return Err(error).with_context(cannot);
        }
        _ => {}
    }
    let mut file = NamedTempFile::new_in(dir).with_context(cannot)?;
    file.write_all(text.as_bytes()).with_context(cannot)?;
    file.as_file().sync_all().with_context(cannot)?;
    fs::set_permissions(file.path(), Permissions::from_mode(0o644)).with_context(cannot)?;
    file.persist(path)
        .map_err(|e| e.error)
        .with_context(cannot)?;
    Ok(())
}
