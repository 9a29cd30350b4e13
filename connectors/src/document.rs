//! Documents: a small line markup (rendered by Tera from `templates/`) laid out as a PDF
//! (being written).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DocumentError(pub String);

/// Lays `markup` out as a PDF titled `title`.
pub fn render_pdf(_markup: &str, _title: &str) -> Result<Vec<u8>, DocumentError> {
    Err(DocumentError("PDF rendering is not available yet".into()))
}
