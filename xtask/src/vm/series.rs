//! The kernels the lab boots: Debian's packaged series, and the lab's own
//! builds from Debian's kernel source.
use clap::ValueEnum;

use super::apt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Series {
    #[value(name = "6.12")]
    V6_12,
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "5.10")]
    V5_10,
    /// Linux 7.x from trixie-backports.
    #[value(name = "7")]
    V7,
    /// Whatever Debian unstable ships.
    #[value(name = "sid")]
    Sid,
    /// The lab's own 6.12, built from Debian's linux-source-6.12 by
    /// `cargo xtask real-fixtures` (real.rs) for kpatch-build's module.
    #[value(name = "lab-6.12")]
    Lab6_12,
    /// The lab's own 7.3, built from Debian's linux-source-7.3 by
    /// `cargo xtask real-fixtures` for klp-build's module.
    #[value(name = "lab-7.3")]
    Lab7_3,
}

impl Series {
    /// `all`: the kernels users run on Debian's stable releases. sid is
    /// opt-in: it moves daily and may break for reasons of its own.
    pub const ALL: [Series; 4] = [Series::V6_12, Series::V6_1, Series::V5_10, Series::V7];

    pub fn name(self) -> &'static str {
        match self {
            Series::V6_12 => "6.12",
            Series::V6_1 => "6.1",
            Series::V5_10 => "5.10",
            Series::V7 => "7",
            Series::Sid => "sid",
            Series::Lab6_12 => "lab-6.12",
            Series::Lab7_3 => "lab-7.3",
        }
    }

    pub(super) fn archive(self) -> &'static apt::Archive {
        match self {
            Series::V6_12 | Series::V6_1 | Series::Lab6_12 => &apt::BOOKWORM,
            Series::V5_10 => &apt::BULLSEYE,
            Series::V7 | Series::Lab7_3 => &apt::TRIXIE_BACKPORTS,
            Series::Sid => &apt::SID,
        }
    }

    /// The metapackage that always depends on the series' current image.
    pub(super) fn metapackage(self) -> &'static str {
        match self {
            Series::V6_12 => "linux-image-6.12-amd64",
            _ => "linux-image-amd64",
        }
    }

    /// Another series of the lab, whose test modules a guest of this one
    /// gets as modules built for another kernel: `check --module` must
    /// refuse them by their vermagic. Near in age, so that it is the kind
    /// of mistake a rollout makes.
    pub fn neighbour(self) -> Series {
        match self {
            Series::V6_12 => Series::V6_1,
            Series::V6_1 | Series::V5_10 | Series::V7 => Series::V6_12,
            Series::Sid => Series::V7,
            // Debian's packaged kernel of the same series: the real
            // modules' vermagic must not pass there.
            Series::Lab6_12 => Series::V6_12,
            Series::Lab7_3 => Series::V7,
        }
    }

    /// What the ABI name starts with (sid: any version).
    pub(super) fn prefix(self) -> &'static str {
        match self {
            Series::V6_12 => "6.12.",
            Series::V6_1 => "6.1.",
            Series::V5_10 => "5.10.",
            Series::V7 | Series::Lab7_3 => "7.",
            Series::Sid => "",
            Series::Lab6_12 => "6.12.",
        }
    }
}
