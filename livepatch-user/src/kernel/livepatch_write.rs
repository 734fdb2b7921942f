//! The only writes klpscope makes to the kernel: turning a transition
//! around (`enabled`) and forcing it (`force`). Each is made only if the
//! patch is still in the transition the user confirmed: same patch, still
//! in transition, same direction. Between the question and the answer the
//! transition may have completed, reversed or gone; writing then would do
//! something the user never agreed to (0 to `enabled` of an applied patch
//! starts disabling it).
use std::{fmt, fs::OpenOptions, io::Write, path::Path};

use super::sysfs_livepatch::{livepatch_dir, read_patch};
use crate::model::{Direction, Known};

/// A write the user confirmed, with the transition it was confirmed
/// against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransitionWrite {
    /// Write the opposite goal to `enabled`: the transition that was going
    /// `from` turns around.
    Reverse { patch: String, from: Direction },
    /// Write 1 to `force`: every remaining task is marked switched.
    Force { patch: String, direction: Direction },
}

impl TransitionWrite {
    pub fn patch(&self) -> &str {
        match self {
            TransitionWrite::Reverse { patch, .. } | TransitionWrite::Force { patch, .. } => patch,
        }
    }

    /// The direction of the transition the user saw when confirming.
    pub fn confirmed_direction(&self) -> Direction {
        match self {
            TransitionWrite::Reverse { from, .. } => *from,
            TransitionWrite::Force { direction, .. } => *direction,
        }
    }

    fn file_and_value(&self) -> (&'static str, &'static str) {
        match self {
            TransitionWrite::Reverse { from, .. } => match from.opposite() {
                Direction::Patching => ("enabled", "1"),
                Direction::Unpatching => ("enabled", "0"),
            },
            TransitionWrite::Force { .. } => ("force", "1"),
        }
    }
}

/// What was written, as one line for the user.
#[derive(Debug, PartialEq, Eq)]
pub struct Written(pub String);

/// Why nothing was written.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefused {
    #[error("nothing written: patch {patch} is gone")]
    PatchGone { patch: String },
    #[error("nothing written: {patch}'s transition has ended ({state})")]
    TransitionEnded { patch: String, state: String },
    #[error(
        "nothing written: {patch}'s transition turned around (now {now}, confirmed {confirmed})"
    )]
    DirectionChanged {
        patch: String,
        now: Direction,
        confirmed: Direction,
    },
    #[error("nothing written: cannot tell {patch}'s state ({why})")]
    Unknown { patch: String, why: String },
    #[error("cannot write {value} to {path}: {error}")]
    Io {
        value: &'static str,
        path: String,
        error: String,
    },
}

/// Re-reads the patch and writes only if it is still in the confirmed
/// transition.
pub fn write_confirmed(root: &Path, write: &TransitionWrite) -> Result<Written, WriteRefused> {
    let name = write.patch();
    let patch = read_patch(root, name);
    let unknown = |why: &str| WriteRefused::Unknown {
        patch: name.to_owned(),
        why: why.to_owned(),
    };
    if patch.gone {
        return Err(WriteRefused::PatchGone {
            patch: name.to_owned(),
        });
    }
    match &patch.transition {
        Known::Value(true) => {}
        Known::Value(false) => {
            let state = match patch.enabled {
                Known::Value(true) => "the patch is applied",
                Known::Value(false) => "the patch is disabled",
                Known::Unknown { .. } => "no transition in progress",
            };
            return Err(WriteRefused::TransitionEnded {
                patch: name.to_owned(),
                state: state.to_owned(),
            });
        }
        Known::Unknown { unknown: reason } => return Err(unknown(reason)),
    }
    // While in transition, `enabled` holds the transition's goal.
    let now = match &patch.enabled {
        Known::Value(true) => Direction::Patching,
        Known::Value(false) => Direction::Unpatching,
        Known::Unknown { unknown: reason } => return Err(unknown(reason)),
    };
    let confirmed = write.confirmed_direction();
    if now != confirmed {
        return Err(WriteRefused::DirectionChanged {
            patch: name.to_owned(),
            now,
            confirmed,
        });
    }
    let (file, value) = write.file_and_value();
    let path = livepatch_dir(root).join(name).join(file);
    // No create, no truncate: a sysfs attribute takes one write; a file
    // that is not there must not be made.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut attribute| attribute.write_all(value.as_bytes()))
        .map_err(|error| WriteRefused::Io {
            value,
            path: path.display().to_string(),
            error: error.to_string(),
        })?;
    Ok(Written(format!("wrote {value} to {}", path.display())))
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
