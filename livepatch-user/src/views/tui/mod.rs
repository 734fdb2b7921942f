//! The interactive `watch` screen, split by role: `app` holds what is shown,
//! `handler` turns keys into state changes and requests, `ui` renders, and
//! `terminal` owns the terminal's raw mode and alternate screen.
pub mod app;
pub mod handler;
pub mod terminal;
pub mod ui;
