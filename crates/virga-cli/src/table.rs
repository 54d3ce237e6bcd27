//! Output formats for listings: aligned tables (the lab's renderer), JSON, CSV.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn csv_cell(v: &Value) -> String {
    let s = match v {
        Value::Number(n) => n.to_string(),
        other => cell(other),
    };
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Prints `rows` (the API's answers) with the given columns.
pub fn print(rows: &[impl Serialize], columns: &[&str], format: Format) {
    // Through JSON values: cells are read by column name, and JSON output
    // keeps the key order it always had.
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::to_value(r).expect("API answers serialise"))
        .collect();
    let rows = &rows[..];
    match format {
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(rows).unwrap_or_default());
        }
        Format::Csv => {
            println!("{}", columns.join(","));
            for r in rows {
                let line: Vec<String> = columns.iter().map(|c| csv_cell(&r[*c])).collect();
                println!("{}", line.join(","));
            }
        }
        Format::Table => print!("{}", render(rows, columns)),
    }
}

/// An aligned text table of `rows`' `columns`.
pub fn render(rows: &[Value], columns: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    virga_lab::table::text(columns, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_csv_quotes() {
        let rows = vec![
            json!({"a": "x", "b": 1.5}),
            json!({"a": "long,value", "b": null}),
        ];
        let t = render(&rows, &["a", "b"]);
        assert_eq!(
            t,
            "a           b\n----------------\nx           1.50\nlong,value\n"
        );
        assert_eq!(csv_cell(&json!("long,value")), "\"long,value\"");
        assert_eq!(csv_cell(&json!(3)), "3");
    }
}
