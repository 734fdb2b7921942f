//! `klpscope status`: the kernel line, the patch table and the transition
//! line as text, or the same data as one JSON document.
use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::Serialize;

use crate::{
    model::{Kernel, Known, Patch, Transition},
    views::{
        json_output::Document,
        noun, printable,
        style::{Color, Text, Tone},
    },
};

/// What status shows. Tasks are left out: they are many, and only their
/// counts matter here (in `transition`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct StatusView<'a> {
    pub kernel: &'a Kernel,
    pub patches: &'a [Patch],
    pub transition: Option<&'a Transition>,
}

pub fn render_json(view: &StatusView) -> String {
    Document::new(view).render()
}

pub fn render_text(view: &StatusView, color: Color) -> String {
    let mut out = Text::new(color);
    // Writing into memory cannot fail.
    let _ = write_text(&mut out, view);
    out.into_string()
}

fn write_text(out: &mut Text, view: &StatusView) -> std::fmt::Result {
    let kernel = view.kernel;
    let release = if kernel.release.is_empty() {
        "?"
    } else {
        &kernel.release
    };
    let support = if kernel.livepatch.is_supported() {
        (Tone::Good, "supported")
    } else {
        (Tone::Bad, "unsupported")
    };
    write!(out, "kernel      {release}, livepatch ")?;
    out.paint(support.0, support.1)?;
    writeln!(out)?;
    for (index, problem) in kernel.problems.iter().enumerate() {
        let label = if index == 0 { "problems" } else { "" };
        write!(out, "{label:<11} ")?;
        out.paint(Tone::Warn, problem)?;
        writeln!(out)?;
    }

    if view.patches.is_empty() {
        writeln!(out, "patches     none loaded")?;
    } else {
        let width = view
            .patches
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(0)
            .max("PATCH".len());
        let header = format!(
            "{:<width$}  {:<7}  {:<10}  {:<5}  {:<7}  STACK",
            "PATCH", "ENABLED", "TRANSITION", "FORCE", "REPLACE"
        );
        writeln!(out)?;
        out.paint(Tone::Heading, header)?;
        writeln!(out)?;
        for patch in view.patches {
            write_patch(out, patch, width)?;
        }
    }

    match view.transition {
        None => writeln!(out, "\ntransition  none")?,
        Some(transition) => {
            let direction = transition.direction;
            write!(out, "\ntransition  ")?;
            out.paint(
                Tone::Warn,
                format_args!(
                    "{} {direction}: {} of {} {} pending",
                    transition.patch,
                    transition.tasks_pending,
                    transition.tasks_total,
                    noun(transition.tasks_total, "task")
                ),
            )?;
            writeln!(out)?;
        }
    }
    if has_unknowns(view.patches) {
        writeln!(out, "(? = unknown; --json gives the reason)")?;
    }
    Ok(())
}

fn write_patch(out: &mut Text, patch: &Patch, width: usize) -> std::fmt::Result {
    let replace = patch.replace.as_ref().map_or("-", yes_no);
    let gone = if patch.gone {
        "  (gone: unloaded while read)"
    } else {
        ""
    };
    // The place in the patch stack (7.x): "-" where the kernel has no such
    // file.
    let stack = match &patch.stack_order {
        None => "-".to_owned(),
        Some(Known::Value(order)) => order.to_string(),
        Some(Known::Unknown { .. }) => "?".to_owned(),
    };
    let row = format!(
        "{:<width$}  {:<7}  {:<10}  {:<5}  {replace:<7}  {stack:<5}{gone}",
        printable(&patch.name),
        yes_no(&patch.enabled),
        yes_no(&patch.transition),
        yes_no(&patch.force),
    );
    writeln!(out, "{}", row.trim_end())?;
    for object in &patch.objects {
        let patched = match object.patched {
            Known::Value(true) => "patched",
            Known::Value(false) => "not patched",
            Known::Unknown { .. } => "patched ?",
        };
        writeln!(out, "  {} ({patched})", object.name)?;
        for function in &object.functions {
            writeln!(out, "    {},{}", function.name, function.sympos)?;
        }
    }
    Ok(())
}

fn yes_no(value: &Known<bool>) -> &'static str {
    match value {
        Known::Value(true) => "yes",
        Known::Value(false) => "no",
        Known::Unknown { .. } => "?",
    }
}

fn has_unknowns(patches: &[Patch]) -> bool {
    let unknown = |value: &Known<bool>| value.value().is_none();
    patches.iter().any(|patch| {
        unknown(&patch.enabled)
            || unknown(&patch.transition)
            || unknown(&patch.force)
            || patch.replace.as_ref().is_some_and(unknown)
            || patch.objects.iter().any(|object| unknown(&object.patched))
    })
}
