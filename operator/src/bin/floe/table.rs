//! Every table the CLI prints goes through here: columns sized to their contents, numbers
//! right-aligned, missing values as `-`.

use serde_json::Value;

/// One column: the header and the JSON field it shows.
pub struct Col(pub &'static str, pub &'static str);

/// A cell's text.
pub fn cell(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Print `rows` (JSON objects) under `cols`.
pub fn print(cols: &[Col], rows: &[Value]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| cell(&r[c.1])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(c.0.len())
        })
        .collect();
    let numeric: Vec<bool> = (0..cols.len())
        .map(|i| {
            rows.iter()
                .all(|r| r[cols[i].1].is_number() || r[cols[i].1].is_null())
        })
        .collect();
    let line = |vals: Vec<String>| {
        let parts: Vec<String> = vals
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                if numeric[i] {
                    format!("{v:>w$}", w = widths[i])
                } else {
                    format!("{v:<w$}", w = widths[i])
                }
            })
            .collect();
        outln!("{}", parts.join("  ").trim_end());
    };
    line(cols.iter().map(|c| c.0.to_string()).collect());
    for r in cells {
        line(r);
    }
}
