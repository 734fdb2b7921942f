use std::{path::Path, process::ExitCode};

use anyhow::{Context, Result};

use crate::{
    cli::StatusArgs,
    commands::output,
    kernel::{
        kernel_log::read_livepatch_log, read_kernel, read_patches, reread_in_transition,
        scan_patch_states, transition,
    },
    views::{
        status::{StatusView, render_json, render_text},
        style::Color,
    },
};

/// Kernel facts and patches; threads are scanned (patch_state only) just when
/// a patch is in transition, to count the pending ones.
pub fn run(root: &Path, args: &StatusArgs, color: Color) -> Result<ExitCode> {
    let kernel = read_kernel(root);
    let patches = read_patches(root).context("reading /sys/kernel/livepatch")?;
    let in_transition = patches
        .iter()
        .any(|patch| patch.transition.value() == Some(&true));
    let transition = if in_transition {
        let threads = scan_patch_states(root).context("scanning /proc for patch_state")?;
        let patches = reread_in_transition(root, patches.clone());
        let log = read_livepatch_log(root);
        let log = log.value().map(Vec::as_slice);
        transition(
            &patches,
            log,
            threads.iter().map(|thread| &thread.patch_state),
        )
    } else {
        None
    };
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
