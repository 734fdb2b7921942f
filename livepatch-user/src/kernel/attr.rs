//! Reading the files of sysfs and procfs. Every reader opens them here, so
//! that what stands at a path is never trusted: a FIFO cannot hold up the
//! open, a device cannot stream forever, and no file is read past a cap.
//! For the one-value files, a missing file and a refused read mean different
//! things: the object vanished, or the value is unknown to us.
use std::{
    fs::{File, OpenOptions},
    io::{self, Read},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use crate::model::Known;

/// What became of one attempt to read an attribute file.
#[derive(Debug)]
pub enum Attr {
    /// The file's text, trimmed.
    Text(String),
    /// The file (or its directory) does not exist: absent on this kernel, or
    /// removed while we were reading.
    Missing,
    /// It exists but could not be read (EACCES, EISDIR, ...): the reason.
    Unreadable(String),
}

/// The attribute files klpscope reads hold a few bytes; anything longer is
/// not what we expect and is cut, not trusted.
const ATTR_MAX: u64 = 4096;

/// Opens a kernel file to read. O_NONBLOCK: opening a FIFO would wait for
/// a writer. Only a regular file is kept (what sysfs and procfs files are),
/// so that a FIFO or a device such as /dev/zero planted at the path is
/// refused before any read.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if file.metadata()?.file_type().is_file() {
        Ok(file)
    } else {
        Err(not_regular())
    }
}

/// The reason given for a path that holds something other than a regular
/// file.
pub fn not_regular() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")
}

/// A whole kernel file, cut at `cap` bytes.
pub fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_regular(path)?.take(cap).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A whole kernel text file, cut at `cap` bytes; bytes that are not UTF-8
/// become U+FFFD, for the parser to reject rather than an I/O error.
pub fn read_text_capped(path: &Path, cap: u64) -> io::Result<String> {
    read_capped(path, cap).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

pub fn read_attr(path: &Path) -> Attr {
    match read_text_capped(path, ATTR_MAX) {
        Ok(text) => Attr::Text(text.trim().to_owned()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Attr::Missing,
        Err(error) => Attr::Unreadable(format!("{}: {error}", path.display())),
    }
}

impl Attr {
    /// The value parsed with `parse`, or why there is none. `what` names the
    /// expected form in the reason ("0 or 1").
    pub fn parse<T>(
        self,
        path: &Path,
        what: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Known<T> {
        match self {
            Attr::Text(text) => match parse(&text) {
                Some(value) => Known::Value(value),
                None => Known::unknown(format!(
                    "{}: expected {what}, found {:?}",
                    path.display(),
                    shorten(&text)
                )),
            },
            Attr::Missing => Known::unknown(format!("{}: no such file", path.display())),
            Attr::Unreadable(reason) => Known::unknown(reason),
        }
    }
}

/// A sysfs boolean: the kernel writes `%d`, so only 0 and 1 are valid.
pub fn parse_flag(text: &str) -> Option<bool> {
    match text {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// Keeps reasons one line long when a file holds garbage.
fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}
