//! Rendering: `impl Widget for &App`, so tests draw any state into a
//! `TestBackend`. Nothing here reads the kernel.
use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Flex, Layout, Rect},
    style::{Color, Modifier, Style, Stylize},
    text::{Line, Span},
    widgets::{
        Block, Cell, Clear, Gauge, Paragraph, Row, Sparkline, Table, TableState, Widget, Wrap,
    },
};

use super::app::{App, CallHistory, Confirmation, Screen};
use crate::{
    analysis::{
        blockers::Blocker,
        transition_tracker::{SignalsSeen, TransitionProgress},
    },
    kernel::livepatch_write::TransitionWrite,
    model::{Direction, Known, Patch},
    views::{printable, watch_lines::describe},
};

const KEYS: &str = " q quit  ↑↓ select  ⏎ stack  s sort  r reverse  f force  ? help";
/// How many threads still running old code the calls panel names.
const OLD_CALLERS_SHOWN: usize = 8;

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let polling_reason = self.feed.polling.as_deref();
        let header_height = 2 + u16::from(polling_reason.is_some());
        let [header, body, footer] = Layout::vertical([
            Constraint::Length(header_height),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(area);
        render_header(self, polling_reason, header, buf);
        match &self.tracker().transition {
            Some(transition) => render_transition(self, transition, body, buf),
            None => render_idle(self, body, buf),
        }
        render_footer(self, footer, buf);
        match &self.screen {
            Screen::Main => {}
            Screen::Stack => {
                if let Some(blocker) = self.selected_blocker() {
                    render_stack(blocker, body, buf);
                }
            }
            Screen::Confirm(confirmation) => render_confirm(confirmation, area, buf),
            Screen::Help => render_help(area, buf),
        }
    }
}

fn render_header(app: &App, polling_reason: Option<&str>, area: Rect, buf: &mut Buffer) {
    let feed = match polling_reason {
        None => Span::styled("eBPF tracer", Style::new().fg(Color::Green)),
        Some(_) => Span::styled("procfs/sysfs polling", Style::new().fg(Color::Yellow)),
    };
    let mut header = vec![
        Span::styled("klpscope watch", Style::new().bold()),
        Span::raw(format!("  kernel {}  feed: ", app.kernel_release)),
        feed,
    ];
    if polling_reason.is_none() && app.feed.verdicts_inferred.is_some() {
        header.push(Span::styled(
            ", blockers inferred",
            Style::new().fg(Color::Yellow),
        ));
    }
    let mut lines = vec![Line::from(header)];
    lines.push(match &app.tracker().transition {
        Some(transition) => transition_line(app, transition),
        None => Line::from("no transition in progress"),
    });
    if let Some(reason) = polling_reason {
        lines.push(Line::styled(
            format!("eBPF unavailable: {reason}"),
            Style::new().fg(Color::Yellow),
        ));
    }
    Paragraph::new(lines).render(area, buf);
}

fn transition_line<'a>(app: &App, transition: &'a TransitionProgress) -> Line<'a> {
    let tracker = app.tracker();
    let elapsed = tracker.elapsed_secs().unwrap_or(0.0);
    let rounds = match tracker.retry_rounds() {
        Some((rounds, true)) => format!("~{rounds}"),
        Some((rounds, false)) => rounds.to_string(),
        None => "-".into(),
    };
    let (signals, signals_style) = match (transition.signals, tracker.signals_expected()) {
        (Some(SignalsSeen::KernelLog), _) => ("sent (kernel log)", Color::Magenta),
        (Some(SignalsSeen::FailedRounds), _) => ("sent (15 failed rounds)", Color::Magenta),
        (None, true) => ("due (15 rounds)", Color::Magenta),
        (None, false) => ("not yet", Color::Reset),
    };
    let mut spans = vec![
        Span::styled(transition.patch.as_str(), Style::new().bold()),
        Span::raw(format!(
            "  {}{}  {elapsed:.0}s  rounds {rounds}  signals ",
            transition.direction.as_str(),
            if transition.direction != transition.initial_direction {
                " (reversed)"
            } else {
                ""
            }
        )),
        Span::styled(signals, Style::new().fg(signals_style)),
    ];
    if transition.forced {
        spans.push(Span::styled("  FORCED", Style::new().fg(Color::Red).bold()));
    }
    Line::from(spans)
}

fn render_transition(app: &App, transition: &TransitionProgress, area: Rect, buf: &mut Buffer) {
    let [gauge, blockers, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(8),
    ])
    .areas(area);
    let switched = transition
        .tasks_total
        .saturating_sub(transition.tasks_pending);
    let ratio = if transition.tasks_total == 0 {
        0.0
    } else {
        switched as f64 / transition.tasks_total as f64
    };
    Gauge::default()
        .ratio(ratio.clamp(0.0, 1.0))
        .label(format!(
            "{switched}/{} tasks switched ({:.0}%)",
            transition.tasks_total,
            ratio * 100.0
        ))
        .gauge_style(Style::new().fg(Color::Green).bg(Color::DarkGray))
        .render(gauge, buf);
    render_blockers(app, blockers, buf);
    render_bottom(app, bottom, buf);
}

fn render_blockers(app: &App, area: Rect, buf: &mut Buffer) {
    let rows = app.blockers();
    let header = Row::new([
        "pid", "tid", "comm", "kth", "reason", "function", "for", "fails",
    ])
    .style(Style::new().bold());
    let body = rows.iter().map(|b| {
        Row::new([
            Cell::from(b.pid.to_string()),
            Cell::from(b.tid.to_string()),
            Cell::from(b.comm.clone()),
            Cell::from(if b.kthread { "yes" } else { "" }),
            Cell::from(b.reason.short()),
            Cell::from(b.function.clone().unwrap_or_else(|| "?".into())),
            Cell::from(b.blocked_secs.map_or("-".into(), |s| format!("{s:.0}s"))),
            Cell::from(b.failed_checks.map_or("-".into(), |n| n.to_string())),
        ])
    });
    let title = format!(" Blockers ({}) · sort: {} ", rows.len(), app.sort.label());
    let table = Table::new(
        body,
        [
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(15),
            Constraint::Length(3),
            Constraint::Length(10),
            Constraint::Fill(1),
            Constraint::Length(5),
            Constraint::Length(5),
        ],
    )
    .header(header)
    .block(Block::bordered().title(title))
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(app.selected_row());
    ratatui::widgets::StatefulWidget::render(table, area, buf, &mut state);
    if rows.is_empty() {
        let inner = area.inner(ratatui::layout::Margin::new(1, 2));
        Paragraph::new("none: every pending task is expected to switch at the next round")
            .wrap(Wrap { trim: true })
            .dark_gray()
            .render(inner, buf);
    }
}

fn render_bottom(app: &App, area: Rect, buf: &mut Buffer) {
    let [calls, log] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(area);
    render_calls(app, calls, buf);
    render_log(app, log, buf);
}

/// Per patched function: a label line, then old and new sparklines.
fn render_calls(app: &App, area: Rect, buf: &mut Buffer) {
    let block = Block::bordered().title(" Calls/s old→new ");
    let inner = block.inner(area);
    block.render(area, buf);
    let stats = &app.live.calls;
    if stats.functions.is_empty() {
        let text = match (app.feed.ebpf(), stats.uncounted.first()) {
            (_, Some((function, reason))) => format!("{function}: not counted ({reason})"),
            (false, None) => "needs eBPF".into(),
            (true, None) => "no patched vmlinux function".into(),
        };
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .dark_gray()
            .render(inner, buf);
        return;
    }
    let mut rows = inner.rows();
    let no_history = CallHistory::default();
    for calls in &stats.functions {
        let (old, new) = (calls.old_per_sec, calls.new_per_sec);
        let history = app.call_history.get(&calls.function).unwrap_or(&no_history);
        let rate = |r: Option<u64>| r.map_or("-".into(), |r| r.to_string());
        let Some(label) = rows.next() else { break };
        Line::from(vec![
            Span::raw(format!("{} ", calls.function)),
            Span::styled(format!("old {}", rate(old)), Style::new().fg(Color::Yellow)),
            Span::raw(" "),
            Span::styled(format!("new {}", rate(new)), Style::new().fg(Color::Green)),
        ])
        .render(label, buf);
        for (history, color) in [
            (&history.old_per_sec, Color::Yellow),
            (&history.new_per_sec, Color::Green),
        ] {
            let Some(row) = rows.next() else { break };
            let data: Vec<u64> = history.iter().copied().collect();
            // The newest samples, right-aligned, when the history is wider
            // than the row.
            let skip = data.len().saturating_sub(usize::from(row.width));
            Sparkline::default()
                .data(&data[skip..])
                .style(Style::new().fg(color))
                .render(row, buf);
        }
    }
    if !stats.old_callers.is_empty() {
        if let Some(row) = rows.next() {
            let callers: Vec<String> = stats
                .old_callers
                .iter()
                .take(OLD_CALLERS_SHOWN)
                .map(|(tid, calls)| format!("{tid}×{calls}"))
                .collect();
            Line::from(format!("old code run by tid {}", callers.join(" ")))
                .yellow()
                .render(row, buf);
        }
    }
    if !stats.uncounted.is_empty() {
        if let Some(row) = rows.next() {
            let names: Vec<&str> = stats.uncounted.iter().map(|(f, _)| f.as_str()).collect();
            Line::from(format!("not counted: {}", names.join(", ")))
                .dark_gray()
                .render(row, buf);
        }
    }
}

fn render_log(app: &App, area: Rect, buf: &mut Buffer) {
    let block = Block::bordered().title(" Events ");
    let inner = block.inner(area);
    block.render(area, buf);
    let start = app.started_ns.unwrap_or(0);
    let lines: Vec<Line> = app
        .log
        .iter()
        .rev()
        .take(usize::from(inner.height))
        .rev()
        .map(|logged| {
            let secs = logged.at_ns.saturating_sub(start) as f64 / 1e9;
            Line::from(format!("{secs:>5.0}s {}", describe(&logged.event)))
        })
        .collect();
    Paragraph::new(lines).render(inner, buf);
}

fn render_idle(app: &App, area: Rect, buf: &mut Buffer) {
    let [outcome, patches] =
        Layout::vertical([Constraint::Length(2), Constraint::Fill(1)]).areas(area);
    let tracker = app.tracker();
    let mut lines = Vec::new();
    if let Some(last) = &tracker.last_outcome {
        let (text, color) = match (last.reversed, last.forced) {
            (true, _) => ("REVERSED", Color::Yellow),
            (false, true) => ("COMPLETE (forced)", Color::Red),
            (false, false) => ("COMPLETE", Color::Green),
        };
        let took = last
            .secs
            .map_or(" between two polls".into(), |s| format!(" in {s:.1}s"));
        lines.push(Line::from(vec![
            Span::raw(format!("last transition: {} ", last.patch)),
            Span::styled(text, Style::new().fg(color).bold()),
            Span::raw(format!(", ended {}{took}", last.direction.as_str())),
        ]));
    }
    lines.push(Line::from("waiting for the next transition…").dark_gray());
    Paragraph::new(lines).render(outcome, buf);

    let [table, log] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(8)]).areas(patches);
    let rows = tracker.patches.iter().map(|patch| {
        Row::new([
            Cell::from(patch.name.clone()),
            Cell::from(flag(patch, &patch.enabled)),
            Cell::from(flag(patch, &patch.transition)),
            Cell::from(functions(patch)),
            patch_status(patch),
        ])
    });
    // As wide as the longest name: patch names are what the admin looks for.
    let name_width = tracker
        .patches
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(0)
        .clamp(5, 40) as u16;
    Table::new(
        rows,
        [
            Constraint::Length(name_width),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Fill(1),
            Constraint::Length(8),
        ],
    )
    .header(Row::new(["patch", "enabled", "transition", "functions", "status"]).bold())
    .block(Block::bordered().title(format!(" Patches ({}) ", tracker.patches.len())))
    .render(table, buf);
    render_log(app, log, buf);
}

/// A gone patch's last values are stale: not shown.
fn flag(patch: &Patch, value: &Known<bool>) -> &'static str {
    if patch.gone {
        return "-";
    }
    match value.value() {
        Some(true) => "1",
        Some(false) => "0",
        None => "?",
    }
}

fn functions(patch: &Patch) -> String {
    let names: Vec<&str> = patch
        .objects
        .iter()
        .flat_map(|o| o.functions.iter().map(|f| f.name.as_str()))
        .collect();
    names.join(", ")
}

fn patch_status(patch: &Patch) -> Cell<'static> {
    if patch.gone {
        return Cell::from("gone").style(Style::new().fg(Color::Red));
    }
    match (patch.transition.value(), patch.enabled.value()) {
        (Some(true), _) => Cell::from("moving").style(Style::new().fg(Color::Yellow)),
        (_, Some(true)) => Cell::from("active").style(Style::new().fg(Color::Green)),
        (_, Some(false)) => Cell::from("disabled"),
        _ => Cell::from("?"),
    }
}

fn render_stack(blocker: &Blocker, area: Rect, buf: &mut Buffer) {
    Clear.render(area, buf);
    let title = format!(
        " Kernel stack of {} (pid {}, tid {}): {} ",
        blocker.comm,
        blocker.pid,
        blocker.tid,
        blocker.reason.words()
    );
    let lines: Vec<Line> = if blocker.stack.is_empty() {
        vec![
            Line::from("stack not available (reading it needs root, or the task has exited)")
                .dark_gray(),
        ]
    } else {
        blocker
            .stack
            .iter()
            .enumerate()
            .map(|(index, frame)| {
                let text = frame.to_string();
                if Some(index) == blocker.marked_frame {
                    Line::styled(
                        format!("▶ {text}  ← blocks the transition"),
                        Style::new()
                            .fg(Color::Red)
                            .add_modifier(Modifier::BOLD | Modifier::REVERSED),
                    )
                } else {
                    Line::from(format!("  {text}"))
                }
            })
            .collect()
    };
    Paragraph::new(lines)
        .block(Block::bordered().title(title).title_bottom(" Esc back "))
        .render(area, buf);
}

fn render_confirm(confirmation: &Confirmation, area: Rect, buf: &mut Buffer) {
    let (title, text, answer, color) = match &confirmation.write {
        TransitionWrite::Reverse { patch, from } => {
            let (value, effect) = match from.opposite() {
                Direction::Unpatching => (
                    0,
                    "Tasks already switched go back to the old code and the patch ends disabled.",
                ),
                Direction::Patching => (
                    1,
                    "Tasks go back to the patched code and the patch stays enabled.",
                ),
            };
            (
                " Reverse the transition? ",
                format!(
                    "{effect} This is safe: every task is still checked before it switches.\n\n\
                     Writes {value} to /sys/kernel/livepatch/{}/enabled.",
                    printable(patch)
                ),
                "[y] yes   any other key: no".to_owned(),
                Color::Yellow,
            )
        }
        TransitionWrite::Force { patch, .. } => (
            " FORCE the transition? ",
            format!(
                "Marks every remaining task switched without checking its stack. UNSAFE: a task \
                 still inside an old function may run old and new code mixed, and the patch \
                 module is pinned: it can never be unloaded until reboot.\n\n\
                 Writes 1 to /sys/kernel/livepatch/{}/force.",
                printable(patch)
            ),
            format!(
                "Type the patch's name and Enter to force; Esc cancels.\n> {}_",
                printable(&confirmation.typed)
            ),
            Color::Red,
        ),
    };
    let popup = centered(area, 64, 12);
    Clear.render(popup, buf);
    Paragraph::new(format!("{text}\n\n{answer}"))
        .wrap(Wrap { trim: true })
        .block(
            Block::bordered()
                .title(title)
                .border_style(Style::new().fg(color).bold()),
        )
        .render(popup, buf);
}

fn render_help(area: Rect, buf: &mut Buffer) {
    let popup = centered(area, 60, 14);
    Clear.render(popup, buf);
    let text = "q, Esc   quit (Esc closes a dialog first)\n\
                ↑ ↓ k j  select a blocker\n\
                Enter    the blocker's kernel stack\n\
                s        sort blockers: blocked for, pid, comm, reason\n\
                r        reverse the transition (asks first)\n\
                f        force the transition (unsafe: type its name)\n\
                ?        this help\n\n\
                Blockers appear once the kernel (eBPF) or two polls agree\n\
                they block; 'for' counts from when klpscope first saw it.";
    Paragraph::new(text)
        .block(Block::bordered().title(" Help "))
        .render(popup, buf);
}

fn render_footer(app: &App, area: Rect, buf: &mut Buffer) {
    let line = match &app.message {
        Some(message) => Line::from(format!(" {message}")).fg(Color::Yellow),
        None => Line::from(KEYS).reversed(),
    };
    line.render(area, buf);
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    cell
}
