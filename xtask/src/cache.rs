//! Where downloads and tools built by xtask are kept between runs.
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// `$KLPSCOPE_CACHE`, else `$XDG_CACHE_HOME/klpscope`, else
/// `~/.cache/klpscope`. Outside the work tree, so that a fresh clone on the
/// same machine reuses it.
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KLPSCOPE_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("klpscope")
}

/// The workspace root, from xtask's own manifest location.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The file that marks a cache folder as finished.
pub const COMPLETE: &str = "complete";

/// Moves a finished `staging` folder to `dir`, marking it complete. When
/// another run published the same work first, keeps theirs.
pub fn publish(staging: &Path, dir: &Path) -> Result<()> {
    std::fs::write(staging.join(COMPLETE), "")?;
    if dir.exists() && !dir.join(COMPLETE).exists() {
        // Left by an interrupted run of an older layout.
        std::fs::remove_dir_all(dir)?;
    }
    if std::fs::rename(staging, dir).is_err() {
        std::fs::remove_dir_all(staging)?;
        if !dir.join(COMPLETE).exists() {
            bail!("cannot move {} to {}", staging.display(), dir.display());
        }
    }
    Ok(())
}
