//! The status text and JSON for hand-built states (views are pure, so no
//! fixture tree is needed), pinned with insta.
mod common;

use livepatch_user::{
    model::{
        Direction, Kernel, Known, LivepatchSupport, Patch, PatchFunction, PatchObject, TaintFlag,
        Transition,
    },
    views::{
        status::{StatusView, render_json, render_text},
        style::Color,
    },
};

fn kernel(supported: bool, problems: &[&str]) -> Kernel {
    Kernel {
        release: "6.12.0-test".into(),
        livepatch: if supported {
            LivepatchSupport::Supported
        } else {
            LivepatchSupport::Unsupported {
                why: problems.first().unwrap_or(&"").to_string(),
            }
        },
        problems: problems.iter().map(|p| p.to_string()).collect(),
        reliable_stacktrace: Some(true),
        ftrace_enabled: Some(true),
        lockdown: Some("none".into()),
        taint: vec![TaintFlag {
            letter: 'K',
            bit: 15,
            meaning: "kernel livepatched",
        }],
        btf: true,
        module_sig_enforce: Some(false),
        tracefs: Some("/sys/kernel/tracing".into()),
    }
}

fn patch(name: &str, enabled: bool, transition: bool, replace: Option<bool>) -> Patch {
    Patch {
        name: name.into(),
        enabled: Known::Value(enabled),
        transition: Known::Value(transition),
        force: Known::unknown("force: write-only"),
        replace: replace.map(Known::Value),
        stack_order: None,
        objects: vec![
            PatchObject {
                name: "vmlinux".into(),
                patched: Known::Value(true),
                functions: vec![
                    PatchFunction {
                        name: "cmdline_proc_show".into(),
                        sympos: 1,
                    },
                    PatchFunction {
                        name: "meminfo_proc_show".into(),
                        sympos: 2,
                    },
                ],
            },
            PatchObject {
                name: "klp_test_target".into(),
                patched: Known::Value(false),
                functions: vec![PatchFunction {
                    name: "klp_test_park_wait".into(),
                    sympos: 1,
                }],
            },
        ],
        gone: false,
    }
}

#[test]
fn no_livepatch() {
    let kernel = kernel(
        false,
        &[
            "livepatch unsupported: CONFIG_LIVEPATCH is not set in /proc/config.gz",
            "tracefs is not mounted",
        ],
    );
    let view = StatusView {
        kernel: &kernel,
        patches: &[],
        transition: None,
    };
    insta::assert_snapshot!("no_livepatch_text", render_text(&view, Color::Off));
    let json = render_json(&view);
    common::json_schema::assert_valid("status", &serde_json::from_str(&json).unwrap());
    insta::assert_snapshot!("no_livepatch_json", json);
}

#[test]
fn transition_in_progress() {
    let kernel = kernel(true, &[]);
    let mut gone = patch("klp_old", false, false, None);
    gone.gone = true;
    gone.objects.clear();
    let patches = [patch("klp_cmdline", true, true, Some(false)), gone];
    let transition = Transition {
        patch: "klp_cmdline".into(),
        direction: Direction::Patching,
        tasks_total: 250,
        tasks_pending: 3,
    };
    let view = StatusView {
        kernel: &kernel,
        patches: &patches,
        transition: Some(&transition),
    };
    insta::assert_snapshot!("transition_text", render_text(&view, Color::Off));
    let json = render_json(&view);
    common::json_schema::assert_valid("status", &serde_json::from_str(&json).unwrap());
    insta::assert_snapshot!("transition_json", json);
}
