//! `klpscope diagnose`: the diagnosis as a readable report or one JSON
//! document.
use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    analysis::{
        advice::BlockerKind,
        blockers::VerdictSource,
        diagnosis::{BlockerReport, Diagnosis},
    },
    model::{BlockReason, Direction},
    views::{printable, printable_lines},
};

#[derive(Debug, Serialize)]
pub struct DiagnoseView<'a> {
    #[serde(flatten)]
    pub diagnosis: &'a Diagnosis,
    /// Why the kernel's own verdicts were not used, if they were not.
    pub ebpf_unavailable: Option<&'a str>,
}

pub fn render_json(view: &DiagnoseView) -> String {
    serde_json::to_string_pretty(view).expect("diagnosis serialises") + "\n"
}

fn reason_text(reason: BlockReason) -> &'static str {
    match reason {
        BlockReason::Running => "running on a CPU",
        BlockReason::FunctionOnStack => "patched function on its stack",
        BlockReason::UnreliableStack => "unreliable stack",
    }
}

fn kind_text(kind: BlockerKind) -> &'static str {
    match kind {
        BlockerKind::UserTaskAsleepInPatchedFunction => "user task inside a patched function",
        BlockerKind::KthreadInPatchedFunction => "kernel thread inside a patched function",
        BlockerKind::RunningInKernel => "task running in the kernel",
        BlockerKind::UnreliableStack => "stack the kernel cannot walk reliably",
    }
}

pub fn render_text(view: &DiagnoseView) -> String {
    let mut out = String::new();
    let _ = write_text(&mut out, view);
    printable_lines(&out).into_owned()
}

fn write_text(out: &mut String, view: &DiagnoseView) -> std::fmt::Result {
    let d = view.diagnosis;
    if !d.in_transition {
        writeln!(out, "no transition in progress")?;
        if let Some(outcome) = &d.last_outcome {
            writeln!(out, "last transition: {outcome}")?;
        }
        return Ok(());
    }
    let direction = match d.direction {
        Some(Direction::Unpatching) => "unpatching",
        _ => "patching",
    };
    let patch = d.patch.as_deref().unwrap_or("?");
    let elapsed = match (d.elapsed_secs, d.retry_rounds) {
        (Some(e), Some(r)) => format!("for {e:.1} s (about {r} retry rounds)"),
        _ => "for an unknown time (the kernel log has no start line)".into(),
    };
    writeln!(out, "'{patch}' is {direction}, in transition {elapsed}")?;
    let signals = match d.signals_sent {
        Some(true) => "sent",
        Some(false) => "not yet",
        None => "unknown (kernel log unreadable)",
    };
    let verdicts = match d.verdicts_from {
        VerdictSource::Kernel => "the kernel's own (eBPF tracer)",
        VerdictSource::Inferred => "inferred from patch_state, scheduler state and stacks",
    };
    writeln!(
        out,
        "tasks pending: {} of {}   fake signals: {signals}",
        d.tasks_pending, d.tasks_total
    )?;
    writeln!(out, "verdicts: {verdicts}")?;
    if let Some(reason) = view.ebpf_unavailable {
        writeln!(out, "eBPF unavailable: {reason}")?;
    }
    writeln!(out, "next: {}", d.next)?;
    for (i, report) in d.blockers.iter().enumerate() {
        writeln!(out)?;
        write_blocker(out, i + 1, report)?;
    }
    if d.blockers.is_empty() {
        writeln!(out, "\nno blocker found")?;
    }
    Ok(())
}

fn write_blocker(out: &mut String, n: usize, report: &BlockerReport) -> std::fmt::Result {
    let b = &report.blocker;
    let who = if b.kthread {
        "kernel thread"
    } else {
        "user task"
    };
    writeln!(
        out,
        "blocker {n}: {} (pid {}, tid {}, {who})",
        printable(&b.comm),
        b.pid,
        b.tid
    )?;
    let function = b
        .function
        .as_deref()
        .map(|f| format!(": {f}"))
        .unwrap_or_default();
    let blocked = b
        .blocked_secs
        .map(|s| format!(", blocking for {s:.1} s"))
        .unwrap_or_default();
    let checks = b
        .failed_checks
        .map(|c| format!(", {c} failed checks seen"))
        .unwrap_or_default();
    writeln!(
        out,
        "  why: {}{function}{blocked}{checks}",
        reason_text(b.reason)
    )?;
    writeln!(out, "  kind: {}", kind_text(report.advice.kind))?;
    if !b.stack.is_empty() {
        writeln!(out, "  stack:")?;
        for (i, frame) in b.stack.iter().enumerate() {
            let mark = if b.marked_frame == Some(i) { ">" } else { " " };
            writeln!(out, "   {mark} {frame}")?;
        }
    }
    writeln!(out, "  advice: {}", report.advice.advice)
}
