//! The terminal's lifecycle: raw mode and the alternate screen while the
//! TUI runs, restored on every way out. `Drop` covers returns and errors;
//! ratatui's panic hook covers panics; signals end the event loop, which
//! drops this.
use ratatui::DefaultTerminal;

pub struct TerminalSession {
    pub terminal: DefaultTerminal,
}

impl TerminalSession {
    pub fn enter() -> std::io::Result<Self> {
        Ok(TerminalSession {
            terminal: ratatui::try_init()?,
        })
    }
}

impl Drop for TerminalSession {
    fn drop(&mut self) {
        ratatui::restore();
    }
}
