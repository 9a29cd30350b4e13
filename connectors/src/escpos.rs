//! ESC/POS tickets: a [`Document`] laid out for a receipt printer (80 mm paper, 48 characters of
//! font A by default) as the bytes sent raw to its TCP port 9100.
//!
//! The ticket starts with `ESC @` (initialise) and `ESC t 19` (code page PC858: Latin-1 letters
//! and `€`); text is transcoded into that code page (`œ` → `oe`, typographic quotes and dashes →
//! ASCII, anything else the page lacks → `?`). Alignment is `ESC a`, bold `ESC E`, titles are
//! double width and height (`GS !`), subtitles double height. Tables are laid out in characters
//! on the ticket's width. QR codes use `GS ( k` (model 2, error correction M, store then print).
//! `[cut]` feeds and cuts (`ESC d 4`, `GS V 0`); a ticket that does not end with `[cut]` gets one.
//! `[page]` means nothing on a roll of paper and is ignored.

use crate::document::{
    fit_columns, min_cell_width, wrap, Align, Block, Cell, Document, Table, QR_EC,
};

/// Characters per line on 80 mm paper with font A.
pub const DEFAULT_WIDTH: usize = 48;

const ESC: u8 = 0x1B;
const GS: u8 = 0x1D;
const LF: u8 = 0x0A;

/// The code page selected by `ESC t 19`.
pub const PC858: u8 = 19;

/// Characters 0x80–0xFF of code page 858 (850 with `€` at 0xD5).
#[rustfmt::skip]
const CP858_HIGH: [char; 128] = ['\u{00C7}', '\u{00FC}', '\u{00E9}', '\u{00E2}', '\u{00E4}', '\u{00E0}', '\u{00E5}', '\u{00E7}', '\u{00EA}', '\u{00EB}', '\u{00E8}', '\u{00EF}', '\u{00EE}', '\u{00EC}', '\u{00C4}', '\u{00C5}', '\u{00C9}', '\u{00E6}', '\u{00C6}', '\u{00F4}', '\u{00F6}', '\u{00F2}', '\u{00FB}', '\u{00F9}', '\u{00FF}', '\u{00D6}', '\u{00DC}', '\u{00F8}', '\u{00A3}', '\u{00D8}', '\u{00D7}', '\u{0192}', '\u{00E1}', '\u{00ED}', '\u{00F3}', '\u{00FA}', '\u{00F1}', '\u{00D1}', '\u{00AA}', '\u{00BA}', '\u{00BF}', '\u{00AE}', '\u{00AC}', '\u{00BD}', '\u{00BC}', '\u{00A1}', '\u{00AB}', '\u{00BB}', '\u{2591}', '\u{2592}', '\u{2593}', '\u{2502}', '\u{2524}', '\u{00C1}', '\u{00C2}', '\u{00C0}', '\u{00A9}', '\u{2563}', '\u{2551}', '\u{2557}', '\u{255D}', '\u{00A2}', '\u{00A5}', '\u{2510}', '\u{2514}', '\u{2534}', '\u{252C}', '\u{251C}', '\u{2500}', '\u{253C}', '\u{00E3}', '\u{00C3}', '\u{255A}', '\u{2554}', '\u{2569}', '\u{2566}', '\u{2560}', '\u{2550}', '\u{256C}', '\u{00A4}', '\u{00F0}', '\u{00D0}', '\u{00CA}', '\u{00CB}', '\u{00C8}', '\u{20AC}', '\u{00CD}', '\u{00CE}', '\u{00CF}', '\u{2518}', '\u{250C}', '\u{2588}', '\u{2584}', '\u{00A6}', '\u{00CC}', '\u{2580}', '\u{00D3}', '\u{00DF}', '\u{00D4}', '\u{00D2}', '\u{00F5}', '\u{00D5}', '\u{00B5}', '\u{00FE}', '\u{00DE}', '\u{00DA}', '\u{00DB}', '\u{00D9}', '\u{00FD}', '\u{00DD}', '\u{00AF}', '\u{00B4}', '\u{00AD}', '\u{00B1}', '\u{2017}', '\u{00BE}', '\u{00B6}', '\u{00A7}', '\u{00F7}', '\u{00B8}', '\u{00B0}', '\u{00A8}', '\u{00B7}', '\u{00B9}', '\u{00B3}', '\u{00B2}', '\u{25A0}', '\u{00A0}'];

/// The PC858 byte of `c`, if it has one.
fn cp858(c: char) -> Option<u8> {
    if (' '..='~').contains(&c) {
        return Some(c as u8);
    }
    CP858_HIGH
        .iter()
        .position(|&h| h == c)
        .and_then(|i| u8::try_from(i + 0x80).ok())
}

/// `text` with only characters PC858 has (what the wrapping counts is what gets printed).
fn ticket_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' | '\u{A0}' | '\u{202F}' | '\u{2007}' | '\u{2009}' => out.push(' '),
            'œ' => out.push_str("oe"),
            'Œ' => out.push_str("OE"),
            'Ÿ' => out.push('Y'),
            '‘' | '’' | '‚' | '′' => out.push('\''),
            '“' | '”' | '„' | '″' => out.push('"'),
            '–' | '—' | '‐' | '‑' | '−' => out.push('-'),
            '…' => out.push_str("..."),
            '•' => out.push('*'),
            c if cp858(c).is_some() => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

fn encode(text: &str, out: &mut Vec<u8>) {
    out.extend(text.chars().map(|c| cp858(c).unwrap_or(b'?')));
}

fn count(s: &str) -> f32 {
    s.chars().count() as f32
}

fn align_code(a: Align) -> u8 {
    match a {
        Align::Left => 0,
        Align::Center => 1,
        Align::Right => 2,
    }
}

/// The ticket for `doc`, `width` characters wide.
pub fn render(doc: &Document, width: usize) -> Vec<u8> {
    let width = width.max(8);
    let mut out = vec![ESC, b'@', ESC, b't', PC858];
    let mut cut_last = false;
    for block in &doc.blocks {
        cut_last = false;
        match block {
            Block::Title { text, align } => {
                styled(&mut out, text, *align, true, 0x11, width / 2);
            }
            Block::Subtitle { text, align } => {
                styled(&mut out, text, *align, true, 0x01, width);
            }
            Block::Paragraph { text, align, bold } => {
                styled(&mut out, text, *align, *bold, 0x00, width);
            }
            Block::Space => out.push(LF),
            Block::Rule => {
                out.extend([ESC, b'a', 0]);
                out.extend(std::iter::repeat_n(b'-', width));
                out.push(LF);
            }
            Block::Table(t) => table(&mut out, t, width),
            Block::Qr { payload, align } => qr(&mut out, payload, *align, width),
            Block::PageBreak => {}
            Block::Cut => {
                cut(&mut out);
                cut_last = true;
            }
        }
    }
    if !cut_last {
        cut(&mut out);
    }
    out
}

fn cut(out: &mut Vec<u8>) {
    out.extend([ESC, b'a', 0, ESC, b'd', 4, GS, b'V', 0]);
}

/// Lines of `text`: alignment, bold, character size (`GS !`), wrapped to `chars` characters.
fn styled(out: &mut Vec<u8>, text: &str, align: Align, bold: bool, size: u8, chars: usize) {
    out.extend([ESC, b'a', align_code(align)]);
    if bold {
        out.extend([ESC, b'E', 1]);
    }
    if size != 0 {
        out.extend([GS, b'!', size]);
    }
    for line in wrap(&ticket_text(text), chars.max(1) as f32, &count) {
        encode(&line, out);
        out.push(LF);
    }
    if size != 0 {
        out.extend([GS, b'!', 0]);
    }
    if bold {
        out.extend([ESC, b'E', 0]);
    }
}

fn table(out: &mut Vec<u8>, t: &Table, width: usize) {
    if t.columns == 0 {
        return;
    }
    out.extend([ESC, b'a', 0]);
    let gaps = t.columns.saturating_sub(1);
    let available = width.saturating_sub(gaps).max(t.columns);
    let mut natural = vec![0.0f32; t.columns];
    let mut min = vec![0.0f32; t.columns];
    for row in t.header.iter().chain(t.rows.iter()) {
        for (i, cell) in row.iter().enumerate() {
            let text = ticket_text(&cell.text);
            if let Some(n) = natural.get_mut(i) {
                *n = n.max(count(&text));
            }
            if let Some(m) = min.get_mut(i) {
                *m = m.max(min_cell_width(cell, &text, &count));
            }
        }
    }
    let widths: Vec<usize> = fit_columns(&natural, &min, available as f32)
        .iter()
        .map(|w| w.floor().max(1.0) as usize)
        .collect();
    if let Some(h) = &t.header {
        row(out, h, &widths, true);
        out.extend(std::iter::repeat_n(b'-', width));
        out.push(LF);
    }
    for r in &t.rows {
        row(out, r, &widths, false);
    }
}

fn row(out: &mut Vec<u8>, cells: &[Cell], widths: &[usize], header: bool) {
    let lines: Vec<Vec<String>> = cells
        .iter()
        .zip(widths)
        .map(|(c, w)| wrap(&ticket_text(&c.text), *w as f32, &count))
        .collect();
    let height = lines.iter().map(Vec::len).max().unwrap_or(1);
    for k in 0..height {
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            let text = lines
                .get(i)
                .and_then(|l| l.get(k))
                .map(String::as_str)
                .unwrap_or("");
            let pad = w.saturating_sub(text.chars().count());
            let (before, after) = match cell.align {
                Align::Left => (0, pad),
                Align::Center => (pad / 2, pad - pad / 2),
                Align::Right => (pad, 0),
            };
            let bold = header || cell.bold;
            out.extend(std::iter::repeat_n(b' ', before));
            if bold && !text.is_empty() {
                out.extend([ESC, b'E', 1]);
            }
            encode(text, out);
            if bold && !text.is_empty() {
                out.extend([ESC, b'E', 0]);
            }
            out.extend(std::iter::repeat_n(b' ', after));
        }
        // Trailing spaces are not worth sending.
        while out.last() == Some(&b' ') {
            out.pop();
        }
        out.push(LF);
    }
}

/// `GS ( k`: model 2, module size, error correction M, store the data, print it.
fn qr(out: &mut Vec<u8>, payload: &str, align: Align, width: usize) {
    let data = payload.as_bytes();
    let Ok(len) = u16::try_from(data.len() + 3) else {
        return; // longer than any QR code; refused when parsing
    };
    // Module size in dots: the symbol (plus its quiet zone) fits the paper (12 dots a character).
    let modules = qrcode::QrCode::with_error_correction_level(data, QR_EC)
        .map(|c| c.width())
        .unwrap_or(25);
    let size = ((width * 12) / (modules + 8)).clamp(1, 6) as u8;
    let [pl, ph] = len.to_le_bytes();
    out.extend([ESC, b'a', align_code(align)]);
    out.extend([GS, b'(', b'k', 4, 0, 0x31, 0x41, 0x32, 0x00]);
    out.extend([GS, b'(', b'k', 3, 0, 0x31, 0x43, size]);
    out.extend([GS, b'(', b'k', 3, 0, 0x31, 0x45, 0x31]);
    out.extend([GS, b'(', b'k', pl, ph, 0x31, 0x50, 0x30]);
    out.extend_from_slice(data);
    out.extend([GS, b'(', b'k', 3, 0, 0x31, 0x51, 0x30]);
    out.push(LF);
}

/// A readable dump of ticket bytes for tests and debugging: printable ASCII in quotes, other
/// bytes in hex, one line per line feed.
pub fn dump(bytes: &[u8]) -> String {
    let mut s = String::new();
    let mut in_text = false;
    for &b in bytes {
        if (0x20..0x7F).contains(&b) && b != b'"' {
            if !in_text {
                if !s.is_empty() && !s.ends_with('\n') {
                    s.push(' ');
                }
                s.push('"');
                in_text = true;
            }
            s.push(b as char);
            continue;
        }
        if in_text {
            s.push('"');
            in_text = false;
        }
        if !s.is_empty() && !s.ends_with('\n') {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
        if b == LF {
            s.push('\n');
        }
    }
    if in_text {
        s.push('"');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::parse;
    use expect_test::expect;

    #[test]
    fn a_receipt_as_bytes() {
        let doc = parse(
            "@center\n# Reçu\n## Librairie Zoé\n@left\nPayé le 03/02 — merci, à bientôt !\n\n| Article | Qté | Prix |\n|---|:-:|---:|\n| Cahier d'activités | 2 | 12,50 € |\n| **Total** | | **25,00 €** |\n---\n@center\n[qr] https://x.ci/v/1\n[page]\nœuvre “citée”\n",
        )
        .unwrap();
        let bytes = render(&doc, 32);
        expect![[r#"
            1b "@" 1b "t" 13 1b "a" 01 1b "E" 01 1d "!" 11 "Re" 87 "u" 0a
            1d "!" 00 1b "E" 00 1b "a" 01 1b "E" 01 1d "!" 01 "Librairie Zo" 82 0a
            1d "!" 00 1b "E" 00 1b "a" 00 "Pay" 82 " le 03/02 - merci, " 85 0a
            "bient" 93 "t !" 0a
            0a
            1b "a" 00 1b "E" 01 "Article" 1b "E" 00 "              " 1b "E" 01 "Qt" 82 1b "E" 00 "    " 1b "E" 01 "Prix" 1b "E" 00 0a
            "--------------------------------" 0a
            "Cahier d'activit" 82 "s    2  12,50 " d5 0a
            1b "E" 01 "Total" 1b "E" 00 "                    " 1b "E" 01 "25,00 " d5 1b "E" 00 0a
            1b "a" 00 "--------------------------------" 0a
            1b "a" 01 1d "(k" 04 00 "1A2" 00 1d "(k" 03 00 "1C" 06 1d "(k" 03 00 "1E1" 1d "(k" 13 00 "1P0https://x.ci/v/1" 1d "(k" 03 00 "1Q0" 0a
            1b "a" 01 "oeuvre " 22 "cit" 82 "e" 22 0a
            1b "a" 00 1b "d" 04 1d "V" 00"#]]
        .assert_eq(&dump(&bytes));
    }

    #[test]
    fn narrow_tables_wrap_their_widest_column() {
        let doc = parse("| Désignation très longue d'un article | > 1 000,00 € |\n").unwrap();
        let bytes = render(&doc, 24);
        expect![[r#"
            1b "@" 1b "t" 13 1b "a" 00 "D" 82 "signation   1 000,00 " d5 0a
            "tr" 8a "s longue" 0a
            "d'un article" 0a
            1b "a" 00 1b "d" 04 1d "V" 00"#]]
        .assert_eq(&dump(&bytes));
    }

    #[test]
    fn transcoding_to_pc858() {
        let mut out = Vec::new();
        encode(&ticket_text("àâçéèêëîïôùûüÿ ÀÇÉÈ € œ ✓\u{202F}"), &mut out);
        assert_eq!(
            out,
            [
                0x85, 0x83, 0x87, 0x82, 0x8A, 0x88, 0x89, 0x8C, 0x8B, 0x93, 0x97, 0x96, 0x81, 0x98,
                b' ', 0xB7, 0x80, 0x90, 0xD4, b' ', 0xD5, b' ', b'o', b'e', b' ', b'?', b' '
            ]
        );
    }
}
