//! Reading the one-value files of sysfs and procfs, where a missing file and
//! a refused read mean different things: the object vanished, or the value is
//! unknown to us.
use std::{
    fs::File,
    io::{self, Read},
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

pub fn read_attr(path: &Path) -> Attr {
    let mut text = String::new();
    let result = File::open(path).and_then(|file| {
        // Bytes, not `read_to_string`: garbage must reach the parser as text
        // it can reject, not as an I/O error.
        let mut bytes = Vec::new();
        file.take(ATTR_MAX).read_to_end(&mut bytes)?;
        text = String::from_utf8_lossy(&bytes).trim().to_owned();
        Ok(())
    });
    match result {
        Ok(()) => Attr::Text(text),
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
