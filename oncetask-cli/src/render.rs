//! Human output: aligned tables, short durations and times.

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// A plain text table: a header row, then rows, columns padded to the
/// widest cell; numeric columns right-aligned.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers (a leading `>` right-aligns a column).
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers
                .iter()
                .map(|h| h.trim_start_matches('>').to_owned())
                .collect(),
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra ones dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Writes the table; the last column is not padded.
    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().take(columns).enumerate() {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let empty = String::new();
        let lines = std::iter::once(&self.headers).chain(self.rows.iter());
        for row in lines {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).unwrap_or(&empty);
                let pad = w.saturating_sub(width(cell));
                if i > 0 {
                    line.push_str("  ");
                }
                if self.right[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i + 1 < columns {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// `s` cut to at most `max` characters, with `…` when cut; line breaks become spaces.
pub fn truncate(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if width(&flat) <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A duration in at most two units: `45s`, `3m 12s`, `2h 5m`, `4d 3h`,
/// `850ms` below a second.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.subsec_millis());
    }
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m {seconds}s"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// `t` relative to `now`: `in 3m 12s`, `5s ago`, `now`.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if t == now {
        return "now".to_owned();
    }
    match (t - now).to_std() {
        Ok(ahead) => format!("in {}", duration(ahead)),
        Err(_) => format!("{} ago", duration((now - t).to_std().unwrap_or_default())),
    }
}

/// An RFC 3339 UTC time, to the millisecond when it has any.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// An RFC 3339 time followed by its distance from `now`.
pub fn time_and_relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ({})", time(t), relative(t, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn durations_read_at_a_glance() {
        let s = Duration::from_secs;
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(s(45)), "45s");
        assert_eq!(duration(s(192)), "3m 12s");
        assert_eq!(duration(s(2 * 3600 + 300 + 7)), "2h 5m");
        assert_eq!(duration(s(4 * 86_400 + 3 * 3600 + 60)), "4d 3h");
    }

    #[test]
    fn relative_times() {
        let now: DateTime<Utc> = "2025-01-06T09:00:00Z".parse().expect("a time");
        assert_eq!(relative(now + TimeDelta::seconds(75), now), "in 1m 15s");
        assert_eq!(relative(now - TimeDelta::seconds(5), now), "5s ago");
        assert_eq!(relative(now, now), "now");
    }

    #[test]
    fn tables_align_and_truncate() {
        let mut table = Table::new(&["ID", ">N", "NOTE"]);
        table.row(vec!["a".into(), "10".into(), "x".into()]);
        table.row(vec!["long-id".into(), "2".into(), String::new()]);
        let mut out = Vec::new();
        table.write(&mut out).expect("write");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "ID        N  NOTE\na        10  x\nlong-id   2\n"
        );
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("a\nb", 10), "a b");
    }
}
