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

/// FNV-1a over a cache folder's inputs: a key that stays the same across
/// Rust releases, unlike std's hasher.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn add(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        // Separates consecutive inputs: ("ab", "c") differs from ("a", "bc").
        self.0 = (self.0 ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}
