//! Arrival traces: per-interval counts (e.g. uploads per minute of the FIFA
//! 1998 World Cup trace) or one row of an Azure-Functions-style invocation
//! CSV (`HashOwner,HashApp,HashFunction,Trigger,1,2,...,1440`), turned into
//! a schedule of arrival offsets.

use std::path::Path;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::LabError;

/// Arrival offsets: `counts[i]` arrivals uniformly random within interval
/// `i` of `interval_s` wall seconds, sorted.
pub fn schedule(counts: &[u32], interval_s: f64, seed: u64) -> Vec<Duration> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (i, &c) in counts.iter().enumerate() {
        let start = i as f64 * interval_s;
        let mut v: Vec<f64> = (0..c)
            .map(|_| start + rng.random::<f64>() * interval_s)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        out.extend(v.into_iter().map(Duration::from_secs_f64));
    }
    out
}

/// The per-minute counts of row `row` (0-based, after the header) of an
/// Azure-Functions-style CSV: the columns whose header is a number.
pub fn azure_counts(path: &Path, row: usize) -> Result<Vec<u32>, LabError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| LabError::Io(path.display().to_string(), e))?;
    parse_azure(&text, row).map_err(|m| LabError::Config(format!("{}: {m}", path.display())))
}

/// [`azure_counts`] of CSV text (public for the fuzz target and its
/// property test).
#[doc(hidden)]
pub fn parse_azure(text: &str, row: usize) -> Result<Vec<u32>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty file: expected a header line")?
        .split(',')
        .map(str::trim)
        .collect();
    let minute_cols: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| h.parse::<u32>().is_ok())
        .map(|(i, _)| i)
        .collect();
    if minute_cols.is_empty() {
        return Err("no per-minute columns (headers 1, 2, ...) in the header".into());
    }
    let line = lines
        .nth(row)
        .ok_or_else(|| format!("no data row {row} (csv_row counts from 0)"))?;
    let cells: Vec<&str> = line.split(',').map(str::trim).collect();
    minute_cols
        .iter()
        .map(|&i| {
            let c = cells.get(i).copied().unwrap_or("");
            c.parse::<u32>()
                .map_err(|_| format!("row {row}, column {:?}: {c:?} is not a count", header[i]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_puts_each_count_in_its_interval() {
        let s = schedule(&[12, 11, 11, 10, 10], 6.0, 1998);
        assert_eq!(s.len(), 54);
        assert!(s.windows(2).all(|w| w[0] <= w[1]));
        let in_first = s.iter().filter(|d| d.as_secs_f64() < 6.0).count();
        assert_eq!(in_first, 12);
        assert!(s.last().unwrap().as_secs_f64() < 30.0);
        assert_eq!(s, schedule(&[12, 11, 11, 10, 10], 6.0, 1998));
    }

    #[test]
    fn azure_rows_parse() {
        let csv = "HashOwner,HashApp,HashFunction,Trigger,1,2,3\n\
                   a,b,c,http,5,0,7\n\
                   d,e,f,timer,1,1,1\n";
        assert_eq!(parse_azure(csv, 0).unwrap(), vec![5, 0, 7]);
        assert_eq!(parse_azure(csv, 1).unwrap(), vec![1, 1, 1]);
        assert!(parse_azure(csv, 2).unwrap_err().contains("no data row 2"));
        assert!(parse_azure("a,b\n1,2\n", 0)
            .unwrap_err()
            .contains("per-minute"));
        assert!(parse_azure("x,1\nq,zz\n", 0)
            .unwrap_err()
            .contains("not a count"));
    }
}
