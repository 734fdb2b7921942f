//! The running kernel's build configuration: /proc/config.gz (it is the
//! running kernel's by construction) or else where Debian installs it:
//! /boot/config-<release>, /usr/lib/modules/<release>/config.
use std::{
    collections::HashMap,
    io::{self, Read},
    path::Path,
};

use flate2::read::GzDecoder;

use super::attr::{open_regular, read_capped};

#[derive(Debug)]
pub struct KernelConfig {
    /// Where it was read, as the kernel names it (`/proc/config.gz`).
    pub source: String,
    options: HashMap<String, String>,
}

impl KernelConfig {
    /// The option's value (`y`, `m`, a number, a string); None when it is not
    /// set. Kconfig omits options whose dependencies are unmet, so absent and
    /// `# CONFIG_X is not set` mean the same.
    pub fn get(&self, option: &str) -> Option<&str> {
        self.options.get(option).map(String::as_str)
    }

    pub fn enabled(&self, option: &str) -> bool {
        matches!(self.get(option), Some("y" | "m"))
    }

    pub fn parse(source: impl Into<String>, text: &str) -> Self {
        let options = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .filter(|(name, _)| name.starts_with("CONFIG_"))
            .map(|(name, value)| (name.to_owned(), value.trim_matches('"').to_owned()))
            .collect();
        KernelConfig {
            source: source.into(),
            options,
        }
    }
}

/// The config, or why none could be read (one line naming every place
/// tried).
pub fn read_kernel_config(root: &Path, release: Option<&str>) -> Result<KernelConfig, String> {
    let mut tried = Vec::new();
    match read_gz(&root.join("proc/config.gz")) {
        Ok(text) => return Ok(KernelConfig::parse("/proc/config.gz", &text)),
        Err(error) => tried.push(format!("/proc/config.gz: {error}")),
    }
    // Debian puts the config in /boot; from 7.x it also ships in the
    // modules folder (/boot may then hold none).
    let installed = release.into_iter().flat_map(|release| {
        [
            format!("/boot/config-{release}"),
            format!("/usr/lib/modules/{release}/config"),
        ]
    });
    for source in installed {
        match read_capped(&root.join(source.trim_start_matches('/')), CONFIG_MAX) {
            Ok(bytes) => {
                return Ok(KernelConfig::parse(
                    source,
                    &String::from_utf8_lossy(&bytes),
                ));
            }
            Err(error) => tried.push(format!("{source}: {error}")),
        }
    }
    Err(format!("no kernel config found ({})", tried.join("; ")))
}

/// A kernel config is some 300 kB; a gzip bomb or a device stops here.
const CONFIG_MAX: u64 = 16 << 20;

fn read_gz(path: &Path) -> io::Result<String> {
    let mut bytes = Vec::new();
    GzDecoder::new(open_regular(path)?.take(CONFIG_MAX))
        .take(CONFIG_MAX)
        .read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_unset_and_absent_options() {
        let config = KernelConfig::parse(
            "test",
            "# comment\nCONFIG_LIVEPATCH=y\n# CONFIG_MODULES is not set\nCONFIG_LOCALVERSION=\"-x\"\nCONFIG_M=m\ngarbage\n",
        );
        assert!(config.enabled("CONFIG_LIVEPATCH"));
        assert!(config.enabled("CONFIG_M"));
        assert!(!config.enabled("CONFIG_MODULES"));
        assert!(!config.enabled("CONFIG_ABSENT"));
        assert_eq!(config.get("CONFIG_LOCALVERSION"), Some("-x"));
    }
}
