//! Colour in the text views (status, check, diagnose, watch's plain lines).
//! Whether to colour is decided once per run, from `--color`, NO_COLOR and
//! whether stdout is a terminal; the renderers then write through `Text`,
//! whose only way to add an escape sequence is `paint`. JSON and the TUI
//! never pass through here.
use std::{
    fmt::{self, Write as _},
    io::IsTerminal,
};

use anstyle::{AnsiColor, Style};

use crate::{cli::ColorWhen, views::printable_lines};

/// Whether a text view carries ANSI colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Off,
    On,
}

impl Color {
    /// For what goes to stdout. `auto` colours a terminal only, and not
    /// when NO_COLOR is set to anything but the empty string
    /// (no-color.org) or TERM is `dumb`; `always` is the user's explicit
    /// word and wins over NO_COLOR.
    pub fn for_stdout(when: ColorWhen) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|term| term == "dumb");
        decide(when, std::io::stdout().is_terminal() && !dumb, no_color)
    }
}

fn decide(when: ColorWhen, colour_terminal: bool, no_color: bool) -> Color {
    match when {
        ColorWhen::Always => Color::On,
        ColorWhen::Never => Color::Off,
        ColorWhen::Auto if colour_terminal && !no_color => Color::On,
        ColorWhen::Auto => Color::Off,
    }
}

/// What a painted span says; each tone has one look in every view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Ready, passed, completed, cleared.
    Good,
    /// Worth a look: a warning, a blocker that may clear, a reversal.
    Warn,
    /// Failed, not ready, forced, will not clear by itself.
    Bad,
    /// A section or an item's first line.
    Heading,
}

impl Tone {
    fn style(self) -> Style {
        match self {
            Tone::Good => Style::new().fg_color(Some(AnsiColor::Green.into())),
            Tone::Warn => Style::new().fg_color(Some(AnsiColor::Yellow.into())),
            Tone::Bad => Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
            Tone::Heading => Style::new().bold(),
        }
    }
}

/// A text view being written. Everything written through `fmt::Write` is
/// escaped as untrusted text (control characters escaped, line breaks
/// kept: `printable_lines`), so a task or module name can never forge a
/// colour or move the cursor; `paint` alone adds escape sequences, around
/// text escaped the same way.
pub struct Text {
    out: String,
    color: Color,
}

impl Text {
    pub fn new(color: Color) -> Self {
        Self {
            out: String::new(),
            color,
        }
    }

    /// `text` in `tone`'s colours, or as it is with colour off.
    pub fn paint(&mut self, tone: Tone, text: impl fmt::Display) -> fmt::Result {
        if self.color == Color::Off {
            return write!(self, "{text}");
        }
        let style = tone.style();
        self.out.push_str(&style.render().to_string());
        write!(self, "{text}")?;
        self.out.push_str(&style.render_reset().to_string());
        Ok(())
    }

    pub fn into_string(self) -> String {
        self.out
    }
}

impl fmt::Write for Text {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Escaping works character by character: pieces escaped one by one
        // read the same as the whole escaped at once.
        self.out.push_str(&printable_lines(text));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_colours_a_terminal_unless_no_color() {
        let cases = [
            (ColorWhen::Auto, true, false, Color::On),
            (ColorWhen::Auto, true, true, Color::Off),
            (ColorWhen::Auto, false, false, Color::Off),
            (ColorWhen::Always, false, true, Color::On),
            (ColorWhen::Never, true, false, Color::Off),
        ];
        for (when, terminal, no_color, expected) in cases {
            assert_eq!(
                decide(when, terminal, no_color),
                expected,
                "{when:?} terminal={terminal} no_color={no_color}"
            );
        }
    }

    #[test]
    fn only_paint_adds_escape_sequences() {
        let mut text = Text::new(Color::On);
        writeln!(text, "comm \x1b[31mred").unwrap();
        text.paint(Tone::Bad, "FAIL \x1b]2;title\x07").unwrap();
        let out = text.into_string();
        let bad = Tone::Bad.style();
        assert_eq!(
            out,
            format!(
                "comm \\x1b[31mred\n{}FAIL \\x1b]2;title\\x07{}",
                bad.render(),
                bad.render_reset()
            )
        );

        let mut plain = Text::new(Color::Off);
        plain.paint(Tone::Good, "ready").unwrap();
        assert_eq!(plain.into_string(), "ready");
    }
}
