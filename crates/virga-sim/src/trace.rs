//! Reading the Azure Functions 2019 trace (Shahrad et al., ATC'20; the
//! `AzurePublicDataset` repository's `AzureFunctionsDataset2019`).
//!
//! A directory holds, per day `NN` (01..14):
//! - `invocations_per_function_md.anon.dNN.csv`:
//!   `HashOwner,HashApp,HashFunction,Trigger,1,..,1440`, invocations per minute;
//! - optionally `function_durations_percentiles.anon.dNN.csv`:
//!   `HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,..`
//!   (milliseconds, cold starts excluded); the average, weighted by `Count`
//!   over the days read, becomes the function's run time;
//! - optionally `app_memory_percentiles.anon.dNN.csv`:
//!   `HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,..`;
//!   the app's average (weighted by `SampleCount`) becomes the memory of each
//!   of its functions' instances.
//!
//! A function is `(HashApp, HashFunction)`. Every row that cannot be read is
//! reported with its file and line; nothing is skipped silently.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::workload::{FunctionModel, Source, TriggerGroup, Workload};

const INVOCATIONS: &str = "invocations_per_function_md.anon.d";
const DURATIONS: &str = "function_durations_percentiles.anon.d";
const MEMORY: &str = "app_memory_percentiles.anon.d";
const MINUTES_PER_DAY: usize = 1440;

/// What the trace leaves out, and how many days to read.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceOptions {
    /// Days to read, from the first file on.
    pub days: u32,
    /// The trace has no cold-start times: every function gets this one.
    pub cold_start: Duration,
    /// For functions missing from the durations files.
    pub default_duration: Duration,
    /// For apps missing from the memory files.
    pub default_memory_mb: u32,
    /// Seeds the spread of invocations within their minute.
    pub seed: u64,
}

/// One row that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    pub file: PathBuf,
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// The bad rows of a trace, as one list.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRows(pub Vec<BadRow>);

impl fmt::Display for BadRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 20;
        for r in self.0.iter().take(SHOWN) {
            writeln!(f, "  {r}")?;
        }
        if self.0.len() > SHOWN {
            writeln!(f, "  ... and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// the directory has no invocation files
    #[error("{0}: no {INVOCATIONS}NN.csv file; point --trace at the unpacked AzureFunctionsDataset2019 directory")]
    NoFiles(PathBuf),
    /// fewer days than asked for
    #[error("{dir}: {want} day(s) asked for but {have} {INVOCATIONS}NN.csv file(s) found")]
    TooFewDays {
        dir: PathBuf,
        want: u32,
        have: usize,
    },
    /// a file could not be read
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// rows that could not be read
    #[error("{} bad row(s) in the trace:\n{rows}", rows.0.len())]
    BadRows { rows: BadRows },
}

/// Files of one kind, by day number, ascending.
fn day_files(dir: &Path, prefix: &str) -> Result<Vec<(u32, PathBuf)>, TraceError> {
    let io = |source| TraceError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(day) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(".csv"))
            .and_then(|d| d.parse::<u32>().ok())
        else {
            continue;
        };
        out.push((day, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Calls `row(line_number, fields)` for every data row of `path`, after
/// checking its header with `header`.
fn read_rows(
    path: &Path,
    bad: &mut Vec<BadRow>,
    mut header: impl FnMut(&[&str]) -> Result<(), String>,
    mut row: impl FnMut(&[&str]) -> Result<(), String>,
) -> Result<(), TraceError> {
    let file = File::open(path).map_err(|source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut n = 0;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|source| TraceError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if read == 0 {
            break;
        }
        n += 1;
        let text = line.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            continue;
        }
        let fields: Vec<&str> = text.split(',').collect();
        let checked = if n == 1 {
            header(&fields)
        } else {
            row(&fields)
        };
        if let Err(reason) = checked {
            bad.push(BadRow {
                file: path.to_path_buf(),
                line: n,
                reason,
            });
            if n == 1 {
                // Without a header the rest cannot be read.
                break;
            }
        }
    }
    Ok(())
}

fn column(header: &[&str], name: &str) -> Result<usize, String> {
    header
        .iter()
        .position(|h| h.trim() == name)
        .ok_or_else(|| format!("header has no `{name}` column"))
}

fn number<T: std::str::FromStr>(fields: &[&str], i: usize, what: &str) -> Result<T, String> {
    let v = fields
        .get(i)
        .ok_or_else(|| format!("missing `{what}` (column {})", i + 1))?;
    v.trim()
        .parse()
        .map_err(|_| format!("`{what}` is not a number: {v:?}"))
}

#[derive(Default)]
struct Weighted {
    sum: f64,
    weight: f64,
}

impl Weighted {
    fn add(&mut self, value: f64, weight: f64) {
        self.sum += value * weight;
        self.weight += weight;
    }

    fn mean(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.sum / self.weight)
    }
}

/// Adds the `(value, weight)` columns of every row of `paths` to
/// `into[key(row)]` (rows of functions or apps not replayed are passed over).
fn read_weighted(
    paths: &[PathBuf],
    (value, weight): (&str, &str),
    into: &mut [Weighted],
    bad: &mut Vec<BadRow>,
    key: impl Fn(&[&str]) -> Option<usize>,
) -> Result<(), TraceError> {
    for path in paths {
        let cols = Cell::new((0, 0));
        read_rows(
            path,
            bad,
            |h| {
                cols.set((column(h, value)?, column(h, weight)?));
                Ok(())
            },
            |f| {
                let v: f64 = number(f, cols.get().0, value)?;
                let w: f64 = number(f, cols.get().1, weight)?;
                if !(v.is_finite() && v >= 0.0) {
                    return Err(format!("`{value}` must be a number of at least 0: {v}"));
                }
                if let Some(i) = key(f) {
                    into[i].add(v, w.max(1.0));
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}

/// Reads `days` days of the trace in `dir`.
pub fn load(dir: &Path, opts: &TraceOptions) -> Result<Workload, TraceError> {
    let files = day_files(dir, INVOCATIONS)?;
    if files.is_empty() {
        return Err(TraceError::NoFiles(dir.to_path_buf()));
    }
    if files.len() < opts.days as usize {
        return Err(TraceError::TooFewDays {
            dir: dir.to_path_buf(),
            want: opts.days,
            have: files.len(),
        });
    }
    let files = &files[..opts.days as usize];
    let mut bad = Vec::new();
    let mut apps: Vec<String> = Vec::new();
    let mut app_index: HashMap<String, u32> = HashMap::new();
    let mut fn_index: HashMap<(String, String), usize> = HashMap::new();
    let mut triggers: Vec<TriggerGroup> = Vec::new();
    let mut counts: Vec<Vec<(u32, u32)>> = Vec::new();
    let mut fn_app: Vec<u32> = Vec::new();

    for (day, (_, path)) in files.iter().enumerate() {
        let base = (day * MINUTES_PER_DAY) as u32;
        read_rows(
            path,
            &mut bad,
            |h| {
                let named =
                    h.len() >= 4 && h[..4] == ["HashOwner", "HashApp", "HashFunction", "Trigger"];
                if named && h.len() == 4 + MINUTES_PER_DAY {
                    Ok(())
                } else {
                    Err(format!(
                        "header must be HashOwner,HashApp,HashFunction,Trigger,1..1440 ({} columns), found {} columns",
                        4 + MINUTES_PER_DAY,
                        h.len()
                    ))
                }
            },
            |f| {
                if f.len() != 4 + MINUTES_PER_DAY {
                    return Err(format!(
                        "{} fields, want {} (4 ids and 1440 minutes)",
                        f.len(),
                        4 + MINUTES_PER_DAY
                    ));
                }
                let trigger = TriggerGroup::parse(f[3]).ok_or_else(|| {
                    format!("unknown trigger {:?} (http, timer, event, queue, storage, orchestration, others)", f[3])
                })?;
                let mut minutes = Vec::new();
                for (m, v) in f[4..].iter().enumerate() {
                    let c: u32 = v
                        .parse()
                        .map_err(|_| format!("minute {}: not a count: {v:?}", m + 1))?;
                    if c > 0 {
                        minutes.push((base + m as u32, c));
                    }
                }
                let app = *app_index.entry(f[1].to_string()).or_insert_with(|| {
                    apps.push(f[1].to_string());
                    (apps.len() - 1) as u32
                });
                let key = (f[1].to_string(), f[2].to_string());
                let i = *fn_index.entry(key).or_insert_with(|| {
                    triggers.push(trigger);
                    counts.push(Vec::new());
                    fn_app.push(app);
                    counts.len() - 1
                });
                counts[i].extend(minutes);
                Ok(())
            },
        )?;
    }

    // The durations and memory of the days read, when given.
    let read_day = |d: &u32| files.iter().any(|(f, _)| f == d);
    let of_days_read = |prefix| -> Result<Vec<PathBuf>, TraceError> {
        Ok(day_files(dir, prefix)?
            .into_iter()
            .filter(|(d, _)| read_day(d))
            .map(|(_, p)| p)
            .collect())
    };
    let mut durations: Vec<Weighted> = (0..counts.len()).map(|_| Weighted::default()).collect();
    read_weighted(
        &of_days_read(DURATIONS)?,
        ("Average", "Count"),
        &mut durations,
        &mut bad,
        |f| {
            let key = (f.get(1)?.to_string(), f.get(2)?.to_string());
            fn_index.get(&key).copied()
        },
    )?;
    let mut memory: Vec<Weighted> = (0..apps.len()).map(|_| Weighted::default()).collect();
    read_weighted(
        &of_days_read(MEMORY)?,
        ("AverageAllocatedMb", "SampleCount"),
        &mut memory,
        &mut bad,
        |f| app_index.get(*f.get(1)?).map(|a| *a as usize),
    )?;

    if !bad.is_empty() {
        return Err(TraceError::BadRows { rows: BadRows(bad) });
    }
    let functions = counts
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            c.sort_unstable();
            let app = fn_app[i];
            FunctionModel {
                app,
                trigger: triggers[i],
                duration: durations[i].mean().map_or(opts.default_duration, |ms| {
                    Duration::from_secs_f64(ms / 1e3)
                }),
                cold_start: opts.cold_start,
                memory_mb: memory[app as usize]
                    .mean()
                    .map_or(opts.default_memory_mb, |mb| mb.round().max(1.0) as u32),
                source: Source::Counts(c),
            }
        })
        .collect();
    Ok(Workload {
        functions,
        apps,
        minutes: opts.days * MINUTES_PER_DAY as u32,
        seed: opts.seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(days: u32) -> TraceOptions {
        TraceOptions {
            days,
            cold_start: Duration::from_millis(500),
            default_duration: Duration::from_secs(1),
            default_memory_mb: 170,
            seed: 1,
        }
    }

    fn header() -> String {
        let mut h = "HashOwner,HashApp,HashFunction,Trigger".to_string();
        for m in 1..=1440 {
            h.push_str(&format!(",{m}"));
        }
        h
    }

    fn row(app: &str, func: &str, trigger: &str, at: &[(usize, u32)]) -> String {
        let mut mins = vec![0u32; 1440];
        for &(m, c) in at {
            mins[m] = c;
        }
        let cells: Vec<String> = mins.iter().map(|c| c.to_string()).collect();
        format!("o,{app},{func},{trigger},{}", cells.join(","))
    }

    #[test]
    fn reads_counts_durations_and_memory_across_days() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("invocations_per_function_md.anon.d01.csv"),
            format!(
                "{}\n{}\n{}\n",
                header(),
                row("a", "f", "http", &[(0, 2), (10, 1)]),
                row("b", "g", "timer", &[(5, 1)])
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("invocations_per_function_md.anon.d02.csv"),
            format!("{}\n{}\n", header(), row("a", "f", "http", &[(1, 4)])),
        )
        .unwrap();
        std::fs::write(
            d.join("function_durations_percentiles.anon.d01.csv"),
            "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0\no,a,f,200,3,,,\n",
        )
        .unwrap();
        std::fs::write(
            d.join("app_memory_percentiles.anon.d01.csv"),
            "HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1\no,b,10,300,250\n",
        )
        .unwrap();
        let w = load(d, &opts(2)).unwrap();
        assert_eq!(w.functions.len(), 2);
        assert_eq!(w.apps, vec!["a", "b"]);
        assert_eq!(w.minutes, 2880);
        let f = &w.functions[0];
        assert_eq!(f.source, Source::Counts(vec![(0, 2), (10, 1), (1441, 4)]));
        assert_eq!(f.duration, Duration::from_millis(200));
        assert_eq!(f.memory_mb, 170, "app a has no memory row: the default");
        let g = &w.functions[1];
        assert_eq!(g.trigger, TriggerGroup::Timer);
        assert_eq!(
            g.duration,
            Duration::from_secs(1),
            "no duration row: the default"
        );
        assert_eq!(g.memory_mb, 300);
        assert_eq!(w.totals().invocations, 8);
        // One day only.
        assert_eq!(load(d, &opts(1)).unwrap().totals().invocations, 4);
        assert!(matches!(
            load(d, &opts(3)),
            Err(TraceError::TooFewDays { have: 2, .. })
        ));
    }

    #[test]
    fn bad_rows_are_reported_with_their_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut broken = row("a", "g", "http", &[]);
        broken.push_str(",7");
        std::fs::write(
            d.join("invocations_per_function_md.anon.d01.csv"),
            format!(
                "{}\n{}\n{}\n{}\n{}\n",
                header(),
                row("a", "f", "http", &[(0, 1)]),
                broken,
                row("a", "h", "carrier-pigeon", &[]),
                row("a", "i", "http", &[]).replace(",0,0,0", ",x,0,0"),
            ),
        )
        .unwrap();
        let Err(TraceError::BadRows { rows }) = load(d, &opts(1)) else {
            panic!("bad rows must fail the load")
        };
        let lines: Vec<usize> = rows.0.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![3, 4, 5]);
        let text = TraceError::BadRows { rows }.to_string();
        assert!(
            text.contains("invocations_per_function_md.anon.d01.csv:3: 1445 fields"),
            "{text}"
        );
        assert!(
            text.contains(":4: unknown trigger \"carrier-pigeon\""),
            "{text}"
        );
        assert!(text.contains(":5: minute 1: not a count: \"x\""), "{text}");
    }

    #[test]
    fn a_directory_without_the_trace_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path(), &opts(1)).unwrap_err();
        assert!(matches!(e, TraceError::NoFiles(_)), "{e}");
    }
}
