//! Text for people: pure functions from the agent's answers (and `now`, in
//! milliseconds since the Unix epoch) to the strings meshctl prints.

mod events;
mod node;
mod peers;
mod progress;
mod services;
mod task;

pub use events::event_line;
pub use node::{health, node};
pub use peers::peers;
pub use progress::progress_line;
pub use services::{connections, service, services};
pub use task::{task, task_view, tasks_table};

use std::fmt::Display;

/// Columns separated by two spaces, each as wide as its widest cell; the last
/// column is not padded, so lines carry no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let headers = headers.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
    for row in std::iter::once(&headers).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key: value` lines with the values aligned.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(k, v)| {
            let pad = width - k.chars().count();
            format!("{k}:{:pad$} {v}\n", "")
        })
        .collect()
}

/// How long ago `then_ms` was, in the largest whole unit: `5s`, `3m`, `2h`,
/// `4d`. A time in the future (clock skew between hosts) counts as now.
pub fn age(now_ms: u64, then_ms: u64) -> String {
    duration(now_ms.saturating_sub(then_ms))
}

/// A span of milliseconds in the largest whole unit: `5s`, `3m`, `2h`, `4d`.
pub fn duration(ms: u64) -> String {
    let secs = ms / 1_000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The value, or `-` when there is none.
fn or_dash<T: Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_use_the_largest_whole_unit() {
        assert_eq!(age(10_000, 10_000), "0s");
        assert_eq!(age(10_000, 4_500), "5s");
        assert_eq!(age(200_000, 20_000), "3m");
        assert_eq!(age(2 * 3_600_000 + 59_000, 0), "2h");
        assert_eq!(age(3 * 86_400_000, 0), "3d");
        assert_eq!(duration(59_999), "59s");
        assert_eq!(duration(60_000), "1m");
        assert_eq!(duration(86_399_999), "23h");
    }

    #[test]
    fn future_times_are_now() {
        assert_eq!(age(1_000, 9_000), "0s");
    }

    #[test]
    fn table_aligns_columns_without_trailing_blanks() {
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned(), "x".to_owned()],
            vec!["bbbbbb".to_owned(), "v".to_owned(), String::new()],
        ];
        assert_eq!(
            table(&["ID", "VALUE", "LAST"], &rows),
            "ID      VALUE       LAST\n\
             a       long value  x\n\
             bbbbbb  v\n"
        );
    }

    #[test]
    fn empty_table_is_its_header() {
        assert_eq!(table(&["ID", "NAME"], &[]), "ID  NAME\n");
    }

    #[test]
    fn key_values_align() {
        let text = key_values(&[("id", "t1".into()), ("exit code", "-".into())]);
        assert_eq!(text, "id:        t1\nexit code: -\n");
    }
}
