//! Documents: a small line markup, written by analysts in Tera templates (the engine renders
//! Tera first), parsed into a [`Document`] that two renderers share: an A4 PDF
//! ([`Document::to_pdf`], [`render_pdf`]) and an 80 mm ESC/POS ticket ([`crate::escpos`]).
//!
//! One element per line:
//!
//! | line                    | meaning                                                        |
//! |-------------------------|----------------------------------------------------------------|
//! | `# Titre`               | title (large, bold)                                            |
//! | `## Sous-titre`         | subtitle (bold)                                                |
//! | `**texte**`             | a bold line                                                    |
//! | any other text          | a paragraph, wrapped to the width                              |
//! | (empty line)            | vertical space                                                 |
//! | `@left` `@center` `@right` | alignment of the following lines (tables excepted)          |
//! | `\| a \| b \|`          | a table row; `\|---\|---:\|` under the first row makes it a header and sets the columns' alignment (`---:` right, `:---:` centre); a cell starting with `>` is right-aligned; `**x**` makes a cell bold |
//! | `---`                   | a horizontal rule                                              |
//! | `[qr] payload`          | a QR code (error correction M)                                 |
//! | `[page]`                | a page break (PDF; ignored on tickets)                         |
//! | `[cut]`                 | a paper cut (tickets; ignored in PDF)                          |
//! | `\…`                    | the rest of the line is printed as it is                       |
//!
//! Any other `[directive]` or `@word` is an error naming its line.
//!
//! The PDF uses the standard Helvetica fonts (no embedding), encoded as WinAnsi (Windows-1252):
//! French text and `€` come out right; a character outside that set is printed as `?`. Widths come
//! from the Adobe Helvetica metrics, so lines wrap where they really end. Pages are numbered
//! "Page n / N". The output is deterministic: the same markup and title give the same bytes.

use printpdf::lopdf;
use printpdf::{BuiltinFont, IndirectFontRef, Line, Mm, PdfDocument, PdfLayerReference, Point, Pt};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DocumentError(pub String);

/// Lays `markup` out as a PDF titled `title`.
pub fn render_pdf(markup: &str, title: &str) -> Result<Vec<u8>, DocumentError> {
    Ok(parse(markup)?.to_pdf(title)?.bytes)
}

/// A rendered PDF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdf {
    pub bytes: Vec<u8>,
    pub pages: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Align {
    #[default]
    Left,
    Center,
    Right,
}

/// One cell of a table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cell {
    pub text: String,
    pub align: Align,
    pub bold: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    /// The first row, when a `|---|` row follows it.
    pub header: Option<Vec<Cell>>,
    /// Every row has `columns` cells.
    pub rows: Vec<Vec<Cell>>,
    pub columns: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    Title {
        text: String,
        align: Align,
    },
    Subtitle {
        text: String,
        align: Align,
    },
    Paragraph {
        text: String,
        align: Align,
        bold: bool,
    },
    Space,
    Rule,
    Table(Table),
    Qr {
        payload: String,
        align: Align,
    },
    PageBreak,
    Cut,
}

/// A parsed document, shared by the PDF and ESC/POS renderers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Document {
    pub blocks: Vec<Block>,
}

/// The QR codes' error correction (M: 15 % of the symbol may be damaged).
pub const QR_EC: qrcode::EcLevel = qrcode::EcLevel::M;

/// Parses the markup; every error is reported, one per line, with its line number.
pub fn parse(markup: &str) -> Result<Document, DocumentError> {
    let mut blocks = Vec::new();
    let mut errors = Vec::new();
    let mut align = Align::Left;
    let mut table: Option<TableBuilder> = None;
    for (i, raw) in markup.lines().enumerate() {
        let n = i + 1;
        let t = raw.trim();
        if t.starts_with('|') {
            let builder = table.get_or_insert_with(TableBuilder::default);
            if let Err(e) = builder.row(t) {
                errors.push(format!("line {n}: {e}"));
            }
            continue;
        }
        if let Some(b) = table.take() {
            blocks.push(Block::Table(b.finish()));
        }
        if let Some(literal) = t.strip_prefix('\\') {
            blocks.push(Block::Paragraph {
                text: literal.to_string(),
                align,
                bold: false,
            });
        } else if t.is_empty() {
            blocks.push(Block::Space);
        } else if let Some(text) = t.strip_prefix("## ") {
            blocks.push(Block::Subtitle {
                text: text.trim().to_string(),
                align,
            });
        } else if let Some(text) = t.strip_prefix("# ") {
            blocks.push(Block::Title {
                text: text.trim().to_string(),
                align,
            });
        } else if t.len() >= 3 && t.chars().all(|c| c == '-') {
            blocks.push(Block::Rule);
        } else if t.starts_with('[') {
            match directive(t) {
                Ok(b) => blocks.push(b.with_align(align)),
                Err(e) => errors.push(format!("line {n}: {e}")),
            }
        } else if let Some(word) = t
            .strip_prefix('@')
            .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            match word {
                "left" => align = Align::Left,
                "center" => align = Align::Center,
                "right" => align = Align::Right,
                _ => errors.push(format!(
                    "line {n}: unknown alignment `@{word}`: write @left, @center or @right \
                     (start the line with `\\` to print it as text)"
                )),
            }
        } else if let Some(inner) = bold_text(t) {
            blocks.push(Block::Paragraph {
                text: inner.to_string(),
                align,
                bold: true,
            });
        } else {
            blocks.push(Block::Paragraph {
                text: t.to_string(),
                align,
                bold: false,
            });
        }
    }
    if let Some(b) = table.take() {
        blocks.push(Block::Table(b.finish()));
    }
    if errors.is_empty() {
        Ok(Document { blocks })
    } else {
        Err(DocumentError(errors.join("\n")))
    }
}

impl Block {
    fn with_align(self, a: Align) -> Block {
        match self {
            Block::Qr { payload, .. } => Block::Qr { payload, align: a },
            other => other,
        }
    }
}

/// `**text**` → `text`.
fn bold_text(t: &str) -> Option<&str> {
    t.strip_prefix("**")
        .and_then(|r| r.strip_suffix("**"))
        .map(str::trim)
        .filter(|r| !r.is_empty())
}

fn directive(t: &str) -> Result<Block, String> {
    let Some(end) = t.find(']') else {
        return Err(format!(
            "`{}` opens a directive without closing it with `]` (start the line with `\\` to print it as text)",
            excerpt(t)
        ));
    };
    let name = t.get(1..end).unwrap_or_default().trim();
    let rest = t.get(end + 1..).unwrap_or_default().trim();
    match name {
        "qr" => {
            if rest.is_empty() {
                return Err("`[qr]` needs the text to encode after it: `[qr] https://…`".into());
            }
            if let Err(e) = qrcode::QrCode::with_error_correction_level(rest.as_bytes(), QR_EC) {
                return Err(format!(
                    "the QR code cannot hold this text ({} bytes): {e}",
                    rest.len()
                ));
            }
            Ok(Block::Qr {
                payload: rest.to_string(),
                align: Align::Left,
            })
        }
        "page" | "cut" if !rest.is_empty() => Err(format!(
            "`[{name}]` takes nothing after it (found `{}`)",
            excerpt(rest)
        )),
        "page" => Ok(Block::PageBreak),
        "cut" => Ok(Block::Cut),
        _ => Err(format!(
            "unknown directive `[{}]`: the directives are [qr], [page] and [cut] \
             (start the line with `\\` to print it as text)",
            excerpt(name)
        )),
    }
}

fn excerpt(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

#[derive(Default)]
struct TableBuilder {
    rows: Vec<Vec<Cell>>,
    header: bool,
    /// Column alignments from the `|---|` row.
    aligns: Vec<Option<Align>>,
    /// Whether each cell of each row was marked with `>`.
    explicit: Vec<Vec<bool>>,
}

impl TableBuilder {
    fn row(&mut self, t: &str) -> Result<(), String> {
        let cells = split_cells(t);
        if !cells.is_empty() && cells.iter().all(|c| is_rule_cell(c)) {
            if self.rows.len() != 1 || self.header {
                return Err(
                    "a `|---|` row goes right under a table's first row (which becomes its header)"
                        .into(),
                );
            }
            self.header = true;
            self.aligns = cells
                .iter()
                .map(|c| {
                    let c = c.trim();
                    match (c.starts_with(':'), c.ends_with(':')) {
                        (true, true) => Some(Align::Center),
                        (false, true) => Some(Align::Right),
                        (true, false) => Some(Align::Left),
                        (false, false) => None,
                    }
                })
                .collect();
            return Ok(());
        }
        let mut row = Vec::new();
        let mut explicit = Vec::new();
        for c in cells {
            let mut text = c.trim();
            let mut cell = Cell::default();
            let mut marked = false;
            if let Some(r) = text.strip_prefix('>') {
                cell.align = Align::Right;
                marked = true;
                text = r.trim();
            }
            if let Some(inner) = bold_text(text) {
                cell.bold = true;
                text = inner;
            }
            cell.text = text.strip_prefix('\\').unwrap_or(text).to_string();
            row.push(cell);
            explicit.push(marked);
        }
        self.rows.push(row);
        self.explicit.push(explicit);
        Ok(())
    }

    fn finish(self) -> Table {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut rows: Vec<Vec<Cell>> = Vec::with_capacity(self.rows.len());
        for (r, mut row) in self.rows.into_iter().enumerate() {
            row.resize(columns, Cell::default());
            for (c, cell) in row.iter_mut().enumerate() {
                let marked = self
                    .explicit
                    .get(r)
                    .and_then(|e| e.get(c))
                    .copied()
                    .unwrap_or(false);
                if !marked {
                    if let Some(Some(a)) = self.aligns.get(c) {
                        cell.align = *a;
                    }
                }
            }
            rows.push(row);
        }
        let header = if self.header && !rows.is_empty() {
            Some(rows.remove(0))
        } else {
            None
        };
        Table {
            header,
            rows,
            columns,
        }
    }
}

/// `| a | b\| c |` → `[" a ", " b| c "]`.
fn split_cells(t: &str) -> Vec<String> {
    let inner = t.strip_prefix('|').unwrap_or(t);
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if chars.peek() == Some(&'|') => {
                cur.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    if !cur.trim().is_empty() {
        cells.push(cur);
    }
    cells
}

/// `---`, `:-:`, `--:`…: two dashes at least, or one with a colon (a lone `-` is a value).
fn is_rule_cell(c: &str) -> bool {
    let c = c.trim();
    let core = c.strip_prefix(':').unwrap_or(c);
    let core = core.strip_suffix(':').unwrap_or(core);
    let colon = core.len() < c.len();
    !core.is_empty() && core.chars().all(|ch| ch == '-') && (colon || core.len() >= 2)
}

// ---------------------------------------------------------------------------------------------
// Layout helpers shared with the ticket renderer.

/// Greedy word wrap of `text` to `max` (as `measure` counts); a word wider than `max` is cut.
/// French punctuation stays with its word: no line starts with `!`, `?`, `:`, `;` or `»`, and
/// none ends with `«`.
pub(crate) fn wrap(text: &str, max: f32, measure: &dyn Fn(&str) -> f32) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut glue_next = false;
    for token in text.split(' ').filter(|w| !w.is_empty()) {
        let closing = token.chars().all(|c| "!?:;»".contains(c));
        match words.last_mut() {
            Some(prev) if closing || glue_next => {
                prev.push(' ');
                prev.push_str(token);
            }
            _ => words.push(token.to_string()),
        }
        glue_next = token == "«";
    }
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in &words {
        let candidate = if cur.is_empty() {
            word.clone()
        } else {
            format!("{cur} {word}")
        };
        if measure(&candidate) <= max {
            cur = candidate;
            continue;
        }
        if !cur.is_empty() {
            lines.push(std::mem::take(&mut cur));
        }
        if measure(word) <= max {
            cur = word.clone();
            continue;
        }
        let mut piece = String::new();
        for ch in word.chars() {
            let mut next = piece.clone();
            next.push(ch);
            if measure(&next) > max && !piece.is_empty() {
                lines.push(std::mem::take(&mut piece));
                if ch != ' ' {
                    piece.push(ch);
                }
            } else {
                piece = next;
            }
        }
        cur = piece;
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

/// The narrowest a cell may be: its longest word, or its whole text when it is right-aligned
/// (amounts do not wrap).
pub(crate) fn min_cell_width(cell: &Cell, text: &str, measure: &dyn Fn(&str) -> f32) -> f32 {
    if cell.align == Align::Right {
        measure(text)
    } else {
        text.split(' ').map(measure).fold(0.0, f32::max)
    }
}

/// Column widths for a table: each column's natural width when they all fit (the first column
/// takes what is left); else every column gets its minimum (`min`: longest word) and the rest
/// is shared in proportion to what each one lacks; when even the minimums do not fit, they
/// shrink in proportion (long words are then cut).
pub(crate) fn fit_columns(natural: &[f32], min: &[f32], available: f32) -> Vec<f32> {
    let total: f32 = natural.iter().sum();
    if total <= available {
        let mut w = natural.to_vec();
        if let Some(first) = w.first_mut() {
            *first += available - total;
        }
        return w;
    }
    let min: Vec<f32> = natural
        .iter()
        .enumerate()
        .map(|(i, n)| min.get(i).copied().unwrap_or(0.0).min(*n))
        .collect();
    let min_total: f32 = min.iter().sum();
    if min_total >= available || min_total <= 0.0 {
        let scale = if min_total > 0.0 {
            available / min_total
        } else {
            0.0
        };
        return if min_total > 0.0 {
            min.iter().map(|m| m * scale).collect()
        } else {
            natural
                .iter()
                .map(|_| available / natural.len() as f32)
                .collect()
        };
    }
    let slack = available - min_total;
    let want = total - min_total;
    natural
        .iter()
        .zip(&min)
        .map(|(n, m)| m + slack * (n - m) / want)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// WinAnsi (Windows-1252), the encoding of the built-in PDF fonts.

/// The Windows-1252 byte of `c`, if it has one.
pub(crate) fn winansi(c: char) -> Option<u8> {
    let u = c as u32;
    match u {
        0x20..=0x7E | 0xA0..=0xFF => Some(u as u8),
        _ => Some(match c {
            '€' => 0x80,
            '‚' => 0x82,
            'ƒ' => 0x83,
            '„' => 0x84,
            '…' => 0x85,
            '†' => 0x86,
            '‡' => 0x87,
            'ˆ' => 0x88,
            '‰' => 0x89,
            'Š' => 0x8A,
            '‹' => 0x8B,
            'Œ' => 0x8C,
            'Ž' => 0x8E,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            '˜' => 0x98,
            '™' => 0x99,
            'š' => 0x9A,
            '›' => 0x9B,
            'œ' => 0x9C,
            'ž' => 0x9E,
            'Ÿ' => 0x9F,
            _ => return None,
        }),
    }
}

/// Spaces French typography uses inside numbers and before `:` become no-break spaces; tabs
/// become spaces; characters the font cannot show become `?`.
fn pdf_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{202F}' | '\u{2007}' | '\u{2009}' => '\u{A0}',
            '\t' => ' ',
            c if winansi(c).is_some() => c,
            _ => '?',
        })
        .collect()
}

/// Adobe Helvetica / Helvetica-Bold advance widths (1/1000 em) of the WinAnsi codes 32–255.
#[rustfmt::skip]
const HELVETICA_WIDTHS: [u16; 224] = [278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, 350, 556, 350, 222, 556, 333, 1000, 556, 556, 333, 1000, 667, 333, 1000, 350, 611, 350, 350, 222, 222, 333, 333, 350, 556, 1000, 333, 1000, 500, 333, 944, 350, 500, 667, 278, 333, 556, 556, 556, 556, 260, 556, 333, 737, 370, 556, 584, 333, 737, 333, 400, 584, 333, 333, 333, 556, 537, 278, 333, 333, 365, 556, 834, 834, 834, 611, 667, 667, 667, 667, 667, 667, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278, 722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667, 611, 556, 556, 556, 556, 556, 556, 889, 500, 556, 556, 556, 556, 278, 278, 278, 278, 556, 556, 556, 556, 556, 556, 556, 584, 611, 556, 556, 556, 556, 500, 556, 500];
#[rustfmt::skip]
const HELVETICA_BOLD_WIDTHS: [u16; 224] = [278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584, 350, 556, 350, 278, 556, 500, 1000, 556, 556, 333, 1000, 667, 333, 1000, 350, 611, 350, 350, 278, 278, 500, 500, 350, 556, 1000, 333, 1000, 556, 333, 944, 350, 500, 667, 278, 333, 556, 556, 556, 556, 280, 556, 333, 737, 370, 556, 584, 333, 737, 333, 400, 584, 333, 333, 333, 611, 556, 278, 333, 333, 365, 556, 834, 834, 834, 611, 722, 722, 722, 722, 722, 722, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278, 722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667, 611, 556, 556, 556, 556, 556, 556, 889, 556, 556, 556, 556, 556, 278, 278, 278, 278, 611, 611, 611, 611, 611, 611, 611, 584, 611, 611, 611, 611, 611, 556, 611, 556];

fn char_width(c: char, bold: bool) -> u16 {
    let table = if bold {
        &HELVETICA_BOLD_WIDTHS
    } else {
        &HELVETICA_WIDTHS
    };
    winansi(c)
        .and_then(|b| b.checked_sub(32))
        .and_then(|i| table.get(usize::from(i)).copied())
        .unwrap_or(0)
}

/// Width in points of `text` (already through [`pdf_text`]) at `size` points.
fn text_width(text: &str, bold: bool, size: f32) -> f32 {
    // u64: a u32 sum overflows past about 4.5 million wide characters (a long cell or word).
    let units: u64 = text.chars().map(|c| u64::from(char_width(c, bold))).sum();
    units as f32 * size / 1000.0
}

// ---------------------------------------------------------------------------------------------
// PDF layout.

const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const MARGIN: f32 = 56.69; // 20 mm
const FOOTER_Y: f32 = 28.35; // 10 mm
const BODY: f32 = 10.0;
const LEADING: f32 = 1.3;
const TITLE: f32 = 18.0;
const SUBTITLE: f32 = 13.0;
const CELL_PAD: f32 = 4.0;
const QR_TARGET: f32 = 100.0;

#[derive(Debug, Clone)]
enum Op {
    Text {
        x: f32,
        y: f32,
        size: f32,
        bold: bool,
        text: String,
    },
    Fill {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
    },
    Stroke {
        x1: f32,
        y1: f32,
        x2: f32,
        y2: f32,
        width: f32,
    },
}

struct Layout {
    pages: Vec<Vec<Op>>,
    /// Top of the free space on the current page, from the bottom, in points.
    y: f32,
}

impl Layout {
    fn new() -> Layout {
        Layout {
            pages: vec![Vec::new()],
            y: PAGE_H - MARGIN,
        }
    }

    fn width(&self) -> f32 {
        PAGE_W - 2.0 * MARGIN
    }

    fn page_is_empty(&self) -> bool {
        self.pages.last().is_none_or(Vec::is_empty)
    }

    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y = PAGE_H - MARGIN;
    }

    /// Starts a new page unless `h` points fit on this one (or this one is still empty).
    fn ensure(&mut self, h: f32) -> bool {
        if self.y - h < MARGIN && !self.page_is_empty() {
            self.new_page();
            return true;
        }
        false
    }

    fn push(&mut self, op: Op) {
        if let Some(p) = self.pages.last_mut() {
            p.push(op);
        }
    }

    fn x_for(&self, align: Align, x: f32, w: f32, text_w: f32) -> f32 {
        match align {
            Align::Left => x,
            Align::Center => x + (w - text_w) / 2.0,
            Align::Right => x + w - text_w,
        }
    }

    fn lines(&mut self, text: &str, align: Align, bold: bool, size: f32) {
        let text = pdf_text(text);
        let line_h = size * LEADING;
        let width = self.width();
        for line in wrap(&text, width, &|s| text_width(s, bold, size)) {
            self.ensure(line_h);
            let tw = text_width(&line, bold, size);
            let x = self.x_for(align, MARGIN, width, tw);
            let y = self.y - size;
            self.push(Op::Text {
                x,
                y,
                size,
                bold,
                text: line,
            });
            self.y -= line_h;
        }
    }

    fn rule(&mut self) {
        self.ensure(10.0);
        self.y -= 5.0;
        self.line_across(0.5);
        self.y -= 5.0;
    }

    /// A horizontal line from margin to margin at the current height.
    fn line_across(&mut self, width: f32) {
        let y = self.y;
        self.push(Op::Stroke {
            x1: MARGIN,
            y1: y,
            x2: PAGE_W - MARGIN,
            y2: y,
            width,
        });
    }

    fn qr(&mut self, payload: &str, align: Align) {
        let Ok(code) = qrcode::QrCode::with_error_correction_level(payload.as_bytes(), QR_EC)
        else {
            return; // checked when parsing
        };
        let n = code.width();
        if n == 0 {
            return;
        }
        let module = (QR_TARGET / n as f32).clamp(1.5, 4.0);
        let side = module * n as f32;
        self.ensure(side + 8.0);
        self.y -= 4.0;
        let x0 = self.x_for(align, MARGIN, self.width(), side);
        let top = self.y;
        let colors = code.to_colors();
        for row in 0..n {
            let mut col = 0;
            while col < n {
                let dark = |c: usize| colors.get(row * n + c) == Some(&qrcode::Color::Dark);
                if !dark(col) {
                    col += 1;
                    continue;
                }
                let start = col;
                while col < n && dark(col) {
                    col += 1;
                }
                self.push(Op::Fill {
                    x: x0 + start as f32 * module,
                    y: top - (row + 1) as f32 * module,
                    w: (col - start) as f32 * module,
                    h: module,
                });
            }
        }
        self.y -= side + 4.0;
    }

    fn table(&mut self, t: &Table) {
        let size = BODY;
        let line_h = size * LEADING;
        let cells_text =
            |row: &[Cell]| -> Vec<String> { row.iter().map(|c| pdf_text(&c.text)).collect() };
        let mut natural = vec![0.0f32; t.columns];
        let mut min = vec![0.0f32; t.columns];
        let all_rows = t
            .header
            .iter()
            .map(|h| (h, true))
            .chain(t.rows.iter().map(|r| (r, false)));
        for (row, is_header) in all_rows {
            for (i, cell) in row.iter().enumerate() {
                let bold = cell.bold || is_header;
                let measure = |s: &str| text_width(s, bold, size);
                let text = pdf_text(&cell.text);
                if let Some(n) = natural.get_mut(i) {
                    *n = n.max(measure(&text) + 2.0 * CELL_PAD);
                }
                if let Some(m) = min.get_mut(i) {
                    *m = m.max(min_cell_width(cell, &text, &measure) + 2.0 * CELL_PAD);
                }
            }
        }
        let widths = fit_columns(&natural, &min, self.width());
        let lay_row = |row: &[Cell], header: bool| -> Vec<Vec<String>> {
            let texts = cells_text(row);
            row.iter()
                .zip(texts)
                .enumerate()
                .map(|(i, (cell, text))| {
                    let w = widths.get(i).copied().unwrap_or(0.0) - 2.0 * CELL_PAD;
                    let bold = cell.bold || header;
                    wrap(&text, w, &|s| text_width(s, bold, size))
                })
                .collect()
        };
        let header = t.header.as_ref().map(|h| (h, lay_row(h, true)));
        let draw_row = |me: &mut Layout, row: &[Cell], lines: &[Vec<String>], header: bool| {
            let n_lines = lines.iter().map(Vec::len).max().unwrap_or(1).max(1);
            let row_h = n_lines as f32 * line_h + 4.0;
            let mut x = MARGIN;
            for (i, cell) in row.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0.0);
                let bold = cell.bold || header;
                for (k, line) in lines
                    .get(i)
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                    .iter()
                    .enumerate()
                {
                    let tw = text_width(line, bold, size);
                    let tx = me.x_for(cell.align, x + CELL_PAD, w - 2.0 * CELL_PAD, tw);
                    let ty = me.y - 2.0 - size - k as f32 * line_h;
                    me.push(Op::Text {
                        x: tx,
                        y: ty,
                        size,
                        bold,
                        text: line.clone(),
                    });
                }
                x += w;
            }
            me.y -= row_h;
            if header {
                me.line_across(0.6);
            }
        };
        let height = |lines: &[Vec<String>]| {
            lines.iter().map(Vec::len).max().unwrap_or(1).max(1) as f32 * line_h + 4.0
        };
        if let Some((h, lines)) = &header {
            let first = t
                .rows
                .first()
                .map(|r| height(&lay_row(r, false)))
                .unwrap_or(0.0);
            self.ensure(height(lines) + first);
            draw_row(self, h, lines, true);
        }
        for row in &t.rows {
            let lines = lay_row(row, false);
            let new_page = self.ensure(height(&lines));
            if new_page {
                if let Some((h, hl)) = &header {
                    draw_row(self, h, hl, true);
                }
            }
            draw_row(self, row, &lines, false);
        }
        self.y -= 4.0;
    }
}

impl Document {
    /// Lays the document out on A4 pages and writes the PDF.
    pub fn to_pdf(&self, title: &str) -> Result<Pdf, DocumentError> {
        let mut l = Layout::new();
        for block in &self.blocks {
            match block {
                Block::Title { text, align } => {
                    if !l.page_is_empty() {
                        l.y -= 4.0;
                    }
                    l.lines(text, *align, true, TITLE);
                    l.y -= 4.0;
                }
                Block::Subtitle { text, align } => {
                    if !l.page_is_empty() {
                        l.y -= 3.0;
                    }
                    l.lines(text, *align, true, SUBTITLE);
                    l.y -= 2.0;
                }
                Block::Paragraph { text, align, bold } => l.lines(text, *align, *bold, BODY),
                Block::Space => {
                    if !l.page_is_empty() {
                        l.y -= BODY * LEADING;
                    }
                }
                Block::Rule => l.rule(),
                Block::Table(t) => l.table(t),
                Block::Qr { payload, align } => l.qr(payload, *align),
                Block::PageBreak => {
                    if !l.page_is_empty() {
                        l.new_page();
                    }
                }
                Block::Cut => {}
            }
        }
        let total = l.pages.len();
        for (i, page) in l.pages.iter_mut().enumerate() {
            let text = format!("Page {} / {}", i + 1, total);
            let size = 8.0;
            let w = text_width(&text, false, size);
            page.push(Op::Text {
                x: (PAGE_W - w) / 2.0,
                y: FOOTER_Y,
                size,
                bold: false,
                text,
            });
        }
        let bytes = write_pdf(&l.pages, title, &document_id(title, self))?;
        Ok(Pdf {
            bytes,
            pages: total,
        })
    }
}

fn document_id(title: &str, doc: &Document) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(title.as_bytes());
    h.update([0]);
    h.update(format!("{doc:?}").as_bytes());
    h.finalize().get(..16).unwrap_or_default().to_vec()
}

fn mm(pt: f32) -> Mm {
    Mm(pt * 25.4 / 72.0)
}

fn write_pdf(pages: &[Vec<Op>], title: &str, id: &[u8]) -> Result<Vec<u8>, DocumentError> {
    let fail = |e: &dyn std::fmt::Display| DocumentError(format!("cannot write the PDF: {e}"));
    let (doc, first_page, first_layer) = PdfDocument::new(title, mm(PAGE_W), mm(PAGE_H), "contenu");
    let regular = doc
        .add_builtin_font(BuiltinFont::Helvetica)
        .map_err(|e| fail(&e))?;
    let bold = doc
        .add_builtin_font(BuiltinFont::HelveticaBold)
        .map_err(|e| fail(&e))?;
    for (i, ops) in pages.iter().enumerate() {
        let layer = if i == 0 {
            doc.get_page(first_page).get_layer(first_layer)
        } else {
            let (p, l) = doc.add_page(mm(PAGE_W), mm(PAGE_H), "contenu");
            doc.get_page(p).get_layer(l)
        };
        draw(&layer, ops, &regular, &bold);
    }
    let raw = doc.save_to_bytes().map_err(|e| fail(&e))?;
    finish_pdf(&raw, title, id).map_err(|e| fail(&e))
}

fn draw(layer: &PdfLayerReference, ops: &[Op], regular: &IndirectFontRef, bold: &IndirectFontRef) {
    for op in ops {
        match op {
            Op::Text {
                x,
                y,
                size,
                bold: b,
                text,
            } => {
                let font = if *b { bold } else { regular };
                layer.use_text(text.as_str(), *size, mm(*x), mm(*y), font);
            }
            Op::Fill { x, y, w, h } => {
                layer.add_rect(printpdf::Rect {
                    ll: Point {
                        x: Pt(*x),
                        y: Pt(*y),
                    },
                    ur: Point {
                        x: Pt(x + w),
                        y: Pt(y + h),
                    },
                    mode: printpdf::path::PaintMode::Fill,
                    winding: printpdf::path::WindingOrder::NonZero,
                });
            }
            Op::Stroke {
                x1,
                y1,
                x2,
                y2,
                width,
            } => {
                layer.set_outline_thickness(*width);
                layer.add_line(Line {
                    points: vec![
                        (
                            Point {
                                x: Pt(*x1),
                                y: Pt(*y1),
                            },
                            false,
                        ),
                        (
                            Point {
                                x: Pt(*x2),
                                y: Pt(*y2),
                            },
                            false,
                        ),
                    ],
                    is_closed: false,
                });
            }
        }
    }
}

/// Rewrites what printpdf leaves random or wrongly encoded: the file identifier (derived from
/// the content), the dates (removed), the title (UTF-16 when it is not ASCII); compresses.
fn finish_pdf(raw: &[u8], title: &str, id: &[u8]) -> Result<Vec<u8>, lopdf::Error> {
    use lopdf::{Dictionary, Object, StringFormat};
    let mut doc = lopdf::Document::load_mem(raw)?;
    let title_obj = if title.chars().all(|c| (' '..='~').contains(&c)) {
        Object::String(title.as_bytes().to_vec(), StringFormat::Literal)
    } else {
        let mut b = vec![0xFE, 0xFF];
        for u in title.encode_utf16() {
            b.extend_from_slice(&u.to_be_bytes());
        }
        Object::String(b, StringFormat::Hexadecimal)
    };
    let mut info = Dictionary::new();
    info.set("Title", title_obj);
    info.set("Producer", Object::string_literal("Dossier"));
    let info_id = doc.add_object(Object::Dictionary(info));
    if let Ok(old) = doc.trailer.get(b"Info").and_then(Object::as_reference) {
        doc.objects.remove(&old);
    }
    doc.trailer.set("Info", Object::Reference(info_id));
    doc.trailer.set(
        "ID",
        Object::Array(vec![
            Object::String(id.to_vec(), StringFormat::Hexadecimal),
            Object::String(id.to_vec(), StringFormat::Hexadecimal),
        ]),
    );
    doc.compress();
    let mut out = Vec::new();
    doc.save_to(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn text_of(pdf: &[u8]) -> String {
        pdf_extract::extract_text_from_mem(pdf).expect("pdf-extract reads the PDF")
    }

    const RECU: &str = "@center\n# Reçu n° 2024-017\n@left\nÉlève : Zoé Ægir — « déjà payé »\n\n| Désignation | Qté | Montant |\n|---|:-:|---:|\n| Cahier d'activités | 2 | 12,50 € |\n| **Total** | | > **25,00 €** |\n---\n@right\n[qr] https://exemple.ci/v/ABC\n[cut]\n\\[page] n'est pas une directive ici\n";

    #[test]
    fn parses_every_element() {
        let doc = parse(RECU).unwrap();
        expect![[r#"
            Document {
                blocks: [
                    Title {
                        text: "Reçu n° 2024-017",
                        align: Center,
                    },
                    Paragraph {
                        text: "Élève : Zoé Ægir — « déjà payé »",
                        align: Left,
                        bold: false,
                    },
                    Space,
                    Table(
                        Table {
                            header: Some(
                                [
                                    Cell {
                                        text: "Désignation",
                                        align: Left,
                                        bold: false,
                                    },
                                    Cell {
                                        text: "Qté",
                                        align: Center,
                                        bold: false,
                                    },
                                    Cell {
                                        text: "Montant",
                                        align: Right,
                                        bold: false,
                                    },
                                ],
                            ),
                            rows: [
                                [
                                    Cell {
                                        text: "Cahier d'activités",
                                        align: Left,
                                        bold: false,
                                    },
                                    Cell {
                                        text: "2",
                                        align: Center,
                                        bold: false,
                                    },
                                    Cell {
                                        text: "12,50 €",
                                        align: Right,
                                        bold: false,
                                    },
                                ],
                                [
                                    Cell {
                                        text: "Total",
                                        align: Left,
                                        bold: true,
                                    },
                                    Cell {
                                        text: "",
                                        align: Center,
                                        bold: false,
                                    },
                                    Cell {
                                        text: "25,00 €",
                                        align: Right,
                                        bold: true,
                                    },
                                ],
                            ],
                            columns: 3,
                        },
                    ),
                    Rule,
                    Qr {
                        payload: "https://exemple.ci/v/ABC",
                        align: Right,
                    },
                    Cut,
                    Paragraph {
                        text: "[page] n'est pas une directive ici",
                        align: Right,
                        bold: false,
                    },
                ],
            }"#]]
        .assert_eq(&format!("{doc:#?}"));
    }

    #[test]
    fn errors_name_their_lines() {
        let e = parse("# Facture\n[qrcode] x\n@middle\n| a |\nx\n|---|\n[qr]\n[page] 2\n[oups\n")
            .unwrap_err();
        expect![[r#"
            line 2: unknown directive `[qrcode]`: the directives are [qr], [page] and [cut] (start the line with `\` to print it as text)
            line 3: unknown alignment `@middle`: write @left, @center or @right (start the line with `\` to print it as text)
            line 6: a `|---|` row goes right under a table's first row (which becomes its header)
            line 7: `[qr]` needs the text to encode after it: `[qr] https://…`
            line 8: `[page]` takes nothing after it (found `2`)
            line 9: `[oups` opens a directive without closing it with `]` (start the line with `\` to print it as text)"#]]
        .assert_eq(&e.to_string());
        // A lone `-` is a value, not a header rule.
        let t = parse("| a | b |\n| x | - |\n| - | - |\n").unwrap();
        assert!(
            matches!(&t.blocks[..], [Block::Table(t)] if t.header.is_none() && t.rows.len() == 3)
        );
        let long = format!("[qr] {}", "x".repeat(5000));
        expect!["line 1: the QR code cannot hold this text (5000 bytes): data too long"]
            .assert_eq(&parse(&long).unwrap_err().to_string());
    }

    #[test]
    fn french_text_tables_and_the_title_come_out_right() {
        let pdf = parse(RECU).unwrap().to_pdf("Reçu n° 17 — Zoé").unwrap();
        assert_eq!(pdf.pages, 1);
        let text = text_of(&pdf.bytes);
        for needle in [
            "Reçu n° 2024-017",
            "Élève : Zoé Ægir — « déjà payé »",
            "Désignation",
            "Cahier d'activités",
            "12,50 €",
            "25,00 €",
            "[page] n'est pas une directive ici",
            "Page 1 / 1",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        // The title is in the document information, in UTF-16 since it is not ASCII.
        let doc = lopdf::Document::load_mem(&pdf.bytes).unwrap();
        let info = doc
            .trailer
            .get(b"Info")
            .and_then(lopdf::Object::as_reference)
            .and_then(|id| doc.get_dictionary(id))
            .unwrap();
        let title = info.get(b"Title").and_then(lopdf::Object::as_str).unwrap();
        let units: Vec<u16> = title
            .chunks(2)
            .skip(1)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(String::from_utf16(&units).unwrap(), "Reçu n° 17 — Zoé");
    }

    #[test]
    fn amounts_are_right_aligned_in_their_column() {
        let doc =
            parse("| Désignation | Montant |\n|---|---:|\n| A | 1,00 € |\n| B | 1 000,00 € |\n")
                .unwrap();
        let mut l = Layout::new();
        if let Some(Block::Table(t)) = doc.blocks.first() {
            l.table(t);
        }
        let ends: Vec<f32> = l.pages[0]
            .iter()
            .filter_map(|op| match op {
                Op::Text {
                    x,
                    size,
                    bold,
                    text,
                    ..
                } if text.contains('€') => Some(x + text_width(text, *bold, *size)),
                _ => None,
            })
            .collect();
        assert_eq!(ends.len(), 2);
        assert!((ends[0] - ends[1]).abs() < 0.01, "{ends:?}");
        assert!(
            (ends[0] - (PAGE_W - MARGIN - CELL_PAD)).abs() < 0.01,
            "{ends:?}"
        );
    }

    #[test]
    fn long_documents_break_pages_and_repeat_table_headers() {
        let mut m = String::from("# Relevé\n| Date | Libellé | Montant |\n|---|---|---:|\n");
        for i in 1..=70 {
            m.push_str(&format!(
                "| 2024-01-{:02} | Ligne numéro {i} | > {i},00 € |\n",
                i % 28 + 1
            ));
        }
        m.push_str("[page]\nDernière page.\n");
        let pdf = parse(&m).unwrap().to_pdf("Relevé").unwrap();
        assert_eq!(pdf.pages, 3);
        let text = text_of(&pdf.bytes);
        assert!(
            text.contains("Page 2 / 3") && text.contains("Page 3 / 3"),
            "{text}"
        );
        assert!(text.contains("Ligne numéro 70"), "{text}");
        assert_eq!(
            text.matches("Libellé").count(),
            2,
            "header on each page of the table"
        );
        let last = text.rsplit("Page 2 / 3").next().unwrap();
        assert!(last.contains("Dernière page."), "{last}");
    }

    #[test]
    fn long_paragraphs_wrap_within_the_margins() {
        let words = "Lorem ipsum dolor sit amet, élève consectetur adipiscing elit. ".repeat(8);
        let mut l = Layout::new();
        l.lines(&words, Align::Left, false, BODY);
        let widths: Vec<f32> = l.pages[0]
            .iter()
            .filter_map(|op| match op {
                Op::Text { text, .. } => Some(text_width(text, false, BODY)),
                _ => None,
            })
            .collect();
        assert!(widths.len() > 3, "{widths:?}");
        assert!(
            widths.iter().all(|w| *w <= PAGE_W - 2.0 * MARGIN),
            "{widths:?}"
        );
        // A word longer than the line is cut rather than overflowing.
        let lines = wrap(&"x".repeat(300), 100.0, &|s| text_width(s, false, BODY));
        assert!(lines.len() > 1 && lines.iter().all(|l| text_width(l, false, BODY) <= 100.0));
    }

    #[test]
    fn output_is_deterministic() {
        let a = render_pdf(RECU, "Reçu").unwrap();
        let b = render_pdf(RECU, "Reçu").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, render_pdf(RECU, "Reçu 2").unwrap());
    }

    #[test]
    fn very_long_words_do_not_overflow_the_width_sum() {
        // 5 million `W` (944 units each) overflow a u32 sum of units.
        let w = text_width(&"W".repeat(5_000_000), true, BODY);
        assert!((w - 5_000_000.0 * 9.44).abs() < 5_000_000.0 * 0.01, "{w}");
    }

    #[test]
    fn helvetica_widths_and_winansi() {
        assert_eq!(char_width('a', false), 556);
        assert_eq!(char_width('é', false), 556);
        assert_eq!(char_width('€', true), 556);
        assert_eq!(char_width('W', true), 944);
        assert_eq!(pdf_text("1\u{202F}234 € ✓"), "1\u{A0}234 € ?");
        assert_eq!(winansi('œ'), Some(0x9C));
    }
}
