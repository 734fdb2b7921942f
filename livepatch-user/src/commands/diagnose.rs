//! `klpscope diagnose`: read the state, watch the kernel decide for up to two
//! retry rounds, explain every blocker.
use std::{
    path::Path,
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    analysis::{
        blockers::{BLOCKS_AFTER_ROUNDS, PatchedCode, find_blockers},
        diagnosis::{Diagnosis, diagnose_idle, diagnose_transition},
        transition::transition,
    },
    cli::DiagnoseArgs,
    commands::output,
    exit_code,
    feed::snapshot::read_snapshot_from,
    kernel::clock::monotonic_ns,
    model::{BlockReason, Snapshot, TraceEvent, Transition},
    probes::{self, Loaded, ProbeRequest, TaskSource, TaskVerdict},
    views::{
        diagnose_report::{DiagnoseView, render_json, render_text, render_unsupported_json},
        style::Color,
    },
};

/// Long enough for the kernel to begin three retry rounds (one a second;
/// later on a busy machine): the first two then ran whole. It returns as
/// soon as they did.
const OBSERVE_FOR: Duration = Duration::from_secs(5);

/// The snapshot and its transition.
fn read(root: &Path, tasks: &mut TaskSource) -> Result<(Snapshot, Option<Transition>)> {
    let snapshot = read_snapshot_from(root, tasks)?;
    let transition = transition(
        &snapshot.patches,
        snapshot.log.value().map(Vec::as_slice),
        snapshot.tasks.iter().map(|task| &task.patch_state),
    );
    Ok((snapshot, transition))
}

pub fn run(root: &Path, args: &DiagnoseArgs, color: Color) -> Result<ExitCode> {
    let mut tasks = TaskSource::open(root, args.no_ebpf)?;
    let (snapshot, transition) = read(root, &mut tasks)?;
    if let Some(reason) = snapshot.kernel.livepatch.unsupported() {
        if args.json {
            output::print(&render_unsupported_json(reason))?;
        } else {
            output::print(&format!("nothing to diagnose: {reason}\n"))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(wanted) = &args.patch {
        if !snapshot.patches.iter().any(|p| &p.name == wanted) {
            anyhow::bail!(
                "no livepatch named '{wanted}' is loaded (see `klpscope status` for the list)"
            );
        }
    }

    let watched = |transition: &Option<Transition>| {
        transition
            .as_ref()
            .is_some_and(|t| args.patch.as_ref().is_none_or(|p| p == &t.patch))
    };

    // Read again after watching the kernel decide: the verdicts are about
    // the tasks as they are now.
    let ((snapshot, transition), verdicts, ebpf_unavailable) =
        if watched(&transition) && !args.no_ebpf {
            match observe(root) {
                Ok(verdicts) => (read(root, &mut tasks)?, Some(verdicts), None),
                Err(reason) => ((snapshot, transition), None, Some(reason)),
            }
        } else {
            let reason = args
                .no_ebpf
                .then(|| "--no-ebpf: verdicts inferred from /proc and /sys".to_string());
            ((snapshot, transition), None, reason)
        };

    let watched = transition.as_ref().filter(|_| watched(&transition));
    let diagnosis = diagnose(
        &snapshot,
        watched,
        verdicts.as_deref(),
        args.patch.as_deref(),
    );
    let view = DiagnoseView {
        diagnosis: &diagnosis,
        ebpf_unavailable: ebpf_unavailable.as_deref(),
    };
    if args.json {
        output::print(&render_json(&view))?;
    } else {
        output::print(&render_text(&view, color))?;
    }
    // Some pending task could not be explained: the report is not the
    // all-clear it might look like.
    let incomplete = diagnosis
        .blockers
        .iter()
        .any(|report| report.blocker.reason == BlockReason::Unexplained);
    Ok(if incomplete {
        ExitCode::from(exit_code::WARNINGS)
    } else {
        ExitCode::SUCCESS
    })
}

/// The transition followed, or why nothing is moving.
fn diagnose(
    snapshot: &Snapshot,
    transition: Option<&Transition>,
    verdicts: Option<&[TaskVerdict]>,
    patch: Option<&str>,
) -> Diagnosis {
    let log = snapshot.log.value().map(Vec::as_slice);
    let Some(transition) = transition else {
        return diagnose_idle(log, patch);
    };
    let patch = snapshot
        .patches
        .iter()
        .find(|p| p.name == transition.patch)
        .expect("the transition's patch is among the patches read with it");
    let code = PatchedCode {
        patch,
        direction: transition.direction,
        loaded: &snapshot.patches,
    };
    let blockers = find_blockers(&snapshot.tasks, &code, verdicts, monotonic_ns());
    let unreadable = snapshot
        .tasks
        .iter()
        .filter(|task| task.patch_state.value().is_none())
        .count();
    diagnose_transition(transition, blockers, log, monotonic_ns() / 1000, unreadable)
}

/// Attaches the tracer and collects the kernel's verdicts over two whole
/// retry rounds: a task blocks when it failed both (`BLOCKS_AFTER_ROUNDS`).
/// Err is the one-line reason eBPF could not be used.
fn observe(root: &Path) -> Result<Vec<TaskVerdict>, String> {
    let request = ProbeRequest {
        tracer: true,
        ..ProbeRequest::default()
    };
    let Loaded {
        probes,
        capabilities: caps,
        ..
    } = probes::load(root, &request);
    if let Some(reason) = caps.verdicts_unavailable() {
        return Err(reason);
    }
    // `probes` owns the attached programs: it must outlive the observation.
    let Some(mut probes) = probes else {
        return Err("the transition tracer did not load".into());
    };
    let started = Instant::now();
    let mut rounds_begun = 0;
    while started.elapsed() < OBSERVE_FOR && rounds_begun <= BLOCKS_AFTER_ROUNDS {
        thread::sleep(Duration::from_millis(100));
        probes.flush_log();
        let Some(tracer) = probes.tracer.as_mut() else {
            break;
        };
        for event in tracer.drain() {
            log::debug!("tracer: {event:?}");
            match event {
                TraceEvent::Complete { .. } => return Ok(tracer.verdicts()),
                TraceEvent::Round { .. } => rounds_begun += 1,
                _ => {}
            }
        }
    }
    Ok(probes
        .tracer
        .as_ref()
        .map(|t| t.verdicts())
        .unwrap_or_default())
}
