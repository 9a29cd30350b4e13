//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, built from the endpoint table
//! (`api::ENDPOINTS`), so a route cannot be served undocumented or documented with other roles
//! (a test checks every documented route is routed and enforces its roles).

use serde_json::{json, Map, Value};

use crate::api::ENDPOINTS;

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn request_body(path: &str, method: &str) -> Option<Value> {
    let schema = match (method, path) {
        ("post", "/api/v1/instances") => schema_ref("StartInstance"),
        ("post", "/api/v1/events") | ("post", "/api/v1/instances/{id}/events") => {
            schema_ref("Event")
        }
        ("post", "/api/v1/instances/{id}/cancel") => {
            json!({"type": "object", "properties": {"reason": {"type": "string"}}, "additionalProperties": false})
        }
        ("post", "/api/v1/tasks/{id}/complete") => schema_ref("CompleteTask"),
        ("post", "/api/v1/workflows/validate") => {
            json!({"type": "object", "required": ["files"], "properties": {"files": {"type": "object", "additionalProperties": {"type": "string"}, "description": "project path (workflows/…, rules/…, templates/…) to file text"}}, "additionalProperties": false})
        }
        ("post", "/hooks/{name}") => {
            json!({"description": "any JSON payload, signed per Standard Webhooks"})
        }
        _ => return None,
    };
    Some(
        json!({"required": path != "/api/v1/instances/{id}/cancel", "content": {"application/json": {"schema": schema}}}),
    )
}

fn parameters(path: &str, method: &str) -> Vec<Value> {
    let mut ps = Vec::new();
    for name in ["id", "name", "connector"] {
        if path.contains(&format!("{{{name}}}")) {
            ps.push(
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}),
            );
        }
    }
    let query: &[(&str, &str)] = match (method, path) {
        ("get", "/api/v1/instances") => &[
            ("workflow", "workflow id"),
            ("status", "running, waiting, completed, failed, cancelled"),
            ("business_key", "exact business key"),
            ("created_from", "date or RFC 3339 instant, inclusive"),
            ("created_to", "date or RFC 3339 instant, exclusive"),
            ("after", "the `next` of the previous page"),
            ("limit", "1 to 500, default 50"),
        ],
        ("get", "/api/v1/tasks") => &[
            ("role", "task role (inbox)"),
            ("assignee", "who claimed it"),
            (
                "status",
                "open, claimed, awaiting_second, completed, cancelled",
            ),
            ("overdue", "true: open tasks past due"),
            ("instance_id", "tasks of one case"),
            ("limit", "1 to 1000, default 100"),
        ],
        ("get", "/api/v1/audit") => &[
            ("after", "entry number; default 0"),
            ("limit", "1 to 1000, default 100"),
        ],
        _ => &[],
    };
    for (n, d) in query {
        ps.push(json!({"name": n, "in": "query", "required": false, "description": d, "schema": {"type": "string"}}));
    }
    if matches!(
        (method, path),
        ("post", "/api/v1/instances")
            | ("post", "/api/v1/events")
            | ("post", "/api/v1/instances/{id}/events")
    ) {
        ps.push(json!({"name": "Idempotency-Key", "in": "header", "required": false, "description": "1 to 255 characters; the same key and body replay the first answer, another body is a 409", "schema": {"type": "string", "maxLength": 255}}));
    }
    if path == "/hooks/{name}" {
        for h in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            ps.push(
                json!({"name": h, "in": "header", "required": true, "schema": {"type": "string"}}),
            );
        }
    }
    ps
}

/// The success answers of an endpoint: status code, description and schema.
fn success(path: &str, method: &str) -> Value {
    let list = |item: &str| {
        json!({"type": "object", "properties": {
            "items": {"type": "array", "items": schema_ref(item)},
            "next": {"description": "pass as `after` for the next page; null on the last"}}})
    };
    let (code, description, schema) = match (method, path) {
        ("post", "/api/v1/instances") => ("201", "started (or, with the same Idempotency-Key and body, the first answer again with `idempotent-replayed: true`)", schema_ref("Started")),
        ("get", "/api/v1/instances") => ("200", "a page of cases", list("Instance")),
        ("get", "/api/v1/instances/{id}") => ("200", "the case with its open tasks and what it waits for", schema_ref("Instance")),
        ("get", "/api/v1/instances/{id}/history") => ("200", "the hash-chained history", schema_ref("History")),
        ("post", "/api/v1/events") => ("202", "delivered", schema_ref("EventAccepted")),
        ("post", "/api/v1/instances/{id}/events") => ("202", "delivered to the case", json!({"type": "object", "properties": {"event": {"type": "string"}, "instance_id": {"type": "string"}, "status": {"type": "string"}}})),
        ("post", "/api/v1/instances/{id}/cancel") => ("200", "cancelled (compensations run)", json!({"type": "object", "properties": {"id": {"type": "string"}, "status": {"type": "string"}}})),
        ("post", "/api/v1/instances/{id}/replay") => ("200", "the replay report", schema_ref("ReplayReport")),
        ("get", "/api/v1/instances/{id}/export") => ("200", "the case file (format dossier-case/1)", json!({"type": "object"})),
        ("get", "/api/v1/tasks") => ("200", "tasks, oldest first", json!({"type": "object", "properties": {"items": {"type": "array", "items": schema_ref("Task")}}})),
        ("get", "/api/v1/tasks/{id}") | ("post", "/api/v1/tasks/{id}/claim") | ("post", "/api/v1/tasks/{id}/release") => ("200", "the task", schema_ref("Task")),
        ("post", "/api/v1/tasks/{id}/complete") => ("200", "decided", json!({"type": "object", "properties": {"task": schema_ref("Task"), "instance": {"type": "object", "properties": {"id": {"type": "string"}, "status": {"type": "string"}}}}})),
        ("get", "/api/v1/workflows") => ("200", "deployed workflows and every stored version", json!({"type": "object"})),
        ("post", "/api/v1/workflows/validate") => ("200", "the diagnostics (`valid` false when any is an error)", schema_ref("Validation")),
        ("get", "/api/v1/audit") => ("200", "a page of the audit trail", list("AuditEntry")),
        ("get", "/api/v1/audit/verify") => ("200", "whether the chain holds", json!({"type": "object", "properties": {"intact": {"type": "boolean"}, "entries": {"type": "integer"}, "broken_at": {"type": "integer"}, "last_hash": {"type": "string"}}})),
        ("post", "/receipts/{connector}") => ("202", "recorded in the case's history (200 with `duplicate: true` when the provider repeats it)", json!({"type": "object", "properties": {"instance_id": {"type": "string"}, "status": {"type": "string"}, "duplicate": {"type": "boolean"}}})),
        ("post", "/hooks/{name}") => ("202", "taken (200 with `duplicate: true` for a redelivery of the same webhook-id)", schema_ref("HookAccepted")),
        ("get", "/metrics") => ("200", "Prometheus text format", json!({"type": "string"})),
        _ => ("200", "success", json!({"type": "object"})),
    };
    json!({code: {"description": description, "content": {"application/json": {"schema": schema}}}})
}

fn schemas() -> Value {
    let s = |t: &str| json!({"type": t});
    let ns = || json!({"type": ["string", "null"]});
    json!({
        "Error": {"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string", "description": "stable code"},
            "message": {"type": "string", "description": "what is wrong and how to fix it"},
            "details": {}}},
        "StartInstance": {"type": "object", "required": ["workflow"], "additionalProperties": false, "properties": {
            "workflow": s("string"), "input": s("object"), "business_key": s("string")}},
        "Started": {"type": "object", "properties": {"id": s("string"), "workflow": s("string"), "status": s("string")}},
        "Event": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
            "name": s("string"), "payload": s("object")}},
        "EventAccepted": {"type": "object", "properties": {"event": s("string"),
            "reached": {"type": "array", "items": s("string")}, "started": {"type": "array", "items": s("string")}}},
        "HookAccepted": {"type": "object", "properties": {"webhook_id": s("string"), "duplicate": s("boolean"),
            "reached": {"type": "array", "items": s("string")}, "started": {"type": "array", "items": s("string")}}},
        "CompleteTask": {"type": "object", "required": ["outcome"], "additionalProperties": false, "properties": {
            "outcome": s("string"), "data": s("object")}},
        "Instance": {"type": "object", "properties": {
            "id": s("string"), "workflow": s("string"), "workflow_version": s("integer"), "workflow_hash": s("string"),
            "business_key": ns(), "parent_id": ns(), "status": {"enum": ["running", "waiting", "completed", "failed", "cancelled"]},
            "current_step": ns(), "data": s("object"), "pins": {"type": "object", "additionalProperties": s("string")},
            "last_seq": s("integer"), "created_at": s("string"), "updated_at": s("string"),
            "tasks": {"type": "array", "items": schema_ref("Task")},
            "waiting_for": {"type": "array", "items": {"type": "object", "properties": {"event": s("string"), "correlation": s("object")}}}}},
        "History": {"type": "object", "properties": {"instance_id": s("string"), "last_seq": s("integer"), "last_hash": s("string"),
            "events": {"type": "array", "items": {"type": "object", "properties": {
                "seq": s("integer"), "at": s("integer"), "kind": s("string"), "payload": s("object"), "prev_hash": s("string"), "hash": s("string")}}}}},
        "Task": {"type": "object", "properties": {
            "id": s("string"), "instance_id": s("string"), "workflow": s("string"), "step": s("string"), "role": s("string"),
            "title": s("string"), "instructions": ns(), "fields": s("object"), "outcomes": {"type": "array", "items": s("string")},
            "four_eyes": s("boolean"), "escalate_to": ns(),
            "status": {"enum": ["open", "claimed", "awaiting_second", "completed", "cancelled"]},
            "assignee": ns(), "due_at": ns(), "overdue": s("boolean"), "created_at": s("string"),
            "completed_at": ns(), "completed_by": ns(), "first_decision_by": ns(), "outcome": ns(), "data": {}}},
        "ReplayReport": {"type": "object", "properties": {"instance_id": s("string"), "events": s("integer"),
            "chain": {"type": "object", "properties": {"intact": s("boolean"), "error": s("string")}},
            "replay": {"type": "object", "properties": {"identical": s("boolean"), "divergence": s("string")}}}},
        "Validation": {"type": "object", "properties": {"valid": s("boolean"), "diagnostics": {"type": "array", "items": {"type": "object", "properties": {
            "file": s("string"), "line": s("integer"), "column": s("integer"), "severity": {"enum": ["error", "warning"]},
            "message": s("string"), "hint": ns(), "text": s("string")}}}}},
        "AuditEntry": {"type": "object", "properties": {"seq": s("integer"), "at": s("string"), "actor": s("string"), "role": s("string"),
            "action": s("string"), "target": s("string"), "origin": s("string"), "request_id": s("string"), "details": s("object"),
            "prev_hash": s("string"), "hash": s("string")}},
    })
}

pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for e in ENDPOINTS {
        let mut op = json!({
            "summary": e.summary,
            "parameters": parameters(e.path, e.method),
            "responses": success(e.path, e.method),
        });
        op["responses"]["4XX"] = json!({"description": "refused; nothing was written", "content": {"application/json": {"schema": schema_ref("Error")}}});
        if !e.roles.is_empty() {
            op["security"] = json!([{"apiKey": []}, {"oidc": []}]);
            op["x-roles"] = json!(e.roles);
            op["description"] = json!(format!("Roles: {}.", e.roles.join(", ")));
        } else {
            op["security"] = json!([]);
        }
        if let Some(b) = request_body(e.path, e.method) {
            op["requestBody"] = b;
        }
        let entry = paths.entry(e.path.to_string()).or_insert_with(|| json!({}));
        entry[e.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Dossier API",
            "version": "1",
            "description": "Cases (instances) of business workflows, events, the human-task inbox, workflows and the audit trail. Errors are `{error, message, details}`.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "an API key `dsk_…` (dossier keys create)"},
                "oidc": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
            "schemas": schemas(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_and_every_operation_says_its_success() {
        let doc = document();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20, "{}", all.len());
        for r in &all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} does not resolve"
            );
        }
        for e in ENDPOINTS {
            let responses = doc["paths"][e.path][e.method]["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{} {} has no responses", e.method, e.path));
            let ok: Vec<&String> = responses.keys().filter(|k| k.starts_with('2')).collect();
            assert_eq!(ok.len(), 1, "{} {}: {ok:?}", e.method, e.path);
            assert!(responses.contains_key("4XX"), "{} {}", e.method, e.path);
        }
        assert_eq!(
            doc["paths"]["/api/v1/instances"]["post"]["responses"]["201"]["content"]
                ["application/json"]["schema"]["$ref"],
            "#/components/schemas/Started"
        );
    }
}
