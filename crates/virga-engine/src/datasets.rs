//! Datasets bundled in crates (`linfa-datasets`), as plain rows.

use crate::EngineError;

/// A labelled table.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: &'static str,
    pub rows: Vec<Vec<f64>>,
    /// Class id per row.
    pub labels: Vec<i64>,
    pub class_names: Vec<String>,
    pub feature_names: Vec<String>,
}

pub const NAMES: &[&str] = &["iris", "winequality"];

/// Rows, class ids and feature names of a linfa dataset (no type names: the
/// dataset type lives in `linfa`, which this crate does not depend on).
macro_rules! table_parts {
    ($ds:expr) => {{
        let ds = $ds;
        let rows: Vec<Vec<f64>> = ds.records.outer_iter().map(|r| r.to_vec()).collect();
        let labels: Vec<i64> = ds.targets.iter().map(|&t| t as i64).collect();
        (rows, labels, ds.feature_names().to_vec())
    }};
}

pub fn load(name: &str) -> Result<Table, EngineError> {
    let (name, (rows, labels, feature_names), class_names) = match name {
        "iris" => (
            "iris",
            table_parts!(linfa_datasets::iris()),
            ["setosa", "versicolor", "virginica"]
                .map(String::from)
                .to_vec(),
        ),
        "winequality" => {
            let parts = table_parts!(linfa_datasets::winequality());
            let max = parts.1.iter().copied().max().unwrap_or(0);
            (
                "winequality",
                parts,
                (0..=max).map(|q| q.to_string()).collect(),
            )
        }
        other => {
            return Err(EngineError::Unknown(format!(
                "unknown dataset {other:?}: use one of {}",
                NAMES.join(", ")
            )))
        }
    };
    Ok(Table {
        name,
        rows,
        labels,
        class_names,
        feature_names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_datasets_load() {
        let iris = load("iris").unwrap();
        assert_eq!(iris.rows.len(), 150);
        assert_eq!(iris.rows[0].len(), 4);
        assert_eq!(iris.class_names.len(), 3);
        let wine = load("winequality").unwrap();
        assert_eq!(wine.rows[0].len(), 11);
        assert!(wine.rows.len() > 1000);
        assert!(load("mnist").is_err());
    }
}
