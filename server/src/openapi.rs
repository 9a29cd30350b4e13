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
    for name in ["id", "name"] {
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

pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for e in ENDPOINTS {
        let mut op = json!({
            "summary": e.summary,
            "parameters": parameters(e.path, e.method),
            "responses": {
                "2XX": {"description": "success", "content": {"application/json": {}}},
                "4XX": {"description": "refused; nothing was written", "content": {"application/json": {"schema": schema_ref("Error")}}},
            },
        });
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
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"], "properties": {
                    "error": {"type": "string", "description": "stable code"},
                    "message": {"type": "string", "description": "what is wrong and how to fix it"},
                    "details": {}}},
                "StartInstance": {"type": "object", "required": ["workflow"], "additionalProperties": false, "properties": {
                    "workflow": {"type": "string"}, "input": {"type": "object"}, "business_key": {"type": "string"}}},
                "Event": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                    "name": {"type": "string"}, "payload": {"type": "object"}}},
                "CompleteTask": {"type": "object", "required": ["outcome"], "additionalProperties": false, "properties": {
                    "outcome": {"type": "string"}, "data": {"type": "object"}}},
            },
        },
    })
}
