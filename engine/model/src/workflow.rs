//! The workflow file format: the types an analyst's YAML deserializes into.
//!
//! One process per file. A workflow is a list of steps run top to bottom; a step may jump
//! elsewhere in the same list with `next`, a branch or an outcome. Steps that contain steps
//! (`parallel`, `for_each`, `compensate`) open a nested list whose steps can only jump inside it.
//!
//! Every string that the engine computes is a Rhai expression (`input.montant > 1000`); YAML
//! numbers and booleans are taken as literals. Texts shown to people (task titles, messages) are
//! Tera templates (`Relance de {{ input.client }}`).

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Rhai expression, written as a YAML string (or a number or boolean, taken literally).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
#[schemars(extend("description" = "Rhai expression, e.g. `input.montant * 2` or `relance.niveau >= 3`"))]
pub struct Expr(pub String);

impl<'de> Deserialize<'de> for Expr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Expr;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Rhai expression (text), a number or a boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Expr, E> {
                Ok(Expr(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Expr, E> {
                Ok(Expr(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Expr, E> {
                Ok(Expr(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Expr, E> {
                Ok(Expr(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Expr, E> {
                // YAML gives decimals as f64; Rust's shortest round-trip formatting gives back the
                // digits the analyst wrote, which Rhai then reads as an exact decimal.
                let text = v.to_string();
                Ok(Expr(if text.contains('.') || text.contains('e') {
                    text
                } else {
                    format!("{text}.0")
                }))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Expr, E> {
                Ok(Expr("()".into()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Expr {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A workflow: one business process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Unique identifier, used by the API, triggers and sub-workflow calls (`relance_impayes`).
    pub id: String,
    /// Version number, raised by the analyst on each change worth noting. Cases are pinned to
    /// the file's content hash whatever this says.
    pub version: u32,
    /// Title shown to operators (`Relance des factures impayées`).
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The case's input: field name to its type. The API refuses a start whose input does not fit.
    #[serde(default)]
    pub input: IndexMap<String, FieldSpec>,
    /// Parameters an analyst tunes in one place (rates, thresholds, delays), readable in every
    /// expression as `params.NAME`.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub params: IndexMap<String, serde_yaml_ng::Value>,
    /// Expression computing the business key of a case (`input.facture_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_key: Option<Expr>,
    /// How cases of this workflow start besides the API: webhooks, events, schedules.
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// The steps, run top to bottom.
    pub steps: Vec<Step>,
    /// Events that interrupt the case wherever it stands (a payment during a reminder ladder):
    /// whatever it waits for is dropped (timers, events, tasks, sub-workflows) and it goes on at
    /// a step of the top list. Each is heard once, from the start until the case ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_event: Vec<EventInterrupt>,
    /// The case's output once it completes: name to expression.
    #[serde(default)]
    pub output: IndexMap<String, Expr>,
}

/// The type of one input or form field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// Whether the field must be present (default: yes).
    #[serde(default = "yes")]
    pub required: bool,
    /// Label shown on forms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Allowed values, for `choice` fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Element type, for `list` fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<FieldSpec>>,
    /// Sub-fields, for `object` fields.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub fields: IndexMap<String, FieldSpec>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Free text.
    Text,
    /// Whole number.
    Integer,
    /// Exact decimal number (amounts of money, rates).
    Decimal,
    Boolean,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// A date and time, RFC 3339 (`2026-11-21T09:30:00Z`).
    Datetime,
    /// One of `options`.
    Choice,
    Email,
    /// A phone number in international form (`+2250700000000`).
    Phone,
    List,
    Object,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Integer => "integer",
            FieldType::Decimal => "decimal",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::Datetime => "datetime",
            FieldType::Choice => "choice",
            FieldType::Email => "email",
            FieldType::Phone => "phone",
            FieldType::List => "list",
            FieldType::Object => "object",
        }
    }
}

/// One way a case of this workflow starts. Exactly one of `webhook`, `event`, `cron`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Name of the webhook (`POST /hooks/NAME`); its secret lives in the project configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Name of an event that starts a case when no case waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Cron schedule (`0 8 * * MON-FRI`: seconds omitted, five fields). Each slot starts one
    /// case, with the payload `{scheduled_at, schedule}` (`payload.scheduled_at` is the slot,
    /// RFC 3339 UTC); slots missed while no engine runs are not caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Time zone of the cron schedule (`Africa/Abidjan`); UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Input of the started case, computed from the delivered `payload`; the payload itself
    /// when absent.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub input: IndexMap<String, Expr>,
}

/// One step. Exactly one of the kinds (`rule`, `assign`, `branch`, `wait`, `wait_event`,
/// `task`, `action`, `parallel`, `for_each`, `call`, `render`, `fail`) is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Identifier, unique in the workflow (`calcul_penalite`).
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// Evaluate a rule function, `module.function` (`penalites.penalite_l441`), with the
    /// arguments of `with` matched to its parameter names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Arguments of a `rule`, an `action` or a `call`: name to expression.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub with: IndexMap<String, Expr>,

    /// Set variables: name to expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign: Option<IndexMap<String, Expr>>,

    /// Go to the first arm whose condition holds; else to `otherwise`, else to the next step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<Vec<BranchArm>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otherwise: Option<String>,

    /// Wait a duration or until a date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitSpec>,

    /// Wait for a named event whose correlation keys match this case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_event: Option<WaitEventSpec>,

    /// A human task in a role's inbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskSpec>,

    /// Call a connector (email, SMS, printer...), arguments in `with`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionSpec>,

    /// Run branches at the same time; continue when all have finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<Vec<ParallelBranch>>,

    /// Run the nested steps once per element of a list, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEachSpec>,

    /// Start a case of another workflow (input in `with`) and wait for its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,

    /// Render a Tera template from `templates/` with the case's variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render: Option<String>,

    /// Fail the case (or go to `on_error`) with this message (a Tera template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<String>,

    /// Give the case the next number of a gapless series (`FAC-2026-0001`) for a document it
    /// issues; the step's result is `{number, series, period, seq}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<NumberSpec>,

    /// Postings to ledger accounts (credits of a wallet, stock, capacity, running totals),
    /// applied all or none: a posting that would take an account past one of its bounds fails
    /// the step (its `on_error`) and applies nothing. The result is
    /// `{postings: [{account, amount, balance}]}`, each balance after its posting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Vec<PostingSpec>>,

    /// Send an event to other cases, as `POST /api/v1/events` does: to every case waiting for
    /// it whose business keys match the payload, else to the workflows it triggers. The result
    /// is `{reached: [case ids], started: [case ids]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit: Option<EmitSpec>,

    /// Give the case a new identifier that no other case has: a pattern around a random part
    /// drawn from the operating system's CSPRNG (`CI261121-3F9A-PT`), unique in the store; the
    /// step's result is `{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_id: Option<UniqueIdSpec>,

    /// Variable that receives the step's result (rule output, event payload, task decision,
    /// connector answer, sub-workflow output, rendered text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Step to go to afterwards (`end` finishes this list); default: the next step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Retries on failure, with exponential backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Longest time the step may take (ISO 8601 duration); then it fails (and may be retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Step to go to when this step fails for good; the error is in the variable `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<String>,
    /// Steps that undo this one, run (in reverse order of completion) when the case is
    /// cancelled or fails after this step completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<Vec<Step>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchArm {
    /// Condition (a Rhai expression giving true or false).
    pub when: Expr,
    /// Step to go to when the condition holds.
    pub goto: String,
}

/// An event that interrupts the case wherever it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInterrupt {
    /// Event name (`paiement_recu`).
    pub event: String,
    /// Business keys the event must carry: key to expression computing this case's value.
    #[serde(default)]
    pub correlate: IndexMap<String, Expr>,
    /// Variable that receives the event's payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Step of the top list where the case goes on (`end` ends it).
    pub goto: String,
    /// A condition on the case and the event (`payload`): when it is false the event is
    /// recorded but does not interrupt the case (a cancellation refused once a repair is ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Expr>,
}

/// A gapless numbering series: numbers follow each other without a gap per series and
/// period, two cases never get the same one, and a step asking again (after a restart) gets the
/// number it was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberSpec {
    /// Series name: capital letters, digits, `_` and `-` (`FAC`, `AV`, `DEP`).
    pub series: String,
    /// The period numbers restart in: an expression giving a text or a whole number; default the
    /// year of the engine's clock when the step runs (`2026`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Expr>,
    /// How the number is written: `{series}`, `{period}` and `{seq}` (`{seq:04}`: at least 4
    /// digits, zero-padded); default `{series}-{period}-{seq:04}`.
    #[serde(default = "default_number_format")]
    pub format: String,
}

/// A unique identifier with a random part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UniqueIdSpec {
    /// An expression giving the identifier's text, with `{random}` exactly once where the
    /// random part goes (`input.pays + aammjj + "-{random}-" + suffixe`).
    pub pattern: Expr,
    /// How many random characters (1 to 32); default 4.
    #[serde(default = "default_random_length")]
    pub length: u32,
    /// `hex` (0-9, A-F; the default), `digits` (0-9) or `alnum` (A-Z and 2-9 without the
    /// look-alikes I, O, 0 and 1).
    #[serde(default = "default_alphabet")]
    pub alphabet: String,
}

fn default_random_length() -> u32 {
    4
}

fn default_alphabet() -> String {
    "hex".to_string()
}

impl UniqueIdSpec {
    /// The characters each alphabet draws from.
    pub fn characters(alphabet: &str) -> Option<&'static str> {
        match alphabet {
            "hex" => Some("0123456789ABCDEF"),
            "digits" => Some("0123456789"),
            "alnum" => Some("ABCDEFGHJKLMNPQRSTUVWXYZ23456789"),
            _ => None,
        }
    }
    /// What stands for the random part in a pattern.
    pub const PLACEHOLDER: &'static str = "{random}";
}

/// One posting of a `ledger` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostingSpec {
    /// The account: an expression giving its name (`'credits/' + input.client`). An account
    /// exists from its first posting, with a balance of 0 before it.
    pub account: Expr,
    /// The quantity added (positive) or taken (negative): an expression giving a decimal or a
    /// whole number. A posting of 0 only reads the balance.
    pub amount: Expr,
    /// The lowest balance the account may reach: an expression, default 0; `none` for no lower
    /// bound (a running total that credit notes may take below zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Expr>,
    /// The highest balance the account may reach (a capacity, the uses of a promo code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Expr>,
    /// One posting per element of this list (an expression): the places of each occurrence
    /// of a recurring booking, each part of a repair. The element is the variable named by
    /// `as` in `account`, `amount`, `min` and `max`; all the postings still apply all or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<Expr>,
    /// The variable holding the element, with `for_each`.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
}

impl PostingSpec {
    /// The text that, as `min`, removes the lower bound.
    pub const NO_BOUND: &'static str = "none";
}

/// An event sent by an `emit` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmitSpec {
    /// Event name (`paiement_recu`).
    pub event: String,
    /// The payload: key to expression. The receivers' `correlate` keys are matched against it.
    #[serde(default)]
    pub payload: IndexMap<String, Expr>,
}

fn default_number_format() -> String {
    "{series}-{period}-{seq:04}".to_string()
}

/// Exactly one of `duration` and `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitSpec {
    /// ISO 8601 duration (`P7D`, `PT2H`), or an expression giving one (`params.delai_relance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Expression giving a date (`YYYY-MM-DD`, midnight UTC) or an RFC 3339 date-time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitEventSpec {
    /// Event name (`paiement_recu`).
    pub event: String,
    /// Business keys the event must carry: key to expression computing this case's value.
    /// An event matches when its payload has every key with the same value.
    #[serde(default)]
    pub correlate: IndexMap<String, Expr>,
    /// Give up after this ISO 8601 duration (or expression giving one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Step to go to on timeout; default: the step's `next`, else the following step (the result
    /// variable is then left unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Role whose inbox receives the task (`comptable`).
    pub role: String,
    /// Title (Tera template: `Valider le dossier de {{ input.nom }}`).
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Form fields the operator fills: name to type.
    #[serde(default)]
    pub fields: IndexMap<String, FieldSpec>,
    /// Possible decisions: outcome name to the step it leads to.
    pub outcomes: IndexMap<String, String>,
    /// Due after this ISO 8601 duration (or expression giving one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// Reminders sent to the role after these durations from creation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reminders: Vec<String>,
    /// Role the task moves to when it is overdue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_to: Option<String>,
    /// Two different people must decide (the second confirms the first's outcome).
    #[serde(default)]
    pub four_eyes: bool,
    /// A connector call made at each reminder (a message to the role's mailbox, an SMS...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_reminder: Option<NoticeSpec>,
    /// A connector call made when the task becomes overdue (after its escalation, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_overdue: Option<NoticeSpec>,
}

/// A message a task sends about itself: a connector call like an `action` step's. It does not
/// move the case; its request and answer (or error) are recorded in the history, and a failure
/// is not retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoticeSpec {
    /// Connector name (`courriel`, `sms`...).
    pub connector: String,
    /// Operation of the connector; default `send`.
    #[serde(default = "default_operation")]
    pub operation: String,
    /// Arguments rendered from Tera templates: argument name to template path in `templates/`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub templates: IndexMap<String, String>,
    /// Arguments computed by expressions: argument name to expression.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub with: IndexMap<String, Expr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// Connector name (`email`, `sms`, `log`...).
    pub connector: String,
    /// Operation of the connector (`send`, `print`...); default `send`.
    #[serde(default = "default_operation")]
    pub operation: String,
    /// Connector arguments rendered from Tera templates: argument name to template path in
    /// `templates/` (`body: relances/sms_niveau1.txt`).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub templates: IndexMap<String, String>,
}

fn default_operation() -> String {
    "send".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParallelBranch {
    /// Name of the branch, for diagrams and timelines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForEachSpec {
    /// Expression giving the list.
    pub items: Expr,
    /// Variable holding the current element (default `item`); its position is `<as>_index`.
    #[serde(rename = "as", default = "default_item")]
    pub item: String,
    pub steps: Vec<Step>,
}

fn default_item() -> String {
    "item".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included (default 3).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Wait before the second attempt (ISO 8601, default `PT10S`); doubled each time.
    #[serde(default = "default_backoff")]
    pub backoff: String,
    /// Longest wait between two attempts (default `PT1H`).
    #[serde(default = "default_max_backoff")]
    pub max_backoff: String,
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> String {
    "PT10S".to_string()
}
fn default_max_backoff() -> String {
    "PT1H".to_string()
}

/// The kind of a step, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Rule,
    Assign,
    Branch,
    Wait,
    WaitEvent,
    Task,
    Action,
    Parallel,
    ForEach,
    Call,
    Render,
    Fail,
    Number,
    Ledger,
    Emit,
    UniqueId,
}

impl StepKind {
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Rule => "rule",
            StepKind::Assign => "assign",
            StepKind::Branch => "branch",
            StepKind::Wait => "wait",
            StepKind::WaitEvent => "wait_event",
            StepKind::Task => "task",
            StepKind::Action => "action",
            StepKind::Parallel => "parallel",
            StepKind::ForEach => "for_each",
            StepKind::Call => "call",
            StepKind::Render => "render",
            StepKind::Fail => "fail",
            StepKind::Number => "number",
            StepKind::Ledger => "ledger",
            StepKind::Emit => "emit",
            StepKind::UniqueId => "unique_id",
        }
    }
}

impl Step {
    /// Every kind this step declares (a valid step declares exactly one).
    pub fn kinds(&self) -> Vec<StepKind> {
        let mut k = Vec::new();
        let mut add = |set: bool, kind| {
            if set {
                k.push(kind)
            }
        };
        add(self.rule.is_some(), StepKind::Rule);
        add(self.assign.is_some(), StepKind::Assign);
        add(self.branch.is_some(), StepKind::Branch);
        add(self.wait.is_some(), StepKind::Wait);
        add(self.wait_event.is_some(), StepKind::WaitEvent);
        add(self.task.is_some(), StepKind::Task);
        add(self.action.is_some(), StepKind::Action);
        add(self.parallel.is_some(), StepKind::Parallel);
        add(self.for_each.is_some(), StepKind::ForEach);
        add(self.call.is_some(), StepKind::Call);
        add(self.render.is_some(), StepKind::Render);
        add(self.fail.is_some(), StepKind::Fail);
        add(self.number.is_some(), StepKind::Number);
        add(self.ledger.is_some(), StepKind::Ledger);
        add(self.emit.is_some(), StepKind::Emit);
        add(self.unique_id.is_some(), StepKind::UniqueId);
        k
    }

    /// The step's kind, or `None` when it declares none or several.
    pub fn kind(&self) -> Option<StepKind> {
        match self.kinds().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

/// The word that ends a list when used as a jump target.
pub const END: &str = "end";
