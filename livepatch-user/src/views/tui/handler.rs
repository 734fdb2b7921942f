//! Keys in, state changes and requests out. Writes to the kernel are only
//! requested here, after a deliberate confirmation; the caller performs
//! them, and the kernel layer re-checks that they still apply.
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::{App, Confirmation, Screen};
use crate::kernel::livepatch_write::TransitionWrite;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Quit,
    /// Ctrl-C: the raw-mode terminal delivers it as a key, not a signal.
    Interrupt,
    /// The user confirmed this write.
    Write(TransitionWrite),
}

pub fn handle_key(app: &mut App, key: KeyEvent) -> Option<Request> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    // Raw mode turns Ctrl-C into a key: it must still interrupt from
    // anywhere, as the signal would.
    if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
        return Some(Request::Interrupt);
    }
    match app.screen.clone() {
        Screen::Confirm(confirmation) => return confirm_key(app, confirmation, key.code),
        Screen::Help | Screen::Stack => match key.code {
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('?') => app.screen = Screen::Main,
            KeyCode::Char('q') => return Some(Request::Quit),
            _ => {}
        },
        Screen::Main => return main_key(app, key.code),
    }
    None
}

/// Stray typing must never confirm: every key that is not the expected
/// answer cancels the dialog.
fn confirm_key(app: &mut App, mut confirmation: Confirmation, code: KeyCode) -> Option<Request> {
    app.screen = Screen::Main;
    match (&confirmation.write, code) {
        (TransitionWrite::Reverse { .. }, KeyCode::Char('y' | 'Y')) => {
            return Some(Request::Write(confirmation.write));
        }
        (TransitionWrite::Force { patch, .. }, KeyCode::Enter) => {
            if confirmation.typed == *patch {
                return Some(Request::Write(confirmation.write));
            }
            app.message = Some("force cancelled: the name typed was not the patch's".into());
            return None;
        }
        (TransitionWrite::Force { .. }, KeyCode::Char(c)) if !c.is_control() => {
            confirmation.typed.push(c);
            app.screen = Screen::Confirm(confirmation);
            return None;
        }
        (TransitionWrite::Force { .. }, KeyCode::Backspace) => {
            confirmation.typed.pop();
            app.screen = Screen::Confirm(confirmation);
            return None;
        }
        _ => {}
    }
    app.message = Some("cancelled: nothing written".into());
    None
}

fn main_key(app: &mut App, code: KeyCode) -> Option<Request> {
    app.message = None;
    match code {
        KeyCode::Char('q') | KeyCode::Esc => return Some(Request::Quit),
        KeyCode::Up | KeyCode::Char('k') => select(app, -1),
        KeyCode::Down | KeyCode::Char('j') => select(app, 1),
        KeyCode::Enter => {
            if app.selected_blocker().is_some() {
                app.screen = Screen::Stack;
            } else {
                app.message = Some("no blocker to show".into());
            }
        }
        KeyCode::Char('s') => app.sort = app.sort.next(),
        KeyCode::Char('?') => app.screen = Screen::Help,
        KeyCode::Char('r') => confirm(app, |patch, from| TransitionWrite::Reverse { patch, from }),
        KeyCode::Char('f') => confirm(app, |patch, direction| TransitionWrite::Force {
            patch,
            direction,
        }),
        _ => {}
    }
    None
}

/// Opens the dialog for the transition on screen now; the write carries its
/// patch and direction so that a stale yes writes nothing.
fn confirm(app: &mut App, write: impl FnOnce(String, crate::model::Direction) -> TransitionWrite) {
    match &app.live.tracker.transition {
        Some(transition) => {
            let write = write(transition.patch.clone(), transition.direction);
            app.screen = Screen::Confirm(Confirmation::new(write));
        }
        None => app.message = Some("no transition in progress".into()),
    }
}

fn select(app: &mut App, step: isize) {
    let rows = app.blockers();
    let Some(current) = app.selected_row() else {
        return;
    };
    let next = current.saturating_add_signed(step).min(rows.len() - 1);
    app.selected_tid = Some(rows[next].tid);
}
