//! How a numbering series writes its numbers: `{series}-{period}-{seq:04}` gives
//! `FAC-2026-0001`. Shared by the validator (the format is checked when the workflow is) and the
//! runtime (which writes each number it allocates).

/// Writes number `seq` of `series` in `period` with `format`.
pub fn format_number(format: &str, series: &str, period: &str, seq: i64) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = format;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| {
            format!(
                "`{{` at position {} is never closed",
                format.len() - rest.len() + open + 1
            )
        })?;
        let field = &after[..close];
        match field {
            "series" => out.push_str(series),
            "period" => out.push_str(period),
            "seq" => out.push_str(&seq.to_string()),
            f => match f.strip_prefix("seq:0").and_then(|w| w.parse::<usize>().ok()) {
                Some(width) if (1..=12).contains(&width) => {
                    out.push_str(&format!("{seq:0width$}"));
                }
                _ => {
                    return Err(format!(
                        "`{{{f}}}` is not a placeholder: use {{series}}, {{period}}, {{seq}} or {{seq:04}}"
                    ))
                }
            },
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err("a `}` is never opened".into());
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks a format: it parses and holds the sequence number.
pub fn check_format(format: &str) -> Result<(), String> {
    format_number(format, "S", "P", 1)?;
    if !format.contains("{seq") {
        return Err("the format has no `{seq}`: every number would be the same".into());
    }
    Ok(())
}

/// Checks a series name: capital letters, digits, `_` and `-`.
pub fn check_series(series: &str) -> Result<(), String> {
    if series.is_empty()
        || !series
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(format!(
            "`{series}` is not a series name: use capital letters, digits, `_` and `-`, such as `FAC`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let f = |fmt: &str, seq| format_number(fmt, "FAC", "2026", seq);
        assert_eq!(f("{series}-{period}-{seq:04}", 1).unwrap(), "FAC-2026-0001");
        assert_eq!(
            f("{series}-{period}-{seq:04}", 12345).unwrap(),
            "FAC-2026-12345"
        );
        assert_eq!(f("AV/{period}/{seq}", 7).unwrap(), "AV/2026/7");
        assert!(f("{series}-{numero}", 1)
            .unwrap_err()
            .contains("`{numero}` is not a placeholder"));
        assert!(f("{series-{seq}", 1).is_err());
        assert!(f("{seq:099}", 1).is_err());
        assert!(check_format("{series}-{period}")
            .unwrap_err()
            .contains("no `{seq}`"));
        assert!(check_format("FAC-{seq:06}").is_ok());
        assert!(check_series("FAC").is_ok());
        assert!(check_series("fac").is_err());
        assert!(check_series("").is_err());
    }
}
