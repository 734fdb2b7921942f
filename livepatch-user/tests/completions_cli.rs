//! `klpscope completions SHELL` on the real binary: each script names every
//! command the CLI defines, so it cannot lag behind a new one.
use std::process::Command;

use clap::CommandFactory;
use livepatch_user::cli::Cli;

fn completions(shell: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .args(["completions", shell])
        .output()
        .expect("run klpscope");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_script_offers_every_command() {
    let commands: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|command| command.get_name().to_owned())
        .collect();
    assert!(commands.iter().any(|c| c == "completions"), "{commands:?}");
    for (shell, opening) in [
        ("bash", "_klpscope() {"),
        ("zsh", "#compdef klpscope"),
        ("fish", "complete -c klpscope"),
    ] {
        let script = completions(shell);
        assert!(script.contains(opening), "{shell}: {script}");
        for command in &commands {
            assert!(script.contains(command.as_str()), "{shell} lacks {command}");
        }
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .args(["completions", "cmd.exe"])
        .output()
        .expect("run klpscope");
    assert_eq!(output.status.code(), Some(2));
}
