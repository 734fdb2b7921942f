//! Keys in, state changes and requests out. Writes to the kernel are only
//! requested here, after a confirmation; the caller performs them.
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::{Action, App, Screen};
use crate::model::Direction;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Quit,
    /// The user confirmed this write.
    Write(Action),
}

pub fn handle_key(app: &mut App, key: KeyEvent) -> Option<Request> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    // Raw mode turns Ctrl-C into a key: it must still quit from anywhere.
    if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
        return Some(Request::Quit);
    }
    match app.screen.clone() {
        Screen::Confirm(action) => match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => {
                app.screen = Screen::Main;
                return Some(Request::Write(action));
            }
            KeyCode::Char('n') | KeyCode::Esc | KeyCode::Char('q') => app.screen = Screen::Main,
            _ => {}
        },
        Screen::Help | Screen::Stack => match key.code {
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('?') => app.screen = Screen::Main,
            KeyCode::Char('q') => return Some(Request::Quit),
            _ => {}
        },
        Screen::Main => return main_key(app, key.code),
    }
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
        KeyCode::Char('r') => confirm(app, |patch, direction| Action::Reverse {
            patch,
            to: match direction {
                Direction::Patching => Direction::Unpatching,
                Direction::Unpatching => Direction::Patching,
            },
        }),
        KeyCode::Char('f') => confirm(app, |patch, _| Action::Force { patch }),
        _ => {}
    }
    None
}

fn confirm(app: &mut App, action: impl FnOnce(String, Direction) -> Action) {
    match &app.state.transition {
        Some(transition) => {
            app.screen = Screen::Confirm(action(transition.patch.clone(), transition.direction));
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
