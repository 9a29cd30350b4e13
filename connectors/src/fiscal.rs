//! The `fiscal` connector: certification of invoices by a tax administration, in the shape of
//! Côte d'Ivoire's FNE (*facture normalisée électronique*, DGI): the administration signs each
//! invoice before it reaches the buyer and answers with its official reference and a
//! verification URL, printed as a QR code.
//!
//! ```yaml
//! connectors:
//!   fne:
//!     type: fiscal
//!     api_url: http://54.247.95.108/ws        # the DGI's test platform; production URL from the DGI
//!     api_key_env: FNE_API_KEY
//!     point_of_sale: CAISSE_1                   # as registered on the FNE platform
//!     establishment: SIEGE
//!     timeout_seconds: 30
//! ```
//!
//! Operations:
//! - `certify`: `POST {api_url}/external/invoices/sign` with the invoice (template B2B, B2C, B2F
//!   or B2G, payment method, client, lines with their VAT code). Result: `reference`,
//!   `verification_url`, `certified_at`, `invoice_number` (the number the case gave it),
//!   `invoice_id` and `items` (the FNE's ids, which a refund cites), totals, the sticker balance.
//! - `refund`: a credit note, `POST {api_url}/external/invoices/{invoice_id}/refund` with the
//!   refunded lines `[{id, quantity}]`.
//! - `status`: looks a certification up by its FNE `reference`,
//!   `GET {api_url}/external/invoices?reference=…` (a JSON array, as for the lookup below);
//!   `{found: false}` when there is none. Read-only; the DGI documents no such read, so against
//!   its API this answers the DGI's 404, permanently.
//!
//! **Never certify twice.** The DGI's integrators report that an HTTP 500 can leave an invoice
//! certified. Each request carries the effect's idempotency key as an `Idempotency-Key` header;
//! after a 5xx, a timeout or a cut connection, and before signing on any attempt after the
//! first, the connector looks the request up, `GET {api_url}/external/invoices?idempotencyKey=…`
//! (a JSON array of the certifications made under that key, as `sign` answers them). If it is
//! there, that certification is the result (`already_certified: true`); if the lookup fails in
//! any way (the DGI's published procedure documents no lookup; an administration without one
//! answers 404, and one answering several certifications for one key does not filter by it),
//! the error is transient and nothing is signed: after the workflow's retries, the case goes to
//! its failure path, where someone checks the FNE portal.
//!
//! An effect the engine hands out again after a restart (or a result lost with a failed batch)
//! keeps its attempt number but comes `redelivered`: it is looked up first too, so a first
//! attempt cut short by a crash is never signed a second time.
//!
//! Failures: **transient** when the API cannot be reached, does not answer within
//! `timeout_seconds`, cuts the connection, or answers 408, 425, 429 or 5xx (and the lookup finds
//! no certification), and whenever the lookup fails; **permanent** for invalid arguments
//! (checked before any request: a B2B invoice without the client's NCC, an unknown VAT code, a
//! non-decimal amount…), any other 4xx (with the administration's message: refused key,
//! unknown point of sale, invalid field), and a success answer that is not JSON or carries no
//! reference.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};
use url::Url;

use crate::support::{self, BuildContext, BuildError, HttpAnswer};
use crate::{Connector, ConnectorError, EffectRequest};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    api_url: String,
    api_key_env: String,
    point_of_sale: String,
    establishment: String,
    timeout_seconds: Option<u64>,
}

/// Builds a `fiscal` connector from its settings (see the module documentation).
pub fn build(
    name: &str,
    settings: serde_yaml_ng::Value,
    ctx: &BuildContext,
) -> Result<Arc<dyn Connector>, BuildError> {
    let s: Settings = crate::config::settings(settings)?;
    let api_url = support::parse_url("api_url", &s.api_url)?;
    if api_url.cannot_be_a_base() {
        return Err(BuildError::new(
            "api_url",
            format!("`{}` cannot hold a path", s.api_url),
            "write it as https://host/path",
        ));
    }
    for (field, value) in [
        ("point_of_sale", &s.point_of_sale),
        ("establishment", &s.establishment),
    ] {
        if value.trim().is_empty() {
            return Err(BuildError::new(
                field,
                format!("`{field}` is empty"),
                "write it exactly as registered on the FNE platform (Paramétrage)",
            ));
        }
    }
    let timeout = support::timeout(
        s.timeout_seconds,
        "give the number of seconds to wait for the administration, for example 30",
    )?;
    let api_key = ctx.secret("api_key_env", &s.api_key_env)?;
    Ok(Arc::new(FiscalConnector {
        name: name.to_string(),
        http: support::http_client(timeout)?,
        api_url,
        api_key,
        point_of_sale: s.point_of_sale,
        establishment: s.establishment,
    }))
}

struct FiscalConnector {
    name: String,
    http: reqwest::Client,
    api_url: Url,
    api_key: String,
    point_of_sale: String,
    establishment: String,
}

const TEMPLATES: &[&str] = &["B2B", "B2C", "B2F", "B2G"];
const INVOICE_TYPES: &[&str] = &["sale", "purchase"];
const PAYMENT_METHODS: &[&str] = &[
    "cash",
    "card",
    "check",
    "mobile-money",
    "transfer",
    "deferred",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertifyArgs {
    /// The number the case gave the invoice; recorded with its certification.
    number: String,
    template: String,
    #[serde(default)]
    invoice_type: Option<String>,
    payment_method: String,
    client: Client,
    #[serde(default)]
    seller_name: Option<String>,
    #[serde(default)]
    commercial_message: Option<String>,
    #[serde(default)]
    footer: Option<String>,
    #[serde(default)]
    foreign_currency: Option<String>,
    #[serde(default)]
    foreign_currency_rate: Option<Dec>,
    /// The number of the receipt (RNE) this invoice replaces.
    #[serde(default)]
    rne: Option<String>,
    /// A discount on the whole invoice, in percent.
    #[serde(default)]
    discount: Option<Dec>,
    #[serde(default)]
    custom_taxes: Vec<CustomTax>,
    lines: Vec<Line>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Client {
    name: String,
    /// The client's taxpayer account number (NCC), required for B2B.
    #[serde(default)]
    ncc: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    reference: Option<String>,
    description: String,
    quantity: Dec,
    /// Unit price excluding VAT.
    unit_price: Dec,
    /// `TVA` (18 %), `TVAB` (9 %), `TVAC`, `TVAD` (0 %), or the rate `18` / `9`.
    vat: String,
    /// In percent.
    #[serde(default)]
    discount: Option<Dec>,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    custom_taxes: Vec<CustomTax>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomTax {
    name: String,
    amount: Dec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundArgs {
    /// The FNE id of the certified invoice (`invoice_id` in `certify`'s result).
    invoice_id: String,
    items: Vec<RefundItem>,
    /// The number the case gave the credit note; recorded with its certification.
    #[serde(default)]
    number: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundItem {
    /// The FNE id of the invoice's line (`items[].id` in `certify`'s result).
    id: String,
    quantity: Dec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusArgs {
    /// The FNE's official number of the invoice or credit note (`reference` in the results).
    reference: String,
}

/// A decimal number, written as a string (`"15000.50"`) or a JSON number, kept as its exact
/// text (never a float) and sent to the administration as a JSON number with that text.
#[derive(Debug, Clone, PartialEq)]
struct Dec(String);

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dec, D::Error> {
        let text = match Value::deserialize(d)? {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "expected a decimal number such as \"15000.50\", found {other}"
                )))
            }
        };
        let digits = text.strip_prefix('-').unwrap_or(&text);
        let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
        let ok = !int.is_empty()
            && !frac.is_empty()
            && int.chars().all(|c| c.is_ascii_digit())
            && frac.chars().all(|c| c.is_ascii_digit());
        if !ok {
            return Err(serde::de::Error::custom(format!(
                "`{text}` is not a decimal number: write it like \"15000.50\" (a dot, no spaces, no currency)"
            )));
        }
        Ok(Dec(text))
    }
}

impl Dec {
    fn is_zero(&self) -> bool {
        self.0.chars().all(|c| matches!(c, '0' | '.' | '-'))
    }
    fn is_negative(&self) -> bool {
        self.0.starts_with('-') && !self.is_zero()
    }
    fn is_positive(&self) -> bool {
        !self.is_negative() && !self.is_zero()
    }
    /// Whether it lies within 0 and 100 (a percentage).
    fn is_percentage(&self) -> bool {
        if self.is_negative() {
            return false;
        }
        let (int, frac) = self.0.split_once('.').unwrap_or((&self.0, "0"));
        let int = int.trim_start_matches('0');
        match int.len() {
            0..=2 => true,
            3 => int < "100" || (int == "100" && frac.chars().all(|c| c == '0')),
            _ => false,
        }
    }
    fn json(&self) -> Value {
        serde_json::Number::from_str(&self.0)
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(self.0.clone()))
    }
}

fn refuse(msg: String) -> ConnectorError {
    ConnectorError::Permanent(msg)
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn vat_code(vat: &str) -> Option<&'static str> {
    let v = vat.trim().trim_end_matches('%').trim();
    match v.to_ascii_uppercase().as_str() {
        "TVA" | "18" => Some("TVA"),
        "TVAB" | "9" => Some("TVAB"),
        "TVAC" => Some("TVAC"),
        "TVAD" => Some("TVAD"),
        _ => None,
    }
}

fn custom_taxes(taxes: &[CustomTax], at: &str) -> Result<Vec<Value>, ConnectorError> {
    taxes
        .iter()
        .map(|t| {
            if t.name.trim().is_empty() {
                return Err(refuse(format!(
                    "fiscal.certify: {at}: a custom tax has no `name`"
                )));
            }
            if t.amount.is_negative() {
                return Err(refuse(format!(
                    "fiscal.certify: {at}: the custom tax `{}` is negative ({})",
                    t.name, t.amount.0
                )));
            }
            Ok(json!({"name": t.name, "amount": t.amount.json()}))
        })
        .collect()
}

impl FiscalConnector {
    /// The body of `POST /external/invoices/sign`, or why the invoice cannot be certified.
    fn sign_body(&self, a: &CertifyArgs) -> Result<Value, ConnectorError> {
        let number = a.number.trim();
        if number.is_empty() {
            return Err(refuse(
                "fiscal.certify: `number` is empty: give the invoice's number".to_string(),
            ));
        }
        let inv = format!("invoice {number}");
        let template = a.template.trim().to_ascii_uppercase();
        if !TEMPLATES.contains(&template.as_str()) {
            return Err(refuse(format!(
                "fiscal.certify: {inv}: unknown template `{}`: use B2B (a business with an NCC), B2C (a consumer), B2F (a client abroad) or B2G (a public body)",
                a.template
            )));
        }
        let invoice_type = a.invoice_type.as_deref().unwrap_or("sale").trim();
        if !INVOICE_TYPES.contains(&invoice_type) {
            return Err(refuse(format!(
                "fiscal.certify: {inv}: unknown invoice_type `{invoice_type}`: use sale or purchase"
            )));
        }
        let payment = a.payment_method.trim();
        if !PAYMENT_METHODS.contains(&payment) {
            return Err(refuse(format!(
                "fiscal.certify: {inv}: unknown payment_method `{payment}`: use one of {}",
                PAYMENT_METHODS.join(", ")
            )));
        }
        if a.client.name.trim().is_empty() {
            return Err(refuse(format!(
                "fiscal.certify: {inv}: `client.name` is empty: give the client's name (a consumer's, or the company's)"
            )));
        }
        let ncc = non_empty(&a.client.ncc);
        if template == "B2B" && ncc.is_none() {
            return Err(refuse(format!(
                "fiscal.certify: {inv} is B2B but its client has no NCC: give `client.ncc`, the buyer's taxpayer account number (or use template B2C for a consumer)"
            )));
        }
        let currency = non_empty(&a.foreign_currency);
        if template == "B2F" {
            let rate_ok = a
                .foreign_currency_rate
                .as_ref()
                .is_some_and(Dec::is_positive);
            if currency.is_none() || !rate_ok {
                return Err(refuse(format!(
                    "fiscal.certify: {inv} is B2F: give `foreign_currency` (EUR, USD…) and `foreign_currency_rate` (XOF for one unit, above 0)"
                )));
            }
        }
        if let Some(d) = &a.discount {
            if !d.is_percentage() {
                return Err(refuse(format!(
                    "fiscal.certify: {inv}: `discount` is {}: a percentage between 0 and 100",
                    d.0
                )));
            }
        }
        if a.lines.is_empty() {
            return Err(refuse(format!(
                "fiscal.certify: {inv} has no lines: give `lines`"
            )));
        }
        let mut items = Vec::new();
        for (i, l) in a.lines.iter().enumerate() {
            let at = format!("{inv}, line {}", i + 1);
            if l.description.trim().is_empty() {
                return Err(refuse(format!(
                    "fiscal.certify: {at}: `description` is empty"
                )));
            }
            if !l.quantity.is_positive() {
                return Err(refuse(format!(
                    "fiscal.certify: {at}: `quantity` is {}: it must be above 0",
                    l.quantity.0
                )));
            }
            if l.unit_price.is_negative() {
                return Err(refuse(format!(
                    "fiscal.certify: {at}: `unit_price` is {}: it cannot be negative (refund with a credit note)",
                    l.unit_price.0
                )));
            }
            let Some(vat) = vat_code(&l.vat) else {
                return Err(refuse(format!(
                    "fiscal.certify: {at}: unknown VAT `{}`: use TVA (18 %), TVAB (9 %), TVAC (0 %, exempt by agreement) or TVAD (0 %, exempt by law)",
                    l.vat
                )));
            };
            let mut item = Map::new();
            item.insert("taxes".into(), json!([vat]));
            item.insert(
                "customTaxes".into(),
                json!(custom_taxes(&l.custom_taxes, &at)?),
            );
            if let Some(r) = non_empty(&l.reference) {
                item.insert("reference".into(), json!(r));
            }
            item.insert("description".into(), json!(l.description));
            item.insert("quantity".into(), l.quantity.json());
            item.insert("amount".into(), l.unit_price.json());
            if let Some(d) = &l.discount {
                if !d.is_percentage() {
                    return Err(refuse(format!(
                        "fiscal.certify: {at}: `discount` is {}: a percentage between 0 and 100",
                        d.0
                    )));
                }
                item.insert("discount".into(), d.json());
            }
            if let Some(u) = non_empty(&l.unit) {
                item.insert("measurementUnit".into(), json!(u));
            }
            items.push(Value::Object(item));
        }

        let mut body = Map::new();
        body.insert("invoiceType".into(), json!(invoice_type));
        body.insert("paymentMethod".into(), json!(payment));
        body.insert("template".into(), json!(template));
        body.insert("isRne".into(), json!(non_empty(&a.rne).is_some()));
        if let Some(r) = non_empty(&a.rne) {
            body.insert("rne".into(), json!(r));
        }
        if let Some(n) = ncc {
            body.insert("clientNcc".into(), json!(n));
        }
        body.insert("clientCompanyName".into(), json!(a.client.name.trim()));
        if let Some(p) = non_empty(&a.client.phone) {
            body.insert("clientPhone".into(), json!(p));
        }
        if let Some(e) = non_empty(&a.client.email) {
            body.insert("clientEmail".into(), json!(e));
        }
        if let Some(s) = non_empty(&a.seller_name) {
            body.insert("clientSellerName".into(), json!(s));
        }
        body.insert("pointOfSale".into(), json!(self.point_of_sale));
        body.insert("establishment".into(), json!(self.establishment));
        if let Some(m) = non_empty(&a.commercial_message) {
            body.insert("commercialMessage".into(), json!(m));
        }
        if let Some(f) = non_empty(&a.footer) {
            body.insert("footer".into(), json!(f));
        }
        match (currency, &a.foreign_currency_rate) {
            (Some(c), Some(r)) => {
                body.insert("foreignCurrency".into(), json!(c));
                body.insert("foreignCurrencyRate".into(), r.json());
            }
            _ => {
                body.insert("foreignCurrency".into(), json!(""));
                body.insert("foreignCurrencyRate".into(), json!(0));
            }
        }
        body.insert(
            "discount".into(),
            a.discount.as_ref().map(Dec::json).unwrap_or(json!(0)),
        );
        body.insert(
            "customTaxes".into(),
            json!(custom_taxes(&a.custom_taxes, &inv)?),
        );
        body.insert("items".into(), Value::Array(items));
        Ok(Value::Object(body))
    }

    fn url(&self, segments: &[&str]) -> Result<Url, ConnectorError> {
        let mut u = self.api_url.clone();
        u.path_segments_mut()
            .map_err(|_| refuse(format!("{}: `api_url` cannot hold a path", self.name)))?
            .pop_if_empty()
            .extend(segments);
        Ok(u)
    }

    /// GETs certifications (the lookup by idempotency key, the status by reference).
    async fn get(&self, url: Url, service: &str) -> Result<HttpAnswer, ConnectorError> {
        let request = self
            .http
            .get(url)
            .bearer_auth(&self.api_key)
            .header("Accept", "application/json");
        support::send(service, request).await
    }

    /// Signs (a sale, a purchase or a credit note) at most once per idempotency key.
    async fn certify_once(
        &self,
        effect: &EffectRequest,
        url: Url,
        body: &Value,
    ) -> Result<(Value, bool), ConnectorError> {
        if effect.attempt > 1 || effect.redelivered {
            match self.lookup(effect).await {
                Ok(Some(found)) => return Ok((found, true)),
                Ok(None) => {}
                Err(e) => {
                    return Err(ConnectorError::Transient(format!(
                        "fne: before signing again, looking up the earlier attempt failed: {e}"
                    )))
                }
            }
        }
        let request = self
            .http
            .post(url)
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", &effect.idempotency_key)
            .header("Accept", "application/json")
            .json(body);
        let unknown = match support::send("fne", request).await {
            Err(e) => e,
            Ok(a) if a.is_success() => return Ok((support::json_body("fne", &a.text)?, false)),
            Ok(a) => {
                let e = fne_error(a.status, &a.text);
                if !e.is_transient() {
                    return Err(e);
                }
                e
            }
        };
        // The request may have been certified all the same: look before anything else.
        match self.lookup(effect).await {
            Ok(Some(found)) => Ok((found, true)),
            Ok(None) => Err(ConnectorError::Transient(format!(
                "{unknown} (the FNE holds no certification for this request, so the next attempt signs it)"
            ))),
            Err(e) => Err(ConnectorError::Transient(format!(
                "{unknown}; then looking the request up failed: {e} (the next attempt looks again before signing)"
            ))),
        }
    }

    /// The certification made under this effect's idempotency key, if any.
    async fn lookup(&self, effect: &EffectRequest) -> Result<Option<Value>, String> {
        let mut url = self
            .url(&["external", "invoices"])
            .map_err(|e| e.to_string())?;
        url.query_pairs_mut()
            .append_pair("idempotencyKey", &effect.idempotency_key);
        let HttpAnswer { status, text, .. } = self
            .get(url, "fne lookup")
            .await
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!(
                "fne lookup: HTTP {status}: {}",
                server_message(&text)
            ));
        }
        let list = certifications("fne lookup", &text).map_err(|e| e.to_string())?;
        let certified: Vec<&Value> = list
            .iter()
            .filter(|c| {
                c.get("reference")
                    .and_then(Value::as_str)
                    .is_some_and(|r| !r.is_empty())
            })
            .collect();
        // One key signs at most once: several answers mean the filter was not applied (an
        // API listing every invoice), and taking the first would report another invoice's
        // certification as this one's.
        if certified.len() > 1 {
            return Err(format!(
                "fne lookup: {} certifications answer one idempotency key; the administration does not seem to filter by `idempotencyKey`, so none can be trusted",
                certified.len()
            ));
        }
        Ok(certified.first().map(|c| (*c).clone()))
    }

    async fn certify(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        let args: CertifyArgs = support::args("fiscal", effect)?;
        let body = self.sign_body(&args)?;
        let url = self.url(&["external", "invoices", "sign"])?;
        let (answer, already) = self.certify_once(effect, url, &body).await?;
        let mut result = summary(&answer)?;
        result["invoice_number"] = json!(args.number.trim());
        result["already_certified"] = json!(already);
        Ok(result)
    }

    /// Looks a certified invoice up by its FNE reference.
    async fn status(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        let args: StatusArgs = support::args("fiscal", effect)?;
        let wanted = args.reference.trim();
        if wanted.is_empty() {
            return Err(refuse(
                "fiscal.status: `reference` is empty: give the FNE reference of the invoice (`reference` in the certify step's result)".to_string(),
            ));
        }
        let mut url = self.url(&["external", "invoices"])?;
        url.query_pairs_mut().append_pair("reference", wanted);
        let HttpAnswer { status, text, .. } = self.get(url, "fne").await?;
        if status != 200 {
            return Err(fne_error(status, &text));
        }
        let list = certifications("fne", &text)?;
        let found = list
            .iter()
            .find(|c| c.get("reference").and_then(Value::as_str) == Some(wanted));
        match found {
            None => Ok(json!({"found": false, "reference": wanted})),
            Some(c) => {
                let mut result = summary(c)?;
                result["found"] = json!(true);
                result["status"] = c.pointer("/invoice/status").cloned().unwrap_or(Value::Null);
                Ok(result)
            }
        }
    }

    async fn refund(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        let args: RefundArgs = support::args("fiscal", effect)?;
        let invoice_id = args.invoice_id.trim();
        if invoice_id.is_empty() {
            return Err(refuse(
                "fiscal.refund: `invoice_id` is empty: give the FNE id of the certified invoice (`invoice_id` in the certify step's result)".to_string(),
            ));
        }
        if matches!(invoice_id, "." | "..") || invoice_id.contains(char::is_control) {
            // `.` and `..` would be resolved as path segments: another endpoint.
            return Err(refuse(format!(
                "fiscal.refund: `invoice_id` is `{}`, which is not an FNE invoice id (`invoice_id` in the certify step's result)",
                invoice_id.escape_debug()
            )));
        }
        if args.items.is_empty() {
            return Err(refuse(
                "fiscal.refund: `items` is empty: give the refunded lines, [{id, quantity}]"
                    .to_string(),
            ));
        }
        let mut items = Vec::new();
        for (i, it) in args.items.iter().enumerate() {
            if it.id.trim().is_empty() {
                return Err(refuse(format!(
                    "fiscal.refund: item {}: `id` is empty: give the FNE id of the invoice's line (`items[].id` in the certify step's result)",
                    i + 1
                )));
            }
            if !it.quantity.is_positive() {
                return Err(refuse(format!(
                    "fiscal.refund: item {}: `quantity` is {}: it must be above 0",
                    i + 1,
                    it.quantity.0
                )));
            }
            items.push(json!({"id": it.id.trim(), "quantity": it.quantity.json()}));
        }
        let body = json!({ "items": items });
        let url = self.url(&["external", "invoices", invoice_id, "refund"])?;
        let (answer, already) = self.certify_once(effect, url, &body).await?;
        let reference = reference(&answer)?;
        Ok(json!({
            "reference": reference,
            "verification_url": answer.get("token").cloned().unwrap_or(Value::Null),
            "certified_at": certified_at(answer.get("invoice")),
            "credit_note_number": args.number.as_deref().map(str::trim),
            "credit_note_id": answer.pointer("/invoice/id").cloned().unwrap_or(Value::Null),
            "refunded_invoice_id": invoice_id,
            "balance_sticker": answer.get("balance_sticker").cloned().unwrap_or(Value::Null),
            "warning": answer.get("warning").cloned().unwrap_or(Value::Null),
            "already_certified": already,
        }))
    }
}

/// What an FNE certification answer says that matters for the case.
fn summary(answer: &Value) -> Result<Value, ConnectorError> {
    let reference = reference(answer)?;
    let invoice = answer.get("invoice");
    let field = |name: &str| {
        invoice
            .and_then(|i| i.get(name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let items: Vec<Value> = invoice
        .and_then(|i| i.get("items"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|it| {
                    json!({
                        "id": it.get("id").cloned().unwrap_or(Value::Null),
                        "reference": it.get("reference").cloned().unwrap_or(Value::Null),
                        "description": it.get("description").cloned().unwrap_or(Value::Null),
                        "quantity": money(it.get("quantity")),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(json!({
        "reference": reference,
        "verification_url": answer.get("token").cloned().unwrap_or(Value::Null),
        "certified_at": certified_at(invoice),
        "invoice_id": field("id"),
        "ncc": answer.get("ncc").cloned().unwrap_or(Value::Null),
        "amount_excl_tax": money(invoice.and_then(|i| i.get("amount"))),
        "vat_amount": money(invoice.and_then(|i| i.get("vatAmount"))),
        "items": items,
        "balance_sticker": answer.get("balance_sticker").cloned().unwrap_or(Value::Null),
        "warning": answer.get("warning").cloned().unwrap_or(Value::Null),
    }))
}

fn reference(answer: &Value) -> Result<String, ConnectorError> {
    answer
        .get("reference")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            ConnectorError::Permanent(format!(
                "fne: the answer carries no `reference`: {}",
                support::excerpt(&answer.to_string())
            ))
        })
}

fn certified_at(invoice: Option<&Value>) -> Value {
    invoice
        .and_then(|i| i.get("date").or_else(|| i.get("createdAt")))
        .cloned()
        .unwrap_or(Value::Null)
}

/// An amount the administration sent, as a decimal string (its exact text).
fn money(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Number(n)) => Value::String(n.to_string()),
        Some(Value::String(s)) => Value::String(s.clone()),
        _ => Value::Null,
    }
}

/// An answer listing certifications: a JSON array.
fn certifications(service: &str, text: &str) -> Result<Vec<Value>, ConnectorError> {
    match support::json_body(service, text)? {
        Value::Array(list) => Ok(list),
        _ => Err(ConnectorError::Permanent(format!(
            "{service}: expected a JSON array of certifications, got: {}",
            support::excerpt(text)
        ))),
    }
}

/// The FNE's error answers: `{"message": …, "error": …, "statusCode": …}`.
fn server_message(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return support::excerpt(body);
    };
    let message = v.get("message").and_then(Value::as_str);
    let error = v.get("error").and_then(Value::as_str);
    match (message, error) {
        (Some(m), Some(e)) => support::excerpt(&format!("{m} ({e})")),
        (Some(m), None) | (None, Some(m)) => support::excerpt(m),
        (None, None) => support::excerpt(body),
    }
}

fn fne_error(status: u16, body: &str) -> ConnectorError {
    let mut detail = server_message(body);
    if status == 401 {
        detail.push_str(" (check the API key in the variable `api_key_env` names)");
    }
    support::status_error_saying("fne", status, &detail)
}

#[async_trait]
impl Connector for FiscalConnector {
    fn operations(&self) -> Vec<String> {
        vec![
            "certify".to_string(),
            "refund".to_string(),
            "status".to_string(),
        ]
    }

    async fn call(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        match effect.operation.as_str() {
            "certify" => self.certify(effect).await,
            "refund" => self.refund(effect).await,
            "status" => self.status(effect).await,
            other => Err(refuse(format!(
                "{}: no operation `{other}` (the fiscal connector has: certify, refund, status)",
                self.name
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector() -> FiscalConnector {
        FiscalConnector {
            name: "fne".into(),
            http: support::http_client(std::time::Duration::from_secs(1)).expect("an HTTP client"),
            api_url: Url::parse("http://127.0.0.1:9/ws").unwrap(),
            api_key: "k".into(),
            point_of_sale: "CAISSE_1".into(),
            establishment: "SIEGE".into(),
        }
    }

    fn args(v: Value) -> Result<CertifyArgs, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    fn invoice() -> Value {
        json!({
            "number": "FAC-2025-0042",
            "template": "B2B",
            "payment_method": "mobile-money",
            "client": {"name": "KPMG CÔTE D'IVOIRE", "ncc": "9502363N", "phone": "0709080765"},
            "lines": [
                {"reference": "RIZ25", "description": "Sac de riz 25kg", "quantity": "10",
                 "unit_price": "15000.50", "vat": "TVA", "discount": "5", "unit": "sac"},
                {"description": "Livraison", "quantity": 1, "unit_price": 2000, "vat": "9%"}
            ]
        })
    }

    #[test]
    fn the_sign_body_follows_the_fne_shape() {
        let body = connector().sign_body(&args(invoice()).unwrap()).unwrap();
        expect_test::expect![[r#"
            {
              "clientCompanyName": "KPMG CÔTE D'IVOIRE",
              "clientNcc": "9502363N",
              "clientPhone": "0709080765",
              "customTaxes": [],
              "discount": 0,
              "establishment": "SIEGE",
              "foreignCurrency": "",
              "foreignCurrencyRate": 0,
              "invoiceType": "sale",
              "isRne": false,
              "items": [
                {
                  "amount": 15000.50,
                  "customTaxes": [],
                  "description": "Sac de riz 25kg",
                  "discount": 5,
                  "measurementUnit": "sac",
                  "quantity": 10,
                  "reference": "RIZ25",
                  "taxes": [
                    "TVA"
                  ]
                },
                {
                  "amount": 2000,
                  "customTaxes": [],
                  "description": "Livraison",
                  "quantity": 1,
                  "taxes": [
                    "TVAB"
                  ]
                }
              ],
              "paymentMethod": "mobile-money",
              "pointOfSale": "CAISSE_1",
              "template": "B2B"
            }"#]]
        .assert_eq(&serde_json::to_string_pretty(&body).unwrap());
    }

    #[test]
    fn invalid_invoices_are_refused() {
        let refused = |patch: &dyn Fn(&mut Value)| {
            let mut v = invoice();
            patch(&mut v);
            match args(v) {
                Err(e) => e,
                Ok(a) => connector().sign_body(&a).unwrap_err().to_string(),
            }
        };
        expect_test::expect![[r#"fiscal.certify: invoice FAC-2025-0042 is B2B but its client has no NCC: give `client.ncc`, the buyer's taxpayer account number (or use template B2C for a consumer)"#]]
            .assert_eq(&refused(&|v| v["client"]["ncc"] = json!("  ")));
        expect_test::expect![[r#"fiscal.certify: invoice FAC-2025-0042, line 2: unknown VAT `0`: use TVA (18 %), TVAB (9 %), TVAC (0 %, exempt by agreement) or TVAD (0 %, exempt by law)"#]]
            .assert_eq(&refused(&|v| v["lines"][1]["vat"] = json!("0")));
        expect_test::expect![[r#"`15 000` is not a decimal number: write it like "15000.50" (a dot, no spaces, no currency)"#]]
            .assert_eq(&refused(&|v| v["lines"][0]["unit_price"] = json!("15 000")));
        expect_test::expect![[
            r#"fiscal.certify: invoice FAC-2025-0042, line 1: `quantity` is 0: it must be above 0"#
        ]]
        .assert_eq(&refused(&|v| v["lines"][0]["quantity"] = json!("0")));
        expect_test::expect![[r#"fiscal.certify: invoice FAC-2025-0042 is B2F: give `foreign_currency` (EUR, USD…) and `foreign_currency_rate` (XOF for one unit, above 0)"#]]
            .assert_eq(&refused(&|v| v["template"] = json!("B2F")));
        expect_test::expect![[r#"fiscal.certify: invoice FAC-2025-0042, line 1: `discount` is 100.5: a percentage between 0 and 100"#]]
            .assert_eq(&refused(&|v| v["lines"][0]["discount"] = json!("100.5")));
        expect_test::expect![[r#"fiscal.certify: invoice FAC-2025-0042: unknown payment_method `cheque`: use one of cash, card, check, mobile-money, transfer, deferred"#]]
            .assert_eq(&refused(&|v| v["payment_method"] = json!("cheque")));
        expect_test::expect![[
            r#"fiscal.certify: invoice FAC-2025-0042 has no lines: give `lines`"#
        ]]
        .assert_eq(&refused(&|v| v["lines"] = json!([])));
    }

    #[test]
    fn decimals() {
        let d = |s: &str| Dec(s.to_string());
        assert!(d("100").is_percentage());
        assert!(d("100.00").is_percentage());
        assert!(d("099.9").is_percentage());
        assert!(!d("100.01").is_percentage());
        assert!(!d("1000").is_percentage());
        assert!(!d("-1").is_percentage());
        assert!(d("0.00").is_zero());
        assert!(!d("-0.0").is_negative());
        assert!(d("0.5").is_positive());
        assert_eq!(d("15000.50").json().to_string(), "15000.50");
    }
}
