//! `klpscope check`: the readiness report as text ending in one verdict
//! line, or as one JSON document.
use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::Serialize;

use crate::{
    analysis::{
        blockers::CodeVersion,
        readiness::{PredictedBlocker, Readiness, Status, Verdict},
    },
    kernel::livepatch_module::{LivepatchModule, Replace},
    model::VMLINUX,
    probes::Capability,
    views::{
        counted,
        json_output::Document,
        noun, printable,
        style::{Color, Text, Tone},
    },
};

/// What was checked and how, next to the analysis.
#[derive(Debug, Serialize, JsonSchema)]
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

#[derive(Debug, Serialize, JsonSchema)]
pub struct EbpfView<'a> {
    pub available: bool,
    pub reason: Option<&'a str>,
    pub capabilities: &'a [Capability],
}

pub fn render_json(view: &CheckView) -> String {
    Document::new(view).render()
}

pub fn render_text(view: &CheckView, color: Color) -> String {
    let mut out = Text::new(color);
    // Writing into memory cannot fail.
    let _ = write_text(&mut out, view);
    out.into_string()
}

fn write_text(out: &mut Text, view: &CheckView) -> std::fmt::Result {
    let readiness = view.readiness;
    let what = match (view.module, view.patch) {
        (Some(module), _) => format!(
            "livepatch module {} ({} layout{})",
            printable(&module.name),
            module.producer.name(),
            match module.replace {
                Replace::InFile(true) => ", atomic replace".to_owned(),
                Replace::InFile(false) => String::new(),
                Replace::SetAtLoad { default } =>
                    format!(", atomic replace set at load: {default}"),
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

    if let Some(module) = view.module {
        write_module(out, module)?;
    }

    heading(out, "kernel")?;
    for check in &readiness.kernel_checks {
        write!(out, "  ")?;
        status_word(out, check.status)?;
        writeln!(out, "  {:<20} {}", check.id, check.detail)?;
    }

    heading(out, "functions")?;
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
        write!(out, "  ")?;
        status_word(out, function.status)?;
        writeln!(
            out,
            "  {},{} in {}: present {}, traceable {traceable}, calls {calls}",
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

    heading(out, "predicted blockers")?;
    if readiness.predicted_blockers.is_empty() {
        writeln!(
            out,
            "  none: no target function on any sampled kernel stack"
        )?;
    }
    for blocker in &readiness.predicted_blockers {
        write_blocker(out, blocker)?;
    }

    writeln!(out)?;
    let tone = match readiness.verdict {
        Verdict::Ready => Tone::Good,
        Verdict::Warnings => Tone::Warn,
        Verdict::NotReady => Tone::Bad,
    };
    out.paint(tone, verdict_line(readiness))?;
    writeln!(out)
}

/// What the module file holds beyond its functions (listed with the
/// checks below): the callbacks the kernel will run and the symbols it
/// must resolve at load. Nothing when it has neither.
fn write_module(out: &mut Text, module: &LivepatchModule) -> std::fmt::Result {
    let callbacks: Vec<_> = module
        .objects
        .iter()
        .flat_map(|object| {
            let name = object.name.as_deref().unwrap_or(VMLINUX);
            object.callbacks.iter().map(move |c| (name, c))
        })
        .collect();
    if callbacks.is_empty() && module.references.is_empty() {
        return Ok(());
    }
    heading(out, "module")?;
    for (object, callback) in callbacks {
        writeln!(
            out,
            "  callback {} of {}: {}",
            callback.hook.name(),
            printable(object),
            printable(&callback.function)
        )?;
    }
    for reference in &module.references {
        writeln!(
            out,
            "  needs {}:{},{} (resolved at load)",
            printable(reference.object.as_deref().unwrap_or(VMLINUX)),
            printable(&reference.name),
            reference.sympos
        )?;
    }
    Ok(())
}

/// A section's name, after a blank line.
fn heading(out: &mut Text, name: &str) -> std::fmt::Result {
    writeln!(out)?;
    out.paint(Tone::Heading, name)?;
    writeln!(out)
}

fn write_blocker(out: &mut Text, blocker: &PredictedBlocker) -> std::fmt::Result {
    write!(out, "  ")?;
    if blocker.persistent {
        out.paint(Tone::Bad, "persistent")?;
    } else {
        out.paint(Tone::Warn, "passer-by ")?;
    }
    writeln!(
        out,
        " {}/{} {}{} in {}{} ({} of {}{})",
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
        counted(blocker.samples, "sample"),
        match blocker.on_cpu_in {
            0 => String::new(),
            n => format!(", on a CPU with no stack to read in {n}"),
        }
    )?;
    writeln!(out, "        {}", blocker.why)?;
    for (index, frame) in blocker.stack.iter().enumerate() {
        if index == blocker.marked_frame {
            write!(out, "        ")?;
            out.paint(Tone::Bad, format_args!("> {frame}"))?;
            writeln!(out)?;
        } else {
            writeln!(out, "          {frame}")?;
        }
    }
    Ok(())
}

fn status_word(out: &mut Text, status: Status) -> std::fmt::Result {
    match status {
        Status::Pass => out.paint(Tone::Good, "pass"),
        Status::Warn => out.paint(Tone::Warn, "WARN"),
        Status::Fail => out.paint(Tone::Bad, "FAIL"),
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
        "verdict: {word} ({} failed, {}, {persistent} persistent {})",
        count(Status::Fail),
        counted(count(Status::Warn), "warning"),
        noun(persistent, "blocker")
    )
}
