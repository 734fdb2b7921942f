//! Holds a file of klpscope's JSON to its checked-in schema, in the VM lab
//! where the scenarios' outputs are made (the guest has jq, no validator):
//! `json_check OUTPUT FILE`, OUTPUT one of status, check, diagnose (a
//! document) or watch, rollout (a JSON line each). Exits 1 naming every
//! violation, 2 on a usage error.
use std::process::ExitCode;

use serde_json::Value;

const SCHEMAS: [(&str, &str); 5] = [
    ("status", include_str!("../schemas/status.schema.json")),
    ("check", include_str!("../schemas/check.schema.json")),
    ("diagnose", include_str!("../schemas/diagnose.schema.json")),
    ("watch", include_str!("../schemas/watch.schema.json")),
    ("rollout", include_str!("../schemas/rollout.schema.json")),
];

/// Outputs written as one JSON value per line.
const LINES: [&str; 2] = ["watch", "rollout"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [output, file] = args.as_slice() else {
        eprintln!("usage: json_check status|check|diagnose|watch|rollout FILE");
        return ExitCode::from(2);
    };
    let Some((_, schema)) = SCHEMAS.iter().find(|(name, _)| name == output) else {
        eprintln!("json_check: no schema for output {output:?}");
        return ExitCode::from(2);
    };
    let schema: Value = serde_json::from_str(schema).expect("a checked-in schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("a checked-in schema compiles");
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("json_check: {file}: {error}");
            return ExitCode::from(1);
        }
    };
    let values: Vec<&str> = if LINES.contains(&output.as_str()) {
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .collect()
    } else {
        vec![text.as_str()]
    };
    let mut problems = Vec::new();
    for (n, raw) in values.iter().enumerate() {
        let where_ = format!("{file}, value {}", n + 1);
        match serde_json::from_str::<Value>(raw) {
            Err(error) => problems.push(format!("{where_}: not JSON ({error})")),
            Ok(value) => problems.extend(
                validator
                    .iter_errors(&value)
                    .map(|e| format!("{where_}: {e} at {}", e.instance_path())),
            ),
        }
    }
    if problems.is_empty() {
        return ExitCode::SUCCESS;
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    eprintln!("json_check: {file} is not a valid {output} output");
    ExitCode::from(1)
}
