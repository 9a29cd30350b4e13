//! The checked-in JSON Schema (`workflows/workflow.schema.json`) must match the Rust types.

use std::path::PathBuf;

use dossier_model::schema::workflow_schema_json;

const REGENERATE: &str = "UPDATE_SCHEMA=1 cargo test -p dossier-model schema";

#[test]
fn schema_file_is_up_to_date() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workflows/workflow.schema.json");
    let generated = workflow_schema_json();
    if std::env::var("UPDATE_SCHEMA").as_deref() == Ok("1") {
        std::fs::write(&path, &generated)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "workflows/workflow.schema.json is missing or differs from the workflow types; regenerate it with `{REGENERATE}`"
    );
}

#[test]
fn schema_describes_the_format() {
    let schema: serde_json::Value =
        serde_json::from_str(&workflow_schema_json()).expect("the schema is JSON");
    let required = &schema["required"];
    for field in ["id", "version", "title", "steps"] {
        assert!(
            required
                .as_array()
                .is_some_and(|r| r.iter().any(|f| f == field)),
            "`{field}` is required"
        );
    }
    let step = &schema["$defs"]["Step"]["properties"];
    for kind in [
        "rule",
        "assign",
        "branch",
        "wait",
        "wait_event",
        "task",
        "action",
        "parallel",
        "for_each",
        "call",
        "render",
        "fail",
    ] {
        assert!(
            step.get(kind).is_some(),
            "step kind `{kind}` is in the schema"
        );
    }
}

#[test]
fn schema_accepts_literal_expressions() {
    // `with: { jours_retard: 30 }` is a valid expression: the schema must not flag it.
    let schema: serde_json::Value =
        serde_json::from_str(&workflow_schema_json()).expect("the schema is JSON");
    let types = &schema["$defs"]["Expr"]["type"];
    for t in ["string", "number", "boolean"] {
        assert!(
            types.as_array().is_some_and(|a| a.iter().any(|x| x == t)),
            "Expr accepts {t}: {types}"
        );
    }
    assert_eq!(schema["properties"]["version"]["minimum"], 1);
}
