use std::{path::Path, process::ExitCode};

use anyhow::Result;

use crate::{
    analysis::transition::transition,
    cli::StatusArgs,
    commands::output,
    feed::snapshot::read_patches_and_threads,
    kernel::{kernel_log::read_livepatch_log, read_kernel},
    probes::TaskSource,
    views::{
        status::{StatusView, render_json, render_text},
        style::Color,
    },
};

/// Kernel facts and patches; threads are scanned (patch_state only) just when
/// a patch is in transition, to count the pending ones.
pub fn run(root: &Path, args: &StatusArgs, color: Color) -> Result<ExitCode> {
    let kernel = read_kernel(root);
    let (patches, threads) = read_patches_and_threads(
        root,
        |_| false,
        || {
            TaskSource::open(root, false)
                .map_err(std::io::Error::other)?
                .patch_states()
        },
    )?;
    let transition = threads.and_then(|threads| {
        let log = read_livepatch_log(root);
        transition(
            &patches,
            log.value().map(Vec::as_slice),
            threads.iter().map(|thread| &thread.patch_state),
        )
    });
    let view = StatusView {
        kernel: &kernel,
        patches: &patches,
        transition: transition.as_ref(),
    };
    let text = if args.json {
        render_json(&view)
    } else {
        render_text(&view, color)
    };
    output::print(&text)?;
    Ok(ExitCode::SUCCESS)
}
