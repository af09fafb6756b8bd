//! What the read commands (`hosts`, `services`, `peers`) print: aligned plain-text tables
//! for people, JSON for programs, and the short ages both use.
//!
//! Tables have no borders and no colours, so they survive `grep`, `awk` and log files; a
//! cell never holds a tab or a newline. Nothing here talks to a registry.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// A table of text cells, printed with each column padded to its widest cell.
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column titles.
    pub(crate) fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; it must have one cell per column.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells.into_iter().map(one_line).collect());
    }

    /// The table as text, one line per row after the header, each ending in `\n`. Columns
    /// are separated by two spaces; the last one is not padded, so lines carry no trailing
    /// blanks.
    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header = self
            .header
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>();
        for cells in std::iter::once(&header).chain(&self.rows) {
            let last = cells.len().saturating_sub(1);
            for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
                out.push_str(cell);
                if i < last {
                    let pad = width - cell.chars().count() + 2;
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// Tabs and line breaks would break the alignment (and could forge rows): shown as spaces.
fn one_line(cell: String) -> String {
    if cell.contains(['\t', '\n', '\r']) {
        cell.replace(['\t', '\n', '\r'], " ")
    } else {
        cell
    }
}

/// Writes `text` to stdout and flushes it, so that a pipe reader (`hosts --watch | ...`)
/// sees each update as soon as it is printed. Returns `Ok(false)` when the reader has gone
/// away (`discovery hosts web | head -1`): like other Unix tools, the command then just
/// stops, without an error.
pub(crate) fn print(text: &str) -> io::Result<bool> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// A response body as indented JSON with a final newline (for one-shot `--json`).
pub(crate) fn json_pretty<T: Serialize>(value: &T) -> String {
    // Serializing our own wire types cannot fail: they hold no maps with non-string keys.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// A response body as one line of JSON (for `--watch --json`: one document per line).
pub(crate) fn json_line<T: Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string(value).unwrap_or_default();
    text.push('\n');
    text
}

/// How long ago an RFC 3339 timestamp was, in short form (`4s`, `2m05s`); `-` when the
/// text is not a timestamp. A time in the future (clocks of two machines disagree) shows
/// as `0s`.
pub(crate) fn age_of_timestamp(rfc3339: &str, now: SystemTime) -> String {
    match humantime::parse_rfc3339_weak(rfc3339) {
        Ok(then) => short_duration(now.duration_since(then).unwrap_or_default()),
        Err(_) => "-".to_owned(),
    }
}

/// A duration in whole seconds, the two largest units only: `4s`, `2m05s`, `3h07m`, `2d04h`.
pub(crate) fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_their_widest_cell_without_trailing_blanks() {
        let mut table = Table::new(&["SERVICE", "HOSTS"]);
        table.row(vec!["payments".into(), "3".into()]);
        table.row(vec!["db".into(), "12".into()]);
        assert_eq!(
            table.render(),
            "SERVICE   HOSTS\npayments  3\ndb        12\n"
        );
    }

    #[test]
    fn a_cell_cannot_break_the_line() {
        let mut table = Table::new(&["A", "B"]);
        table.row(vec!["x\ny".into(), "1\t2".into()]);
        assert_eq!(table.render(), "A    B\nx y  1 2\n");
    }

    #[test]
    fn ages_are_short_and_never_negative() {
        let now = humantime::parse_rfc3339("2026-11-28T12:02:05Z").unwrap();
        assert_eq!(
            age_of_timestamp("2026-11-28T12:00:00.123456Z", now),
            "2m04s"
        );
        assert_eq!(age_of_timestamp("2026-11-28T12:02:09.000001Z", now), "0s");
        assert_eq!(age_of_timestamp("yesterday", now), "-");
        assert_eq!(
            short_duration(Duration::from_secs(3 * 3600 + 7 * 60)),
            "3h07m"
        );
        assert_eq!(
            short_duration(Duration::from_secs(2 * 86400 + 4 * 3600)),
            "2d04h"
        );
    }
}
