//! What every `--json` output carries besides its content: the version of
//! its schema, and for a line its time. The JSON Schemas of the outputs are
//! generated from these very types (`output_schema`), checked in under
//! livepatch-user/schemas and installed with the package; a change that
//! breaks one bumps `SCHEMA_VERSION`.
use schemars::{JsonSchema, Schema, generate::SchemaSettings};
use serde::Serialize;

use crate::{
    analysis::rollout::RolloutStep,
    views::{printable::json_escaped, watch_event::WatchEvent},
};

/// The version of every JSON output's schema.
pub const SCHEMA_VERSION: u32 = 1;

/// A JSON document: status, check or diagnose.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Document<T> {
    pub schema_version: u32,
    #[serde(flatten)]
    pub content: T,
}

impl<T: Serialize> Document<T> {
    pub fn new(content: T) -> Self {
        Document {
            schema_version: SCHEMA_VERSION,
            content,
        }
    }

    /// Pretty-printed, with a final newline.
    pub fn render(&self) -> String {
        // Plain data with string keys: serialisation cannot fail.
        json_escaped(
            serde_json::to_string_pretty(self).expect("a document of plain data serialises"),
        ) + "\n"
    }
}

/// One JSON line of watch, apply or revert.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Line<T> {
    pub schema_version: u32,
    /// Seconds since the Unix epoch, to the millisecond.
    pub ts: f64,
    #[serde(flatten)]
    pub event: T,
}

impl<T: Serialize> Line<T> {
    pub fn new(event: T, ts: f64) -> Self {
        Line {
            schema_version: SCHEMA_VERSION,
            ts: (ts * 1000.0).round() / 1000.0,
            event,
        }
    }

    /// On one line.
    pub fn render(&self) -> String {
        json_escaped(serde_json::to_string(self).expect("a line of plain data serialises"))
    }
}

/// The check's whole report as the first line of apply and revert.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CheckStep<T> {
    pub event: CheckEvent,
    #[serde(flatten)]
    pub check: T,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckEvent {
    Check,
}

/// Any line apply and revert print.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RolloutOutput<'a, C> {
    Check(CheckStep<C>),
    Step(&'a RolloutStep),
    Transition(&'a WatchEvent),
}

/// The JSON Schema of an output whose type is `T`, as checked in: titled,
/// and bound to this `SCHEMA_VERSION`.
pub fn output_schema<T: JsonSchema>(title: &str) -> Schema {
    let mut schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    schema.insert("title".into(), title.into());
    if let Some(properties) = schema
        .get_mut("properties")
        .and_then(|properties| properties.as_object_mut())
    {
        properties.insert(
            "schema_version".into(),
            serde_json::json!({ "const": SCHEMA_VERSION }),
        );
    }
    schema
}
