//! `klpscope diagnose`: the diagnosis as a readable report or one JSON
//! document.
use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::Serialize;

use crate::{
    analysis::{
        advice::{BlockerKind, Forecast},
        blockers::{CodeVersion, VerdictSource},
        diagnosis::{BlockerReport, Diagnosis},
    },
    model::Direction,
    views::{
        json_output::Document,
        printable,
        style::{Color, Text, Tone},
    },
};

#[derive(Debug, Serialize, JsonSchema)]
pub struct DiagnoseView<'a> {
    #[serde(flatten)]
    pub diagnosis: &'a Diagnosis,
    /// Why the kernel's own verdicts were not used, if they were not.
    pub ebpf_unavailable: Option<&'a str>,
}

/// diagnose's one JSON document: the report, or why there can be none.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum DiagnoseJson<'a> {
    Report(&'a DiagnoseView<'a>),
    Unsupported(Unsupported<'a>),
}

/// A kernel without livepatch: no transition, no blocker, and why.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Unsupported<'a> {
    pub in_transition: bool,
    pub livepatch_supported: bool,
    pub reason: &'a str,
    pub blockers: [BlockerReport; 0],
}

pub fn render_json(view: &DiagnoseView) -> String {
    Document::new(DiagnoseJson::Report(view)).render()
}

pub fn render_unsupported_json(reason: &str) -> String {
    Document::new(DiagnoseJson::Unsupported(Unsupported {
        in_transition: false,
        livepatch_supported: false,
        reason,
        blockers: [],
    }))
    .render()
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

fn forecast_tone(forecast: Forecast) -> Tone {
    match forecast {
        Forecast::ClearsAfterSignals | Forecast::Transient => Tone::Good,
        Forecast::MayClearAfterSignals | Forecast::Unknown => Tone::Warn,
        Forecast::WillNotClearByItself => Tone::Bad,
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

pub fn render_text(view: &DiagnoseView, color: Color) -> String {
    let mut out = Text::new(color);
    // Writing into memory cannot fail.
    let _ = write_text(&mut out, view);
    out.into_string()
}

fn write_text(out: &mut Text, view: &DiagnoseView) -> std::fmt::Result {
    let d = view.diagnosis;
    if !d.in_transition {
        out.paint(Tone::Good, "no transition in progress")?;
        writeln!(out)?;
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
    out.paint(
        Tone::Heading,
        format_args!("'{patch}' is {direction}, in transition {elapsed}"),
    )?;
    writeln!(out)?;
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

fn write_blocker(out: &mut Text, n: usize, report: &BlockerReport) -> std::fmt::Result {
    let b = &report.blocker;
    let who = if b.kthread {
        "kernel thread"
    } else {
        "user task"
    };
    out.paint(
        Tone::Heading,
        format_args!(
            "blocker {n}: {} (pid {}, tid {}, {who}, state {})",
            printable(&b.comm),
            b.pid,
            b.tid,
            b.state
        ),
    )?;
    writeln!(out)?;
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
    write!(out, "  forecast: ")?;
    let forecast = report.advice.forecast;
    out.paint(forecast_tone(forecast), forecast_text(forecast))?;
    writeln!(out)?;
    if !b.stack.is_empty() {
        writeln!(out, "  stack:")?;
        for (i, frame) in b.stack.iter().enumerate() {
            if b.marked_frame == Some(i) {
                write!(out, "   ")?;
                out.paint(Tone::Bad, format_args!("> {frame}"))?;
                writeln!(out)?;
            } else {
                writeln!(out, "     {frame}")?;
            }
        }
    }
    writeln!(out, "  advice: {}", report.advice.advice)
}
