//! Where downloads and tools built by xtask are kept between runs.
use std::path::{Path, PathBuf};

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
