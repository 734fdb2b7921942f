//! The JSON Schema of each `--json` output, generated from the types klpscope
//! serialises, is the one checked in under livepatch-user/schemas (and
//! installed with the package). `KLPSCOPE_BLESS_SCHEMAS=1 cargo test --test
//! json_schemas` writes them anew after a change; one that breaks what a
//! reader may rely on bumps `SCHEMA_VERSION`.
mod common;

use std::path::PathBuf;

use livepatch_user::views::{
    check_report::CheckView,
    diagnose_report::DiagnoseJson,
    json_output::{Document, Line, RolloutOutput, SCHEMA_VERSION, output_schema},
    status::StatusView,
    watch_event::WatchEvent,
};
use schemars::Schema;

fn outputs() -> Vec<(&'static str, Schema)> {
    vec![
        (
            "status",
            output_schema::<Document<StatusView<'static>>>("klpscope status --json"),
        ),
        (
            "check",
            output_schema::<Document<CheckView<'static>>>("klpscope check --json"),
        ),
        (
            "diagnose",
            output_schema::<Document<DiagnoseJson<'static>>>("klpscope diagnose --json"),
        ),
        (
            "watch",
            output_schema::<Line<WatchEvent>>("a line of klpscope watch --json"),
        ),
        (
            "rollout",
            output_schema::<Line<RolloutOutput<'static, CheckView<'static>>>>(
                "a line of klpscope apply --json or klpscope revert --json",
            ),
        ),
    ]
}

#[test]
fn the_checked_in_schemas_are_those_of_the_types() {
    let bless = std::env::var_os("KLPSCOPE_BLESS_SCHEMAS").is_some_and(|v| v == "1");
    for (name, schema) in outputs() {
        let path = common::json_schema::path(name);
        let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if bless {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{} ({e}): run with KLPSCOPE_BLESS_SCHEMAS=1",
                path.display()
            )
        });
        assert!(
            checked_in == generated,
            "{} is not the schema of the {name} output's types: if the output changed on \
             purpose, regenerate with KLPSCOPE_BLESS_SCHEMAS=1 cargo test --test json_schemas, \
             and bump SCHEMA_VERSION ({SCHEMA_VERSION}) if the change breaks a reader",
            path.display()
        );
    }
}

/// Every schema is a valid JSON Schema that a validator compiles.
#[test]
fn each_schema_compiles() {
    for (name, _) in outputs() {
        common::json_schema::validator(name);
    }
    assert!(PathBuf::from(common::json_schema::DIR).is_dir());
}

/// The schemas hold readers to something: a document of another schema
/// version, or a watch line with an event no klpscope writes, is refused.
#[test]
fn the_schemas_refuse_what_klpscope_never_writes() {
    let status = common::json_schema::validator("status");
    let other_version = serde_json::json!({"schema_version": SCHEMA_VERSION + 1});
    assert!(!status.is_valid(&other_version));

    let watch = common::json_schema::validator("watch");
    let unknown_event = serde_json::json!({
        "schema_version": SCHEMA_VERSION, "ts": 0, "event": "teleported"
    });
    assert!(!watch.is_valid(&unknown_event));
}
