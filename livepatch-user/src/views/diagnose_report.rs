//! `klpscope diagnose`: the diagnosis as a readable report or one JSON
//! document.
use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    analysis::{
        advice::{BlockerKind, Forecast},
        blockers::{CodeVersion, VerdictSource},
        diagnosis::{BlockerReport, Diagnosis},
    },
    model::Direction,
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

fn forecast_text(forecast: Forecast) -> &'static str {
    match forecast {
        Forecast::ClearsAfterSignals => "clears after the kernel's fake signal",
        Forecast::MayClearAfterSignals => {
            "may clear after the kernel's fake signal, if that makes it leave the function"
        }
        Forecast::WillNotClearByItself => "will not clear by itself",
        Forecast::Transient => "usually clears within a few retry rounds",
        Forecast::Unknown => "unknown",
    }
}

fn kind_text(kind: BlockerKind) -> &'static str {
    match kind {
        BlockerKind::UserTaskAsleepInPatchedFunction => "user task inside a patched function",
        BlockerKind::KthreadInPatchedFunction => "kernel thread inside a patched function",
        BlockerKind::RunningInKernel => "task running in the kernel",
        BlockerKind::UnreliableStack => "stack the kernel cannot walk reliably",
        BlockerKind::UninterruptibleInPatchedFunction => {
            "inside a patched function, in a sleep no signal interrupts"
        }
        BlockerKind::IdleTask => "a CPU's idle task",
        BlockerKind::Unexplained => "pending, and klpscope cannot tell why",
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
    let unreadable = match d.tasks_unreadable {
        0 => String::new(),
        n => format!(" ({n} of them with an unreadable patch_state)"),
    };
    writeln!(
        out,
        "tasks pending: {} of {}{unreadable}   fake signals: {signals}",
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
        "blocker {n}: {} (pid {}, tid {}, {who}, state {})",
        printable(&b.comm),
        b.pid,
        b.tid,
        b.state
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
        b.reason.words()
    )?;
    if let Some(CodeVersion::Replacement { patch }) = &b.version {
        writeln!(out, "  runs: {patch}'s replacement of the function")?;
    }
    if let Some(why) = &b.unexplained {
        writeln!(out, "  unknown: {why}")?;
    }
    writeln!(out, "  kind: {}", kind_text(report.advice.kind))?;
    writeln!(out, "  forecast: {}", forecast_text(report.advice.forecast))?;
    if !b.stack.is_empty() {
        writeln!(out, "  stack:")?;
        for (i, frame) in b.stack.iter().enumerate() {
            let mark = if b.marked_frame == Some(i) { ">" } else { " " };
            writeln!(out, "   {mark} {frame}")?;
        }
    }
    writeln!(out, "  advice: {}", report.advice.advice)
}
