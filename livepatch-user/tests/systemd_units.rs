//! The systemd units the package ships (contrib/systemd): valid to
//! `systemd-analyze verify`, confined as `systemd-analyze security` rates
//! them, installed by the package and enabled by nobody but the admin.
//! systemd-analyze comes with Debian's systemd package, which `cargo xtask
//! test` installs when it is missing.
use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::{Command, Output},
};

const UNITS: [&str; 3] = [
    "klpscope-serve.service",
    "klpscope-metrics.service",
    "klpscope-metrics.timer",
];

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd")
}

/// The units as shipped, but with ExecStart on this build's binary: verify
/// checks that the program exists, and /usr/bin/klpscope may not here.
fn units_here() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for unit in UNITS {
        let text = fs::read_to_string(contrib().join(unit)).unwrap();
        assert!(
            !unit.ends_with(".service") || text.contains("ExecStart=/usr/bin/klpscope "),
            "{unit} runs the packaged binary"
        );
        let here = text.replace("/usr/bin/klpscope", env!("CARGO_BIN_EXE_klpscope"));
        fs::write(dir.path().join(unit), here).unwrap();
    }
    dir
}

fn systemd_analyze(args: &[&str]) -> Output {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(output) => output,
        Err(error) if error.kind() == ErrorKind::NotFound => panic!(
            "systemd-analyze is not installed: it comes from Debian's systemd package \
             (`cargo xtask test` installs it, or `apt-get install systemd`)"
        ),
        Err(error) => panic!("cannot run systemd-analyze: {error}"),
    }
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let dir = units_here();
    let paths: Vec<String> = UNITS
        .iter()
        .map(|unit| dir.path().join(unit).display().to_string())
        .collect();
    // The manual pages come with the package, not with this build.
    let mut args = vec!["verify", "--man=no"];
    args.extend(paths.iter().map(String::as_str));
    let output = systemd_analyze(&args);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    assert!(
        !said.contains(dir.path().to_str().unwrap()),
        "no warning: {said}"
    );
}

/// Each service's exposure as `systemd-analyze security` rates it (0 to 10,
/// lower is better), at most `ceiling`, and the confinement the README
/// names in place.
#[test]
fn the_services_are_confined() {
    let dir = units_here();
    for (unit, ceiling) in [
        ("klpscope-serve.service", 4.0),
        ("klpscope-metrics.service", 3.0),
    ] {
        let path = dir.path().join(unit).display().to_string();
        let output = systemd_analyze(&["security", "--offline=yes", "--no-pager", &path]);
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{report}");
        let exposure: f64 = report
            .lines()
            .find_map(|line| {
                line.split_once("Overall exposure level for ")?
                    .1
                    .split(' ')
                    .nth(1)
            })
            .and_then(|level| level.parse().ok())
            .unwrap_or_else(|| panic!("no overall exposure in: {report}"));
        assert!(
            exposure <= ceiling,
            "{unit}: {exposure} > {ceiling}\n{report}"
        );
        for held in [
            "NoNewPrivileges=",
            "ProtectSystem=",
            "ProtectHome=",
            "PrivateTmp=",
            "ProtectKernelTunables=",
            "RestrictAddressFamilies=~AF_PACKET",
            "RestrictAddressFamilies=~AF_NETLINK",
            "RestrictNamespaces=~user",
            "CapabilityBoundingSet=~CAP_SYS_MODULE",
            "CapabilityBoundingSet=~CAP_NET_ADMIN",
            "CapabilityBoundingSet=~CAP_SET(UID|GID|PCAP)",
            "MemoryDenyWriteExecute=",
            "SystemCallFilter=~@mount",
            "SystemCallFilter=~@module",
        ] {
            let line = format!("✓ {held}");
            assert!(
                report.lines().any(|l| l.starts_with(&line)),
                "{unit}: {held} not held\n{report}"
            );
        }
    }
}

/// The package installs the units, and nothing enables or starts them:
/// no maintainer script (cargo-deb writes those only for `systemd-units`).
#[test]
fn the_package_installs_the_units_disabled() {
    let manifest =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    for unit in UNITS {
        let asset =
            format!("[\"../contrib/systemd/{unit}\", \"usr/lib/systemd/system/\", \"644\"]");
        assert!(manifest.contains(&asset), "{unit} is not among the assets");
    }
    assert!(
        !manifest.contains("systemd-units"),
        "the package enables no unit"
    );
    assert!(!manifest.contains("maintainer-scripts"));
}
