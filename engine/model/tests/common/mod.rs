//! A fake project for the model's tests: a few rule modules, templates, workflows and
//! connectors, and a tiny expression "compiler" standing in for Rhai.

#![allow(dead_code)] // each test binary uses a different part

use dossier_model::validate::{validate_project, Catalog};
use dossier_model::{parse_workflow, validate_workflow, FieldSpec, FieldType, ParsedWorkflow};

/// The realistic dunning workflow, valid against [`FakeCatalog`].
pub const RELANCE: &str = include_str!("../fixtures/relance_impayes.yaml");

pub struct FakeCatalog;

fn field(kind: FieldType, required: bool) -> FieldSpec {
    FieldSpec {
        kind,
        required,
        label: None,
        description: None,
        options: Vec::new(),
        items: None,
        fields: Default::default(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Catalog for FakeCatalog {
    fn rule_functions(&self, module: &str) -> Option<Vec<(String, Vec<String>)>> {
        match module {
            "penalites" => Some(vec![
                (
                    "penalite_l441".into(),
                    strings(&["montant_ttc", "jours_retard", "taux_annuel"]),
                ),
                ("indemnite".into(), Vec::new()),
            ]),
            "scoring" => Some(vec![(
                "risque_client".into(),
                strings(&["encours", "retards"]),
            )]),
            _ => None,
        }
    }

    fn rule_modules(&self) -> Vec<String> {
        strings(&["penalites", "scoring"])
    }

    fn templates(&self) -> Vec<String> {
        strings(&[
            "relances/sms_niveau1.txt",
            "relances/email_objet.txt",
            "relances/mise_en_demeure.html",
            "contentieux/dossier.html",
        ])
    }

    fn workflow_ids(&self) -> Vec<String> {
        strings(&["relance_impayes", "recouvrement_contentieux", "test"])
    }

    fn workflow_input(&self, id: &str) -> Option<Vec<(String, FieldSpec)>> {
        match id {
            "recouvrement_contentieux" => Some(vec![
                ("facture_id".into(), field(FieldType::Text, true)),
                ("montant".into(), field(FieldType::Decimal, true)),
                ("commentaire".into(), field(FieldType::Text, false)),
            ]),
            "relance_impayes" | "test" => {
                Some(vec![("facture_id".into(), field(FieldType::Text, true))])
            }
            _ => None,
        }
    }

    fn connector_operations(&self, connector: &str) -> Option<Vec<String>> {
        match connector {
            "log" => Some(strings(&["send", "write"])),
            "email" => Some(strings(&["send"])),
            _ => None,
        }
    }

    fn connectors(&self) -> Vec<String> {
        strings(&["log", "email"])
    }

    fn check_expr(&self, source: &str) -> Result<Vec<String>, String> {
        free_variables(source)
    }
}

/// Free variables of an expression: identifiers not preceded by `.` nor followed by `(`, minus
/// keywords. Strings are skipped; unbalanced parentheses are a compile error.
fn free_variables(source: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = source.chars().collect();
    let mut free: Vec<String> = Vec::new();
    let mut depth: Vec<usize> = Vec::new();
    let mut after_dot = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            let open = i;
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += 1;
            }
            if i == chars.len() {
                return Err(format!("unterminated string (position {})", open + 1));
            }
            i += 1;
            after_dot = false;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let keyword = matches!(word.as_str(), "true" | "false" | "if" | "else");
            if !after_dot && next != Some(&'(') && !keyword && !free.contains(&word) {
                free.push(word);
            }
            after_dot = false;
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            after_dot = false;
        } else {
            match c {
                '(' => depth.push(i),
                ')' if depth.pop().is_none() => {
                    return Err(format!("unexpected `)` (position {})", i + 1))
                }
                _ => {}
            }
            if !c.is_whitespace() {
                after_dot = c == '.';
            }
            i += 1;
        }
    }
    match depth.pop() {
        Some(open) => Err(format!(
            "expecting `)` to close `(` (position {})",
            open + 1
        )),
        None => Ok(free),
    }
}

fn render(diags: &[dossier_model::Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    out
}

/// Parses and validates one workflow file, printed as an analyst sees it.
pub fn diagnostics(file: &str, source: &str) -> String {
    match parse_workflow(file, source) {
        Ok(parsed) => render(&validate_workflow(&parsed, &FakeCatalog)),
        Err(d) => format!("{d}\n"),
    }
}

/// Parses every file (they must parse) and validates them as one project.
pub fn project_diagnostics(files: &[(&str, &str)]) -> String {
    let parsed: Vec<ParsedWorkflow> = files
        .iter()
        .map(|(file, source)| parse_workflow(file, source).unwrap_or_else(|d| panic!("{d}")))
        .collect();
    render(&validate_project(&parsed, &FakeCatalog))
}
