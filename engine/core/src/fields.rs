//! Checking a case input or a task's form data against the declared fields.

use dossier_model::{parse_instant, FieldSpec, FieldType};
use indexmap::IndexMap;
use serde_json::Value;

/// One field that does not fit, with the dotted path of the field (`client.email`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Checks `value` (a JSON object) against `fields`. Unknown fields are refused too: a typo in
/// a field name must not silently drop a value.
pub fn check_fields(
    fields: &IndexMap<String, FieldSpec>,
    value: &Value,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    check_object(fields, value, "", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn check_object(
    fields: &IndexMap<String, FieldSpec>,
    value: &Value,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) {
    let Some(obj) = value.as_object() else {
        errors.push(FieldError {
            field: if prefix.is_empty() {
                "(input)".into()
            } else {
                prefix.into()
            },
            message: format!("expected an object, got {}", type_name(value)),
        });
        return;
    };
    for (name, spec) in fields {
        let path = join(prefix, name);
        match obj.get(name) {
            None | Some(Value::Null) => {
                if spec.required {
                    errors.push(FieldError {
                        field: path,
                        message: format!("is required ({})", spec.kind.name()),
                    });
                }
            }
            Some(v) => check_value(spec, v, &path, errors),
        }
    }
    for name in obj.keys() {
        if !fields.contains_key(name) {
            let known: Vec<&str> = fields.keys().map(String::as_str).collect();
            let message = match dossier_model::did_you_mean(name, known.iter().copied()) {
                Some(best) => format!("is not a declared field; did you mean `{best}`?"),
                None => format!("is not a declared field (declared: {})", known.join(", ")),
            };
            errors.push(FieldError {
                field: join(prefix, name),
                message,
            });
        }
    }
}

fn check_value(spec: &FieldSpec, v: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let mut bad = |expected: &str| {
        errors.push(FieldError {
            field: path.to_string(),
            message: format!("expected {expected}, got {}", type_name(v)),
        })
    };
    match spec.kind {
        FieldType::Text => {
            if !v.is_string() {
                bad("text")
            }
        }
        FieldType::Integer => {
            if !(v.is_i64() || v.is_u64()) {
                bad("a whole number")
            }
        }
        FieldType::Decimal => {
            // A decimal may come as a JSON number or as text holding one ("12.50").
            let ok = match v {
                Value::Number(_) => true,
                Value::String(s) => s.parse::<rust_decimal::Decimal>().is_ok(),
                _ => false,
            };
            if !ok {
                bad("a decimal number")
            }
        }
        FieldType::Boolean => {
            if !v.is_boolean() {
                bad("true or false")
            }
        }
        FieldType::Date => match v.as_str() {
            Some(s) if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => {}
            _ => bad("a date YYYY-MM-DD"),
        },
        FieldType::Datetime => match v.as_str() {
            Some(s) if s.contains('T') && parse_instant(s).is_some() => {}
            _ => bad("an RFC 3339 date-time such as 2026-11-21T09:30:00Z"),
        },
        FieldType::Choice => match v.as_str() {
            Some(s) if spec.options.iter().any(|o| o == s) => {}
            _ => bad(&format!("one of {}", spec.options.join(", "))),
        },
        FieldType::Email => match v.as_str() {
            Some(s) if is_email(s) => {}
            _ => bad("an email address"),
        },
        FieldType::Phone => match v.as_str() {
            Some(s) if is_phone(s) => {}
            _ => bad("a phone number in international form (+225...)"),
        },
        FieldType::List => match v.as_array() {
            Some(items) => {
                if let Some(item_spec) = &spec.items {
                    for (i, item) in items.iter().enumerate() {
                        check_value(item_spec, item, &format!("{path}[{i}]"), errors);
                    }
                }
            }
            None => bad("a list"),
        },
        FieldType::Object => check_object(&spec.fields, v, path, errors),
    }
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

fn is_phone(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(yaml: &str) -> IndexMap<String, FieldSpec> {
        serde_yaml_ng::from_str(yaml).expect("valid spec")
    }

    #[test]
    fn accepts_fitting_input_and_names_every_misfit() {
        let fields = spec(
            "montant: {type: decimal}\necheance: {type: date}\nemail: {type: email, required: false}\ncanal: {type: choice, options: [sms, email]}\n",
        );
        assert!(check_fields(
            &fields,
            &json!({"montant": 12.5, "echeance": "2026-01-31", "canal": "sms"})
        )
        .is_ok());
        let errs = check_fields(
            &fields,
            &json!({"montant": "abc", "echeance": "31/01/2026", "canal": "fax", "montnat": 1}),
        )
        .unwrap_err();
        let text: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert_eq!(
            text,
            vec![
                "montant: expected a decimal number, got text",
                "echeance: expected a date YYYY-MM-DD, got text",
                "canal: expected one of sms, email, got text",
                "montnat: is not a declared field; did you mean `montant`?",
            ]
        );
    }
}
