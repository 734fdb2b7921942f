//! The checked-in JSON Schemas, for validating the outputs the tests see.
// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]
use std::path::PathBuf;

use serde_json::Value;

pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");

pub fn path(output: &str) -> PathBuf {
    PathBuf::from(DIR).join(format!("{output}.schema.json"))
}

pub fn validator(output: &str) -> jsonschema::Validator {
    let path = path(output);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the {output} schema {} ({e})", path.display()));
    let schema: Value = serde_json::from_str(&text).expect("a schema is JSON");
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{} is not a valid JSON Schema: {e}", path.display()))
}

/// Panics, naming every violation, unless `value` is a valid `output`
/// (status, check, diagnose, watch or rollout).
pub fn assert_valid(output: &str, value: &Value) {
    let validator = validator(output);
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not a valid {output} output: {errors:#?}\n{value:#}"
    );
}
