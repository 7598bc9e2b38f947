//! Plain-text tables and the formatting of the node's values for people.

use serde_json::Value;

/// Widest a cell is shown; longer text (outputs, errors) is cut with `…`.
const MAX_CELL: usize = 60;

/// Rows under a header, each column as wide as its widest cell.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    min_widths: Vec<usize>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
            min_widths: Vec::new(),
        }
    }

    /// Columns at least this wide, so that tables rendered apart line up.
    pub fn min_widths(&mut self, widths: &[usize]) {
        self.min_widths = widths.to_vec();
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.into_iter().map(|c| cell(&c)).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table, header first; the last column is not padded.
    pub fn render(&self) -> String {
        self.render_rows(true)
    }

    /// The rows alone, as wide as their own cells (for rows printed one
    /// batch at a time under a header printed once).
    pub fn render_body(&self) -> String {
        self.render_rows(false)
    }

    fn render_rows(&self, with_header: bool) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self
            .header
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let min = self.min_widths.get(i).copied().unwrap_or(0);
                h.chars().count().max(min)
            })
            .collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        let lines = with_header
            .then_some(&header)
            .into_iter()
            .chain(self.rows.iter());
        for row in lines {
            let mut line = String::new();
            for (i, c) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(c);
                } else {
                    let pad = widths[i].saturating_sub(c.chars().count());
                    line.push_str(c);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `text` on one line and at most [`MAX_CELL`] characters.
pub fn cell(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one_line = one_line.trim();
    match one_line.char_indices().nth(MAX_CELL - 1) {
        Some((at, _)) if one_line.chars().count() > MAX_CELL => {
            format!("{}…", &one_line[..at])
        }
        _ => one_line.to_string(),
    }
}

/// A JSON value for a cell: a string as its text, the rest as JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON value printed on its own: a string as its text, the rest as
/// indented JSON.
pub fn block(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
    }
}

/// Milliseconds since the Unix epoch, as UTC time to the second.
pub fn time(value: &Value) -> String {
    value
        .as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| text(value))
}

/// A byte count, in the units the node's flags use.
pub fn size(value: &Value) -> String {
    let Some(bytes) = value.as_u64() else {
        return text(value);
    };
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut amount = bytes as f64;
    let mut unit = 0;
    while amount >= 1024.0 && unit + 1 < UNITS.len() {
        amount /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{amount:.1} {}", UNITS[unit])
    }
}

/// A duration in milliseconds.
pub fn millis(value: &Value) -> String {
    match value.as_u64() {
        Some(ms) => format!("{ms}ms"),
        None => text(value),
    }
}

/// `ok`, or `FAILED` for what went wrong (easy to spot in a column).
pub fn outcome(ok: &Value) -> String {
    match ok.as_bool() {
        Some(true) => "ok".into(),
        Some(false) => "FAILED".into(),
        None => text(ok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_line_up_and_long_cells_are_cut() {
        let mut table = Table::new(&["NAME", "KIND"]);
        table.row(vec!["echo".into(), "handler".into()]);
        table.row(vec!["a-longer-name".into(), "x\ny".into()]);
        assert_eq!(
            table.render(),
            "NAME           KIND\necho           handler\na-longer-name  x y\n"
        );
        let long = "é".repeat(100);
        let shown = cell(&long);
        assert_eq!(shown.chars().count(), MAX_CELL);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn values_are_shown_for_people() {
        assert_eq!(size(&json!(512)), "512 B");
        assert_eq!(size(&json!(1536)), "1.5 KiB");
        assert_eq!(size(&json!(3 * 1024 * 1024)), "3.0 MiB");
        assert_eq!(time(&json!(0)), "1970-01-01 00:00:00Z");
        assert_eq!(text(&json!("a")), "a");
        assert_eq!(text(&json!({"a": 1})), "{\"a\":1}");
        assert_eq!(outcome(&json!(false)), "FAILED");
    }
}
