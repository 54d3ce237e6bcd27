//! The source study's published figures beside this run's (`[[reference]]`
//! in a preset): each figure names the measured row it compares with (a
//! scenario, a function, config values) and the statistic (`measure`), and
//! [`join`] pairs them and says, per table, whether the shape agrees.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use virga_spec::pricing::Profile;

use crate::run::{Group, ScenarioResult};

/// One figure of the source study and the measured row it compares with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// The seed file, e.g. `000_b8f89c5eccb14a2b.txt`.
    pub study: String,
    /// The table or figure, as the study names it.
    pub table: String,
    /// The configuration, in the study's words.
    pub configuration: String,
    /// The metric, in the study's words.
    pub metric: String,
    pub value: f64,
    /// `ms`, `s`, `req/s`, `USD`, `count`.
    pub unit: String,
    /// What of this run it compares with.
    pub measure: Measure,
    /// 1-based index of the scenario; else the first with a matching group.
    #[serde(default)]
    pub scenario: Option<usize>,
    /// The preset's function (a sweep cell counts as its function).
    #[serde(default)]
    pub function: Option<String>,
    /// Config values the group must have, e.g. `{ users = 50 }`.
    #[serde(default, rename = "where")]
    pub matches: BTreeMap<String, toml::Value>,
    /// Pricing profile of cost and price measures (default: the first).
    #[serde(default)]
    pub profile: Option<String>,
    /// A caveat about the figure (an unstated unit, an estimate).
    #[serde(default)]
    pub note: Option<String>,
}

/// The statistic of a measured group a figure compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Measure {
    ClientMeanMs,
    ClientP50Ms,
    ClientMaxMs,
    InitMeanMs,
    DurationMeanMs,
    DurationP50Ms,
    InferenceMeanMs,
    /// A cold start's load plus the invocation, per request.
    LoadInferenceMeanMs,
    BilledMeanMs,
    ThroughputRps,
    /// Most successful requests in one second.
    PeakRps,
    #[serde(rename = "cost-per-1000-usd")]
    CostPer1000Usd,
    ColdStarts,
    /// Distinct instances that served the group.
    Instances,
    /// The tariff, not a measurement: price of 1 ms at the group's (or
    /// `where`'s) `memory_mb` under the profile.
    PricePerMsUsd,
}

impl Measure {
    fn unit(self) -> &'static str {
        match self {
            Measure::ThroughputRps | Measure::PeakRps => "req/s",
            Measure::CostPer1000Usd | Measure::PricePerMsUsd => "USD",
            Measure::ColdStarts | Measure::Instances => "count",
            _ => "ms",
        }
    }
}

/// What the study shows in one table and why this host may not.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceTable {
    pub study: String,
    pub table: String,
    /// The study's shape in words (who is faster, what grows with what).
    pub shape: String,
    /// The known reason this run may differ (loopback, 2 cores, a substitute).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A figure joined with this run's value.
#[derive(Debug, Clone, Serialize)]
pub struct Joined {
    pub study: String,
    pub table: String,
    pub configuration: String,
    pub metric: String,
    pub unit: String,
    pub seed: f64,
    /// In the figure's unit; none when nothing of this run matched.
    pub virga: Option<f64>,
    /// `virga / seed`.
    pub ratio: Option<f64>,
    pub note: Option<String>,
}

/// Per table: whether the orderings of the study hold here.
#[derive(Debug, Clone, Serialize)]
pub struct Shape {
    pub study: String,
    pub table: String,
    /// Pairs of figures (same metric, different values) compared.
    pub pairs: usize,
    /// Of those, how many are ordered here as in the study.
    pub agree: usize,
    /// One line for the report.
    pub line: String,
}

/// The section `Source study vs this run`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    pub rows: Vec<Joined>,
    pub tables: Vec<Shape>,
}

/// `v` in `from` converted to `to`, when the units are the same kind.
fn convert(v: f64, from: &str, to: &str) -> Option<f64> {
    match (from, to) {
        (a, b) if a == b => Some(v),
        ("ms", "s") => Some(v / 1000.0),
        ("s", "ms") => Some(v * 1000.0),
        ("count", "instances") => Some(v),
        _ => None,
    }
}

/// Checks a preset's references against its functions, scenario count and
/// pricing profiles.
pub fn check(
    refs: &[Reference],
    tables: &[ReferenceTable],
    functions: &[&str],
    scenarios: usize,
) -> Result<(), String> {
    for (i, r) in refs.iter().enumerate() {
        let at = format!("reference {} ({} {})", i + 1, r.table, r.configuration);
        if !r.value.is_finite() {
            return Err(format!("{at}: `value` must be a number"));
        }
        if convert(1.0, r.measure.unit(), &r.unit).is_none() {
            return Err(format!(
                "{at}: unit {:?} cannot hold {:?} (measured in {})",
                r.unit,
                r.measure,
                r.measure.unit()
            ));
        }
        if let Some(s) = r.scenario {
            if s == 0 || s > scenarios {
                return Err(format!(
                    "{at}: scenario {s} does not exist (1..={scenarios})"
                ));
            }
        }
        if let Some(f) = &r.function {
            if !functions.contains(&f.as_str()) {
                return Err(format!("{at}: unknown function {f:?}"));
            }
        }
        if let Some(p) = &r.profile {
            Profile::built_in(p).map_err(|e| format!("{at}: {e}"))?;
        }
        if r.measure == Measure::PricePerMsUsd
            && r.function.is_none()
            && !r.matches.contains_key("memory_mb")
        {
            return Err(format!(
                "{at}: price-per-ms-usd needs a function or `where = {{ memory_mb = .. }}`"
            ));
        }
    }
    for t in tables {
        if !refs
            .iter()
            .any(|r| r.study == t.study && r.table == t.table)
        {
            return Err(format!(
                "reference_table {:?}: no [[reference]] has this study and table",
                t.table
            ));
        }
    }
    Ok(())
}

/// A group's config value equals a preset's: numbers by value, strings and
/// booleans as they are.
fn same(have: &Value, want: &toml::Value) -> bool {
    let want_f64 = match want {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    };
    match (have.as_f64(), want_f64) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => match want {
            toml::Value::String(s) => have.as_str() == Some(s),
            toml::Value::Boolean(b) => have.as_bool() == Some(*b),
            _ => false,
        },
    }
}

fn number(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn matches(r: &Reference, g: &Group) -> bool {
    let function = g
        .config
        .get("function")
        .and_then(Value::as_str)
        .unwrap_or(&g.function);
    r.function.as_deref().is_none_or(|f| f == function)
        && r.matches
            .iter()
            .all(|(k, v)| g.config.get(k).is_some_and(|have| same(have, v)))
}

fn tariff_per_ms(profile: &Profile, memory_mb: f64) -> Option<f64> {
    let l = profile.lambda.as_ref()?;
    let gb_s = l.tiers.first()?.gb_second_usd;
    Some(gb_s * memory_mb / 1024.0 / 1000.0)
}

fn measure(r: &Reference, g: Option<&Group>, profiles: &[Profile]) -> Option<f64> {
    let profile = || match &r.profile {
        Some(p) => profiles
            .iter()
            .find(|x| &x.name == p)
            .cloned()
            .or_else(|| Profile::built_in(p).ok()),
        None => profiles.first().cloned(),
    };
    if r.measure == Measure::PricePerMsUsd {
        let memory = match r.matches.get("memory_mb") {
            Some(m) => number(m)?,
            None => g?.config.get("memory_mb").and_then(Value::as_f64)?,
        };
        return tariff_per_ms(&profile()?, memory);
    }
    let s = &g?.stats;
    match r.measure {
        Measure::ClientMeanMs => s.client.as_ref().map(|x| x.mean),
        Measure::ClientP50Ms => s.client.as_ref().map(|x| x.p50),
        Measure::ClientMaxMs => s.client.as_ref().map(|x| x.max),
        Measure::InitMeanMs => s.init.as_ref().map(|x| x.mean),
        Measure::DurationMeanMs => s.server_duration.as_ref().map(|x| x.mean),
        Measure::DurationP50Ms => s.server_duration.as_ref().map(|x| x.p50),
        Measure::LoadInferenceMeanMs => s.load_inference.as_ref().map(|x| x.mean),
        Measure::InferenceMeanMs => s.inference.as_ref().map(|x| x.mean),
        Measure::BilledMeanMs => s.billed_mean_ms,
        Measure::ThroughputRps => s.throughput_rps,
        Measure::PeakRps => s.peak_rps,
        Measure::CostPer1000Usd => match &r.profile {
            Some(p) => s.cost_per_1000.get(p).copied(),
            None => s.cost_per_1000.values().next().copied(),
        },
        Measure::ColdStarts => Some(s.cold as f64),
        Measure::Instances => Some(s.instances as f64),
        Measure::PricePerMsUsd => None,
    }
}

/// Joins `refs` with the groups of `scenarios` and judges each table's shape.
pub fn join(
    refs: &[Reference],
    tables: &[ReferenceTable],
    scenarios: &[ScenarioResult],
    profiles: &[Profile],
) -> Comparison {
    let rows: Vec<Joined> = refs
        .iter()
        .map(|r| {
            let group = scenarios
                .iter()
                .enumerate()
                .filter(|(i, _)| r.scenario.is_none_or(|s| s == i + 1))
                .flat_map(|(_, s)| s.groups.iter())
                .find(|g| matches(r, g));
            let virga =
                measure(r, group, profiles).and_then(|v| convert(v, r.measure.unit(), &r.unit));
            Joined {
                study: r.study.clone(),
                table: r.table.clone(),
                configuration: r.configuration.clone(),
                metric: r.metric.clone(),
                unit: r.unit.clone(),
                seed: r.value,
                virga,
                ratio: virga.filter(|_| r.value != 0.0).map(|v| v / r.value),
                note: r.note.clone(),
            }
        })
        .collect();
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in &rows {
        let k = (r.study.clone(), r.table.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let tables = keys
        .into_iter()
        .map(|(study, table)| {
            let mine: Vec<&Joined> = rows
                .iter()
                .filter(|r| r.study == study && r.table == table)
                .collect();
            let said = tables.iter().find(|t| t.study == study && t.table == table);
            shape(study, table, &mine, said)
        })
        .collect();
    Comparison { rows, tables }
}

fn shape(study: String, table: String, rows: &[&Joined], said: Option<&ReferenceTable>) -> Shape {
    let (mut pairs, mut agree) = (0, 0);
    let mut broken = Vec::new();
    for (i, a) in rows.iter().enumerate() {
        for b in &rows[i + 1..] {
            let (Some(va), Some(vb)) = (a.virga, b.virga) else {
                continue;
            };
            if a.metric != b.metric || a.seed == b.seed {
                continue;
            }
            pairs += 1;
            if (a.seed < b.seed) == (va < vb) {
                agree += 1;
            } else if broken.len() < 3 {
                let (lo, hi) = if a.seed < b.seed { (a, b) } else { (b, a) };
                broken.push(format!(
                    "{} < {} in the study, not here",
                    lo.configuration, hi.configuration
                ));
            }
        }
    }
    let claim = said.map_or(String::new(), |t| format!(" The study: {}.", t.shape));
    let line = if pairs == 0 {
        format!("Shape not judged: no two figures of one metric were measured here.{claim}")
    } else if agree == pairs {
        format!("Shape agrees: all {pairs} orderings of the study hold here.{claim}")
    } else {
        format!(
            "Shape differs: {agree} of {pairs} orderings hold ({}).{claim}{}",
            broken.join("; "),
            said.and_then(|t| t.reason.as_deref())
                .map_or(String::new(), |r| format!(" Known reason: {r}."))
        )
    };
    Shape {
        study,
        table,
        pairs,
        agree,
        line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::GroupStats;
    use crate::scenario::Kind;
    use crate::stats;

    fn group(function: &str, config: &[(&str, Value)], client: &[f64]) -> Group {
        Group {
            label: function.into(),
            function: function.into(),
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            stats: GroupStats {
                requests: client.len(),
                client: stats::summarize(client),
                throughput_rps: Some(40.0),
                ..GroupStats::default()
            },
            samples: Vec::new(),
            plot: Default::default(),
            wall_s: 1.0,
        }
    }

    fn scenario(groups: Vec<Group>) -> ScenarioResult {
        ScenarioResult {
            kind: Kind::Throughput,
            title: "t".into(),
            notes: vec![],
            columns: vec![],
            rows: vec![],
            groups,
            series: vec![],
        }
    }

    fn figure(configuration: &str, function: &str, users: u32, value: f64) -> Reference {
        Reference {
            study: "000.txt".into(),
            table: "Table 2".into(),
            configuration: configuration.into(),
            metric: "latency".into(),
            value,
            unit: "s".into(),
            measure: Measure::ClientMeanMs,
            scenario: Some(1),
            function: Some(function.into()),
            matches: [("users".to_string(), toml::Value::Integer(users.into()))].into(),
            profile: None,
            note: None,
        }
    }

    #[test]
    fn figures_join_the_rows_of_their_configuration() {
        let run = vec![scenario(vec![
            group("lambda", &[("users", 1.into())], &[100.0, 300.0]),
            group("lambda", &[("users", 8.into())], &[900.0, 1100.0]),
            group("fargate", &[("users", 8.into())], &[1500.0]),
        ])];
        let refs = vec![
            figure("Lambda, 1 user", "lambda", 1, 0.4),
            figure("Lambda, 8 users", "lambda", 8, 2.0),
            figure("Fargate, 8 users", "fargate", 8, 1.0),
            figure("Fargate, 99 users", "fargate", 99, 3.0),
        ];
        let said = vec![ReferenceTable {
            study: "000.txt".into(),
            table: "Table 2".into(),
            shape: "latency grows with users".into(),
            reason: Some("2 host cores".into()),
        }];
        check(&refs, &said, &["lambda", "fargate"], 1).unwrap();
        let c = join(&refs, &said, &run, &[]);
        // ms measured, seconds in the study: converted to the figure's unit.
        assert_eq!(c.rows[0].virga, Some(0.2));
        assert_eq!(c.rows[0].ratio, Some(0.5));
        assert_eq!(c.rows[1].virga, Some(1.0));
        assert_eq!(c.rows[2].virga, Some(1.5));
        assert_eq!(c.rows[3].virga, None, "no group with 99 users");
        // 3 measured pairs: 1 < 8 users holds, lambda-1 < fargate-8 holds,
        // fargate-8 < lambda-8 in the study but not here.
        assert_eq!(c.tables.len(), 1);
        let s = &c.tables[0];
        assert_eq!((s.pairs, s.agree), (3, 2), "{}", s.line);
        assert!(s.line.starts_with("Shape differs"), "{}", s.line);
        assert!(s.line.contains("Known reason: 2 host cores"), "{}", s.line);
    }

    #[test]
    fn references_are_checked() {
        let mut r = figure("x", "lambda", 1, 1.0);
        assert!(check(&[r.clone()], &[], &["lambda"], 1).is_ok());
        assert!(check(&[r.clone()], &[], &["other"], 1)
            .unwrap_err()
            .contains("unknown function"));
        assert!(check(&[r.clone()], &[], &["lambda"], 0)
            .unwrap_err()
            .contains("scenario 1"));
        r.unit = "USD".into();
        assert!(check(&[r], &[], &["lambda"], 1)
            .unwrap_err()
            .contains("unit"));
    }

    #[test]
    fn tariffs_need_no_measurement() {
        let r = Reference {
            measure: Measure::PricePerMsUsd,
            unit: "USD".into(),
            function: None,
            scenario: None,
            matches: [("memory_mb".to_string(), toml::Value::Integer(1024))].into(),
            ..figure("1024 MB", "lambda", 1, 0.0000000167)
        };
        let p = Profile::built_in("lambda-x86").unwrap();
        let c = join(&[r], &[], &[], &[p]);
        let v = c.rows[0].virga.unwrap();
        assert!((v - 0.0000000166667).abs() < 1e-12, "{v}");
    }
}
