//! Syntax and shape errors, as `parse_workflow` reports them before any meaning check.
//! Refresh the snapshots with `UPDATE_EXPECT=1 cargo test -p dossier-model --test parse`.

mod common;

use expect_test::{expect, Expect};

/// The one helper: what an analyst sees for `source` (a parse error, or the validation result).
fn check(source: &str, expected: Expect) {
    expected.assert_eq(&common::diagnostics("workflows/test.yaml", source));
}

#[test]
fn unknown_field_suggests_the_close_one() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: a
    assign: { x: "1" }
    nxt: end
"#,
        expect![[r#"
            workflows/test.yaml:8:5: error: steps[0]: unknown field `nxt`, expected one of `id`, `title`, `description`, `rule`, `with`, `assign`, `branch`, `otherwise`, `wait`, `wait_event`, `task`, `action`, `parallel`, `for_each`, `call`, `render`, `fail`, `number`, `ledger`, `emit`, `unique_id`, `result`, `next`, `retry`, `timeout`, `on_error`, `compensate`
              hint: did you mean `next`?
        "#]],
    );
}

#[test]
fn unknown_field_lists_the_allowed_ones() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: a
    wait:
      pendant: P1D
"#,
        expect![[r#"
            workflows/test.yaml:8:7: error: steps[0].wait: unknown field `pendant`, expected `duration` or `until`
              hint: the fields allowed here are: duration, until
        "#]],
    );
}

#[test]
fn wrong_type() {
    check(
        r#"
id: test
version: un
title: Test
steps: []
"#,
        expect![[r#"
            workflows/test.yaml:3:10: error: version: invalid type: string "un", expected u32
              hint: check the indentation and the kind of value expected here
        "#]],
    );
}

#[test]
fn list_instead_of_text() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: a
    call: [recouvrement_contentieux]
"#,
        expect![[r#"
            workflows/test.yaml:7:11: error: steps[0].call: invalid type: sequence, expected a string
              hint: check the indentation and the kind of value expected here
        "#]],
    );
}

#[test]
fn bad_indentation() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: a
    assign:
      x: "1"
     y: "2"
"#,
        expect![[r#"
            workflows/test.yaml:9:6: error: did not find expected key
              hint: check the YAML syntax near this position (indentation, a missing `:` or quote)
        "#]],
    );
}

#[test]
fn step_fields_at_the_wrong_level() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: a
  rule: penalites.indemnite
"#,
        expect![[r#"
            workflows/test.yaml:7:3: error: did not find expected '-' indicator
              hint: check the YAML syntax near this position (indentation, a missing `:` or quote)
        "#]],
    );
}

#[test]
fn missing_field() {
    check(
        r#"
id: test
title: Test
steps: []
"#,
        expect![[r#"
            workflows/test.yaml:2:1: error: missing field `version`
              hint: add `version:` to this block
        "#]],
    );
}

#[test]
fn unknown_field_type() {
    check(
        r#"
id: test
version: 1
title: Test
input:
  montant: { type: money }
steps: []
"#,
        expect![[r#"
            workflows/test.yaml:6:20: error: input.montant.type: unknown variant `money`, expected one of `text`, `integer`, `decimal`, `boolean`, `date`, `datetime`, `choice`, `email`, `phone`, `list`, `object`
              hint: use one of the values listed above
        "#]],
    );
}
