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
        advice::{Forecast, advise},
        blockers::Blocker,
        call_stats::FunctionCalls,
        transition_tracker::{SignalsSeen, TransitionProgress},
    },
    kernel::livepatch_write::TransitionWrite,
    model::{Direction, Known, Patch},
    views::{noun, printable, watch_lines::describe},
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
    // The blockers take the rows they fill (borders and header, and room
    // for the two-line note when there are none); what is left goes to the
    // calls and the event log, whose sentences wrap, at least 8 rows.
    let blocker_rows = u16::try_from(app.blockers().len()).unwrap_or(u16::MAX);
    let blockers_height = blocker_rows
        .saturating_add(3)
        .max(6)
        .min(area.height.saturating_sub(1 + 8).max(5));
    let [gauge, blockers, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(blockers_height),
        Constraint::Min(8),
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
            "{switched}/{} {} switched ({:.0}%)",
            transition.tasks_total,
            noun(transition.tasks_total, "task"),
            ratio * 100.0
        ))
        .gauge_style(Style::new().fg(Color::Green).bg(Color::DarkGray))
        .render(gauge, buf);
    render_blockers(app, transition, blockers, buf);
    render_bottom(app, bottom, buf);
}

/// Inner widths from which the blocker table shows its wide form: both ids
/// and the forecast in words. Narrower, it drops the pid (the tid is what
/// blocks, and what the stack view opens) and shortens the forecast.
const WIDE_BLOCKERS: u16 = 96;

fn render_blockers(app: &App, transition: &TransitionProgress, area: Rect, buf: &mut Buffer) {
    let rows = app.blockers();
    let wide = area.width.saturating_sub(2) >= WIDE_BLOCKERS;
    let columns = |all: Vec<Cell<'static>>| -> Vec<Cell<'static>> {
        all.into_iter()
            .enumerate()
            .filter(|(at, _)| wide || *at != 0)
            .map(|(_, cell)| cell)
            .collect()
    };
    let header = Row::new(columns(
        [
            "pid", "tid", "comm", "kth", "st", "reason", "function", "for", "fails", "clears",
        ]
        .map(Cell::from)
        .to_vec(),
    ))
    .style(Style::new().bold());
    let body = rows.iter().map(|b| {
        // The analysis `diagnose` prints decides: the scheduler state, the
        // reason and whether it is a kthread say whether the fake signal
        // moves it.
        let forecast = advise(b, transition.direction, &transition.patch, None).forecast;
        let (label, color) = forecast_label(forecast, wide);
        Row::new(columns(vec![
            Cell::from(b.pid.to_string()),
            Cell::from(b.tid.to_string()),
            Cell::from(b.comm.clone()),
            Cell::from(if b.kthread { "yes" } else { "" }),
            Cell::from(b.state.to_string()),
            Cell::from(b.reason.short()),
            Cell::from(b.function.clone().unwrap_or_else(|| "?".into())),
            Cell::from(b.blocked_secs.map_or("-".into(), |s| format!("{s:.0}s"))),
            Cell::from(b.failed_checks.map_or("-".into(), |n| n.to_string())),
            Cell::from(label).style(Style::new().fg(color)),
        ]))
    });
    let title = format!(" Blockers ({}) · sort: {} ", rows.len(), app.sort.label());
    let widths = [
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(15),
        Constraint::Length(3),
        Constraint::Length(2),
        Constraint::Length(10),
        Constraint::Fill(1),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(if wide { 13 } else { 6 }),
    ];
    let widths = widths
        .into_iter()
        .enumerate()
        .filter(|(at, _)| wide || *at != 0)
        .map(|(_, width)| width);
    let table = Table::new(body, widths)
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

/// Whether a blocker clears by itself, in a word or three: what the user
/// acts on. The wide form fits 13 columns, the narrow one 6.
fn forecast_label(forecast: Forecast, wide: bool) -> (&'static str, Color) {
    let (wide_label, narrow_label, color) = match forecast {
        Forecast::ClearsAfterSignals => ("after signal", "signal", Color::Green),
        Forecast::Transient => ("soon", "soon", Color::Green),
        Forecast::MayClearAfterSignals => ("maybe, signal", "maybe", Color::Yellow),
        Forecast::WillNotClearByItself => ("not by itself", "stuck", Color::Red),
        Forecast::Unknown => ("unknown", "?", Color::Yellow),
    };
    (if wide { wide_label } else { narrow_label }, color)
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
        let text = match (stats.uncounted.first(), &app.feed.polling) {
            (Some((function, reason)), _) => format!("{function}: not counted ({reason})"),
            (None, Some(reason)) => format!("calls are not counted: eBPF unavailable ({reason})"),
            // Before the counters' first sample.
            (None, None) if patches_a_function(app) => "no call counted yet".into(),
            (None, None) => "no patched vmlinux function".into(),
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
        let Some(label) = rows.next() else { break };
        // Charts of nothing but zeros look like a broken panel: say what
        // was counted instead.
        let charted = history
            .old_per_sec
            .iter()
            .chain(&history.new_per_sec)
            .any(|&n| n > 0);
        if !charted {
            Line::from(uncharted(calls, history))
                .dark_gray()
                .render(label, buf);
            continue;
        }
        let rate = |r: Option<u64>| r.map_or("-".into(), |r| r.to_string());
        let (old, new) = (format!("old {}", rate(old)), format!("new {}", rate(new)));
        // The rates whole; the name shortened if both do not fit.
        let room = usize::from(label.width).saturating_sub(old.len() + new.len() + 2);
        Line::from(vec![
            Span::raw(format!("{} ", shortened(&calls.function, room))),
            Span::styled(old, Style::new().fg(Color::Yellow)),
            Span::raw(" "),
            Span::styled(new, Style::new().fg(Color::Green)),
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

/// Whether a patch replaces any function: one whose calls are counted.
fn patches_a_function(app: &App) -> bool {
    app.tracker()
        .patches
        .iter()
        .any(|patch| patch.objects.iter().any(|o| !o.functions.is_empty()))
}

/// `name` in at most `room` characters, an ellipsis ending it if cut.
fn shortened(name: &str, room: usize) -> String {
    if name.chars().count() <= room {
        return name.to_owned();
    }
    let mut short: String = name.chars().take(room.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// One line for a counted function with no rate to chart.
fn uncharted(calls: &FunctionCalls, history: &CallHistory) -> String {
    let function = &calls.function;
    match (calls.old_total, calls.new_total) {
        (0, 0) => format!("{function}: no call counted yet"),
        (old, new) if history.old_per_sec.is_empty() => {
            format!("{function}: old {old} new {new} calls so far, rates next sample")
        }
        (old, new) => format!("{function}: no call lately (old {old} new {new} in all)"),
    }
}

/// The newest events that fit, each wrapped between words under its time.
fn render_log(app: &App, area: Rect, buf: &mut Buffer) {
    let block = Block::bordered().title(" Events ");
    let inner = block.inner(area);
    block.render(area, buf);
    let start = app.started_ns.unwrap_or(0);
    let (width, height) = (usize::from(inner.width), usize::from(inner.height));
    // Newest first, each event's lines last to first; turned round below.
    let mut lines: Vec<String> = Vec::new();
    for logged in app.log.iter().rev() {
        let secs = logged.at_ns.saturating_sub(start) as f64 / 1e9;
        let sentence = describe(&logged.event);
        let wrapped = wrap_words(&format!("{secs:>5.0}s "), &printable(&sentence), width);
        if lines.len() + wrapped.len() > height {
            if lines.is_empty() {
                // The newest event alone is taller than the panel: its start.
                lines.extend(wrapped.into_iter().take(height).rev());
            }
            break;
        }
        lines.extend(wrapped.into_iter().rev());
    }
    lines.reverse();
    Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>()).render(inner, buf);
}

/// `prefix` then `text`, in lines at most `width` wide, broken between
/// words; later lines are indented under the text. A word longer than a
/// whole line is cut, with an ellipsis.
fn wrap_words(prefix: &str, text: &str, width: usize) -> Vec<String> {
    let indent = Span::raw(prefix).width();
    let mut lines = Vec::new();
    let mut line = prefix.to_owned();
    let mut used = indent;
    let mut empty = true;
    for word in text.split(' ').filter(|word| !word.is_empty()) {
        let word_width = Span::raw(word).width();
        if !empty && used + 1 + word_width > width {
            lines.push(std::mem::replace(&mut line, " ".repeat(indent)));
            used = indent;
            empty = true;
        }
        if !empty {
            line.push(' ');
            used += 1;
        }
        if used + word_width <= width {
            line.push_str(word);
            used += word_width;
        } else {
            let room = width.saturating_sub(used + 1);
            line.extend(word.chars().take(room));
            line.push('…');
            used = width;
        }
        empty = false;
    }
    lines.push(line);
    lines
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
                they block; 'for' counts from when klpscope first saw it.\n\
                'st' is the scheduler state, 'clears' whether it clears\n\
                by itself (signal: after the kernel's fake signal).";
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_break_between_words_and_only_overlong_words_are_cut() {
        assert_eq!(
            wrap_words("   1s ", "patching transition started (68 tasks)", 24),
            [
                "   1s patching",
                "      transition started",
                "      (68 tasks)",
            ]
        );
        assert_eq!(
            wrap_words("   1s ", "in a_very_long_function_name", 16),
            ["   1s in", "      a_very_lo…"]
        );
    }
}
