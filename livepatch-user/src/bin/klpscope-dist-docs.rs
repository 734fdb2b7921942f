//! `klpscope-dist-docs DIR`: klpscope's manual pages (DIR/man, one per
//! command, gzipped as Debian installs them) and its bash, zsh and fish
//! completion scripts (DIR/completions, named as each shell looks them
//! up), for `cargo xtask dist` to package. Generated from the same clap
//! definitions the binary parses with, so a new command or option is
//! documented and completed without anyone editing a page.
use std::{fs, io::Write as _, path::Path, process::ExitCode};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::{Generator, Shell};
use flate2::{Compression, write::GzEncoder};
use livepatch_user::{cli::Cli, commands::completions};

/// The shells whose completion scripts are packaged.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: klpscope-dist-docs DIR");
        return ExitCode::from(2);
    };
    match write_docs(Path::new(&dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("klpscope-dist-docs: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_docs(dir: &Path) -> Result<()> {
    let man = dir.join("man");
    let scripts = dir.join("completions");
    for folder in [&man, &scripts] {
        // Pages of a command since removed must not linger in the package.
        if folder.exists() {
            fs::remove_dir_all(folder)
                .with_context(|| format!("cannot clear {}", folder.display()))?;
        }
        fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    // As clap_mangen::generate_to: `help` is no command of its own, and
    // building the tree names each subcommand's page klpscope-NAME.
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    write_pages(&command, &man)?;
    let name = command.get_name().to_owned();
    for shell in SHELLS {
        let path = scripts.join(shell.file_name(&name));
        fs::write(&path, completions::script(shell))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The page of `command` and of each of its visible subcommands.
fn write_pages(command: &clap::Command, dir: &Path) -> Result<()> {
    for subcommand in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(subcommand, dir)?;
    }
    let page = clap_mangen::Man::new(command.clone());
    let path = dir.join(format!("{}.gz", page.get_filename()));
    // Without a name or time in the header (flate2's default), as
    // Debian's `gzip -9n`: the same page gives the same file.
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    page.render(&mut gz)
        .and_then(|()| gz.flush())
        .with_context(|| format!("cannot render {}", path.display()))?;
    let bytes = gz.finish().context("cannot compress a manual page")?;
    fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
