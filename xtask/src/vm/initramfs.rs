//! A cpio "newc" archive, the format the kernel unpacks as its initramfs.
use std::{
    collections::BTreeMap,
    fs,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

enum Entry {
    Dir,
    File { source: Content, mode: u32 },
    CharDevice { major: u32, minor: u32 },
}

enum Content {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// Files by guest path (without the leading `/`). Parent folders are
/// implied; a BTreeMap lists each folder before what it contains.
#[derive(Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// Copies host file `host` (symlinks followed) to guest path `guest`.
    pub fn file(&mut self, guest: &str, host: &Path, mode: u32) {
        self.insert(
            guest,
            Entry::File {
                source: Content::Host(host.to_path_buf()),
                mode,
            },
        );
    }

    pub fn bytes(&mut self, guest: &str, bytes: impl Into<Vec<u8>>, mode: u32) {
        self.insert(
            guest,
            Entry::File {
                source: Content::Bytes(bytes.into()),
                mode,
            },
        );
    }

    pub fn char_device(&mut self, guest: &str, major: u32, minor: u32) {
        self.insert(guest, Entry::CharDevice { major, minor });
    }

    pub fn dir(&mut self, guest: &str) {
        self.insert(guest, Entry::Dir);
    }

    fn insert(&mut self, guest: &str, entry: Entry) {
        let path = guest.trim_start_matches('/');
        let mut parent = Path::new(path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            self.entries
                .entry(dir.to_string_lossy().into_owned())
                .or_insert(Entry::Dir);
            parent = dir.parent();
        }
        self.entries.insert(path.to_string(), entry);
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let file =
            fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::new(file);
        for (ino, (name, entry)) in self.entries.iter().enumerate() {
            let ino = ino as u32 + 1;
            match entry {
                Entry::Dir => header(&mut out, ino, name, 0o040755, 0, 0)?,
                Entry::CharDevice { major, minor } => {
                    header(&mut out, ino, name, 0o020600, 0, (major << 8) | minor)?;
                }
                Entry::File { source, mode } => {
                    let bytes = match source {
                        Content::Host(host) => &fs::read(host)
                            .with_context(|| format!("cannot read {}", host.display()))?,
                        Content::Bytes(bytes) => bytes,
                    };
                    header(&mut out, ino, name, 0o100000 | mode, bytes.len(), 0)?;
                    data(&mut out, bytes)?;
                }
            }
        }
        header(&mut out, 0, "TRAILER!!!", 0, 0, 0)?;
        out.flush()?;
        Ok(())
    }
}

/// `rdev` packs major and minor as `major << 8 | minor`.
fn header(
    out: &mut impl Write,
    ino: u32,
    name: &str,
    mode: u32,
    size: usize,
    rdev: u32,
) -> io::Result<()> {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        size as u32,
        0, // devmajor
        0, // devminor
        rdev >> 8,
        rdev & 0xff,
        name.len() as u32 + 1,
        0, // check
    ];
    write!(out, "070701")?;
    for field in fields {
        write!(out, "{field:08x}")?;
    }
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    // The 110-byte header plus the name is padded to 4 bytes.
    pad(out, 110 + name.len() + 1)
}

fn data(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    out.write_all(bytes)?;
    pad(out, bytes.len())
}

fn pad(out: &mut impl Write, len: usize) -> io::Result<()> {
    out.write_all(&[0; 3][..(4 - len % 4) % 4])
}
