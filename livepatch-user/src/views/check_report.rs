//! `klpscope check`: the readiness report as text ending in one verdict
//! line, or as one JSON document.
use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    analysis::{
        blockers::CodeVersion,
        readiness::{PredictedBlocker, Readiness, Status, Verdict},
    },
    kernel::livepatch_module::LivepatchModule,
    probes::Capability,
    views::{printable, printable_lines},
};

/// What was checked and how, next to the analysis.
#[derive(Debug, Serialize)]
pub struct CheckView<'a> {
    /// `functions`, `module` or `patch`.
    pub target: &'static str,
    /// The decoded livepatch module, with --module.
    pub module: Option<&'a LivepatchModule>,
    /// The loaded patch to disable, with --patch.
    pub patch: Option<&'a str>,
    pub duration_secs: f64,
    pub stack_samples: usize,
    pub ebpf: EbpfView<'a>,
    #[serde(flatten)]
    pub readiness: &'a Readiness,
}

#[derive(Debug, Serialize)]
pub struct EbpfView<'a> {
    pub available: bool,
    pub reason: Option<&'a str>,
    pub capabilities: &'a [Capability],
}

pub fn render_json(view: &CheckView) -> String {
    // Plain data with string keys: serialisation cannot fail.
    serde_json::to_string_pretty(view).expect("check view serialises") + "\n"
}

pub fn render_text(view: &CheckView) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_text(&mut out, view);
    printable_lines(&out).into_owned()
}

fn write_text(out: &mut String, view: &CheckView) -> std::fmt::Result {
    let readiness = view.readiness;
    let what = match (view.module, view.patch) {
        (Some(module), _) => format!(
            "livepatch module {}{}",
            printable(&module.name),
            if module.replace {
                " (atomic replace)"
            } else {
                ""
            }
        ),
        (_, Some(patch)) => format!("disabling loaded patch {patch}"),
        _ => "functions".to_owned(),
    };
    writeln!(
        out,
        "check {what}: {} stack samples over {} s",
        view.stack_samples, view.duration_secs
    )?;

    writeln!(out, "\nkernel")?;
    for check in &readiness.kernel_checks {
        writeln!(
            out,
            "  {}  {:<20} {}",
            status_word(check.status),
            check.id,
            check.detail
        )?;
    }

    writeln!(out, "\nfunctions")?;
    for function in &readiness.functions {
        let traceable = match function.traceable {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        };
        let calls = match (
            function.calls_per_sec,
            function.calls_old,
            function.calls_new,
        ) {
            (Some(rate), Some(old), Some(new)) => {
                format!("{rate:.1}/s ({old} old, {new} new)")
            }
            (Some(rate), _, _) => format!("{rate:.1}/s"),
            _ => "not measured".to_owned(),
        };
        writeln!(
            out,
            "  {}  {},{} in {}: present {}, traceable {traceable}, calls {calls}",
            status_word(function.status),
            function.name,
            function.sympos,
            function.object,
            if function.present { "yes" } else { "no" },
        )?;
        for problem in &function.problems {
            writeln!(out, "        - {problem}")?;
        }
        for candidate in &function.candidates {
            writeln!(out, "        candidate {candidate}")?;
        }
        if let (None, Some(why)) = (function.calls_per_sec, &function.calls_unmeasured) {
            writeln!(out, "        calls not measured: {why}")?;
        }
    }

    writeln!(out, "\npredicted blockers")?;
    if readiness.predicted_blockers.is_empty() {
        writeln!(
            out,
            "  none: no target function on any sampled kernel stack"
        )?;
    }
    for blocker in &readiness.predicted_blockers {
        write_blocker(out, blocker)?;
    }

    writeln!(out, "\n{}", verdict_line(readiness))
}

fn write_blocker(out: &mut String, blocker: &PredictedBlocker) -> std::fmt::Result {
    writeln!(
        out,
        "  {} {}/{} {}{} in {}{} ({} of {} samples)",
        if blocker.persistent {
            "persistent"
        } else {
            "passer-by "
        },
        blocker.pid,
        blocker.tid,
        printable(&blocker.comm),
        if blocker.kthread { " [kthread]" } else { "" },
        blocker.function,
        match &blocker.version {
            CodeVersion::Replacement { patch } => format!(", {patch}'s replacement"),
            CodeVersion::Original => String::new(),
        },
        blocker.seen_in,
        blocker.samples
    )?;
    writeln!(out, "        {}", blocker.why)?;
    for (index, frame) in blocker.stack.iter().enumerate() {
        let marker = if index == blocker.marked_frame {
            ">"
        } else {
            " "
        };
        writeln!(out, "        {marker} {frame}")?;
    }
    Ok(())
}

fn status_word(status: Status) -> &'static str {
    match status {
        Status::Pass => "pass",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
    }
}

fn verdict_line(readiness: &Readiness) -> String {
    let count = |status| {
        readiness
            .kernel_checks
            .iter()
            .map(|c| c.status)
            .chain(readiness.functions.iter().map(|f| f.status))
            .filter(|s| *s == status)
            .count()
    };
    let persistent = readiness
        .predicted_blockers
        .iter()
        .filter(|b| b.persistent)
        .count();
    let word = match readiness.verdict {
        Verdict::Ready => "ready",
        Verdict::Warnings => "warnings",
        Verdict::NotReady => "not ready",
    };
    format!(
        "verdict: {word} ({} failed, {} warnings, {persistent} persistent blockers)",
        count(Status::Fail),
        count(Status::Warn)
    )
}
