//! The kernel's livepatch messages from /dev/kmsg: when a transition
//! started, whether the kernel has signalled the remaining tasks or was
//! forced, and how the last transition ended. (Reversal is only logged at
//! debug level, so the tracer or sysfs must tell it.)
//!
//! kmsg timestamps are CLOCK_MONOTONIC, the clock of eBPF's
//! `bpf_ktime_get_ns`, so the two can be compared directly.
use std::{
    fs::{File, OpenOptions},
    io::{self, ErrorKind, Read},
    os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use crate::model::{Known, LivepatchMessage, LogEntry};

/// Every livepatch message still in the kernel's ring buffer. Needs root
/// unless `kernel.dmesg_restrict` is 0.
pub fn read_livepatch_log(root: &Path) -> Known<Vec<LogEntry>> {
    let path = root.join("dev/kmsg");
    let mut entries = Vec::new();
    match open_kmsg(&path).and_then(|mut file| read_records(&mut file, &mut entries)) {
        Ok(()) => Known::Value(entries),
        Err(e) => Known::unknown(format!("cannot read {}: {e}", path.display())),
    }
}

/// Follows the kernel log from a kept descriptor: each poll reads only the
/// records written since the last one, however full the ring buffer is.
/// (A fixture's plain file, replaced between polls, is read whole again.)
pub struct KernelLogFollower {
    path: PathBuf,
    /// The open /dev/kmsg, positioned after the last record read.
    kmsg: Option<File>,
    entries: Vec<LogEntry>,
}

impl KernelLogFollower {
    pub fn new(root: &Path) -> Self {
        KernelLogFollower {
            path: root.join("dev/kmsg"),
            kmsg: None,
            entries: Vec::new(),
        }
    }

    /// Every livepatch message so far, and how many of them are new.
    pub fn poll(&mut self) -> Known<(&[LogEntry], usize)> {
        let before = self.entries.len();
        let result = match &mut self.kmsg {
            Some(kmsg) => read_records(kmsg, &mut self.entries),
            None => open_kmsg(&self.path).and_then(|mut file| {
                self.entries.clear();
                read_records(&mut file, &mut self.entries)?;
                if file.metadata()?.file_type().is_char_device() {
                    self.kmsg = Some(file);
                }
                Ok(())
            }),
        };
        match result {
            Ok(()) => {
                let fresh = self.entries.len().saturating_sub(before);
                Known::Value((&self.entries, fresh))
            }
            Err(e) => {
                self.kmsg = None;
                Known::unknown(format!("cannot read {}: {e}", self.path.display()))
            }
        }
    }
}

/// The kernel's own /dev/kmsg, character device 1:11 (drivers/char/mem.c).
const KMSG_DEVICE: (u32, u32) = (1, 11);

/// /dev/kmsg, or a fixture's regular file standing in for it. Any other
/// device (/dev/zero would never run dry) or a FIFO is refused.
fn open_kmsg(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let metadata = file.metadata()?;
    let kind = metadata.file_type();
    let rdev = metadata.rdev();
    let device = (libc::major(rdev), libc::minor(rdev));
    if kind.is_file() || (kind.is_char_device() && device == KMSG_DEVICE) {
        Ok(file)
    } else {
        Err(io::Error::new(
            ErrorKind::InvalidInput,
            "neither the kernel log device (1:11) nor a regular file",
        ))
    }
}

/// More than the largest ring buffer (log_buf_len) holds: a poll reads no
/// further, and a follower goes on from there at the next one.
const KMSG_READ_MAX: usize = 64 << 20;

/// Appends the livepatch records up to the end of the buffer.
fn read_records(file: &mut File, entries: &mut Vec<LogEntry>) -> io::Result<()> {
    // One read returns one record; EAGAIN marks the end of the buffer.
    let mut record = vec![0u8; 8192];
    let mut total = 0;
    while total < KMSG_READ_MAX {
        match file.read(&mut record) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                total += n;
                entries.extend(parse_record(&String::from_utf8_lossy(&record[..n])));
            }
            // Records overwritten while reading: kmsg skips ahead.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The name in `...<marker><name>'...`.
fn quoted_after(text: &str, marker: &str) -> Option<String> {
    let (_, rest) = text.split_once(marker)?;
    let (name, _) = rest.split_once('\'')?;
    Some(name.to_owned())
}

/// Parses one kmsg record, `pri,seq,ts_usec,flags;message`.
pub fn parse_record(record: &str) -> Option<LogEntry> {
    let (header, text) = record.split_once(';')?;
    let timestamp_us = header.split(',').nth(2)?.parse().ok()?;
    let text = text.lines().next()?.trim();
    Some(LogEntry {
        timestamp_us,
        message: parse_message(text)?,
    })
}

fn parse_message(text: &str) -> Option<LivepatchMessage> {
    if text.contains("signaling remaining tasks") {
        return Some(LivepatchMessage::Signaling);
    }
    if text.contains("forcing remaining tasks to the patched state") {
        return Some(LivepatchMessage::Forcing);
    }
    if let Some(object) = quoted_after(text, "pre-patch callback failed for object '") {
        return Some(LivepatchMessage::PreCallbackFailed { object });
    }
    if let Some(patch) = quoted_after(text, "enabling patch '") {
        return Some(LivepatchMessage::Enabling { patch });
    }
    if let Some(patch) = quoted_after(text, "failed to enable patch '") {
        return Some(LivepatchMessage::Refused {
            patch,
            incompatible_states: false,
        });
    }
    if let Some(rest) = text.split_once("Livepatch patch (").map(|(_, rest)| rest) {
        if let Some((patch, _)) = rest.split_once(") is not compatible") {
            return Some(LivepatchMessage::Refused {
                patch: patch.to_owned(),
                incompatible_states: true,
            });
        }
    }
    let rest = text
        .find("livepatch: '")
        .map(|at| &text[at + "livepatch: '".len()..])?;
    let (patch, what) = rest.split_once("': ")?;
    let patch = patch.to_string();
    Some(match what.trim() {
        "starting patching transition" => LivepatchMessage::Starting {
            patch,
            unpatching: false,
        },
        "starting unpatching transition" => LivepatchMessage::Starting {
            patch,
            unpatching: true,
        },
        "patching complete" => LivepatchMessage::Complete {
            patch,
            unpatching: false,
        },
        "unpatching complete" => LivepatchMessage::Complete {
            patch,
            unpatching: true,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_recognised() {
        let parse = |text: &str| parse_record(&format!("4,9,100,-;{text}")).map(|e| e.message);
        assert_eq!(
            parse("livepatch: enabling patch 'klp_x'"),
            Some(LivepatchMessage::Enabling {
                patch: "klp_x".into()
            })
        );
        assert_eq!(
            parse("livepatch: pre-patch callback failed for object 'klp_test_target'"),
            Some(LivepatchMessage::PreCallbackFailed {
                object: "klp_test_target".into()
            })
        );
        assert_eq!(
            parse("livepatch: failed to enable patch 'klp_x'"),
            Some(LivepatchMessage::Refused {
                patch: "klp_x".into(),
                incompatible_states: false
            })
        );
        assert_eq!(
            parse(
                "livepatch: Livepatch patch (klp_y) is not compatible with the already installed livepatches."
            ),
            Some(LivepatchMessage::Refused {
                patch: "klp_y".into(),
                incompatible_states: true
            })
        );
    }

    #[test]
    fn livepatch_records_are_recognised() {
        let start = parse_record(
            "6,1234,15600123,-;livepatch: 'klp_test_patch_target': starting patching transition\n",
        )
        .unwrap();
        assert_eq!(start.timestamp_us, 15_600_123);
        assert_eq!(
            start.message,
            LivepatchMessage::Starting {
                patch: "klp_test_patch_target".into(),
                unpatching: false
            }
        );
        assert_eq!(
            parse_record("6,1,2,-;livepatch: signaling remaining tasks")
                .unwrap()
                .message,
            LivepatchMessage::Signaling
        );
        assert_eq!(
            parse_record("6,1,2,-;livepatch: 'p': unpatching complete")
                .unwrap()
                .message,
            LivepatchMessage::Complete {
                patch: "p".into(),
                unpatching: true
            }
        );
        assert_eq!(
            parse_record("4,1,2,-;livepatch: forcing remaining tasks to the patched state")
                .unwrap()
                .message,
            LivepatchMessage::Forcing
        );
    }

    #[test]
    fn other_records_and_garbage_are_ignored() {
        assert_eq!(parse_record("6,1,2,-;usb 1-1: new device"), None);
        assert_eq!(parse_record("garbage"), None);
        assert_eq!(
            parse_record("6,1,notanumber,-;livepatch: signaling remaining tasks"),
            None
        );
        assert_eq!(parse_record(""), None);
    }

    #[test]
    fn a_missing_kmsg_is_unknown_with_the_reason() {
        let log = read_livepatch_log(Path::new("/nonexistent-root"));
        assert!(matches!(log, Known::Unknown { unknown } if unknown.contains("dev/kmsg")));
    }
}
