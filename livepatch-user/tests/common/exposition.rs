//! Reading klpscope's Prometheus exposition in tests: promtool's verdict on
//! it (Debian's prometheus package, which `cargo xtask test` installs), and
//! its series as the encoder writes them.
#![allow(dead_code)]

use std::{
    io::{ErrorKind, Write},
    net::TcpListener,
    process::{Child, Command, Stdio},
};

pub const MISSING_TOOLS: &str = "Debian's prometheus and prometheus-node-exporter packages: \
    `cargo xtask test` installs them, or `apt-get install prometheus prometheus-node-exporter`";

/// A child process killed with the test, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a tool of those packages as a server, stopped with the test.
pub fn spawn(command: &mut Command) -> Running {
    Running(start(command))
}

/// Starts a tool of those packages; a missing one fails the test, saying
/// where to get it.
fn start(command: &mut Command) -> Child {
    match command.spawn() {
        Ok(child) => child,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            panic!(
                "{:?} is not installed: it comes from {MISSING_TOOLS}",
                command.get_program()
            )
        }
        Err(error) => panic!("cannot start {:?}: {error}", command.get_program()),
    }
}

/// `promtool check metrics` must accept the text: no parse error, no lint
/// problem.
pub fn assert_promtool_accepts(text: &str) {
    let mut child = start(
        Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("wait for promtool");
    assert!(
        out.status.success(),
        "promtool check metrics refused it ({}): {}{}\n--- the exposition:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// The value of the series `series` (its name and labels exactly as the
/// encoder writes them, labels sorted by name), if the text has it.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            Some(value.parse().expect("a number after the series"))
        })
}

/// How many series of family `name` the text has.
pub fn series_count(text: &str, name: &str) -> usize {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .count()
}

/// A port nobody listens on right now, for a server the test starts.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}
