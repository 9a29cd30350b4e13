//! The `printer` connector: documents written in the markup of [`crate::document`] (rendered by
//! Tera from `templates/`), kept as PDF files, printed on an IPP printer, or printed as tickets
//! on an ESC/POS receipt printer. The analysts' guide is `connectors/docs/printer.md`.
//!
//! ```yaml
//! connectors:
//!   imprimante:
//!     type: printer
//!     ipp_url: ipp://imprimante.exemple.ci:631/ipp/print   # for `print`
//!     escpos: { host: 192.168.1.50, port: 9100, width: 48 } # for `ticket`
//!     documents_dir: documents                              # for `pdf` (relative to the project)
//!     timeout_seconds: 30
//! ```
//!
//! At least one of `ipp_url`, `escpos` and `documents_dir` is set; each enables its operation:
//! - `pdf` (`document`, `title`, optional `filename`): renders the PDF and keeps it as
//!   `documents_dir/<filename or a name derived from the idempotency key>.pdf`, written to a
//!   temporary file then renamed, so a reader never sees half a file. The rendering is
//!   deterministic, so a repeat writes the same bytes. Result `{path, file, bytes, sha256, pages}`.
//! - `print` (`document`, `title`, optional `copies`): renders the PDF and sends it with an IPP
//!   Print-Job whose `job-name` is the effect's idempotency key. Before printing, the connector
//!   asks the printer for its jobs (Get-Jobs, `which-jobs=all`) and, if one already carries that
//!   name, answers with it instead of printing twice (this holds while the printer keeps the job
//!   in its history). Result `{job_id, job_state, job_name, job_uri, printer_uri, bytes, sha256,
//!   pages, already_printed}`.
//! - `ticket` (`document`): sends the ESC/POS bytes to the printer's raw TCP port. Raw TCP has no
//!   job ids and no acknowledgement: a ticket cannot be made idempotent, and if Dossier stops
//!   between sending it and recording the result, the ticket is printed again on restart
//!   (at least once). Result `{bytes, sha256}`.
//!
//! Failures: unreachable printer, timeout, HTTP 5xx, IPP `server-error-*` statuses and file
//! system errors are transient; the markup's errors (with their line numbers), wrong arguments,
//! IPP `client-error-*` statuses (such as a printer refusing PDF), other HTTP statuses and
//! malformed IPP answers are permanent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::document::{self, Document};
use crate::support::{self, BuildContext, BuildError};
use crate::{escpos, ipp, Connector, ConnectorError, EffectRequest};

/// The user name sent to IPP printers.
const IPP_USER: &str = "dossier";
/// IPP limits `job-name` (a `name(MAX)`) to 255 octets.
const MAX_JOB_NAME: usize = 255;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    ipp_url: Option<String>,
    #[serde(default)]
    escpos: Option<EscposConfig>,
    #[serde(default)]
    documents_dir: Option<PathBuf>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EscposConfig {
    host: String,
    #[serde(default = "default_port")]
    port: u16,
    #[serde(default = "default_width")]
    width: usize,
}

fn default_port() -> u16 {
    9100
}

fn default_width() -> usize {
    escpos::DEFAULT_WIDTH
}

struct Ticket {
    host: String,
    port: u16,
    width: usize,
}

pub struct PrinterConnector {
    name: String,
    ipp: Option<ipp::Client>,
    ticket: Option<Ticket>,
    documents_dir: Option<PathBuf>,
    timeout: Duration,
}

pub fn build(
    name: &str,
    settings: serde_yaml_ng::Value,
    ctx: &BuildContext,
) -> Result<Arc<dyn Connector>, BuildError> {
    let cfg: Config = crate::config::settings(settings)?;
    if cfg.ipp_url.is_none() && cfg.escpos.is_none() && cfg.documents_dir.is_none() {
        return Err(BuildError::new(
            "",
            "a printer needs `ipp_url`, `escpos` or `documents_dir`",
            "set `ipp_url: ipp://host:631/ipp/print` to print, `escpos: {host: …}` for tickets, \
             `documents_dir: documents` to keep PDF files",
        ));
    }
    let timeout = support::timeout(cfg.timeout_seconds, "30 is a good value for a printer")?;
    let ipp = match &cfg.ipp_url {
        Some(u) => Some(ipp::Client::new(u, IPP_USER, timeout).map_err(|m| {
            BuildError::new(
                "ipp_url",
                m,
                "write the printer's URI as ipp://host:631/ipp/print (or ipps://…)",
            )
        })?),
        None => None,
    };
    let ticket = match cfg.escpos {
        Some(e) => {
            if e.host.trim().is_empty() {
                return Err(BuildError::new(
                    "escpos.host",
                    "`escpos.host` is empty",
                    "the receipt printer's address, such as 192.168.1.50",
                ));
            }
            if e.port == 0 {
                return Err(BuildError::new(
                    "escpos.port",
                    "`escpos.port` cannot be 0",
                    "receipt printers listen on 9100",
                ));
            }
            if !(16..=255).contains(&e.width) {
                return Err(BuildError::new(
                    "escpos.width",
                    format!("`escpos.width` is {}, not between 16 and 255", e.width),
                    "48 characters for 80 mm paper, 32 for 58 mm",
                ));
            }
            Some(Ticket {
                host: e.host,
                port: e.port,
                width: e.width,
            })
        }
        None => None,
    };
    Ok(Arc::new(PrinterConnector {
        name: name.to_string(),
        ipp,
        ticket,
        documents_dir: cfg.documents_dir.as_deref().map(|d| ctx.path(d)),
        timeout,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PdfArgs {
    document: String,
    title: String,
    #[serde(default)]
    filename: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrintArgs {
    document: String,
    title: String,
    #[serde(default)]
    copies: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketArgs {
    document: String,
}

#[async_trait]
impl Connector for PrinterConnector {
    fn operations(&self) -> Vec<String> {
        let mut ops = Vec::new();
        if self.documents_dir.is_some() {
            ops.push("pdf".to_string());
        }
        if self.ipp.is_some() {
            ops.push("print".to_string());
        }
        if self.ticket.is_some() {
            ops.push("ticket".to_string());
        }
        ops
    }

    async fn call(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        match effect.operation.as_str() {
            "pdf" => self.pdf(effect).await,
            "print" => self.print(effect).await,
            "ticket" => self.ticket(effect).await,
            other => Err(ConnectorError::Permanent(format!(
                "{}: no operation `{other}` (it has: {})",
                self.name,
                self.operations().join(", ")
            ))),
        }
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

impl PrinterConnector {
    fn markup_error(&self, op: &str, e: document::DocumentError) -> ConnectorError {
        ConnectorError::Permanent(format!(
            "{}.{op}: the document's markup is wrong:\n{e}",
            self.name
        ))
    }

    /// Parses and lays out the PDF off the async threads.
    async fn render(
        &self,
        op: &str,
        markup: String,
        title: String,
    ) -> Result<document::Pdf, ConnectorError> {
        let result =
            tokio::task::spawn_blocking(move || document::parse(&markup).map(|d| d.to_pdf(&title)))
                .await
                .map_err(|e| {
                    let msg = format!("{}.{op}: rendering stopped: {e}", self.name);
                    // A panic comes back on every retry of the same document: permanent. A
                    // cancelled task (the runtime shutting down) is worth another try.
                    if e.is_panic() {
                        ConnectorError::Permanent(msg)
                    } else {
                        ConnectorError::Transient(msg)
                    }
                })?;
        match result {
            Ok(Ok(pdf)) => Ok(pdf),
            Ok(Err(e)) => Err(ConnectorError::Permanent(format!(
                "{}.{op}: {e}",
                self.name
            ))),
            Err(e) => Err(self.markup_error(op, e)),
        }
    }

    async fn pdf(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        let args: PdfArgs = support::args(&self.name, effect)?;
        let Some(dir) = &self.documents_dir else {
            return Err(ConnectorError::Permanent(format!(
                "{}.pdf: this printer has no `documents_dir`",
                self.name
            )));
        };
        let stem = match &args.filename {
            Some(f) => file_stem(f).map_err(|m| {
                ConnectorError::Permanent(format!("{}.pdf: `filename`: {m}", self.name))
            })?,
            None => key_file_stem(&effect.idempotency_key),
        };
        let pdf = self.render("pdf", args.document, args.title).await?;
        let file = format!("{stem}.pdf");
        let path = dir.join(&file);
        write_atomically(dir, &file, &pdf.bytes)
            .await
            .map_err(|e| {
                ConnectorError::Transient(format!(
                    "{}.pdf: cannot write {}: {e}",
                    self.name,
                    path.display()
                ))
            })?;
        Ok(json!({
            "path": path.display().to_string(),
            "file": file,
            "bytes": pdf.bytes.len(),
            "sha256": sha256_hex(&pdf.bytes),
            "pages": pdf.pages,
        }))
    }

    async fn print(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        let args: PrintArgs = support::args(&self.name, effect)?;
        let Some(client) = &self.ipp else {
            return Err(ConnectorError::Permanent(format!(
                "{}.print: this printer has no `ipp_url`",
                self.name
            )));
        };
        if let Some(c) = args.copies {
            if !(1..=999).contains(&c) {
                return Err(ConnectorError::Permanent(format!(
                    "{}.print: `copies` is {c}, not between 1 and 999",
                    self.name
                )));
            }
        }
        let pdf = self.render("print", args.document, args.title).await?;
        let job_name = job_name(&effect.idempotency_key);
        let (job, already) = match client.find_job(&job_name).await? {
            Some(job) => (job, true),
            None => (
                client
                    .print_job(&job_name, args.copies, pdf.bytes.clone())
                    .await?,
                false,
            ),
        };
        Ok(json!({
            "job_id": job.id,
            "job_state": job.state_name(),
            "job_name": job.name.clone().unwrap_or(job_name),
            "job_uri": job.uri,
            "printer_uri": client.printer_uri(),
            "bytes": pdf.bytes.len(),
            "sha256": sha256_hex(&pdf.bytes),
            "pages": pdf.pages,
            "already_printed": already,
        }))
    }

    async fn ticket(&self, effect: &EffectRequest) -> Result<Value, ConnectorError> {
        let args: TicketArgs = support::args(&self.name, effect)?;
        let Some(t) = &self.ticket else {
            return Err(ConnectorError::Permanent(format!(
                "{}.ticket: this printer has no `escpos` settings",
                self.name
            )));
        };
        let doc: Document =
            document::parse(&args.document).map_err(|e| self.markup_error("ticket", e))?;
        let bytes = escpos::render(&doc, t.width);
        let addr = format!("{}:{}", t.host, t.port);
        let send = async {
            let mut stream = tokio::net::TcpStream::connect((t.host.as_str(), t.port)).await?;
            stream.write_all(&bytes).await?;
            stream.flush().await?;
            stream.shutdown().await
        };
        match tokio::time::timeout(self.timeout, send).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(ConnectorError::Transient(format!(
                    "{}.ticket: cannot send the ticket to {addr}: {e}",
                    self.name
                )))
            }
            Err(_) => {
                return Err(ConnectorError::Transient(format!(
                    "{}.ticket: {addr} did not take the ticket within {} s",
                    self.name,
                    self.timeout.as_secs()
                )))
            }
        }
        Ok(json!({
            "bytes": bytes.len(),
            "sha256": sha256_hex(&bytes),
        }))
    }
}

/// The IPP job name for an effect: its idempotency key, cut to 255 octets.
pub fn job_name(key: &str) -> String {
    let mut end = key.len().min(MAX_JOB_NAME);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    key.get(..end).unwrap_or_default().to_string()
}

/// A file name the analyst chose: no folders, no hidden files; `.pdf` is added.
fn file_stem(name: &str) -> Result<String, String> {
    let stem = name.trim();
    let stem = stem
        .strip_suffix(".pdf")
        .or_else(|| stem.strip_suffix(".PDF"))
        .unwrap_or(stem);
    if stem.is_empty() {
        return Err("it is empty".into());
    }
    if stem.starts_with('.') {
        return Err(format!("`{name}` starts with a dot"));
    }
    if stem.chars().count() > 120 {
        return Err(format!("`{name}` is longer than 120 characters"));
    }
    if let Some(c) = stem
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' ')))
    {
        return Err(format!(
            "`{name}` contains `{c}`: use letters, digits, spaces, `-`, `_` and `.`"
        ));
    }
    Ok(stem.to_string())
}

/// A file name from an idempotency key: its safe characters and a short hash (two keys that
/// differ only by punctuation still get two files).
fn key_file_stem(key: &str) -> String {
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    format!(
        "{safe}-{}",
        sha256_hex(key.as_bytes()).get(..8).unwrap_or_default()
    )
}

/// Writes `dir/file` through a temporary file in the same folder and a rename.
async fn write_atomically(dir: &Path, file: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    let file = file.to_string();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{file}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join(&file))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_text(yaml: &str) -> Result<Arc<dyn Connector>, BuildError> {
        let env = |_: &str| None;
        let ctx = BuildContext {
            env: &env,
            base_dir: PathBuf::from("/projet"),
        };
        build("imprimante", serde_yaml_ng::from_str(yaml).unwrap(), &ctx)
    }

    #[test]
    fn settings_enable_their_operations() {
        let c = build_text("documents_dir: documents\n").ok().unwrap();
        assert_eq!(c.operations(), ["pdf"]);
        let c = build_text(
            "ipp_url: ipp://127.0.0.1:631/ipp/print\nescpos: {host: 10.0.0.9}\ndocuments_dir: d\n",
        )
        .ok()
        .unwrap();
        assert_eq!(c.operations(), ["pdf", "print", "ticket"]);
    }

    #[test]
    fn bad_settings_name_their_field() {
        let e = |y: &str| build_text(y).err().map(|e| (e.field, e.message)).unwrap();
        assert_eq!(
            e("timeout_seconds: 5\n"),
            (
                String::new(),
                "a printer needs `ipp_url`, `escpos` or `documents_dir`".into()
            )
        );
        assert_eq!(e("ipp_url: lpd://x/q\n").0, "ipp_url");
        let (field, message) = e("ipp_url: ipp://admin:s3cret@x/ipp/print\n");
        assert_eq!(field, "ipp_url");
        assert!(!message.contains("s3cret"), "{message}");
        assert_eq!(e("escpos: {host: x, width: 4}\n").0, "escpos.width");
        assert!(e("escpos: {host: x, largeur: 4}\n")
            .1
            .contains("unknown field `largeur`"));
        assert_eq!(e("ipp_ulr: ipp://x\n").0, "ipp_ulr");
    }

    #[test]
    fn file_names() {
        assert_eq!(
            file_stem("Facture F-2024-001.pdf").unwrap(),
            "Facture F-2024-001"
        );
        assert_eq!(file_stem("reçu_12").unwrap(), "reçu_12");
        assert!(file_stem("../etc/passwd").is_err());
        assert!(file_stem("a/b").is_err());
        assert!(file_stem(".cache").is_err());
        assert!(file_stem(" ").is_err());
        assert_eq!(
            key_file_stem("DOS-7:imprimer#1"),
            "DOS-7_imprimer_1-".to_string() + &sha256_hex(b"DOS-7:imprimer#1")[..8]
        );
        assert_eq!(job_name(&"é".repeat(200)).len(), 254);
    }
}
