//! The Mermaid chart of the realistic workflow and of the tricky corners (labels, ids).
//! Refresh the snapshots with `UPDATE_EXPECT=1 cargo test -p dossier-model --test graph`.

mod common;

use dossier_model::graph::mermaid;
use dossier_model::parse_workflow;
use expect_test::{expect, Expect};

fn check(source: &str, expected: Expect) {
    let parsed = parse_workflow("workflows/test.yaml", source).unwrap_or_else(|d| panic!("{d}"));
    expected.assert_eq(&mermaid(&parsed.workflow));
}

#[test]
fn realistic_workflow() {
    check(
        common::RELANCE,
        expect![[r#"
        flowchart TD
            start(["Début"])
            s_calcul_penalite["Calcul des pénalités de retard<br/><i>rule</i>"]
            s_niveau_relance{"Montant au-dessus du seuil ?<br/><i>branch</i>"}
            s_sms_niveau1["SMS de premier rappel<br/><i>action</i>"]
            s_delai_reflexion["Laisser une semaine au client<br/><i>wait</i>"]
            s_attente_paiement["Attendre le paiement<br/><i>wait_event</i>"]
            s_solde["Facture soldée<br/><i>assign</i>"]
            s_mise_en_demeure["Mise en demeure<br/><i>parallel</i>"]
            subgraph g_mise_en_demeure_1["courrier"]
                s_redaction_courrier["redaction_courrier<br/><i>render</i>"]
                s_envoi_courrier["Envoi de la mise en demeure<br/><i>action</i>"]
                subgraph g_envoi_courrier_compensation["compensation de Envoi de la mise en demeure"]
                    s_annulation_courrier["annulation_courrier<br/><i>action</i>"]
                end
                s_trace_echec["trace_echec<br/><i>action</i>"]
            end
            subgraph g_mise_en_demeure_2["journal"]
                s_journal_lignes["journal_lignes<br/><i>for_each</i>"]
                subgraph g_journal_lignes_corps["pour chaque ligne de input.lignes"]
                    s_trace_ligne["trace_ligne<br/><i>action</i>"]
                end
            end
            j_mise_en_demeure(("fin des branches"))
            s_decision_recouvrement{{"Décider du recouvrement<br/><i>task</i>"}}
            s_contentieux[["Transmettre au contentieux<br/><i>call</i>"]]
            s_echeancier["Indemnité forfaitaire<br/><i>rule</i>"]
            s_abandon>"Créance abandonnée<br/><i>fail</i>"]
            stop(["Fin"])
            start --> s_calcul_penalite
            s_calcul_penalite --> s_niveau_relance
            s_niveau_relance -->|"input.montant_ttc + penalite.montant #gt;= params.seuil_contentieux"| s_mise_en_demeure
            s_niveau_relance -->|"sinon"| s_sms_niveau1
            s_sms_niveau1 --> s_delai_reflexion
            s_delai_reflexion --> s_attente_paiement
            s_attente_paiement -->|"délai dépassé"| s_mise_en_demeure
            s_attente_paiement --> s_solde
            s_solde --> stop
            s_mise_en_demeure --> s_redaction_courrier
            s_redaction_courrier --> s_envoi_courrier
            s_envoi_courrier -.->|"compensation"| s_annulation_courrier
            s_envoi_courrier --> j_mise_en_demeure
            s_envoi_courrier -.->|"erreur"| s_trace_echec
            s_trace_echec --> j_mise_en_demeure
            s_mise_en_demeure --> s_journal_lignes
            s_journal_lignes -->|"chaque ligne"| s_trace_ligne
            s_trace_ligne -->|"élément suivant"| s_journal_lignes
            s_journal_lignes --> j_mise_en_demeure
            j_mise_en_demeure --> s_decision_recouvrement
            s_decision_recouvrement -->|"contentieux"| s_contentieux
            s_decision_recouvrement -->|"echeancier"| s_echeancier
            s_decision_recouvrement -->|"abandon"| s_abandon
            s_contentieux --> stop
            s_echeancier --> stop
    "#]],
    );
}

#[test]
fn labels_are_escaped_and_ids_sanitized() {
    check(
        r#"
id: test
version: 1
title: Test
steps:
  - id: end-of-month
    title: 'Le "choix" <important> | #1'
    branch:
      - when: statut == "payé" && montant > 0
        goto: fin
  - id: fin
    assign: { x: "1" }
    next: end
"#,
        expect![[r#"
            flowchart TD
                start(["Début"])
                s_end_of_month{"Le #quot;choix#quot; #lt;important#gt; #124; #35;1<br/><i>branch</i>"}
                s_fin["fin<br/><i>assign</i>"]
                stop(["Fin"])
                start --> s_end_of_month
                s_end_of_month -->|"statut == #quot;payé#quot; #amp;#amp; montant #gt; 0"| s_fin
                s_end_of_month -->|"sinon"| s_fin
                s_fin --> stop
        "#]],
    );
}

#[test]
fn empty_workflow_still_draws() {
    check(
        "id: test\nversion: 1\ntitle: Test\nsteps: []\n",
        expect![[r#"
        flowchart TD
            start(["Début"])
            stop(["Fin"])
            start --> stop
    "#]],
    );
}
