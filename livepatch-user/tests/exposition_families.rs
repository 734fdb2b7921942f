//! Every family the exposition can hold, serve's own among them (eBPF call
//! counts, transitions ended), rendered from one full set of metrics:
//! promtool accepts it, and it and the README's metric table name the same
//! metrics with the same types.
mod common;

use std::collections::BTreeSet;

use common::exposition::{assert_promtool_accepts, value};
use livepatch_user::{
    analysis::{
        advice::BlockerKind,
        blockers::VerdictSource,
        call_stats::FunctionCalls,
        fleet_metrics::{
            BlockerClass, BlockerIdentity, FleetMetrics, PatchFlags, TransitionFacts,
            TransitionsEnded,
        },
        transition_tracker::Outcome,
    },
    model::{BlockReason, Direction, FeedCapabilities},
    views::exposition::render,
};

/// A host in the middle of everything: a reversed, signalled transition
/// with a blocker, an earlier forced one, calls counted, eBPF polling.
fn everything() -> FleetMetrics {
    let mut calls = FunctionCalls::default();
    calls.function = "cmdline_proc_show".into();
    calls.old_total = 5;
    calls.new_total = 7;
    FleetMetrics {
        livepatch_supported: true,
        kernel_problems: vec![
            "lockdown is integrity: unsigned livepatch modules are refused".into(),
        ],
        feed: Some(FeedCapabilities {
            polling: Some("fentry refused by the kernel".into()),
            verdicts_inferred: None,
            tasks_from_procfs: None,
        }),
        patches: vec![
            PatchFlags {
                name: "klp_a".into(),
                enabled: Some(true),
                transition: Some(false),
                replace: None,
            },
            PatchFlags {
                name: "klp_b".into(),
                enabled: Some(false),
                transition: Some(true),
                replace: Some(true),
            },
        ],
        transition: Some(TransitionFacts {
            patch: "klp_b".into(),
            direction: Direction::Unpatching,
            tasks_total: 300,
            tasks_pending: 1,
            elapsed_secs: Some(42.5),
            retry_rounds: Some(42),
            signals_sent: Some(true),
            reversed: true,
            forced: false,
            verdicts: VerdictSource::Inferred,
        }),
        blockers: vec![BlockerClass {
            reason: BlockReason::FunctionOnStack,
            kind: BlockerKind::KthreadInPatchedFunction,
            count: 1,
        }],
        top_blockers: vec![BlockerIdentity {
            pid: 9,
            tid: 9,
            comm: "kthreadd".into(),
            function: Some("livepatch_cmdline_proc_show".into()),
            reason: BlockReason::FunctionOnStack,
            kind: BlockerKind::KthreadInPatchedFunction,
        }],
        last_transition: Some(Outcome {
            patch: "klp_a".into(),
            direction: Direction::Patching,
            reversed: false,
            forced: true,
            secs: Some(3.25),
        }),
        calls: vec![calls],
        ended: Some(TransitionsEnded {
            completed: 4,
            reversed: 1,
            forced: 2,
        }),
    }
}

/// `# TYPE name type` lines of the exposition.
fn families(text: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// The README's metric table: `| \`name\` | type | ...`.
fn documented() -> BTreeSet<(String, String)> {
    let readme = include_str!("../../README.md");
    readme
        .lines()
        .filter_map(|line| {
            let mut cells = line.strip_prefix("| `klpscope_")?.split('|');
            let name = cells.next()?.trim().trim_end_matches('`');
            let kind = cells.next()?.trim();
            Some((format!("klpscope_{name}"), kind.to_owned()))
        })
        .collect()
}

#[test]
fn every_family_passes_promtool_and_is_documented() {
    let text = render(&everything(), "9.9.9").expect("encoded");
    assert_promtool_accepts(&text);
    assert_eq!(
        families(&text),
        documented(),
        "the exposition and the README's table"
    );
    for (series, expected) in [
        ("klpscope_build_info{version=\"9.9.9\"}", 1.0),
        ("klpscope_ebpf_available", 0.0),
        ("klpscope_ebpf_kernel_verdicts", 0.0),
        (
            "klpscope_ebpf_unavailable_info{reason=\"fentry refused by the kernel\"}",
            1.0,
        ),
        ("klpscope_patch_replace{patch=\"klp_b\"}", 1.0),
        ("klpscope_transition_elapsed_seconds", 42.5),
        ("klpscope_transition_retry_rounds", 42.0),
        ("klpscope_transition_signals_sent", 1.0),
        ("klpscope_transition_reversed", 1.0),
        ("klpscope_last_transition_forced", 1.0),
        ("klpscope_last_transition_duration_seconds", 3.25),
        ("klpscope_transitions_total{outcome=\"completed\"}", 4.0),
        ("klpscope_transitions_total{outcome=\"reversed\"}", 1.0),
        ("klpscope_transitions_total{outcome=\"forced\"}", 2.0),
        (
            "klpscope_patched_function_calls_total{function=\"cmdline_proc_show\",version=\"old\"}",
            5.0,
        ),
        (
            "klpscope_patched_function_calls_total{function=\"cmdline_proc_show\",version=\"new\"}",
            7.0,
        ),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series} in\n{text}");
    }
    assert_eq!(
        value(&text, "klpscope_patch_replace{patch=\"klp_a\"}"),
        None,
        "no replace file"
    );
}
