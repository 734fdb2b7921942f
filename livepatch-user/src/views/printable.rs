//! Untrusted text made safe for a terminal. Any local user can name a task
//! (comm) with escape sequences, and a crafted .ko can carry any bytes in
//! its names: printed raw, they retitle windows, move the cursor or forge
//! lines. Every text view escapes control characters; JSON escapes those
//! its encoder leaves raw.
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

/// JSON as serde_json writes it, with the controls it leaves raw (DEL, the
/// C1 controls such as U+009B, a CSI to many terminals, and the
/// bidirectional overrides) as `\u` escapes: a parser reads the same text
/// back, a terminal showing the JSON has nothing to obey. They can only be
/// in strings, JSON's own syntax being ASCII.
pub fn json_escaped(json: String) -> String {
    if !json.chars().any(is_terminal_control) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c != '\n' && is_terminal_control(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
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

    #[test]
    fn json_keeps_its_text_and_loses_its_controls() {
        let text = "csi\u{9b}2J del\u{7f} rlo\u{202e} esc\u{1b} ünï";
        let json = json_escaped(serde_json::to_string_pretty(&[text]).unwrap());
        assert_eq!(
            json,
            "[\n  \"csi\\u009b2J del\\u007f rlo\\u202e esc\\u001b ünï\"\n]"
        );
        let back: Vec<String> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, [text]);
    }
}
