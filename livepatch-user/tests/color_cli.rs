//! `--color` and NO_COLOR on the real binary: colour only on a terminal by
//! default, never in JSON, and untrusted names never get to colour.
mod common;

use std::process::{Command, Output};

use common::fixture::Fixture;

const ESC: char = '\x1b';

fn fixture() -> Fixture {
    let fixture = Fixture::livepatch_kernel();
    fixture
        .patch("klp_t", "1", "1", Some("0"))
        .object("klp_t", "vmlinux", "1", &["cmdline_proc_show,1"])
        .user_thread(10, 10, "1")
        .user_thread(20, 20, "0");
    fixture
}

fn klpscope(fixture: &Fixture, args: &[&str], no_color: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_klpscope"));
    command
        .args(["--root", fixture.root().to_str().unwrap()])
        .args(args)
        .env_remove("NO_COLOR");
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    text(command.output().expect("run klpscope"))
}

fn text(output: Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// klpscope on a pseudo-terminal (util-linux's `script`, part of every
/// Debian), as an administrator runs it; what the terminal received.
fn on_a_terminal(fixture: &Fixture, args: &str, no_color: Option<&str>) -> String {
    let line = format!(
        "{} --root {} {args}",
        env!("CARGO_BIN_EXE_klpscope"),
        fixture.root().display()
    );
    let mut command = Command::new("script");
    command
        .args(["--quiet", "--return", "--command", &line, "/dev/null"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm");
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let output = command
        .output()
        .expect("util-linux's script gives the test a terminal: install bsdutils");
    text(output)
}

#[test]
fn auto_colours_a_terminal_only_and_honours_no_color() {
    let fixture = fixture();
    let piped = klpscope(&fixture, &["status"], None);
    assert!(!piped.contains(ESC), "{piped:?}");
    assert!(piped.contains("1 of 2 tasks pending"), "{piped}");

    let terminal = on_a_terminal(&fixture, "status", None);
    assert!(terminal.contains(ESC), "{terminal:?}");
    assert!(terminal.contains("1 of 2 tasks pending"), "{terminal:?}");

    for (no_color, coloured) in [("1", false), ("", true)] {
        let out = on_a_terminal(&fixture, "status", Some(no_color));
        assert_eq!(
            out.contains(ESC),
            coloured,
            "NO_COLOR={no_color:?}: {out:?}"
        );
    }
    let never = on_a_terminal(&fixture, "--color never status", None);
    assert!(!never.contains(ESC), "{never:?}");
}

#[test]
fn always_colours_a_pipe_even_with_no_color_but_never_json() {
    let fixture = fixture();
    let always = klpscope(&fixture, &["status", "--color", "always"], Some("1"));
    assert!(always.contains(ESC), "{always:?}");
    // The same words once the colours are taken out.
    let plain = klpscope(&fixture, &["status"], None);
    assert_eq!(strip_sgr(&always), plain);

    let json = klpscope(&fixture, &["--color", "always", "status", "--json"], None);
    assert!(!json.contains(ESC), "{json}");
    let doc = serde_json::from_str::<serde_json::Value>(&json).expect("JSON");
    common::json_schema::assert_valid("status", &doc);
}

#[test]
fn a_hostile_patch_name_cannot_colour_the_report() {
    let fixture = Fixture::livepatch_kernel();
    let forged = "klp_\x1b[35mpurple";
    fixture.patch(forged, "1", "0", Some("0")).object(
        forged,
        "vmlinux",
        "1",
        &["cmdline_proc_show,1"],
    );
    let out = klpscope(&fixture, &["--color", "always", "status"], None);
    assert!(out.contains("klp_\\x1b[35mpurple"), "{out:?}");
    // Magenta: no colour klpscope uses itself.
    assert!(!out.contains("\x1b[35m"), "{out:?}");
}

/// Text without its SGR sequences (ESC [ ... m), which are all klpscope
/// writes.
fn strip_sgr(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("\x1b[") {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = after.find('m').expect("an SGR sequence ends in m");
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}
