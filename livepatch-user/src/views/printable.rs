//! Untrusted text made safe for a terminal. Any local user can name a task
//! (comm) with escape sequences, and a crafted .ko can carry any bytes in
//! its names: printed raw, they retitle windows, move the cursor or forge
//! lines. Every text view escapes control characters; JSON needs nothing
//! more than its own escaping.
use std::{borrow::Cow, fmt::Write as _};

/// One field: every control character escaped, newlines included, so that
/// a name can never break a line in two.
pub fn printable(text: &str) -> Cow<'_, str> {
    escape(text, |_| false)
}

/// A whole report: control characters escaped, its own line breaks kept.
pub fn printable_lines(text: &str) -> Cow<'_, str> {
    escape(text, |c| c == '\n')
}

fn escape(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| is_terminal_control(c) && !keep(c);
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// C0, DEL and C1 controls, and the bidirectional overrides that reorder
/// what a reader sees.
fn is_terminal_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_obey() {
        assert_eq!(printable("cat"), "cat");
        assert_eq!(printable("\x1b]2;owned\x07x"), "\\x1b]2;owned\\x07x");
        assert_eq!(printable("a\nb\tc\u{9b}"), "a\\x0ab\\x09c\\x9b");
        assert_eq!(printable("evil\u{202e}txt"), "evil\\u{202e}txt");
        assert_eq!(printable_lines("one\x1b[2J\ntwo\n"), "one\\x1b[2J\ntwo\n");
        assert_eq!(printable("ünïcode"), "ünïcode");
    }
}
