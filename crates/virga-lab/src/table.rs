//! Text tables, drawn by `comfy-table`: the one renderer behind the lab's
//! terminal output and `summary.md`, and the CLI's listings.

use comfy_table::{Cell, CellAlignment, Table, TableComponent};

/// A plain-text table for the terminal: the header, a rule under it, then
/// the rows; columns two spaces apart, numbers right-aligned, text left.
pub fn text(columns: &[impl AsRef<str>], rows: &[Vec<String>]) -> String {
    let mut t = table(columns, rows);
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_style(TableComponent::HeaderLines, '-');
    // Padding is the gap between columns: none outside the first and last.
    let last = t.column_count().saturating_sub(1);
    for (i, c) in t.column_iter_mut().enumerate() {
        c.set_padding((u16::from(i > 0), u16::from(i < last)));
    }
    lines(&t)
}

/// A Markdown (GitHub) table; `|` in cells is escaped.
pub fn markdown(columns: &[impl AsRef<str>], rows: &[Vec<String>]) -> String {
    let escape = |s: &str| s.replace('|', "\\|");
    let columns: Vec<String> = columns.iter().map(|c| escape(c.as_ref())).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| escape(c)).collect())
        .collect();
    let mut t = table(&columns, &rows);
    t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    lines(&t)
}

fn table(columns: &[impl AsRef<str>], rows: &[Vec<String>]) -> Table {
    let mut t = Table::new();
    t.set_header(columns.iter().map(|c| Cell::new(c.as_ref())));
    for r in rows {
        t.add_row(r.iter().map(|c| {
            // Text left, numbers right: tables read like the studies'.
            let align = if is_number(c) {
                CellAlignment::Right
            } else {
                CellAlignment::Left
            };
            Cell::new(c).set_alignment(align)
        }));
    }
    t
}

/// The table's lines without trailing spaces, each ended by a newline.
fn lines(t: &Table) -> String {
    t.lines().map(|l| l.trim_end().to_string() + "\n").collect()
}

/// A number, or a ratio such as `2.5x`.
fn is_number(s: &str) -> bool {
    let s = s.strip_suffix('x').unwrap_or(s);
    s.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Vec<String>> {
        vec![
            vec!["iris".into(), "1.25".into(), "2.0x".into()],
            vec!["effnet".into(), "120.50".into(), "-".into()],
        ]
    }

    #[test]
    fn text_tables_align_numbers_right_and_text_left() {
        let t = text(&["function", "p50 ms", "cold/warm"], &rows());
        assert_eq!(
            t,
            "function  p50 ms  cold/warm\n\
             ---------------------------\n\
             iris        1.25       2.0x\n\
             effnet    120.50  -\n"
        );
    }

    #[test]
    fn markdown_tables_escape_pipes() {
        let t = markdown(&["a|b", "n"], &[vec!["x".into(), "1".into()]]);
        assert_eq!(t, "| a\\|b | n |\n|------|---|\n| x    | 1 |\n");
    }

    #[test]
    fn a_table_without_rows_is_its_header() {
        assert_eq!(text(&["only"], &[]), "only\n----\n");
    }
}
