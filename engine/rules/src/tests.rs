use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use expect_test::{expect, Expect};
use serde_json::{json, Number, Value};

use super::*;

const PENALITES: &str = include_str!("../tests/fixtures/penalites.rhai");

fn ctx() -> RuleContext {
    RuleContext::new(
        DateTime::parse_from_rfc3339("2026-03-01T09:30:00Z")
            .unwrap()
            .with_timezone(&Utc),
    )
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Exact JSON number from its text.
fn num(text: &str) -> Value {
    Value::Number(Number::from_str(text).unwrap())
}

/// Evaluates an expression with no variables.
fn eval(rules: &Rules, source: &str) -> Result<Value, RuleError> {
    let expr = rules.compile_expr(source)?;
    rules.eval_expr(&expr, &serde_json::Map::new(), &ctx())
}

fn ok(rules: &Rules, source: &str) -> Value {
    eval(rules, source).unwrap_or_else(|e| panic!("{source}: {e:#}"))
}

fn err(rules: &Rules, source: &str) -> RuleError {
    match eval(rules, source) {
        Ok(v) => panic!("{source}: expected an error, got {v}"),
        Err(e) => e,
    }
}

/// Asserts the exact JSON text (so `9.90` is not `9.9`).
fn text(rules: &Rules, source: &str, expected: &str) {
    assert_eq!(ok(rules, source).to_string(), expected, "{source}");
}

fn module(rules: &Rules, source: &str) -> Arc<RuleModule> {
    rules
        .compile_module("test", "rules/test.rhai", source)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn call_err(rules: &Rules, source: &str, function: &str, args: &[Value]) -> RuleError {
    let m = module(rules, source);
    match rules.call(&m, function, args, &ctx()) {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e,
    }
}

fn check(e: &RuleError, snapshot: Expect) {
    snapshot.assert_eq(&format!("{e:#}"));
}

// ---------------------------------------------------------------------------
// Basics
// ---------------------------------------------------------------------------

#[test]
fn content_hash_is_lowercase_hex_sha256() {
    assert_eq!(
        content_hash("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn rules_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Rules>();
    assert_send_sync::<Arc<RuleModule>>();
    assert_send_sync::<Arc<Expr>>();
}

#[test]
fn module_functions_are_public_and_in_source_order() {
    let rules = Rules::default();
    let m = rules
        .compile_module("penalites", "rules/penalites.rhai", PENALITES)
        .unwrap();
    let names: Vec<(&str, usize)> = m
        .functions
        .iter()
        .map(|f| (f.name.as_str(), f.params.len()))
        .collect();
    assert_eq!(
        names,
        [
            ("penalite_l441", 3),
            ("indemnite_forfaitaire", 1),
            ("taux_par_defaut", 1),
            ("jours_de_retard", 2),
            ("semestre_de_reference", 1),
            ("decompte", 4),
        ]
    );
    assert_eq!(m.functions[0].line, 9);
    assert_eq!(
        m.functions[0].params,
        ["montant_ttc", "jours_retard", "taux_annuel"]
    );
    assert_eq!(m.hash, content_hash(PENALITES));

    let m = module(
        &rules,
        "private fn aide(x) { x }\nfn b(x) { aide(x) }\nfn a() { 1 }",
    );
    let names: Vec<&str> = m.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["b", "a"]);
    assert_eq!(rules.call(&m, "b", &[json!(7)], &ctx()).unwrap(), json!(7));
}

#[test]
fn penalty_rule_computes_cents() {
    let rules = Rules::default();
    let m = rules
        .compile_module("penalites", "rules/penalites.rhai", PENALITES)
        .unwrap();
    let v = rules
        .call(
            &m,
            "penalite_l441",
            &[num("1000.00"), json!(30), num("0.1215")],
            &ctx(),
        )
        .unwrap();
    assert_eq!(v.to_string(), "9.99");
}

// ---------------------------------------------------------------------------
// Decimals and conversions
// ---------------------------------------------------------------------------

#[test]
fn decimal_arithmetic_is_exact() {
    let rules = Rules::default();
    assert_eq!(ok(&rules, "0.1 + 0.2 == 0.3"), json!(true));
    text(&rules, "0.1 + 0.2", "0.3");
    text(&rules, "1.10 * 3", "3.30");
    text(&rules, "1 / 3.0", "0.3333333333333333333333333333");
    // Decimal division by zero is an error, not infinity.
    assert!(err(&rules, "1.5 / 0")
        .to_string()
        .contains("division by zero"));
}

#[test]
fn mixed_integer_and_decimal_arithmetic() {
    let rules = Rules::default();
    text(&rules, "1 + 0.5", "1.5");
    text(&rules, "0.5 + 1", "1.5");
    text(&rules, "3 - 0.5", "2.5");
    text(&rules, "0.5 - 3", "-2.5");
    text(&rules, "2 * 0.25", "0.50");
    text(&rules, "0.25 * 2", "0.50");
    text(&rules, "1 / 0.5", "2.0");
    text(&rules, "0.5 / 2", "0.250");
    for (source, expected) in [
        ("1 < 1.5", true),
        ("1.5 < 1", false),
        ("2 > 1.5", true),
        ("1.5 > 2", false),
        ("1 <= 1.0", true),
        ("1.0 <= 1", true),
        ("1 >= 1.5", false),
        ("1.5 >= 1", true),
        ("1 == 1.00", true),
        ("1.00 == 1", true),
        ("1 != 1.5", true),
        ("1.5 != 1", true),
    ] {
        assert_eq!(ok(&rules, source), json!(expected), "{source}");
    }
    let m = module(&rules, "fn f() { let x = 1; x += 0.5; x *= 2; x }");
    assert_eq!(rules.call(&m, "f", &[], &ctx()).unwrap().to_string(), "3.0");
    // Integer division stays integer (documented pitfall).
    text(&rules, "7 / 2", "3");
    text(&rules, "7 / 2.0", "3.5");
}

#[test]
fn json_numbers_round_trip_exactly() {
    let rules = Rules::default();
    let m = module(&rules, "fn id(x) { x }\nfn plus(x, y) { x + y }");
    for text in [
        "1234.56",
        "1000.00",
        "0.1215",
        "-0.5",
        "12345678901234567890.12345678",
        "42",
        "-7",
    ] {
        let out = rules.call(&m, "id", &[num(text)], &ctx()).unwrap();
        assert_eq!(out.to_string(), text);
    }
    // Integers stay integers, other numbers become decimals.
    assert_eq!(to_dynamic(&json!(5)).unwrap().type_name(), "i64");
    assert_eq!(to_dynamic(&num("5.0")).unwrap().type_name(), "decimal");
    // Too big for i64: a decimal with the same digits.
    let out = rules
        .call(&m, "id", &[num("98765432109876543210")], &ctx())
        .unwrap();
    assert_eq!(out.to_string(), "98765432109876543210");
    let out = rules
        .call(&m, "plus", &[num("0.1"), num("0.2")], &ctx())
        .unwrap();
    assert_eq!(out.to_string(), "0.3");
    // Scientific notation is read exactly.
    assert_eq!(
        from_dynamic(&to_dynamic(&num("1.5e3")).unwrap())
            .unwrap()
            .to_string(),
        "1500"
    );
}

#[test]
fn conversions_of_every_json_type() {
    let value = json!({"b": [true, null, "x", 1, {"z": 1, "a": 2}], "a": "texte"});
    let back = from_dynamic(&to_dynamic(&value).unwrap()).unwrap();
    assert_eq!(back, value);
    // Keys come back sorted.
    assert_eq!(
        back.to_string(),
        r#"{"a":"texte","b":[true,null,"x",1,{"a":2,"z":1}]}"#
    );
}

#[test]
fn conversion_errors_name_the_type_or_number() {
    let e = to_dynamic(&num("1e400")).unwrap_err();
    check(
        &e,
        expect![[r#"
            the number 1e+400 cannot be used in a rule: it has too many digits or is out of range
            hint: rule numbers are decimals with at most 28 significant digits"#]],
    );
    let e = from_dynamic(&Dynamic::from(rhai::FnPtr::new("f").unwrap())).unwrap_err();
    check(
        &e,
        expect![[r#"
            a rule returned a value of type `Fn`, which cannot be stored as JSON
            hint: return numbers, text, true/false, lists (arrays) or objects (maps) only"#]],
    );
    let rules = Rules::default();
    let e = call_err(&rules, "fn f() { Fn(\"f\") }", "f", &[]);
    check(
        &e,
        expect![[r#"
            `test.f` returned a value that is not JSON: a rule returned a value of type `Fn`, which cannot be stored as JSON
            hint: return numbers, text, true/false, lists (arrays) or objects (maps) only"#]],
    );
}

// ---------------------------------------------------------------------------
// Money helpers
// ---------------------------------------------------------------------------

#[test]
fn decimal_parsing() {
    let rules = Rules::default();
    text(&rules, r#"decimal("12.345")"#, "12.345");
    text(&rules, r#"decimal(" -3 ")"#, "-3");
    text(&rules, "decimal(5) / 2", "2.50");
    text(&rules, "decimal(1.50)", "1.50");
    check(
        &err(&rules, r#"decimal("12,5")"#),
        expect![[r#"
            the expression `decimal("12,5")` failed: `12,5` is not a decimal number (column 1)
            hint: write it with a dot and no thousands separator, e.g. "1234.56""#]],
    );
}

#[test]
fn rounding_helpers() {
    let rules = Rules::default();
    // Half away from zero (commercial rounding).
    text(&rules, "round_to(2.345, 2)", "2.35");
    text(&rules, "round_to(-2.345, 2)", "-2.35");
    text(&rules, "round_to(2.344, 2)", "2.34");
    text(&rules, "round_to(9.9, 2)", "9.90");
    text(&rules, "round_to(7, 2)", "7.00");
    text(&rules, "round_to(2.5, 0)", "3");
    // Banker's rounding when asked.
    text(&rules, "round_half_even(2.345, 2)", "2.34");
    text(&rules, "round_half_even(2.355, 2)", "2.36");
    text(&rules, "round_half_even(2.5, 0)", "2");
    // Up = away from zero, down = toward zero.
    text(&rules, "round_up(2.341, 2)", "2.35");
    text(&rules, "round_up(-2.341, 2)", "-2.35");
    text(&rules, "round_down(2.349, 2)", "2.34");
    text(&rules, "round_down(-2.349, 2)", "-2.34");
    // Method-call style works too.
    text(&rules, "(1.005).round_to(2)", "1.01");
    check(
        &err(&rules, "round_to(1.5, -1)"),
        expect!["the expression `round_to(1.5, -1)` failed: the number of decimal places must be between 0 and 28, got -1 (column 1)"],
    );
}

#[test]
fn money_rounding_by_currency() {
    let rules = Rules::default();
    text(&rules, r#"round_money(10.005, "EUR")"#, "10.01");
    text(&rules, r#"round_money(10.004, "USD")"#, "10.00");
    text(&rules, r#"round_money(1, "GBP")"#, "1.00");
    text(&rules, r#"round_money(-0.125, "CHF")"#, "-0.13");
    text(&rules, r#"round_money(1234.5, "XOF")"#, "1235");
    text(&rules, r#"round_money(99.49, "XAF")"#, "99");
    text(&rules, r#"round_money(99.5, "FCFA")"#, "100");
    text(&rules, r#"round_money(150.5, "JPY")"#, "151");
    text(&rules, r#"round_money(2.345, "eur")"#, "2.35");
    check(
        &err(&rules, r#"round_money(1.5, "XYZ")"#),
        expect![[r#"
            the expression `round_money(1.5, "XYZ")` failed: unknown currency `XYZ` (column 1)
            hint: known currencies: EUR, USD, GBP, CHF (cents), XOF, XAF, FCFA, JPY (no minor unit)"#]],
    );
}

#[test]
fn min_and_max() {
    let rules = Rules::default();
    text(&rules, "min(1.5, 2)", "1.5");
    text(&rules, "max(1.5, 2)", "2");
    text(&rules, "min(2, 1.5)", "1.5");
    text(&rules, "max(2.5, 1.25)", "2.5");
    text(&rules, "min(3, 4)", "3");
    text(&rules, "max(0, -4)", "0");
}

// ---------------------------------------------------------------------------
// Date helpers
// ---------------------------------------------------------------------------

#[test]
fn days_between_dates_and_datetimes() {
    let rules = Rules::default();
    text(&rules, r#"days_between("2026-01-31", "2026-03-02")"#, "30");
    text(&rules, r#"days_between("2026-03-02", "2026-01-31")"#, "-30");
    text(&rules, r#"days_between("2024-02-28", "2024-03-01")"#, "2");
    // A date-time counts as the date written in it.
    text(
        &rules,
        r#"days_between("2026-03-01T23:00:00Z", "2026-03-02T01:00:00Z")"#,
        "1",
    );
    text(
        &rules,
        r#"days_between("2026-03-01", "2026-03-11T10:00:00+02:00")"#,
        "10",
    );
}

#[test]
fn adding_days_and_months() {
    let rules = Rules::default();
    let cases = [
        (r#"add_days("2026-02-27", 2)"#, r#""2026-03-01""#),
        (r#"add_days("2026-03-01", -1)"#, r#""2026-02-28""#),
        (
            r#"add_days("2026-03-01T10:00:00+01:00", 1)"#,
            r#""2026-03-02T10:00:00+01:00""#,
        ),
        (r#"add_months("2026-01-31", 1)"#, r#""2026-02-28""#),
        (r#"add_months("2024-01-31", 1)"#, r#""2024-02-29""#),
        (r#"add_months("2026-03-31", -1)"#, r#""2026-02-28""#),
        (r#"add_months("2026-01-15", 12)"#, r#""2027-01-15""#),
        (
            r#"add_months("2026-01-31T08:00:00Z", 1)"#,
            r#""2026-02-28T08:00:00Z""#,
        ),
        (r#"end_of_month("2024-02-10")"#, r#""2024-02-29""#),
        (r#"end_of_month("2026-12-31")"#, r#""2026-12-31""#),
        (
            r#"start_of_month("2026-03-17T12:00:00Z")"#,
            r#""2026-03-01""#,
        ),
    ];
    for (source, expected) in cases {
        text(&rules, source, expected);
    }
}

#[test]
fn date_parts() {
    let rules = Rules::default();
    text(&rules, r#"year("2026-03-17")"#, "2026");
    text(&rules, r#"month("2026-03-17")"#, "3");
    text(&rules, r#"day("2026-03-17")"#, "17");
    text(&rules, r#"weekday("2026-03-02")"#, "1"); // a Monday
    text(&rules, r#"weekday("2026-03-01")"#, "7"); // a Sunday
    text(&rules, r#"half_year("2026-06-30")"#, "1");
    text(&rules, r#"half_year("2026-07-01")"#, "2");
    text(
        &rules,
        r#"date_of("2026-03-01T23:30:00+02:00")"#,
        r#""2026-03-01""#,
    );
    text(&rules, r#"date_of("2026-03-01")"#, r#""2026-03-01""#);
    text(&rules, r#""2026-03-17".month()"#, "3");
}

#[test]
fn iso_durations() {
    let rules = Rules::default();
    let cases = [
        (
            r#"add_duration("2026-03-01T00:00:00Z", "P7D")"#,
            "2026-03-08T00:00:00Z",
        ),
        (
            r#"add_duration("2026-03-01T00:00:00Z", "PT36H")"#,
            "2026-03-02T12:00:00Z",
        ),
        (
            r#"add_duration("2026-01-31T09:00:00Z", "P1M")"#,
            "2026-02-28T09:00:00Z",
        ),
        (
            r#"add_duration("2026-03-01T00:00:00Z", "P2W")"#,
            "2026-03-15T00:00:00Z",
        ),
        (
            r#"add_duration("2026-01-01T00:00:00Z", "P1Y2M3W4DT5H6M7S")"#,
            "2027-03-26T05:06:07Z",
        ),
        (
            r#"add_duration("2026-03-01T00:00:00Z", "-P1D")"#,
            "2026-02-28T00:00:00Z",
        ),
        (
            r#"add_duration("2026-03-01T10:00:00+01:00", "PT30M")"#,
            "2026-03-01T10:30:00+01:00",
        ),
        // A date plus whole days stays a date; with hours it becomes a date-time.
        (r#"add_duration("2026-03-01", "P7D")"#, "2026-03-08"),
        (
            r#"add_duration("2026-03-01", "PT12H")"#,
            "2026-03-01T12:00:00Z",
        ),
    ];
    for (source, expected) in cases {
        assert_eq!(ok(&rules, source), json!(expected), "{source}");
    }
    for bad in ["7D", "P", "PT", "P1H", "PT1D", "P1.5D", "P7", "PXD"] {
        assert!(IsoDuration::parse(bad).is_err(), "{bad}");
    }
    check(
        &err(&rules, r#"add_duration(NOW, "7 jours")"#),
        expect![[r#"
            the expression `add_duration(NOW, "7 jours")` failed: `7 jours` is not an ISO 8601 duration: it must start with P (column 1)
            hint: examples: P7D (7 days), P1M (1 month), P2W (2 weeks), PT48H (48 hours), P1Y6M, -P3D"#]],
    );
}

#[test]
fn bad_dates_are_named() {
    let rules = Rules::default();
    check(
        &err(&rules, r#"add_days("31/01/2026", 1)"#),
        expect![[r#"
            the expression `add_days("31/01/2026", 1)` failed: `31/01/2026` is not a date (column 1)
            hint: write dates as YYYY-MM-DD (2026-03-01) or RFC 3339 date-times (2026-03-01T09:30:00Z)"#]],
    );
    assert!(err(&rules, r#"year("2026-02-30")"#)
        .to_string()
        .contains("`2026-02-30` is not a date"));
    assert!(err(&rules, r#"days_between("2026-01-01", "demain")"#)
        .to_string()
        .contains("`demain` is not a date"));
}

#[test]
fn now_and_today_come_from_the_context() {
    let rules = Rules::default();
    assert_eq!(ok(&rules, "NOW"), json!("2026-03-01T09:30:00Z"));
    assert_eq!(ok(&rules, "TODAY"), json!("2026-03-01"));
    let m = module(
        &rules,
        "fn now() { NOW }\nfn today() { TODAY }\nfn late(d) { days_between(d, TODAY) }",
    );
    assert_eq!(
        rules.call(&m, "now", &[], &ctx()).unwrap(),
        json!("2026-03-01T09:30:00Z")
    );
    assert_eq!(
        rules.call(&m, "today", &[], &ctx()).unwrap(),
        json!("2026-03-01")
    );
    let later = RuleContext::new(
        DateTime::parse_from_rfc3339("2026-04-10T23:59:59.250+00:00")
            .unwrap()
            .with_timezone(&Utc),
    );
    assert_eq!(
        rules.call(&m, "now", &[], &later).unwrap(),
        json!("2026-04-10T23:59:59.250Z")
    );
    assert_eq!(
        rules
            .call(&m, "late", &[json!("2026-03-31")], &later)
            .unwrap(),
        json!(10)
    );
}

// ---------------------------------------------------------------------------
// Sandbox
// ---------------------------------------------------------------------------

fn quick<T>(f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    out
}

#[test]
fn infinite_loop_is_stopped() {
    let rules = Rules::default();
    let e = quick(|| {
        call_err(
            &rules,
            "fn calcul() {\n  let i = 0;\n  loop { i += 1; }\n}",
            "calcul",
            &[],
        )
    });
    check(
        &e,
        expect![[r#"
            the rule `test.calcul` exceeded its limit of 200000 operations
            hint: it probably loops forever; check the loop's exit condition"#]],
    );
    // The engine is still usable afterwards.
    assert_eq!(ok(&rules, "1 + 1"), json!(2));
}

#[test]
fn infinite_recursion_is_stopped() {
    let rules = Rules::default();
    let e = quick(|| call_err(&rules, "fn f(n) { f(n + 1) }", "f", &[json!(0)]));
    assert!(matches!(e, RuleError::Runtime { .. }));
    check(
        &e,
        expect![[r#"
            the rule `test.f` exceeded its limit of 32 nested function calls
            hint: a function probably calls itself without end; check the case that stops the recursion"#]],
    );
}

#[test]
fn huge_values_are_stopped() {
    let rules = Rules::default();
    let e = quick(|| {
        call_err(
            &rules,
            "fn f() { let s = \"x\"; loop { s += s; } }",
            "f",
            &[],
        )
    });
    check(
        &e,
        expect![[r#"
            the rule `test.f` built a text longer than 65536 bytes, which is more than allowed
            hint: it probably grows a value in a loop without end"#]],
    );
    let e = quick(|| {
        call_err(
            &rules,
            "fn f() { let a = []; loop { a.push(1); } }",
            "f",
            &[],
        )
    });
    assert!(
        e.message().contains("a list with more than 10000 elements"),
        "{e}"
    );
    let roomy = Rules::new(Limits {
        max_operations: 10_000_000,
        ..Limits::default()
    });
    let e = quick(|| {
        call_err(
            &roomy,
            "fn f() { let m = #{}; for i in 0..20000 { m = m + #{}; m[`k${i}`] = i; } }",
            "f",
            &[],
        )
    });
    assert!(
        e.message()
            .contains("an object with more than 10000 fields"),
        "{e}"
    );
    // Rhai does not check `m[k] = v` one key at a time (the operation limit bounds
    // that); the returned value is checked.
    let e = call_err(
        &roomy,
        "fn f() { let m = #{}; for i in 0..10001 { m[`k${i}`] = i; } m }",
        "f",
        &[],
    );
    check(
        &e,
        expect![[r#"
            the rule `test.f` built an object with more than 10000 fields, which is more than allowed
            hint: it probably grows a value in a loop without end"#]],
    );
    // Smaller limits apply too.
    let small = Rules::new(Limits {
        max_operations: 1_000,
        max_string_size: 10,
        ..Limits::default()
    });
    assert!(err(&small, r#""abcdef" + "ghijkl""#)
        .message()
        .contains("longer than 10 bytes"));
    let e = call_err(
        &small,
        "fn f() { let x = 0; for i in 0..100000 { x += i; } x }",
        "f",
        &[],
    );
    assert!(e.message().contains("limit of 1000 operations"), "{e}");
}

#[test]
fn deep_expressions_are_refused() {
    let rules = Rules::default();
    let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
    let e = rules.compile_expr(&deep).unwrap_err();
    assert!(
        e.message()
            .contains("nested too deeply (more than 64 levels)"),
        "{e}"
    );
    let e = rules
        .compile_module("m", "rules/m.rhai", &format!("fn f() {{ {deep} }}"))
        .unwrap_err();
    assert!(
        matches!(e, RuleError::Compile { line: Some(1), .. }),
        "{e:?}"
    );
}

#[test]
fn long_else_if_chains_and_closures_compile() {
    let rules = Rules::default();
    let mut src = String::from("fn tranche(x) {\n  if x < 1 { 0 }\n");
    for i in 1..50 {
        src.push_str(&format!("  else if x < {} {{ {i} }}\n", (i + 1) * 1000));
    }
    src.push_str("  else { 50 }\n}\n");
    let m = module(&rules, &src);
    assert_eq!(
        rules.call(&m, "tranche", &[json!(42_500)], &ctx()).unwrap(),
        json!(42)
    );
    let m = module(
        &rules,
        "fn f(l, s) { l.filter(|x| x > s).map(|x| x + days_between(TODAY, \"2026-03-03\")) }",
    );
    assert_eq!(
        rules
            .call(&m, "f", &[json!([1, 2, 3]), json!(1)], &ctx())
            .unwrap(),
        json!([4, 5])
    );
}

#[test]
fn no_import_no_eval() {
    let rules = Rules::default();
    let e = rules
        .compile_module(
            "m",
            "rules/m.rhai",
            "import \"fichier\" as f;\nfn a() { 1 }",
        )
        .unwrap_err();
    check(
        &e,
        expect![[r#"
            rules/m.rhai:1:1: `import` is not allowed in rules
            hint: a rule module cannot load other files; put the functions it needs in the same module"#]],
    );
    let e = rules
        .compile_module("m", "rules/m.rhai", "fn a() {\n  eval(\"1 + 1\")\n}")
        .unwrap_err();
    check(
        &e,
        expect![[r#"
            rules/m.rhai:2:3: `eval` is not allowed in rules
            hint: rules cannot run code built from text; write the computation directly"#]],
    );
    assert!(rules.compile_expr("eval(\"1\")").is_err());
    // Not through a function pointer either.
    let e = call_err(&rules, "fn a() { call(Fn(\"eval\"), \"1\") }", "a", &[]);
    assert!(e.message().contains("`eval` is not allowed"), "{e}");
}

#[test]
fn no_clock_no_sleep_no_exit() {
    let rules = Rules::default();
    check(
        &err(&rules, "timestamp()"),
        expect![[r#"
            the expression `timestamp()` failed: `timestamp()` is not available in rules (column 1)
            hint: rules have no clock so that they give the same answer every time: use NOW (RFC 3339 text) or TODAY (YYYY-MM-DD), which the engine passes in"#]],
    );
    let e = quick(|| err(&rules, "sleep(10)"));
    assert!(e.message().contains("`sleep` is not available"), "{e}");
    let e = err(&rules, "exit(1)");
    assert!(e.message().contains("`exit` is not available"), "{e}");
}

#[test]
fn print_and_debug_write_nothing() {
    // Output is dropped by the engine (there is no callback writing to stdout);
    // what we can assert is that they run and the rule still returns its value.
    let rules = Rules::default();
    let m = module(&rules, "fn f(x) { print(\"trace\"); debug(x); x * 2 }");
    assert_eq!(
        rules.call(&m, "f", &[json!(21)], &ctx()).unwrap(),
        json!(42)
    );
}

#[test]
fn top_level_statements_are_refused() {
    let rules = Rules::default();
    let e = rules
        .compile_module(
            "m",
            "rules/m.rhai",
            "// taux\nconst TAUX = 0.1215;\nfn f() { 1 }",
        )
        .unwrap_err();
    check(
        &e,
        expect![[r#"
            rules/m.rhai:2:1: a rule module may only contain functions; this statement would never run
            hint: move it into a function; a constant can be a function too: `fn taux_legal() { 0.1215 }`"#]],
    );
}

// ---------------------------------------------------------------------------
// Caching
// ---------------------------------------------------------------------------

#[test]
fn modules_are_compiled_once_per_content() {
    let rules = Rules::default();
    let a = rules
        .compile_module("penalites", "rules/penalites.rhai", PENALITES)
        .unwrap();
    let b = rules
        .compile_module("penalites", "rules/penalites.rhai", PENALITES)
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(rules.compilations(), 1);
    // Same text under another name: no recompilation, its own name.
    let c = rules
        .compile_module("copie", "rules/copie.rhai", PENALITES)
        .unwrap();
    assert_eq!(rules.compilations(), 1);
    assert_eq!(c.name, "copie");
    assert_eq!(c.hash, a.hash);
    // Changed text: compiled again.
    let d = rules
        .compile_module(
            "penalites",
            "rules/penalites.rhai",
            &format!("{PENALITES}\n// modifié\n"),
        )
        .unwrap();
    assert_eq!(rules.compilations(), 2);
    assert_ne!(d.hash, a.hash);
    // A failed compilation is not cached (and costs a compilation each time).
    assert!(rules.compile_module("x", "x.rhai", "fn (").is_err());
    assert!(rules.compile_module("x", "x.rhai", "fn (").is_err());
    assert_eq!(rules.compilations(), 4);
    rules.clear_caches();
    let e = rules
        .compile_module("penalites", "rules/penalites.rhai", PENALITES)
        .unwrap();
    assert!(!Arc::ptr_eq(&a, &e));
    assert_eq!(rules.compilations(), 5);
}

#[test]
fn expressions_are_compiled_once_per_text() {
    let rules = Rules::default();
    let a = rules.compile_expr("input.montant > 1000").unwrap();
    let b = rules.compile_expr("input.montant > 1000").unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(rules.compilations(), 1);
    rules.compile_expr("input.montant > 2000").unwrap();
    assert_eq!(rules.compilations(), 2);
}

#[test]
fn rules_are_shared_between_threads() {
    let rules = Arc::new(Rules::default());
    let m = rules
        .compile_module("penalites", "rules/penalites.rhai", PENALITES)
        .unwrap();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let rules = rules.clone();
            let m = m.clone();
            std::thread::spawn(move || {
                rules
                    .call(&m, "indemnite_forfaitaire", &[json!(i)], &ctx())
                    .unwrap()
            })
        })
        .collect();
    let totals: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().unwrap().to_string())
        .collect();
    assert_eq!(totals, ["0.00", "40.00", "80.00", "120.00"]);
}

// ---------------------------------------------------------------------------
// Expressions
// ---------------------------------------------------------------------------

fn vars(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

#[test]
fn expressions_read_workflow_variables() {
    let rules = Rules::default();
    let v = vars(
        json!({"input": {"montant": num("1500.50"), "client": "ACME"}, "relance": {"niveau": 1}}),
    );
    let e = rules.compile_expr("input.montant > 1000").unwrap();
    assert!(rules.eval_bool(&e, &v, &ctx()).unwrap());
    let e = rules.compile_expr("relance.niveau + 1").unwrap();
    assert_eq!(rules.eval_expr(&e, &v, &ctx()).unwrap(), json!(2));
    let e = rules
        .compile_expr(r#"if input.montant > 1000 { "gros" } else { "petit" }"#)
        .unwrap();
    assert_eq!(rules.eval_expr(&e, &v, &ctx()).unwrap(), json!("gros"));
    let e = rules.compile_expr("input.montant * 2").unwrap();
    assert_eq!(
        rules.eval_expr(&e, &v, &ctx()).unwrap().to_string(),
        "3001.00"
    );
    let e = rules
        .compile_expr(r#"#{ total: input.montant, date: add_days(TODAY, 30) }"#)
        .unwrap();
    assert_eq!(
        rules.eval_expr(&e, &v, &ctx()).unwrap(),
        json!({"date": "2026-03-31", "total": num("1500.50")})
    );
    // A field that may be missing.
    let e = rules.compile_expr(r#"input.get("remise") ?? 0"#).unwrap();
    assert_eq!(rules.eval_expr(&e, &v, &ctx()).unwrap(), json!(0));
}

#[test]
fn expression_variables_are_listed() {
    let rules = Rules::default();
    let names = |s: &str| expr_variables(&rules.compile_expr(s).unwrap());
    assert_eq!(names("input.montant > seuil"), ["input", "seuil"]);
    assert_eq!(names("relance.niveau + relance.max"), ["relance"]);
    assert_eq!(names("add_days(TODAY, delai) < NOW"), ["delai"]);
    assert_eq!(
        names("input.lignes.filter(|l| l.montant > seuil).len()"),
        ["input", "seuil"]
    );
    assert_eq!(names("if inptu.x { a } else { b }"), ["inptu", "a", "b"]);
    assert!(names("1 + 2").is_empty());
}

#[test]
fn expressions_are_single_expressions() {
    let rules = Rules::default();
    check(
        &rules.compile_expr("let x = 1; x").unwrap_err(),
        expect!["the expression `let x = 1; x` does not compile: unexpected `let` (column 1)"],
    );
    check(
        &rules.compile_expr("input.montant >").unwrap_err(),
        expect![[r#"
            the expression `input.montant >` does not compile: the text ends in the middle of a statement (column 16)
            hint: a closing `}`, `)` or `]` is probably missing"#]],
    );
}

#[test]
fn expression_runtime_errors() {
    let rules = Rules::default();
    let v = vars(json!({"input": {"montant": 10}, "relance": {"niveau": 1}}));
    let run = |s: &str| {
        let e = rules.compile_expr(s).unwrap();
        rules.eval_expr(&e, &v, &ctx()).unwrap_err()
    };
    check(
        &run("inptu.montant > 1"),
        expect![[r#"
            the expression `inptu.montant > 1` failed: unknown variable `inptu` (column 1)
            hint: did you mean `input`?"#]],
    );
    check(
        &run("input.montnat > 1"),
        expect![[r#"
            the expression `input.montnat > 1` failed: there is no field `montnat` (column 7)
            hint: did you mean `montant`? (a field that may be missing is read with `x.get("montnat") ?? default`)"#]],
    );
    check(
        &run(r#"input.montant + "euros" * 2"#),
        expect![[r#"
            the expression `input.montant + "euros" * 2` failed: `*` cannot be used between a text and an integer (column 25)
            hint: convert the text first, e.g. `decimal("12.50")`; dates are compared with days_between"#]],
    );
    check(
        &run("add_month(TODAY, 1)"),
        expect![[r#"
            the expression `add_month(TODAY, 1)` failed: unknown function `add_month` (column 1)
            hint: did you mean `add_months`?"#]],
    );
    check(
        &run("add_months(TODAY)"),
        expect![[r#"
            the expression `add_months(TODAY)` failed: `add_months` cannot be called with (a text) (column 1)
            hint: expected add_months(date, months) -> date"#]],
    );
    let e = rules.compile_expr("relance.niveau + 1").unwrap();
    check(
        &rules.eval_bool(&e, &v, &ctx()).unwrap_err(),
        expect![[r#"
            the condition `relance.niveau + 1` gave 2 (a number) instead of true or false
            hint: write a comparison, e.g. `input.montant > 1000` or `x == "oui"`"#]],
    );
}

// ---------------------------------------------------------------------------
// Rule errors
// ---------------------------------------------------------------------------

#[test]
fn compile_errors_carry_path_line_column_and_hint() {
    let rules = Rules::default();
    let e = rules
        .compile_module(
            "penalites",
            "rules/penalites.rhai",
            "fn penalite(montant_ttc, jours) {\n  montant_tc * jours\n}",
        )
        .unwrap_err();
    assert!(matches!(
        &e,
        RuleError::Compile { path, line: Some(2), column: Some(3), .. } if path == "rules/penalites.rhai"
    ));
    check(
        &e,
        expect![[r#"
            rules/penalites.rhai:2:3: unknown variable `montant_tc`
            hint: did you mean `montant_ttc`? a rule function can only read its parameters, its own `let` variables, NOW and TODAY"#]],
    );
    let e = rules
        .compile_module("m", "rules/m.rhai", "fn f(x) {\n  let y = \"abc;\n}")
        .unwrap_err();
    check(
        &e,
        expect![[r#"
            rules/m.rhai:2:11: a text (string) is not closed
            hint: add the closing `"`"#]],
    );
    let e = rules
        .compile_module("m", "rules/m.rhai", "fn f(x) {\n  let y = 1\n  y + 1\n}")
        .unwrap_err();
    check(
        &e,
        expect![[r#"
            rules/m.rhai:3:3: expected `;` to terminate this statement
            hint: statements end with `;` (except the last expression of a block, which is its value)"#]],
    );
}

#[test]
fn call_errors() {
    let rules = Rules::default();
    let m = rules
        .compile_module("penalites", "rules/penalites.rhai", PENALITES)
        .unwrap();
    check(
        &rules.call(&m, "penalite_l44", &[], &ctx()).unwrap_err(),
        expect![[r#"
            the module `penalites` has no function `penalite_l44`
            hint: did you mean `penalite_l441`?"#]],
    );
    check(
        &rules
            .call(&m, "penalite_l441", &[json!(1)], &ctx())
            .unwrap_err(),
        expect![[r#"
            `penalites.penalite_l441` was called with 1 argument(s) but expects penalite_l441(montant_ttc, jours_retard, taux_annuel)
            hint: check the arguments given to the rule in the workflow"#]],
    );
    check(
        &rules
            .call(&m, "penalite_l441", &[num("-5"), json!(3), num("0.1")], &ctx())
            .unwrap_err(),
        expect!["the rule `penalites.penalite_l441` failed: le montant TTC doit être positif ou nul (reçu -5) (rules/penalites.rhai:11:9)"],
    );
    check(
        &rules
            .call(
                &m,
                "penalite_l441",
                &[json!("mille"), json!(3), num("0.1")],
                &ctx(),
            )
            .unwrap_err(),
        expect![[r#"
            the rule `penalites.penalite_l441` failed: `<` cannot compare a text with an integer (rules/penalites.rhai:10:20)
            hint: convert the text first, e.g. `decimal("12.50")`; dates are compared with days_between"#]],
    );
    let m = module(&rules, "private fn aide() { 1 }\nfn f() { aide() }");
    check(
        &rules.call(&m, "aide", &[], &ctx()).unwrap_err(),
        expect![[r#"
            `test.aide` is private to the module and cannot be called from a workflow
            hint: remove `private` before `fn` if the workflow needs it"#]],
    );
}

#[test]
fn runtime_errors_inside_helpers_name_them() {
    let rules = Rules::default();
    let e = call_err(
        &rules,
        "fn total(x) {\n  part(x) + 1\n}\nprivate fn part(x) {\n  x / 0\n}",
        "total",
        &[json!(5)],
    );
    assert!(
        matches!(e, RuleError::Runtime { line: Some(5), .. }),
        "{e:?}"
    );
    check(
        &e,
        expect![[r#"
            the rule `test.total` failed: division by zero: 5 / 0 (inside `part`) (rules/test.rhai:5:5)
            hint: check that the divisor cannot be 0 before dividing"#]],
    );
    let e = call_err(
        &rules,
        "fn f(facture) { facture.montant_ht * 2 }",
        "f",
        &[json!({"montant_ttc": 1})],
    );
    check(
        &e,
        expect![[r#"
            the rule `test.f` failed: there is no field `montant_ht` (rules/test.rhai:1:25)
            hint: did you mean `montant_ttc`? (a field that may be missing is read with `x.get("montant_ht") ?? default`)"#]],
    );
    let e = call_err(&rules, "fn f(x) { x + 1 }", "f", &[Value::Null]);
    check(
        &e,
        expect![[r#"
            the rule `test.f` failed: `+` cannot be used between nothing (null) and an integer (rules/test.rhai:1:13)
            hint: one of the values is empty (null or a missing result); check the data or give a default with `??`"#]],
    );
}

// ---------------------------------------------------------------------------
// Test tables
// ---------------------------------------------------------------------------

#[test]
fn sample_test_table_passes() {
    let rules = Rules::default();
    let m = rules
        .compile_module("penalites", "rules/penalites.rhai", PENALITES)
        .unwrap();
    let report = run_rule_tests(&rules, &fixture("penalites.test.yaml"), &m).unwrap();
    assert_eq!(report.failures, [], "{report:#?}");
    assert_eq!(report.passed, 13);
    assert_eq!(report.failed, 0);
}

#[test]
fn failing_rows_show_expected_actual_and_line() {
    let rules = Rules::default();
    let m = rules
        .compile_module("penalites", "rules/penalites.rhai", PENALITES)
        .unwrap();
    let yaml = "\
# Tests volontairement faux
function: penalite_l441
rows:
  - name: bon
    args: [1000.00, 30, 0.1215]
    expect: 9.990
  - name: mauvais montant
    args: [1000.00, 30, 0.1215]
    expect: 10.00
  - name: erreur attendue mais valeur obtenue
    args: [1000, 1, 0.1]
    expect_error: montant
  - name: mauvaise erreur
    args: [-1, 1, 0.1]
    expect_error: taux
  - name: valeur attendue mais erreur obtenue
    args: [-1, 1, 0.1]
    expect: 0
  - name: paramètre inconnu
    with: { montant_ttc: 1, jours: 2, taux_annuel: 0.1 }
    expect: 0
  - name: clé inconnue
    args: [1, 1, 0.1]
    expected: 0
  - name: fonction inconnue
    function: penalite
    args: []
    expect: 0
";
    let report = run_rule_tests_str(&rules, "rules/penalites.test.yaml", yaml, &m).unwrap();
    assert_eq!((report.passed, report.failed), (1, 7));
    let shown: String = report
        .failures
        .iter()
        .map(|f| format!("line {}: {}: {}\n", f.line, f.name, f.message))
        .collect();
    expect![[r#"
        line 7: mauvais montant: expected 10.00, got 9.99
        line 10: erreur attendue mais valeur obtenue: expected an error containing `montant`, got 0.27
        line 13: mauvaise erreur: expected an error containing `taux`, got another error: the rule `penalites.penalite_l441` failed: le montant TTC doit être positif ou nul (reçu -1) (rules/penalites.rhai:11:9)
        line 16: valeur attendue mais erreur obtenue: expected 0, got an error: the rule `penalites.penalite_l441` failed: le montant TTC doit être positif ou nul (reçu -1) (rules/penalites.rhai:11:9)
        line 19: paramètre inconnu: unknown parameter(s) `jours` (did you mean `jours_retard`?) and missing parameter(s) `jours_retard` for `penalites.penalite_l441`, whose parameters are: montant_ttc, jours_retard, taux_annuel
        line 22: clé inconnue: unknown key `expected` (did you mean `expect` or `expect_error`? the keys are: name, function, now, args, with, expect, expect_error)
        line 25: fonction inconnue: expected 0, got an error: the module `penalites` has no function `penalite`
    "#]]
    .assert_eq(&shown);
}

#[test]
fn test_file_errors() {
    let rules = Rules::default();
    let m = rules
        .compile_module("penalites", "rules/penalites.rhai", PENALITES)
        .unwrap();
    let run = |yaml: &str| run_rule_tests_str(&rules, "rules/penalites.test.yaml", yaml, &m);
    check(
        &run("module: autre\nrows: []\n").unwrap_err(),
        expect![
            "rules/penalites.test.yaml: this test file is for the module `autre`, not `penalites`"
        ],
    );
    check(
        &run("function: f\nrow:\n  - name: x\n").unwrap_err(),
        expect![[r#"
            rules/penalites.test.yaml:2: unknown key `row`
            hint: did you mean `rows`? the keys are: module, function, now, rows"#]],
    );
    check(
        &run("rows:\n  - name: x\n    args: [1, 2\n").unwrap_err(),
        expect!["rules/penalites.test.yaml:4: this is not valid YAML: while parsing a flow sequence, expected ',' or ']'"],
    );
    check(
        &run("rows: 3\n").unwrap_err(),
        expect![[r#"
            rules/penalites.test.yaml:1: `rows` must be a list, not a number
            hint: start each row with `- name: ...`"#]],
    );
    let e = run_rule_tests(&rules, Path::new("/nonexistent/penalites.test.yaml"), &m).unwrap_err();
    assert!(e.message().starts_with("cannot read the test file"), "{e}");
    assert_eq!(
        module_name_from_path(Path::new("rules/penalites.test.yaml")).as_deref(),
        Some("penalites")
    );
}

#[test]
fn json_comparison_by_decimal_value() {
    assert!(compare_json(&num("9.99"), &num("9.990")));
    assert!(compare_json(&num("10"), &num("10.00")));
    assert!(!compare_json(&num("9.99"), &num("9.98")));
    assert!(compare_json(
        &json!({"a": [num("1.0"), "x"], "b": null}),
        &json!({"b": null, "a": [1, "x"]})
    ));
    assert!(!compare_json(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    assert!(!compare_json(&json!([1, 2]), &json!([2, 1])));
    assert!(!compare_json(&json!("1"), &json!(1)));
}

// ---------------------------------------------------------------------------
// Timing (printed with --nocapture, not asserted)
// ---------------------------------------------------------------------------

#[test]
fn call_timing() {
    let rules = Rules::default();
    let m = rules
        .compile_module("penalites", "rules/penalites.rhai", PENALITES)
        .unwrap();
    let args = [num("1000.00"), json!(30), num("0.1215")];
    let c = ctx();
    for _ in 0..100 {
        rules.call(&m, "penalite_l441", &args, &c).unwrap();
    }
    const N: u32 = 10_000;
    let start = Instant::now();
    for _ in 0..N {
        let v = rules.call(&m, "penalite_l441", &args, &c).unwrap();
        std::hint::black_box(v);
    }
    let per_call = start.elapsed() / N;
    let e = rules
        .compile_expr("input.montant > 1000 && relance.niveau < 3")
        .unwrap();
    let v = vars(json!({"input": {"montant": num("1500.50")}, "relance": {"niveau": 1}}));
    let start = Instant::now();
    for _ in 0..N {
        std::hint::black_box(rules.eval_bool(&e, &v, &c).unwrap());
    }
    let per_eval = start.elapsed() / N;
    println!(
        "timing ({} build): penalites.penalite_l441 call {per_call:?} on average over {N} calls; condition eval {per_eval:?}",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
}
