//! The signals that end a live command (watch, apply), each with its own
//! exit code: 128 + the signal's number, as a shell reports it.
use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::model::LiveEvent;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    Hangup,
    Interrupt,
    Terminate,
}

impl StopSignal {
    fn number(self) -> i32 {
        match self {
            StopSignal::Hangup => libc::SIGHUP,
            StopSignal::Interrupt => libc::SIGINT,
            StopSignal::Terminate => libc::SIGTERM,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Hangup => "SIGHUP",
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    pub fn exit_code(self) -> u8 {
        128 + self.number() as u8
    }

    pub fn event(self) -> LiveEvent {
        LiveEvent::Interrupted {
            signal: self.name().to_owned(),
        }
    }
}

/// Installed handlers: from here on these signals are events, not the end
/// of the process.
pub struct StopSignals {
    hangup: Signal,
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    pub fn new() -> io::Result<Self> {
        Ok(StopSignals {
            hangup: signal(SignalKind::hangup())?,
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal; cancel-safe, for `select!`.
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.hangup.recv() => StopSignal::Hangup,
            _ = self.interrupt.recv() => StopSignal::Interrupt,
            _ = self.terminate.recv() => StopSignal::Terminate,
        }
    }
}
