//! The `dossier` command as analysts and auditors use it: validate, run, graph, test, and the
//! replay of a case from the database and from an exported file, intact and tampered with.

use std::path::Path;
use std::process::{Command, Output};

fn dossier(project: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dossier"))
        .arg("--project")
        .arg(project)
        .args(args)
        .output()
        .expect("dossier runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(root: &Path, rel: &str, body: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("a parent")).expect("dir");
    std::fs::write(p, body).expect("write");
}

const FRAIS: &str = r#"
# Frais de dossier : une règle, un effet, une attente.
id: frais_dossier
version: 1
title: Frais de dossier
input:
  montant: { type: decimal }
steps:
  - id: calcul
    rule: frais.calcul
    with: { montant: input.montant }
    result: frais
  - id: avis
    action: { connector: log }
    with: { frais: frais }
  - id: delai
    wait: { duration: P2D }
output:
  frais: frais
"#;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "workflows/frais_dossier.yaml", FRAIS);
    write(
        dir.path(),
        "rules/frais.rhai",
        "// 2 % du montant, au centime.\nfn calcul(montant) { round_to(montant * 0.02, 2) }\n",
    );
    dir
}

#[test]
fn validate_names_file_line_column_and_hint_and_exits_1() {
    let dir = project();
    write(
        dir.path(),
        "workflows/frais_dossier.yaml",
        &FRAIS.replace("rule: frais.calcul", "rule: frais.calcule"),
    );
    let out = dossier(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("workflows/frais_dossier.yaml:10:11: error:"),
        "{t}"
    );
    assert!(t.contains("hint: did you mean `calcul`?"), "{t}");

    let dir = project();
    let out = dossier(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("0 error(s)"));
}

#[test]
fn validate_parses_inline_texts_as_tera() {
    let dir = project();
    write(
        dir.path(),
        "workflows/texte_casse.yaml",
        "id: texte_casse\nversion: 1\ntitle: Texte cassé\nsteps:\n  - id: echec\n    fail: \"Montant {{ input.montant ?? 0 }}\"\n",
    );
    let out = dossier(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(
            "workflows/texte_casse.yaml:6:11: error: the text does not parse as a Tera template"
        ),
        "{t}"
    );
}

/// A project whose `avis` step calls a connector of `dossier.yaml`.
fn project_with_crm() -> tempfile::TempDir {
    let dir = project();
    write(
        dir.path(),
        "workflows/frais_dossier.yaml",
        &FRAIS.replace(
            "action: { connector: log }",
            "action: { connector: crm, operation: webhook }",
        ),
    );
    write(
        dir.path(),
        "dossier.yaml",
        "# Le CRM reçoit les frais calculés.\nconnectors:\n  crm:\n    type: http\n    base_url: https://crm.exemple.ci/api/\n    webhook_secret_env: DOSSIER_TEST_CRM_SECRET\n",
    );
    dir
}

#[test]
fn validate_checks_the_connectors_of_dossier_yaml_and_their_secrets() {
    let dir = project_with_crm();
    // The secret is not in the environment: validate says where and how to fix it; the
    // workflow's step naming `crm` is accepted (the connector is declared).
    let out = Command::new(env!("CARGO_BIN_EXE_dossier"))
        .arg("--project")
        .arg(dir.path())
        .arg("validate")
        .env_remove("DOSSIER_TEST_CRM_SECRET")
        .output()
        .expect("dossier runs");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("dossier.yaml:6:5: error: connector `crm`: the environment variable `DOSSIER_TEST_CRM_SECRET` is not set"),
        "{t}"
    );
    assert!(t.contains("1 error(s)"), "{t}");
    // `serve` refuses to start with the same message.
    let out = Command::new(env!("CARGO_BIN_EXE_dossier"))
        .arg("--project")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("DOSSIER_TEST_CRM_SECRET")
        .output()
        .expect("dossier runs");
    let t = text(&out);
    assert_ne!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("dossier.yaml:6:5: error: connector `crm`"),
        "{t}"
    );
    // With the secret, validate passes; `dossier test` never needs it.
    let out = Command::new(env!("CARGO_BIN_EXE_dossier"))
        .arg("--project")
        .arg(dir.path())
        .arg("validate")
        .env(
            "DOSSIER_TEST_CRM_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .output()
        .expect("dossier runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // An operation the connector does not have is a workflow error, located in the workflow.
    write(
        dir.path(),
        "workflows/frais_dossier.yaml",
        &FRAIS.replace(
            "action: { connector: log }",
            "action: { connector: crm, operation: envoyer }",
        ),
    );
    let out = dossier(dir.path(), &["validate"]);
    let t = text(&out);
    assert!(
        t.contains("connector `crm` has no operation `envoyer`"),
        "{t}"
    );
}

#[test]
fn run_graph_and_a_90_day_test_in_virtual_time() {
    let dir = project();
    write(dir.path(), "input.json", r#"{"montant": 1234.56}"#);
    let out = dossier(
        dir.path(),
        &[
            "run",
            "frais_dossier",
            "--input",
            &dir.path().join("input.json").to_string_lossy(),
            "--start",
            "2026-01-01T00:00:00Z",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("rule frais.calcul({\"montant\":1234.56}) = 24.69"),
        "{t}"
    );
    assert!(
        t.contains("2026-01-03T00:00:00Z"),
        "the 2-day wait is skipped in virtual time: {t}"
    );
    assert!(t.contains("status: completed"), "{t}");

    let out = dossier(dir.path(), &["graph", "frais_dossier"]);
    assert!(text(&out).starts_with("flowchart TD"), "{}", text(&out));

    write(
        dir.path(),
        "workflows/frais_dossier.test.yaml",
        "workflow: frais_dossier\ntests:\n  - name: frais de 2 %\n    input: { montant: 1000 }\n    expect:\n      status: completed\n      output: { frais: 20.00 }\n      calls: [ { connector: log, with: { frais: 20 } } ]\n  - name: faux à dessein\n    input: { montant: 1000 }\n    expect: { output: { frais: 21 } }\n",
    );
    let out = dossier(dir.path(), &["test", "workflows/nulle_part.test.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a test file that does not exist is an error: {}",
        text(&out)
    );
    let out = dossier(dir.path(), &["test"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("1 passed, 1 failed"), "{t}");
    assert!(
        t.contains("faux à dessein: output.frais: expected 21, got 20.00"),
        "{t}"
    );
}

#[test]
fn replay_from_the_database_and_from_an_export_detects_tampering() {
    let dir = project();
    let db = dir.path().join("cases.db").to_string_lossy().to_string();
    write(dir.path(), "input.json", r#"{"montant": 500}"#);
    let input = dir.path().join("input.json").to_string_lossy().to_string();
    let out = dossier(
        dir.path(),
        &["start", "frais_dossier", "--input", &input, "--db", &db],
    );
    assert!(out.status.success(), "{}", text(&out));
    let case = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a case id")
        .to_string();
    let out = dossier(dir.path(), &["work", "--until-idle", "--db", &db]);
    assert!(out.status.success(), "{}", text(&out));

    // From the database.
    let out = dossier(dir.path(), &["replay", &case, "--db", &db]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("every link holds"), "{}", text(&out));
    assert!(text(&out).contains("replay: identical"), "{}", text(&out));

    // From an exported case file, the sources included.
    let file = dir.path().join("case.json");
    let out = dossier(
        dir.path(),
        &[
            "export",
            &case,
            "--db",
            &db,
            "--output",
            &file.to_string_lossy(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = dossier(dir.path(), &["replay", "--file", &file.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let export: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    // Money keeps its exact digits, through the rule and the export.
    assert_eq!(export["decisions"][0]["output"].to_string(), "10.00");

    // An altered decision breaks the chain at its event.
    let mut tampered = export.clone();
    let history = tampered["history"].as_array_mut().unwrap();
    let (idx, seq) = history
        .iter()
        .enumerate()
        .find(|(_, e)| e["kind"] == "rule_evaluated")
        .map(|(i, e)| (i, e["seq"].as_i64().unwrap()))
        .unwrap();
    history[idx]["payload"]["output"] = serde_json::json!(1.00);
    std::fs::write(&file, serde_json::to_string(&tampered).unwrap()).unwrap();
    let out = dossier(dir.path(), &["replay", "--file", &file.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("chain: BROKEN at event {seq}")),
        "{}",
        text(&out)
    );

    // A history cut short breaks no link, but no longer ends where the case row says.
    let mut cut = export.clone();
    let n = cut["history"].as_array().unwrap().len();
    cut["history"].as_array_mut().unwrap().truncate(n - 2);
    std::fs::write(&file, serde_json::to_string(&cut).unwrap()).unwrap();
    let out = dossier(dir.path(), &["replay", "--file", &file.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("events were removed"), "{}", text(&out));

    // A rule rewritten after the fact (its pinned source replaced): the chain holds, but the
    // source no longer matches the content hash the case is pinned to, and nothing runs on it.
    let mut rewritten = export.clone();
    let defs = rewritten["definitions"].as_object_mut().unwrap();
    for d in defs.values_mut() {
        if d["kind"] == "rule" {
            d["source"] = serde_json::json!("fn calcul(montant) { round_to(montant * 0.03, 2) }\n");
        }
    }
    std::fs::write(&file, serde_json::to_string(&rewritten).unwrap()).unwrap();
    let out = dossier(dir.path(), &["replay", "--file", &file.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("every link holds"), "{t}");
    assert!(t.contains("replay: DIVERGES"), "{t}");
    assert!(
        t.contains("the stored source of the rule `frais` does not match its content hash"),
        "{t}"
    );
}

#[test]
fn a_running_worker_picks_up_cases_started_by_another_process() {
    let dir = project();
    write(
        dir.path(),
        "workflows/avis.yaml",
        "id: avis\nversion: 1\ntitle: Avis\ninput:\n  texte: { type: text }\nsteps:\n  - id: envoi\n    action: { connector: log }\n    with: { texte: input.texte }\n",
    );
    write(dir.path(), "avis.json", r#"{"texte": "bonjour"}"#);
    let db = dir.path().join("cases.db").to_string_lossy().to_string();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_dossier"))
        .arg("--project")
        .arg(dir.path())
        .args(["work", "--db", &db])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dossier work runs");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let input = dir.path().join("avis.json").to_string_lossy().to_string();
    let out = dossier(
        dir.path(),
        &["start", "avis", "--input", &input, "--db", &db],
    );
    assert!(out.status.success(), "{}", text(&out));
    // `dossier start` only records the case; the worker finds it (at most 5 s after it stopped
    // moving) and performs its effect.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut done = false;
    while std::time::Instant::now() < deadline {
        let out = dossier(dir.path(), &["cases", "--db", &db, "--status", "completed"]);
        if String::from_utf8_lossy(&out.stdout).contains("avis") {
            done = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(
        done,
        "the running worker never completed the case started by `dossier start`"
    );
}
