//! `watch` without a terminal: one line per change, as text or JSON. The
//! TUI's event log uses the same sentences.
use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    analysis::{
        blockers::CodeVersion,
        transition_tracker::{SignalsSeen, TransitionEvent},
    },
    model::LiveEvent,
    views::{
        counted,
        json_output::Line,
        printable,
        style::{Color, Text, Tone},
        watch_event::WatchEvent,
    },
};

/// One JSON object: `schema_version`, `ts` (seconds since the Unix
/// epoch), `event` and the event's fields (a transition's event, or a
/// rollout's step).
pub fn json_line(event: &impl Serialize, ts: f64) -> String {
    Line::new(event, ts).render()
}

/// `+SECS  sentence`, seconds counted from when the command started; the
/// sentence in the colour of its tone, if `color` is on.
pub fn plain_line(
    sentence: &str,
    tone: Option<Tone>,
    since_start_secs: f64,
    color: Color,
) -> String {
    let mut line = Text::new(color);
    // Writing into memory cannot fail.
    let _ = write!(line, "{since_start_secs:>+8.1}s  ");
    // A whole line: a newline in a name is escaped too.
    let sentence = printable(sentence).into_owned();
    let _ = match tone {
        Some(tone) => line.paint(tone, sentence),
        None => line.write_str(&sentence),
    };
    line.into_string()
}

/// What an event means to the person watching, as a colour; none for the
/// ordinary course of a transition.
pub fn tone(event: &WatchEvent) -> Option<Tone> {
    match event {
        WatchEvent::Transition(event) => transition_tone(event),
        WatchEvent::Live(LiveEvent::Ready { .. }) => None,
        WatchEvent::Live(LiveEvent::Timeout { .. } | LiveEvent::Interrupted { .. }) => {
            Some(Tone::Warn)
        }
    }
}

/// The event as one sentence for a person.
pub fn describe(event: &WatchEvent) -> String {
    match event {
        WatchEvent::Transition(event) => describe_transition(event),
        WatchEvent::Live(LiveEvent::Timeout { secs }) => format!("timed out after {secs:.0}s"),
        WatchEvent::Live(LiveEvent::Ready {
            ebpf: true,
            kernel_verdicts: true,
            ..
        }) => "ready: following transitions with the kernel's own verdicts (eBPF)".into(),
        WatchEvent::Live(LiveEvent::Ready { ebpf: true, .. }) => {
            "ready: following transitions with eBPF, blockers inferred from stacks".into()
        }
        WatchEvent::Live(LiveEvent::Ready { ebpf: false, .. }) => {
            "ready: following transitions by polling /proc and /sys".into()
        }
        WatchEvent::Live(LiveEvent::Interrupted { signal }) => format!("interrupted by {signal}"),
    }
}

fn transition_tone(event: &TransitionEvent) -> Option<Tone> {
    match event {
        TransitionEvent::Complete { .. } | TransitionEvent::BlockerCleared { .. } => {
            Some(Tone::Good)
        }
        TransitionEvent::Blocker { .. }
        | TransitionEvent::Signals { .. }
        | TransitionEvent::Reverse { .. }
        | TransitionEvent::Gone { .. } => Some(Tone::Warn),
        TransitionEvent::Force { .. } | TransitionEvent::Refused { .. } => Some(Tone::Bad),
        TransitionEvent::Start { .. }
        | TransitionEvent::Progress { .. }
        | TransitionEvent::Switched { .. } => None,
    }
}

fn describe_transition(event: &TransitionEvent) -> String {
    match event {
        TransitionEvent::Start {
            patch,
            direction,
            tasks_total,
        } => format!(
            "{patch}: {} transition started ({})",
            direction.as_str(),
            counted(*tasks_total, "task")
        ),
        TransitionEvent::Progress {
            patch,
            tasks_pending,
            switched,
            ..
        } => format!(
            "{patch}: {} switched, {tasks_pending} pending",
            counted(*switched, "task")
        ),
        TransitionEvent::Blocker {
            pid,
            tid,
            comm,
            kthread,
            state,
            reason,
            function,
            version,
        } => {
            let who = if *kthread { "kthread" } else { "task" };
            let function = function.as_deref().unwrap_or("?");
            let version = match version {
                Some(CodeVersion::Replacement { patch }) => format!(", {patch}'s replacement"),
                _ => String::new(),
            };
            format!(
                "blocker: {who} {comm} pid {pid} tid {tid} [{state}]: {} ({function}{version})",
                reason.words()
            )
        }
        TransitionEvent::BlockerCleared { pid, tid, comm } => {
            format!("cleared: {comm} pid {pid} tid {tid} no longer blocks")
        }
        TransitionEvent::Switched { patch, tids } => {
            format!(
                "{patch}: the kernel switched {}",
                counted(tids.len(), "task")
            )
        }
        TransitionEvent::Signals { patch, seen_in } => format!(
            "{patch}: kernel signalled the remaining tasks ({})",
            match seen_in {
                SignalsSeen::KernelLog => "kernel log",
                SignalsSeen::FailedRounds => "after 15 failed rounds",
            }
        ),
        TransitionEvent::Reverse { patch, direction } => {
            format!("{patch}: reversed, now {}", direction.as_str())
        }
        TransitionEvent::Force { patch } => {
            format!("{patch}: FORCED: remaining tasks marked switched (module pinned)")
        }
        TransitionEvent::Complete {
            patch,
            direction,
            reversed,
            forced,
            secs,
        } => {
            let how = match (reversed, forced) {
                (true, _) => " after reversal",
                (false, true) => " by force",
                (false, false) => "",
            };
            let took = secs.map_or(" between two polls".into(), |s| format!(" in {s:.1}s"));
            format!("{patch}: {} complete{how}{took}", direction.as_str())
        }
        TransitionEvent::Gone { patch } => format!("{patch}: gone from /sys/kernel/livepatch"),
        TransitionEvent::Refused { patch, why } => format!("{patch}: load refused: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BlockReason, Direction};

    #[test]
    fn json_lines_carry_ts_event_and_fields() {
        let line = json_line(
            &TransitionEvent::Blocker {
                pid: 7,
                tid: 8,
                comm: "cat".into(),
                kthread: false,
                state: 'S',
                reason: BlockReason::FunctionOnStack,
                function: Some("cmdline_proc_show".into()),
                version: Some(CodeVersion::Original),
            },
            1700000000.12345,
        );
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "schema_version": 1,
                "ts": 1700000000.123,
                "event": "blocker",
                "pid": 7, "tid": 8, "comm": "cat", "kthread": false,
                "state": "S", "reason": "function_on_stack", "function": "cmdline_proc_show",
                "version": {"kind": "original"}
            })
        );
    }

    #[test]
    fn plain_lines_say_what_happened() {
        let complete = WatchEvent::Transition(TransitionEvent::Complete {
            patch: "p".into(),
            direction: Direction::Unpatching,
            reversed: true,
            forced: false,
            secs: Some(17.26),
        });
        let line = plain_line(&describe(&complete), tone(&complete), 20.0, Color::Off);
        assert_eq!(
            line,
            "   +20.0s  p: unpatching complete after reversal in 17.3s"
        );
    }

    #[test]
    fn a_coloured_line_paints_the_sentence_and_escapes_names() {
        let blocker = WatchEvent::Transition(TransitionEvent::Blocker {
            pid: 7,
            tid: 8,
            comm: "evil\nline\x1b[2J".into(),
            kthread: false,
            state: 'S',
            reason: BlockReason::FunctionOnStack,
            function: Some("cmdline_proc_show".into()),
            version: Some(CodeVersion::Original),
        });
        let sentence = describe(&blocker);
        let plain = plain_line(&sentence, tone(&blocker), 1.0, Color::Off);
        let coloured = plain_line(&sentence, tone(&blocker), 1.0, Color::On);
        assert!(!plain.contains('\x1b'), "{plain:?}");
        assert!(plain.contains("evil\\x0aline\\x1b[2J"), "{plain:?}");
        let yellow = anstyle::Style::new().fg_color(Some(anstyle::AnsiColor::Yellow.into()));
        assert_eq!(
            coloured,
            format!(
                "    +1.0s  {}{}{}",
                yellow.render(),
                plain.trim_start_matches("    +1.0s  "),
                yellow.render_reset()
            )
        );
        assert!(!coloured.contains('\n'));
    }
}
