//! `cargo xtask fixtures`: the livepatch modules in each producer's layout
//! that livepatch-user's host tests decode (tests/check_module.rs), built as
//! the lab builds them (modules.rs, with producers.rs' init code) against
//! Debian's 6.12 and 7.x kernels, stripped of debug info and written to
//! livepatch-user/tests/fixtures/producers/ with `kernels.txt`, the release
//! each was built for. Run by hand after changing tests/modules; the output
//! is checked in.
use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result};

use super::{Series, kernel, modules};
use crate::{build, cache};

/// Per kernel series, the modules taken from its build.
const FIXTURES: [(Series, &[&str]); 2] = [
    (Series::V6_12, &["klp_test_kpatch"]),
    (Series::V7, &["klp_test_kpatch", "klp_test_klpbuild"]),
];

pub fn run() -> Result<()> {
    let out = cache::workspace_root().join("livepatch-user/tests/fixtures/producers");
    fs::create_dir_all(&out)?;
    let mut kernels = String::new();
    for (series, names) in FIXTURES {
        let kernel = kernel::prepare(series)?;
        let built = modules::build(&kernel)?;
        for name in names {
            let module = built
                .iter()
                .find(|m| m.file_stem().is_some_and(|s| s == *name))
                .with_context(|| {
                    format!(
                        "no {name}.ko among the modules built for {}",
                        kernel.release()
                    )
                })?;
            strip_debug(
                module,
                &out.join(format!("{name}-{}.ko", series.name())),
                &[],
            )?;
        }
        kernels.push_str(&format!("{} {}\n", series.name(), kernel.release()));
    }
    // klp-build before 7.2 named its sections __klp_objects and __klp_funcs:
    // the 7.x module with those names, which no kernel loads.
    strip_debug(
        &out.join(format!("klp_test_klpbuild-{}.ko", Series::V7.name())),
        &out.join("klp_test_klpbuild-6.19-names.ko"),
        &[
            "--rename-section",
            ".init.klp_objects=__klp_objects",
            "--rename-section",
            ".init.klp_funcs=__klp_funcs",
        ],
    )?;
    fs::write(out.join("kernels.txt"), kernels)?;
    println!("fixtures: written to {}", out.display());
    Ok(())
}

fn strip_debug(from: &Path, to: &Path, more: &[&str]) -> Result<()> {
    build::checked(
        Command::new("objcopy")
            .arg("--strip-debug")
            .args(more)
            .arg(from)
            .arg(to),
        &format!("objcopy of {}", from.display()),
    )
}
