//! Meaning checks, one case per check: a workflow file and the diagnostics an analyst sees.
//! Refresh the snapshots with `UPDATE_EXPECT=1 cargo test -p dossier-model --test validate`.

mod common;

use expect_test::{expect, Expect};

/// The one helper: validate `source` as `workflows/test.yaml` against the fake project.
fn check(source: &str, expected: Expect) {
    expected.assert_eq(&common::diagnostics("workflows/test.yaml", source));
}

#[test]
fn realistic_dunning_workflow_is_valid() {
    expect![[r#""#]].assert_eq(&common::diagnostics(
        "workflows/relance_impayes.yaml",
        common::RELANCE,
    ));
}

#[test]
fn workflow_header() {
    check(
        r#"
id: Relance Impayés
version: 0
title: ""
params:
  taux annuel: 0.1
steps: []
"#,
        expect![[r#"
            workflows/test.yaml:2:5: error: workflow id `Relance Impayés` may only contain letters, digits, `_` and `-`
              hint: write it like `relance_impayes`
            workflows/test.yaml:3:10: error: version must be 1 or more
              hint: start at `version: 1` and raise it on each change worth noting
            workflows/test.yaml:4:8: error: the workflow title is empty
              hint: give a title shown to operators, such as `Relance des factures impayées`
            workflows/test.yaml:6:3: error: parameter name `taux annuel` is not a valid name
              hint: expressions read it as `params.NAME`: use letters, digits and `_`, e.g. `taux_annuel`
            workflows/test.yaml:7:1: error: the workflow has no steps
              hint: add at least one step under `steps:`, e.g. `- id: debut` with a kind such as `assign`
        "#]],
    );
}

#[test]
fn step_ids() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: Calcul pénalité
    assign: { a: "1" }
  - id: end
    assign: { b: "2" }
  - id: ""
    assign: { c: "3" }
  - id: envoi
    parallel:
      - steps:
          - id: envoi
            assign: { d: "4" }
    compensate:
      - id: annulation
        assign: { e: "5" }
  - id: annulation
    assign: { f: "6" }
"#,
        expect![[r#"
            workflows/test.yaml:6:9: error: step id `Calcul pénalité` may only contain letters, digits, `_` and `-`
              hint: write it like `calcul_penalite`
            workflows/test.yaml:8:9: error: `end` is reserved: jumps use it to finish a list
              hint: give the step another id, such as `cloture`
            workflows/test.yaml:10:9: error: the step id is empty
              hint: give the step an id such as `calcul_penalite`
            workflows/test.yaml:15:17: error: step id `envoi` is already used at line 12
              hint: step ids are unique in the whole workflow, nested steps included: rename one of them
            workflows/test.yaml:20:9: error: step id `annulation` is already used at line 18
              hint: step ids are unique in the whole workflow, nested steps included: rename one of them
        "#]],
    );
}

#[test]
fn step_kinds() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: rien
    title: Une étape sans genre
  - id: trop
    rule: penalites.indemnite
    wait:
      duration: P1D
    result: r
"#,
        expect![[r#"
            workflows/test.yaml:6:5: error: step `rien` does nothing: it has none of the step kinds
              hint: add one of `rule`, `assign`, `branch`, `wait`, `wait_event`, `task`, `action`, `parallel`, `for_each`, `call`, `render`, `fail`
            workflows/test.yaml:10:5: error: step `trop` has several kinds: `rule` and `wait`
              hint: a step does one thing: split it into one step per kind
        "#]],
    );
}

#[test]
fn fields_that_do_not_fit_the_kind() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: pause
    wait:
      duration: P1D
    with:
      x: "1"
    retry:
      max_attempts: 2
  - id: calcul
    assign:
      x: "1"
    otherwise: pause
    result: y
  - id: choix
    branch:
      - when: x > 0
        goto: pause
    result: z
  - id: attente
    wait_event:
      event: paiement_recu
    timeout: P1D
  - id: validation
    task:
      role: comptable
      title: Valider
      outcomes: { ok: end }
    timeout: P2D
"#,
        expect![[r#"
            workflows/test.yaml:9:5: error: `with` does not apply to a wait step
              hint: `with` gives the arguments of a rule, an action or a call: remove it
            workflows/test.yaml:11:5: error: `retry` does not apply to a wait step
              hint: retry and timeout apply to rule, action and call steps: remove it
            workflows/test.yaml:16:5: error: `otherwise` only applies to a branch step, not to an assign step
              hint: use `next` to choose the step that follows
            workflows/test.yaml:17:5: error: an assign step has no result to keep
              hint: remove `result`: the names under `assign` are the variables it sets
            workflows/test.yaml:22:5: error: a branch step has no result to keep
              hint: remove `result`; to set a variable, use an `assign` step
            workflows/test.yaml:26:5: error: `timeout` does not apply to a wait_event step
              hint: retry and timeout apply to rule, action and call steps; to stop waiting, use `timeout` under `wait_event`
            workflows/test.yaml:32:5: error: `timeout` does not apply to a task step
              hint: retry and timeout apply to rule, action and call steps; to give the task a deadline, use `due` under `task`
        "#]],
    );
}

#[test]
fn jumps() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: debut
    branch:
      - when: "true"
        goto: fni
      - when: "false"
        goto: ailleurs
    otherwise: envoi_sms
  - id: paralleles
    parallel:
      - steps:
          - id: envoi_sms
            assign: { a: "1" }
            next: debut
          - id: vide
            fail: non
            on_error: ""
    compensate:
      - id: annulation
        assign: { b: "2" }
  - id: attente
    wait_event:
      event: paiement_recu
      timeout: P1D
      on_timeout: annulation
  - id: decision
    task:
      role: comptable
      title: Décider
      outcomes:
        accepte: atente
        refuse: end
"#,
        expect![[r#"
            workflows/test.yaml:9:15: error: there is no step `fni`
              hint: the steps this jump can reach are: `debut`, `paralleles`, `attente`, `decision`, `end`
            workflows/test.yaml:11:15: error: there is no step `ailleurs`
              hint: the steps this jump can reach are: `debut`, `paralleles`, `attente`, `decision`, `end`
            workflows/test.yaml:12:16: error: `envoi_sms` is inside the parallel step `paralleles`; a jump can only reach steps of the same list
              hint: jump to a step of this list, or to `end` to finish it
            workflows/test.yaml:13:9: error: step `paralleles` is unreachable: no path from the first step of its list leads to it
              hint: link it from another step (`next`, a branch arm, an outcome, `on_error`, an `on_event` goto) or delete it; the steps it leads to are unreachable too: `attente`, `decision`
            workflows/test.yaml:18:19: error: `debut` is in the main list of steps, outside the parallel step `paralleles`; a jump can only reach steps of the same list
              hint: use `end` to finish this list: the workflow then goes on after the parallel step `paralleles`
            workflows/test.yaml:19:17: error: step `vide` is unreachable: no path from the first step of its list leads to it
              hint: link it from another step (`next`, a branch arm, an outcome, `on_error`, an `on_event` goto) or delete it
            workflows/test.yaml:21:23: error: the step to go to is empty
              hint: name a step of this list, or `end` to finish it
            workflows/test.yaml:29:19: error: `annulation` is inside the compensation of step `paralleles`; a jump can only reach steps of the same list
              hint: jump to a step of this list, or to `end` to finish it
            workflows/test.yaml:35:18: error: there is no step `atente`
              hint: did you mean `attente`?
        "#]],
    );
}

#[test]
fn jump_out_of_a_for_each() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: boucle
    for_each:
      items: input.lignes
      steps:
        - id: controle
          assign: { a: item }
          next: fin
  - id: fin
    assign: { b: "1" }
"#,
        expect![[r#"
            workflows/test.yaml:12:17: error: `fin` is in the main list of steps, outside the for_each step `boucle`; a jump can only reach steps of the same list
              hint: use `end` to finish this list: the workflow then goes on after the for_each step `boucle`
        "#]],
    );
}

#[test]
fn unreachable_steps() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: debut
    assign: { a: "1" }
    next: choix
  - id: oubliee
    assign: { b: "2" }
  - id: suite_oubliee
    assign: { c: "3" }
  - id: choix
    branch:
      - when: a == 1
        goto: validation
    otherwise: echec
  - id: morte
    assign: { d: "4" }
  - id: validation
    task:
      role: comptable
      title: Valider
      outcomes: { ok: envoi }
  - id: apres_tache
    assign: { e: "5" }
  - id: envoi
    action: { connector: email }
    on_error: secours
    next: end
  - id: secours
    action: { connector: log, operation: write }
  - id: echec
    fail: Échec
  - id: apres_echec
    assign: { f: "6" }
"#,
        expect![[r#"
            workflows/test.yaml:9:9: error: step `oubliee` is unreachable: no path from the first step of its list leads to it
              hint: link it from another step (`next`, a branch arm, an outcome, `on_error`, an `on_event` goto) or delete it; the steps it leads to are unreachable too: `suite_oubliee`
            workflows/test.yaml:18:9: error: step `morte` is unreachable: no path from the first step of its list leads to it
              hint: link it from another step (`next`, a branch arm, an outcome, `on_error`, an `on_event` goto) or delete it
            workflows/test.yaml:25:9: error: step `apres_tache` is unreachable: no path from the first step of its list leads to it
              hint: link it from another step (`next`, a branch arm, an outcome, `on_error`, an `on_event` goto) or delete it
            workflows/test.yaml:35:9: error: step `apres_echec` is unreachable: no path from the first step of its list leads to it
              hint: link it from another step (`next`, a branch arm, an outcome, `on_error`, an `on_event` goto) or delete it
        "#]],
    );
}

#[test]
fn unreachable_inside_nested_list() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: boucle
    for_each:
      items: "[1, 2]"
      as: n
      steps:
        - id: premier
          assign: { a: n }
          next: end
        - id: jamais
          assign: { b: n_index }
"#,
        expect![[r#"
            workflows/test.yaml:14:15: error: step `jamais` is unreachable: no path from the first step of its list leads to it
              hint: link it from another step (`next`, a branch arm, an outcome, `on_error`, an `on_event` goto) or delete it
        "#]],
    );
}

#[test]
fn rule_names() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: sans_module
    rule: penalite_l441
    with: { montant_ttc: "1", jours_retard: "2", taux_annuel: "3" }
    result: a
  - id: pas_de_point
    rule: calcul
    result: b
  - id: module_proche
    rule: penalite.indemnite
    result: c
  - id: module_inconnu
    rule: factures.total
    result: d
  - id: fonction_proche
    rule: penalites.penalite_l44
    result: e
  - id: fonction_inconnue
    rule: penalites.calcul
    result: f
"#,
        expect![[r#"
            workflows/test.yaml:7:11: error: `penalite_l441` is not of the form `module.function`
              hint: did you mean `penalites.penalite_l441`?
            workflows/test.yaml:11:11: error: `calcul` is not of the form `module.function`
              hint: name the module then the function, such as `penalites.penalite_l441`
            workflows/test.yaml:14:11: error: there is no rule module `penalite`
              hint: did you mean `penalites`?
            workflows/test.yaml:17:11: error: there is no rule module `factures`
              hint: the rule modules are: `penalites`, `scoring`
            workflows/test.yaml:20:11: error: rule module `penalites` has no function `penalite_l44`
              hint: did you mean `penalite_l441`?
            workflows/test.yaml:23:11: error: rule module `penalites` has no function `calcul`
              hint: its functions are: `penalite_l441`, `indemnite`
        "#]],
    );
}

#[test]
fn rule_arguments_and_result() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: calcul
    rule: penalites.penalite_l441
    with:
      montant: "100"
      jours_retard: "30"
      devise: '"EUR"'
  - id: sans_with
    rule: scoring.risque_client
    result: risque
  - id: sans_parametre
    rule: penalites.indemnite
    with:
      montant: "1"
    result: indemnite
"#,
        expect![[r#"
            workflows/test.yaml:7:5: error: the decision of rule `penalites.penalite_l441` is not kept
              hint: add `result: NAME` to keep it in a variable (a rule has no other effect)
            workflows/test.yaml:8:5: error: `penalites.penalite_l441` needs the argument `montant_ttc`
              hint: add `montant_ttc: <expression>` under `with`
            workflows/test.yaml:8:5: error: `penalites.penalite_l441` needs the argument `taux_annuel`
              hint: add `taux_annuel: <expression>` under `with`
            workflows/test.yaml:9:7: error: `montant` is not a parameter of `penalites.penalite_l441`
              hint: did you mean `montant_ttc`?
            workflows/test.yaml:11:7: error: `devise` is not a parameter of `penalites.penalite_l441`
              hint: its parameters are: `montant_ttc`, `jours_retard`, `taux_annuel`
            workflows/test.yaml:13:5: error: `scoring.risque_client` needs the argument `encours`
              hint: add `encours: <expression>` under `with`
            workflows/test.yaml:13:5: error: `scoring.risque_client` needs the argument `retards`
              hint: add `retards: <expression>` under `with`
            workflows/test.yaml:18:7: error: `montant` is not a parameter of `penalites.indemnite`
              hint: it takes no parameter: remove `with`
        "#]],
    );
}

#[test]
fn expressions() {
    check(
        r#"
id: test
version: 1
title: Test
input:
  montant: { type: decimal }
  lignes: { type: list, items: { type: text } }
params:
  taux: 0.1
business_key: inpt.facture_id
steps:
  - id: calcul
    assign:
      total: (input.montant * (1 + params.taux)
      statut: payé
      frais: input.montnt * params.tau
  - id: boucle
    for_each:
      items: input.lignes
      as: ligne
      steps:
        - id: trace
          assign: { rang: "ligne_index + 1", texte: ligne }
  - id: apres
    branch:
      - when: ligne == "x" && totl > 0
        goto: end
output:
  total: total
  etat: etat
"#,
        expect![[r#"
            workflows/test.yaml:10:15: error: unknown variable `inpt`
              hint: did you mean `input`?
            workflows/test.yaml:14:14: error: expression `(input.montant * (1 + params.taux)` does not compile: expecting `)` to close `(` (position 1)
              hint: fix the Rhai expression; text values need quotes inside it, e.g. `statut == "payee"`
            workflows/test.yaml:15:15: error: unknown variable `payé`
              hint: set it first with `assign` or a step's `result`, or quote it if it is text (`"payé"`); known here: `dossier`, `error`, `frais`, `input`, `now`, `params`, `rang`, `statut`, `texte`, `today`, `total`
            workflows/test.yaml:16:14: error: the input has no field `montnt`
              hint: did you mean `montant`?
            workflows/test.yaml:16:14: error: there is no parameter `tau`
              hint: did you mean `taux`?
            workflows/test.yaml:26:15: error: unknown variable `ligne`
              hint: `ligne` belongs to the for_each step `boucle`: it is only known inside that step's `steps`
            workflows/test.yaml:26:15: error: unknown variable `totl`
              hint: did you mean `total`?
            workflows/test.yaml:30:9: error: unknown variable `etat`
              hint: set it first with `assign` or a step's `result`, or quote it if it is text (`"etat"`); known here: `dossier`, `error`, `frais`, `input`, `now`, `params`, `rang`, `statut`, `texte`, `today`, `total`
        "#]],
    );
}

#[test]
fn trigger_input_reads_the_payload() {
    check(
        r#"
id: test
version: 1
title: Test
input:
  facture_id: { type: text }
  montant: { type: decimal, required: false }
triggers:
  - event: facture_echue
    input:
      facture_id: payload.numero
      montant: input.montant
  - webhook: erp
    input:
      factur_id: payload.numero
steps:
  - id: a
    assign: { x: input.facture_id }
"#,
        expect![[r#"
            workflows/test.yaml:12:16: error: unknown variable `input`
              hint: a trigger's input is computed from what was delivered: read it as `payload.NAME`
            workflows/test.yaml:14:5: error: this trigger's input lacks the required field `facture_id`
              hint: add `facture_id: payload.…` under `input`, or make the field `required: false`
            workflows/test.yaml:15:7: error: the workflow has no input field `factur_id`
              hint: did you mean `facture_id`?
        "#]],
    );
}

#[test]
fn durations() {
    check(
        r#"
id: test
version: 1
title: Test
params:
  delai: P3D
steps:
  - id: iso_invalide
    wait: { duration: P7 }
  - id: sans_p
    wait: { duration: 7d }
  - id: minutes_ou_mois
    wait: { duration: 30M }
  - id: nombre
    wait: { duration: "30" }
  - id: expression
    wait: { duration: params.delai }
  - id: expression_inconnue
    wait: { duration: delai_relance }
  - id: les_deux
    wait: { duration: P1D, until: today }
  - id: aucun
    wait: {}
  - id: envoi
    action: { connector: email }
    timeout: PT
    retry:
      max_attempts: 0
      backoff: 10s
      max_backoff: P1H
  - id: attente
    wait_event:
      event: paiement_recu
      on_timeout: end
"#,
        expect![[r#"
            workflows/test.yaml:9:23: error: `P7` is not an ISO 8601 duration: the last number has no unit
              hint: write an ISO 8601 duration such as `P7D` (7 days), `PT2H` (2 hours), `PT30M` (30 minutes) or `P1M` (1 month)
            workflows/test.yaml:11:23: error: `7d` is not an ISO 8601 duration
              hint: did you mean `P7D`?
            workflows/test.yaml:13:23: error: `30M` is not an ISO 8601 duration
              hint: did you mean `PT30M` or `P30M`? (after `T`, `M` means minutes; before, months)
            workflows/test.yaml:15:23: error: `30` is a number, not a duration: the unit is missing
              hint: write an ISO 8601 duration such as `P7D` (7 days), `PT2H` (2 hours), `PT30M` (30 minutes) or `P1M` (1 month)
            workflows/test.yaml:19:23: error: unknown variable `delai_relance`
              hint: set it first with `assign` or a step's `result`, or quote it if it is text (`"delai_relance"`); known here: `dossier`, `error`, `input`, `now`, `params`, `today`
            workflows/test.yaml:21:28: error: a wait has either `duration` or `until`, not both
              hint: keep one of them; to wait for the earlier of two moments, compute it in an `assign` step
            workflows/test.yaml:23:5: error: the wait says neither how long nor until when
              hint: add `duration: P7D` (a delay) or `until: input.date_echeance` (a date)
            workflows/test.yaml:26:14: error: `PT` is not an ISO 8601 duration: it has no part
              hint: write an ISO 8601 duration such as `P7D` (7 days), `PT2H` (2 hours), `PT30M` (30 minutes) or `P1M` (1 month)
            workflows/test.yaml:28:21: error: `max_attempts` counts the first attempt and must be at least 1
              hint: write `max_attempts: 3` for the first attempt and two retries
            workflows/test.yaml:29:16: error: `10s` is not an ISO 8601 duration
              hint: did you mean `PT10S`?
            workflows/test.yaml:30:20: error: `P1H` is not an ISO 8601 duration: hours, minutes and seconds go after T (PT2H)
              hint: write an ISO 8601 duration such as `P7D` (7 days), `PT2H` (2 hours), `PT30M` (30 minutes) or `P1M` (1 month)
            workflows/test.yaml:34:7: error: `on_timeout` without `timeout` can never happen
              hint: add `timeout: P30D` (how long to wait), or remove `on_timeout`
        "#]],
    );
}

#[test]
fn tasks() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: validation
    task:
      role: " "
      title: Valider
      fields:
        motif: { type: choice }
        pieces: { type: list }
        adresse: { type: object }
        note: { type: text, options: [a, b] }
        mode: { type: choice, options: [virement, cheque, virement] }
        date limite: { type: date }
      outcomes: {}
      due: P5
      reminders: [P1D, 2D]
      escalate_to: ""
  - id: sans_echeance
    task:
      role: comptable
      title: Valider
      outcomes: { ok: end }
      escalate_to: direction
"#,
        expect![[r#"
            workflows/test.yaml:8:13: error: the task's role is empty
              hint: name the role whose inbox receives the task, such as `recouvrement`
            workflows/test.yaml:11:9: error: a choice field needs `options`
              hint: list the allowed values, e.g. `options: [virement, cheque, especes]`
            workflows/test.yaml:12:9: error: a list field needs `items`
              hint: give the type of each element, e.g. `items: { type: text }`
            workflows/test.yaml:13:9: error: an object field needs `fields`
              hint: list its sub-fields, e.g. `fields: { nom: { type: text } }`
            workflows/test.yaml:14:29: error: `options` only apply to choice fields, and this one is `text`
              hint: remove `options`, or set `type: choice`
            workflows/test.yaml:15:59: error: option `virement` is listed twice
              hint: remove the second one
            workflows/test.yaml:16:9: error: field name `date limite` is not a valid name
              hint: expressions read fields by name: use letters, digits and `_`, e.g. `date_limite`
            workflows/test.yaml:17:7: error: the task has no outcomes: nobody could decide it
              hint: list the decisions and where each leads, e.g. `outcomes: { accepte: envoi, refuse: end }`
            workflows/test.yaml:18:12: error: `P5` is not an ISO 8601 duration: the last number has no unit
              hint: write an ISO 8601 duration such as `P7D` (7 days), `PT2H` (2 hours), `PT30M` (30 minutes) or `P1M` (1 month)
            workflows/test.yaml:19:24: error: `2D` is not an ISO 8601 duration
              hint: did you mean `P2D`?
            workflows/test.yaml:20:20: error: `escalate_to` names no role
              hint: name the role that takes over an overdue task, or remove `escalate_to`
            workflows/test.yaml:26:7: error: `escalate_to` without `due` can never happen: the task is never overdue
              hint: add `due: P5D` (when the task is overdue), or remove `escalate_to`
        "#]],
    );
}

#[test]
fn actions_and_templates() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: connecteur_proche
    action: { connector: emial }
  - id: connecteur_inconnu
    action: { connector: fax }
  - id: operation_proche
    action: { connector: email, operation: sned }
  - id: operation_inconnue
    action: { connector: log, operation: print }
  - id: modeles
    action:
      connector: email
      templates:
        corps: relances/mise_en_demeure.htm
        objet: courriers/objet.txt
  - id: rendu
    render: relances/sms_niveau2.txt
    result: texte
"#,
        expect![[r#"
            workflows/test.yaml:7:26: error: there is no connector `emial`
              hint: did you mean `email`?
            workflows/test.yaml:9:26: error: there is no connector `fax`
              hint: the connectors are: `log`, `email`
            workflows/test.yaml:11:44: error: connector `email` has no operation `sned`
              hint: did you mean `send`?
            workflows/test.yaml:13:42: error: connector `log` has no operation `print`
              hint: its operations are: `send`, `write`
            workflows/test.yaml:18:16: error: there is no template `relances/mise_en_demeure.htm`
              hint: did you mean `relances/mise_en_demeure.html`?
            workflows/test.yaml:19:16: error: there is no template `courriers/objet.txt`
              hint: the templates are: `relances/sms_niveau1.txt`, `relances/email_objet.txt`, `relances/mise_en_demeure.html`, `contentieux/dossier.html`
            workflows/test.yaml:21:13: error: there is no template `relances/sms_niveau2.txt`
              hint: did you mean `relances/sms_niveau1.txt`?
        "#]],
    );
}

#[test]
fn task_notices() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: sans_rappels
    task:
      role: comptable
      title: Valider
      outcomes: { ok: avec_rappels }
      on_reminder: { connector: email, templates: { corps: relances/sms_niveau1.txt } }
      on_overdue: { connector: email }
  - id: avec_rappels
    task:
      role: comptable
      title: Valider
      outcomes: { ok: juste }
      reminders: [P1D]
      due: P3D
      on_reminder:
        connector: emial
        templates: { corps: relances/sms_niveau9.txt }
        with: { to: "(input.courriel" }
      on_overdue: { connector: log, operation: imprimer }
  - id: juste
    task:
      role: comptable
      title: Valider
      outcomes: { ok: end }
      reminders: [P1D]
      due: P3D
      on_reminder: { connector: email, templates: { text: relances/sms_niveau1.txt }, with: { to: '"compta@exemple.ci"' } }
      on_overdue: { connector: log, operation: write, with: { objet: '"tâche en retard"' } }
"#,
        expect![[r#"
            workflows/test.yaml:11:7: error: `on_reminder` without `reminders` is never sent
              hint: add `reminders: [P2D]` (when to remind), or remove `on_reminder`
            workflows/test.yaml:12:7: error: `on_overdue` without `due` is never sent: the task is never overdue
              hint: add `due: P5D` (when the task is overdue), or remove `on_overdue`
            workflows/test.yaml:21:20: error: there is no connector `emial`
              hint: did you mean `email`?
            workflows/test.yaml:22:29: error: there is no template `relances/sms_niveau9.txt`
              hint: did you mean `relances/sms_niveau1.txt`?
            workflows/test.yaml:23:21: error: expression `(input.courriel` does not compile: expecting `)` to close `(` (position 1)
              hint: fix the Rhai expression; text values need quotes inside it, e.g. `statut == "payee"`
            workflows/test.yaml:24:48: error: connector `log` has no operation `imprimer`
              hint: its operations are: `send`, `write`
        "#]],
    );
}

#[test]
fn number_steps() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: serie_minuscule
    number: { series: fac }
    result: numero
  - id: sans_sequence
    number: { series: FAC, format: "{series}-{period}" }
    result: numero
  - id: repere_inconnu
    number: { series: FAC, format: "{series}-{annee}-{seq:04}" }
    result: numero
  - id: sans_resultat
    number: { series: AV, period: "(input.exercice" }
  - id: juste
    number: { series: AV, format: "AV/{period}/{seq:03}", period: '"2026-T1"' }
    result: avoir
"#,
        expect![[r#"
            workflows/test.yaml:7:23: error: `fac` is not a series name: use capital letters, digits, `_` and `-`, such as `FAC`
              hint: name the series in capitals, such as `FAC` for invoices or `AV` for credit notes
            workflows/test.yaml:10:36: error: the number format `{series}-{period}`: the format has no `{seq}`: every number would be the same
              hint: write it with {series}, {period} and {seq}, such as `{series}-{period}-{seq:04}`
            workflows/test.yaml:13:36: error: the number format `{series}-{annee}-{seq:04}`: `{annee}` is not a placeholder: use {series}, {period}, {seq} or {seq:04}
              hint: write it with {series}, {period} and {seq}, such as `{series}-{period}-{seq:04}`
            workflows/test.yaml:16:5: error: the number is given to nobody: the step has no `result`
              hint: add `result: numero` and use `numero.number` in the document it numbers
            workflows/test.yaml:16:35: error: expression `(input.exercice` does not compile: expecting `)` to close `(` (position 1)
              hint: fix the Rhai expression; text values need quotes inside it, e.g. `statut == "payee"`
        "#]],
    );
}

#[test]
fn calls() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: inconnu
    call: recouvrement_contentieu
  - id: recursion
    call: test
  - id: arguments
    call: recouvrement_contentieux
    with:
      facture: '"F-1"'
      commentaire: '"urgent"'
    result: suivi
"#,
        expect![[r#"
            workflows/test.yaml:7:11: error: there is no workflow `recouvrement_contentieu`
              hint: did you mean `recouvrement_contentieux`?
            workflows/test.yaml:9:11: error: workflow `test` calls itself
              hint: a case that starts a case of its own workflow never ends: repeat steps with `next` instead
            workflows/test.yaml:12:5: error: workflow `recouvrement_contentieux` needs the input field `facture_id`
              hint: add `facture_id: <expression>` under `with`
            workflows/test.yaml:12:5: error: workflow `recouvrement_contentieux` needs the input field `montant`
              hint: add `montant: <expression>` under `with`
            workflows/test.yaml:13:7: error: workflow `recouvrement_contentieux` has no input field `facture`
              hint: did you mean `facture_id`?
        "#]],
    );
}

#[test]
fn input_schema() {
    check(
        r#"
id: test
version: 1
title: Test
input:
  mode paiement: { type: choice }
  lignes:
    type: list
    items:
      type: object
  client:
    type: object
    fields:
      nom: { type: text, items: { type: text } }
      civilite: { type: choice, options: [M, Mme] }
steps:
  - id: a
    assign: { x: "1" }
"#,
        expect![[r#"
            workflows/test.yaml:6:3: error: field name `mode paiement` is not a valid name
              hint: expressions read fields by name: use letters, digits and `_`, e.g. `mode_paiement`
            workflows/test.yaml:6:3: error: a choice field needs `options`
              hint: list the allowed values, e.g. `options: [virement, cheque, especes]`
            workflows/test.yaml:9:5: error: an object field needs `fields`
              hint: list its sub-fields, e.g. `fields: { nom: { type: text } }`
            workflows/test.yaml:14:26: error: `items` only apply to list fields, and this one is `text`
              hint: remove `items`, or set `type: list`
        "#]],
    );
}

#[test]
fn triggers() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: a
    assign: { x: "1" }
triggers:
  - timezone: Europe/Paris
  - webhook: erp
    cron: "0 8 * * *"
  - cron: "0 8 * *"
  - cron: "0 25 * * MON-FRI"
  - cron: 0 8 1-31/2 JAN,JUL FOO
  - cron: "*/15 8-18 * * mon-fri"
    timezone: Africa/Abidjan
  - event: paiement recu
    timezone: Africa/Abidjan
"#,
        expect![[r#"
            workflows/test.yaml:9:5: error: this trigger says neither how nor when to start a case
              hint: add one of `webhook: NAME`, `event: NAME` or `cron: "0 8 * * MON-FRI"`
            workflows/test.yaml:9:5: error: `timezone` only applies to a `cron` trigger
              hint: remove `timezone`: webhooks and events start a case when they arrive
            workflows/test.yaml:11:5: error: a trigger has exactly one of `webhook`, `event`, `cron`; this one has `webhook` and `cron`
              hint: split it into one trigger per way of starting
            workflows/test.yaml:12:11: error: the cron schedule `0 8 * *` has 4 fields instead of 5
              hint: e.g. `0 8 * * MON-FRI` runs at 8:00 on weekdays (minute hour day-of-month month day-of-week; no seconds)
            workflows/test.yaml:13:14: error: the hour field `25` of the cron schedule is not valid: `25` is outside 0-23
              hint: write `*`, a number, a range `1-5`, a list `1,15`, a step `*/15`; e.g. `0 8 * * MON-FRI` runs at 8:00 on weekdays (minute hour day-of-month month day-of-week; no seconds)
            workflows/test.yaml:14:30: error: the day-of-week field `FOO` of the cron schedule is not valid: `FOO` is not a number nor a name
              hint: write `*`, a number, a range `1-5`, a list `1,15`, a step `*/15` or a day name (`MON`); e.g. `0 8 * * MON-FRI` runs at 8:00 on weekdays (minute hour day-of-month month day-of-week; no seconds)
            workflows/test.yaml:17:12: error: event name `paiement recu` may only contain letters, digits, `_` and `-`
              hint: write it like `paiement_recu`
            workflows/test.yaml:18:5: error: `timezone` only applies to a `cron` trigger
              hint: remove `timezone`: webhooks and events start a case when they arrive
        "#]],
    );
}

#[test]
fn events_and_loops() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: attente
    wait_event:
      event: ""
    result: evenement
  - id: boucle
    for_each:
      items: "[1, 2]"
      as: ligne courante
      steps:
        - id: a
          assign: { x: "1" }
  - id: boucle_reservee
    for_each:
      items: "[1, 2]"
      as: input
      steps: []
  - id: variables
    assign:
      params: "1"
      2x: "2"
    next: end
  - id: resultat
    render: relances/sms_niveau1.txt
    result: now
"#,
        expect![[r#"
            workflows/test.yaml:8:14: error: the event name is empty
              hint: name the awaited event, such as `paiement_recu`
            workflows/test.yaml:13:7: error: `ligne courante` is not a valid variable name
              hint: use letters, digits and `_`, not starting with a digit, e.g. `ligne_courante`
            workflows/test.yaml:20:7: error: `input` is a reserved variable and cannot be set
              hint: choose another name, such as `input_calcule`
            workflows/test.yaml:21:7: error: the for_each step has no steps to repeat
              hint: add the steps run for each element under `steps:`
            workflows/test.yaml:24:7: error: `params` is a reserved variable and cannot be set
              hint: choose another name, such as `params_calcule`
            workflows/test.yaml:25:7: error: `2x` is not a valid variable name
              hint: use letters, digits and `_`, not starting with a digit, e.g. `n_2x`
            workflows/test.yaml:27:9: error: step `resultat` is unreachable: no path from the first step of its list leads to it
              hint: link it from another step (`next`, a branch arm, an outcome, `on_error`, an `on_event` goto) or delete it
            workflows/test.yaml:29:13: error: `now` is a reserved variable and cannot be set
              hint: choose another name, such as `now_calcule`
        "#]],
    );
}

#[test]
fn empty_nested_lists() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: ensemble
    parallel:
      - name: vide
        steps: []
    compensate: []
  - id: rien
    parallel: []
  - id: choix
    branch: []
  - id: vide
    assign: {}
"#,
        expect![[r#"
            workflows/test.yaml:9:9: error: this parallel branch has no steps
              hint: add steps to it, or remove the branch
            workflows/test.yaml:10:5: error: `compensate` has no steps
              hint: list the steps that undo this one, or remove `compensate`
            workflows/test.yaml:12:5: error: the parallel step has no branches
              hint: add branches such as `- name: courrier` with their `steps:`
            workflows/test.yaml:14:5: error: the branch has no arms
              hint: add arms such as `- when: input.montant > 1000` with `goto: STEP`
            workflows/test.yaml:16:5: error: `assign` sets no variable
              hint: add `NAME: expression` lines under `assign`
        "#]],
    );
}

#[test]
fn duplicate_workflow_ids_across_files() {
    let a = "id: relance\nversion: 1\ntitle: A\nsteps:\n  - id: a\n    assign: { x: \"1\" }\n";
    let b =
        "# copie\nid: relance\nversion: 2\ntitle: B\nsteps:\n  - id: a\n    assign: { x: \"1\" }\n";
    let c = "id: autre\nversion: 1\ntitle: C\nsteps:\n  - id: a\n    assign: { x: \"1\" }\n";
    expect![[r#"
        workflows/relance_copie.yaml:2:5: error: workflow id `relance` is already used by workflows/relance.yaml:1
          hint: give each workflow its own id: calls, triggers and the API find a workflow by its id
    "#]].assert_eq(&common::project_diagnostics(&[
        ("workflows/relance.yaml", a),
        ("workflows/relance_copie.yaml", b),
        ("workflows/autre.yaml", c),
    ]));
}

#[test]
fn interrupting_events() {
    check(
        r#"
id: test
version: 1
title: Test
input:
  facture: { type: text }
on_event:
  - event: paiement_recu
    correlate: { facture: input.factur }
    result: paiement
    goto: paiement_constat
  - event: ""
    goto: ligne
steps:
  - id: attente
    wait: { duration: P7D }
    next: end
  - id: paiement_constate
    assign: { montant: paiement.montant }
  - id: lot
    for_each:
      items: '[1, 2]'
      steps:
        - id: ligne
          assign: { x: item }
"#,
        expect![[r#"
            workflows/test.yaml:9:27: error: the input has no field `factur`
              hint: did you mean `facture`?
            workflows/test.yaml:11:11: error: there is no step `paiement_constat`
              hint: did you mean `paiement_constate`?
            workflows/test.yaml:12:12: error: the event name is empty
              hint: name the event that interrupts the case, e.g. `paiement_recu`
            workflows/test.yaml:13:11: error: `ligne` is inside the for_each step `lot`; a jump can only reach steps of the same list
              hint: jump to a step of this list, or to `end` to finish it
            workflows/test.yaml:18:9: error: step `paiement_constate` is unreachable: no path from the first step of its list leads to it
              hint: link it from another step (`next`, a branch arm, an outcome, `on_error`, an `on_event` goto) or delete it; the steps it leads to are unreachable too: `lot`
        "#]],
    );
}

#[test]
fn calls_that_go_round_in_a_circle() {
    let a = "id: aller\nversion: 1\ntitle: A\nsteps:\n  - id: vers_b\n    call: retour\n";
    let b = "id: retour\nversion: 1\ntitle: B\nsteps:\n  - id: lot\n    for_each:\n      items: '[1]'\n      steps:\n        - id: vers_a\n          call: aller\n";
    let diags =
        common::project_diagnostics(&[("workflows/aller.yaml", a), ("workflows/retour.yaml", b)]);
    let circles: Vec<&str> = diags.lines().filter(|l| l.contains("circle")).collect();
    expect![[r#"
        workflows/aller.yaml:6:11: error: calls go round in a circle: `aller` → `retour` → `aller`
          hint: each case would start the next without end: break the circle, or repeat steps with `next` inside one workflow
        workflows/retour.yaml:10:17: error: calls go round in a circle: `retour` → `aller` → `retour`
          hint: each case would start the next without end: break the circle, or repeat steps with `next` inside one workflow
    "#]]
    .assert_eq(&(circles.join("\n") + "\n"));
}

#[test]
fn trigger_time_zones() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: a
    assign: { x: "1" }
triggers:
  - cron: "0 8 * * MON-FRI"
    timezone: Africa/Abidjan
  - cron: "0 8 * * *"
    timezone: UTC
  - cron: "0 8 * * *"
    timezone: europe/paris
  - cron: "0 8 * * *"
    timezone: Mars/Olympus
  - cron: "0 8 * * *"
    timezone: "Europe/ Paris"
"#,
        expect![[r#"
            workflows/test.yaml:14:15: error: `europe/paris` is not a time zone name
              hint: did you mean `Europe/Paris`? use an IANA name such as `Africa/Abidjan` or `Europe/Paris`
            workflows/test.yaml:16:15: error: `Mars/Olympus` is not a time zone name
              hint: use an IANA name such as `Africa/Abidjan` or `Europe/Paris`
            workflows/test.yaml:18:15: error: `Europe/ Paris` is not a time zone name
              hint: did you mean `Europe/Paris`? use an IANA name such as `Africa/Abidjan` or `Europe/Paris`
        "#]],
    );
}
