//! The JSON Schema of the workflow format, generated from the Rust types. A copy is checked in
//! at `workflows/workflow.schema.json` for analysts' editors; a test fails when it is stale
//! (`UPDATE_SCHEMA=1 cargo test -p dossier-model schema` rewrites it).

use serde_json::{json, Value};

/// The schema as pretty JSON text, ending with a newline.
pub fn workflow_schema_json() -> String {
    let schema = schemars::schema_for!(crate::Workflow);
    let mut value = serde_json::to_value(&schema).expect("a schema always serializes");
    correct(&mut value);
    let mut text = serde_json::to_string_pretty(&value).expect("a schema always serializes");
    text.push('\n');
    text
}

/// Where the derived schema says less or other than what the loader accepts.
fn correct(schema: &mut Value) {
    // `Expr` derives as a string, but its deserializer also takes YAML numbers, booleans and
    // null as literals (`jours_retard: 30`): an editor must not flag those.
    if let Some(expr) = schema.pointer_mut("/$defs/Expr") {
        expr["type"] = json!(["string", "number", "boolean", "null"]);
    }
    // The validator rejects these below 1; saying so here lets the editor flag it while typing.
    for path in [
        "/properties/version",
        "/$defs/RetrySpec/properties/max_attempts",
    ] {
        if let Some(field) = schema.pointer_mut(path) {
            field["minimum"] = json!(1);
        }
    }
}
