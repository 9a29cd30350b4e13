//! Exact conversions between JSON values and Rhai values.
//!
//! JSON numbers keep their exact text (serde_json's `arbitrary_precision`), so a
//! non-integer number goes to a [`Decimal`] through that text and back through the
//! decimal's own digits: `1234.56` stays `1234.56`, never a binary float.

use std::str::FromStr;

use rhai::{Array, Dynamic, ImmutableString, Map, INT};
use rust_decimal::Decimal;
use serde_json::{Number, Value};

use crate::RuleError;

/// Converts a JSON value to a Rhai value.
///
/// `null` → `()`, booleans, strings, arrays, objects (maps); integers that fit an
/// `i64` → `INT`; every other number → `Decimal`, parsed from its exact JSON text.
/// A number that no `Decimal` can hold (more than 28 significant digits, or an
/// exponent out of range) is an error naming the number.
pub fn to_dynamic(value: &Value) -> Result<Dynamic, RuleError> {
    Ok(match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => number_to_dynamic(n)?,
        Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        Value::Array(items) => {
            let mut array = Array::with_capacity(items.len());
            for item in items {
                array.push(to_dynamic(item)?);
            }
            Dynamic::from_array(array)
        }
        Value::Object(fields) => {
            let mut map = Map::new();
            for (key, item) in fields {
                map.insert(key.as_str().into(), to_dynamic(item)?);
            }
            Dynamic::from_map(map)
        }
    })
}

fn number_to_dynamic(n: &Number) -> Result<Dynamic, RuleError> {
    if let Some(i) = n.as_i64() {
        return Ok(Dynamic::from_int(i as INT));
    }
    let text = n.to_string();
    parse_decimal_text(&text)
        .map(Dynamic::from_decimal)
        .ok_or_else(|| RuleError::Value {
            message: format!("the number {text} cannot be used in a rule: it has too many digits or is out of range"),
            hint: Some("rule numbers are decimals with at most 28 significant digits".into()),
        })
}

/// Parses the text of a JSON (or YAML) number into an exact [`Decimal`].
///
/// Accepts plain (`-12.340`) and scientific (`1.5e3`) notation.
pub(crate) fn parse_decimal_text(text: &str) -> Option<Decimal> {
    let text = text.strip_prefix('+').unwrap_or(text);
    if text.contains(['e', 'E']) {
        Decimal::from_scientific(text).ok()
    } else {
        Decimal::from_str_exact(text).ok()
    }
}

/// Converts a Rhai value back to JSON.
///
/// Maps become objects (keys sorted), arrays, strings (and characters), booleans,
/// `INT` and `Decimal` (with their exact digits: `10.00` stays `10.00`); `()` becomes
/// `null`. Anything else (function pointers, blobs, timestamps, custom types) is an
/// error naming the type.
pub fn from_dynamic(value: &Dynamic) -> Result<Value, RuleError> {
    if value.is_shared() {
        return from_dynamic(&value.flatten_clone());
    }
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::Number(Number::from(i)));
    }
    if let Ok(d) = value.as_decimal() {
        return decimal_to_json(d);
    }
    if let Some(s) = value.read_lock::<ImmutableString>() {
        return Ok(Value::String(s.to_string()));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if let Some(array) = value.read_lock::<Array>() {
        return array
            .iter()
            .map(from_dynamic)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if let Some(map) = value.read_lock::<Map>() {
        // `rhai::Map` is a BTreeMap: iterating it yields the keys in sorted order,
        // and inserting in that order keeps them sorted whatever serde_json's map is.
        let mut object = serde_json::Map::new();
        for (key, item) in map.iter() {
            object.insert(key.to_string(), from_dynamic(item)?);
        }
        return Ok(Value::Object(object));
    }
    Err(RuleError::Value {
        message: format!(
            "a rule returned a value of type `{}`, which cannot be stored as JSON",
            value.type_name()
        ),
        hint: Some(
            "return numbers, text, true/false, lists (arrays) or objects (maps) only".into(),
        ),
    })
}

/// Converts a decimal to a JSON number with exactly its digits (`9.990` stays `9.990`).
pub fn decimal_to_json(d: Decimal) -> Result<Value, RuleError> {
    let text = d.to_string();
    Number::from_str(&text)
        .map(Value::Number)
        .map_err(|e| RuleError::Value {
            message: format!("the decimal {text} cannot be written as a JSON number: {e}"),
            hint: None,
        })
}
