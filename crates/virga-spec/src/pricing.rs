//! Pricing profiles: dated price tables plus billing rules that turn usage
//! into cost, with every line of the arithmetic kept so it can be shown.
//!
//! Built-in profiles (`lambda-x86`, `lambda-arm64`, `fargate-x86`,
//! `fargate-arm64`, `vm`) are TOML files in `crates/virga-spec/profiles/`;
//! users write their own in the same format for another region or date.

use serde::{Deserialize, Serialize};

use crate::manifest::Mode;
use crate::record::{InvocationRecord, Status};

/// AWS's month for monthly prices: 730 hours.
pub const HOURS_PER_MONTH: f64 = 730.0;
pub const SECONDS_PER_MONTH: f64 = HOURS_PER_MONTH * 3600.0;

const BUILT_IN: &[(&str, &str)] = &[
    ("lambda-x86", include_str!("../profiles/lambda-x86.toml")),
    (
        "lambda-x86-eu-south-1",
        include_str!("../profiles/lambda-x86-eu-south-1.toml"),
    ),
    (
        "lambda-arm64",
        include_str!("../profiles/lambda-arm64.toml"),
    ),
    ("fargate-x86", include_str!("../profiles/fargate-x86.toml")),
    (
        "fargate-arm64",
        include_str!("../profiles/fargate-arm64.toml"),
    ),
    ("vm", include_str!("../profiles/vm.toml")),
];

/// Why a profile was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PricingError {
    /// {0}: {1}
    #[error("{0}: {1}")]
    Invalid(String, String),
    /// no built-in profile {0}
    #[error("no built-in pricing profile {0:?}: use one of {1} or the path of a profile file")]
    Unknown(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Lambda,
    Fargate,
    Vm,
}

/// One GB-second price tier (monthly usage up to a bound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub up_to_gb_seconds: Option<f64>,
    pub gb_second_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaRates {
    pub requests_per_million_usd: f64,
    /// From this date (YYYY-MM-DD) the init phase of on-demand invocations is billed.
    pub init_billed_from: Option<String>,
    #[serde(default)]
    pub ephemeral_gb_second_usd: f64,
    #[serde(default)]
    pub provisioned_gb_second_usd: f64,
    #[serde(default)]
    pub provisioned_duration_gb_second_usd: f64,
    /// SnapStart: the snapshot cache of a function version, per GB-second
    /// of its memory size while the version exists (a forked instance's
    /// template here).
    #[serde(default)]
    pub snap_start_cache_gb_second_usd: Option<f64>,
    /// SnapStart: each restore, per GB of memory size.
    #[serde(default)]
    pub snap_start_restore_gb_usd: Option<f64>,
    pub tiers: Vec<Tier>,
}

/// Lambda's shortest SnapStart cache charge per version: three hours.
const SNAP_START_MIN_CACHE_S: f64 = 3.0 * 3600.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FargateRates {
    pub vcpu_hour_usd: f64,
    pub gb_hour_usd: f64,
    /// Minimum billed seconds per task.
    pub minimum_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRates {
    pub instance: String,
    pub vcpu: f64,
    pub memory_gb: f64,
    pub hourly_usd: f64,
}

/// A dated price table and its billing rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub kind: Kind,
    pub region: String,
    pub architecture: String,
    /// When the prices were taken (YYYY-MM-DD).
    pub taken: String,
    pub source: Option<String>,
    pub lambda: Option<LambdaRates>,
    pub fargate: Option<FargateRates>,
    pub vm: Option<VmRates>,
}

/// One line of a bill: quantity x rate = cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub item: String,
    pub quantity: f64,
    pub unit: String,
    pub rate_usd: f64,
    pub cost_usd: f64,
}

/// A priced workload: the lines, their total, and how it was computed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bill {
    pub profile: String,
    pub total_usd: f64,
    pub lines: Vec<Line>,
    /// The rules applied, in words.
    pub explain: Vec<String>,
}

impl Bill {
    fn new(profile: &Profile) -> Bill {
        Bill {
            profile: profile.name.clone(),
            total_usd: 0.0,
            lines: Vec::new(),
            explain: vec![format!(
                "{} prices, {} {}, taken {}{}",
                profile.name,
                profile.region,
                profile.architecture,
                profile.taken,
                profile
                    .source
                    .as_deref()
                    .map(|s| format!(" from {s}"))
                    .unwrap_or_default()
            )],
        }
    }

    fn add(&mut self, item: impl Into<String>, quantity: f64, unit: &str, rate_usd: f64) {
        let cost = quantity * rate_usd;
        self.total_usd += cost;
        self.lines.push(Line {
            item: item.into(),
            quantity,
            unit: unit.to_string(),
            rate_usd,
            cost_usd: cost,
        });
    }

    fn note(&mut self, s: impl Into<String>) {
        self.explain.push(s.into());
    }
}

fn valid_date(d: &str) -> bool {
    chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok()
}

impl Profile {
    /// Names of the built-in profiles.
    pub fn built_in_names() -> Vec<&'static str> {
        BUILT_IN.iter().map(|(n, _)| *n).collect()
    }

    /// A built-in profile by name.
    pub fn built_in(name: &str) -> Result<Profile, PricingError> {
        let (_, text) = BUILT_IN.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            PricingError::Unknown(name.to_string(), Self::built_in_names().join(", "))
        })?;
        Profile::parse(text, name)
    }

    /// Parses and validates a profile file; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Profile, PricingError> {
        let p: Profile = toml::from_str(text).map_err(|e| {
            PricingError::Invalid(source.to_string(), e.to_string().trim().to_string())
        })?;
        p.validate()
            .map_err(|m| PricingError::Invalid(source.to_string(), m))?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), String> {
        if !valid_date(&self.taken) {
            return Err(format!(
                "field `taken`: {:?} is not a date (YYYY-MM-DD)",
                self.taken
            ));
        }
        let sections = [
            self.lambda.is_some(),
            self.fargate.is_some(),
            self.vm.is_some(),
        ];
        let want = match self.kind {
            Kind::Lambda => 0,
            Kind::Fargate => 1,
            Kind::Vm => 2,
        };
        let names = ["[lambda]", "[fargate]", "[vm]"];
        if !sections[want] || sections.iter().filter(|s| **s).count() != 1 {
            return Err(format!(
                "a profile of kind {:?} needs exactly one section, {}",
                self.kind, names[want]
            ));
        }
        let non_negative = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "field `{field}`: {v} is not a price (a number >= 0)"
                ))
            }
        };
        if let Some(l) = &self.lambda {
            non_negative("requests_per_million_usd", l.requests_per_million_usd)?;
            non_negative("ephemeral_gb_second_usd", l.ephemeral_gb_second_usd)?;
            non_negative("provisioned_gb_second_usd", l.provisioned_gb_second_usd)?;
            non_negative(
                "provisioned_duration_gb_second_usd",
                l.provisioned_duration_gb_second_usd,
            )?;
            for (field, v) in [
                (
                    "snap_start_cache_gb_second_usd",
                    l.snap_start_cache_gb_second_usd,
                ),
                ("snap_start_restore_gb_usd", l.snap_start_restore_gb_usd),
            ] {
                if let Some(v) = v {
                    non_negative(field, v)?;
                }
            }
            if let Some(d) = &l.init_billed_from {
                if !valid_date(d) {
                    return Err(format!(
                        "field `init_billed_from`: {d:?} is not a date (YYYY-MM-DD)"
                    ));
                }
            }
            if l.tiers.is_empty() {
                return Err(
                    "[lambda] needs at least one [[lambda.tiers]] with gb_second_usd".into(),
                );
            }
            let mut last = 0.0;
            for (i, t) in l.tiers.iter().enumerate() {
                non_negative("gb_second_usd", t.gb_second_usd)?;
                match t.up_to_gb_seconds {
                    Some(b) if b > last && i + 1 < l.tiers.len() => last = b,
                    None if i + 1 == l.tiers.len() => {}
                    _ => {
                        return Err("[[lambda.tiers]]: bounds must grow, and only the last tier has no up_to_gb_seconds".into())
                    }
                }
            }
        }
        if let Some(f) = &self.fargate {
            non_negative("vcpu_hour_usd", f.vcpu_hour_usd)?;
            non_negative("gb_hour_usd", f.gb_hour_usd)?;
            non_negative("minimum_seconds", f.minimum_seconds)?;
        }
        if let Some(v) = &self.vm {
            non_negative("hourly_usd", v.hourly_usd)?;
            if v.vcpu <= 0.0 || v.memory_gb <= 0.0 {
                return Err("[vm]: vcpu and memory_gb must be positive".into());
            }
        }
        Ok(())
    }

    /// Whether this profile bills the init phase on `date` (YYYY-MM-DD or RFC 3339).
    pub fn bills_init_on(&self, date: &str) -> bool {
        let day = date.get(..10).unwrap_or(date);
        match self
            .lambda
            .as_ref()
            .and_then(|l| l.init_billed_from.as_deref())
        {
            Some(from) => day >= from,
            None => false,
        }
    }

    /// Lambda's billed duration of one invocation under this profile.
    pub fn lambda_billed_ms(&self, duration_ms: f64, init_ms: Option<f64>, date: &str) -> u64 {
        let init = init_ms.filter(|_| self.bills_init_on(date));
        crate::billing::billed_ms(duration_ms, init)
    }
}

/// Adds tiered GB-second charges for `gb_seconds` of monthly usage.
fn add_tiered(bill: &mut Bill, rates: &LambdaRates, gb_seconds: f64) {
    let mut floor = 0.0;
    for (i, t) in rates.tiers.iter().enumerate() {
        let ceiling = t.up_to_gb_seconds.unwrap_or(f64::INFINITY);
        let here = (gb_seconds.min(ceiling) - floor).max(0.0);
        if i == 0 || here > 0.0 {
            let label = if gb_seconds <= ceiling && i == 0 {
                "compute".to_string()
            } else {
                format!("compute, tier {} (GB-s {floor:.0} to {ceiling:.0})", i + 1)
            };
            bill.add(label, here, "GB-s", t.gb_second_usd);
        }
        if gb_seconds <= ceiling {
            break;
        }
        floor = ceiling;
    }
}

/// Fargate's task sizes: vCPU and the memory range (GB) each allows.
const FARGATE_SIZES: &[(f64, f64, f64)] = &[
    (0.25, 0.5, 2.0),
    (0.5, 1.0, 4.0),
    (1.0, 2.0, 8.0),
    (2.0, 4.0, 16.0),
    (4.0, 8.0, 30.0),
    (8.0, 16.0, 60.0),
    (16.0, 32.0, 120.0),
];

/// The smallest Fargate task with at least `vcpu` and `memory_mb`.
pub fn fargate_size(vcpu: f64, memory_mb: u32) -> (f64, f64) {
    let gb = f64::from(memory_mb) / 1024.0;
    for &(cpu, lo, hi) in FARGATE_SIZES {
        if cpu + 1e-9 >= vcpu && gb <= hi {
            // Fargate memory comes in whole GB above 0.5.
            let mem = if gb <= 0.5 { 0.5 } else { gb.ceil() };
            return (cpu, mem.max(lo));
        }
    }
    let (cpu, _, hi) = FARGATE_SIZES[FARGATE_SIZES.len() - 1];
    (cpu, hi)
}

/// A hypothetical workload for [`estimate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub memory_mb: u32,
    pub duration_ms: f64,
    pub requests: u64,
    pub init_ms: Option<f64>,
    /// Share of requests that are cold starts (pay `init_ms`).
    pub cold_ratio: f64,
    /// Fargate/VM vCPU per task; default: the Lambda share of `memory_mb`.
    pub cpu: Option<f64>,
    /// Fargate: run one long-lived task for this many hours (service) instead
    /// of one task per request (job). VM: hours on (default: a month).
    pub hours: Option<f64>,
    /// The date the rules are applied on (YYYY-MM-DD).
    pub as_of: String,
    /// Lambda: instances kept initialised (provisioned concurrency) ...
    pub provisioned_concurrency: u32,
    /// ... for this many hours; requests then run on them (no init, provisioned duration rate).
    pub provisioned_hours: f64,
    /// Lambda: ephemeral storage (`/tmp`); above the free 512 MB it is billed per GB-s.
    pub ephemeral_mb: u32,
}

/// Prices a hypothetical workload under `profile`.
pub fn estimate(profile: &Profile, w: &Workload) -> Bill {
    let mut bill = Bill::new(profile);
    let gb = f64::from(w.memory_mb) / 1024.0;
    let cold = ((w.requests as f64) * w.cold_ratio.clamp(0.0, 1.0)).round() as u64;
    let warm = w.requests - cold.min(w.requests);
    if let Some(l) = &profile.lambda {
        let warm_ms = profile.lambda_billed_ms(w.duration_ms, None, &w.as_of);
        let cold_ms = profile.lambda_billed_ms(w.duration_ms, w.init_ms, &w.as_of);
        bill.note(format!(
            "billed duration: ceil(duration) = {warm_ms} ms{}",
            if w.init_ms.is_some() {
                format!(
                    "; cold: ceil(duration + init) = {cold_ms} ms ({} as of {})",
                    if profile.bills_init_on(&w.as_of) {
                        "init billed"
                    } else {
                        "init not billed"
                    },
                    w.as_of
                )
            } else {
                String::new()
            }
        ));
        let provisioned = w.provisioned_concurrency > 0 && w.provisioned_hours > 0.0;
        // Provisioned instances are initialised ahead: no request pays init.
        let (cold, warm) = if provisioned {
            (0, w.requests)
        } else {
            (cold, warm)
        };
        let billed_s = (warm as f64 * warm_ms as f64 + cold as f64 * cold_ms as f64) / 1000.0;
        let gb_s = billed_s * gb;
        bill.note(format!(
            "GB-s = ({warm} warm x {warm_ms} ms + {cold} cold x {cold_ms} ms) / 1000 x {} MB / 1024 = {gb_s:.3}",
            w.memory_mb
        ));
        if provisioned {
            let kept = f64::from(w.provisioned_concurrency) * gb * w.provisioned_hours * 3600.0;
            bill.note(format!(
                "provisioned concurrency: {} instances x {} GB x {} h kept warm; requests run on them at the provisioned duration rate",
                w.provisioned_concurrency, gb, w.provisioned_hours
            ));
            bill.add(
                "provisioned concurrency",
                kept,
                "GB-s",
                l.provisioned_gb_second_usd,
            );
            bill.add(
                "compute (provisioned)",
                gb_s,
                "GB-s",
                l.provisioned_duration_gb_second_usd,
            );
        } else {
            add_tiered(&mut bill, l, gb_s);
        }
        bill.add(
            "requests",
            w.requests as f64,
            "requests",
            l.requests_per_million_usd / 1e6,
        );
        if w.ephemeral_mb > 512 {
            let extra_gb = f64::from(w.ephemeral_mb - 512) / 1024.0;
            bill.note(format!(
                "ephemeral storage: {} MB, of which 512 MB free",
                w.ephemeral_mb
            ));
            bill.add(
                "ephemeral storage",
                extra_gb * billed_s,
                "GB-s",
                l.ephemeral_gb_second_usd,
            );
        }
    }
    if let Some(f) = &profile.fargate {
        let (cpu, mem) = match w.cpu {
            Some(c) => (c, gb.max(0.5)),
            None => fargate_size(
                crate::billing::vcpu_for_memory(w.memory_mb, usize::MAX),
                w.memory_mb,
            ),
        };
        let task_seconds = match w.hours {
            Some(h) => {
                bill.note(format!(
                    "service: one task of {cpu} vCPU and {mem} GB running {h} h"
                ));
                (h * 3600.0).max(f.minimum_seconds)
            }
            None => {
                let per_warm = (w.duration_ms / 1000.0).ceil().max(f.minimum_seconds);
                let per_cold = ((w.duration_ms + w.init_ms.unwrap_or(0.0)) / 1000.0)
                    .ceil()
                    .max(f.minimum_seconds);
                bill.note(format!(
                    "job: one task of {cpu} vCPU and {mem} GB per request, billed per second with a {}-second minimum: {per_warm} s warm, {per_cold} s cold",
                    f.minimum_seconds
                ));
                warm as f64 * per_warm + cold as f64 * per_cold
            }
        };
        let hours = task_seconds / 3600.0;
        bill.add("vCPU", cpu * hours, "vCPU-h", f.vcpu_hour_usd);
        bill.add("memory", mem * hours, "GB-h", f.gb_hour_usd);
    }
    if let Some(v) = &profile.vm {
        let hours = w.hours.unwrap_or(HOURS_PER_MONTH);
        bill.note(format!(
            "an always-on {} ({} vCPU, {} GB) for {hours} h, whatever the requests",
            v.instance, v.vcpu, v.memory_gb
        ));
        bill.add(
            format!("{} on-demand", v.instance),
            hours,
            "h",
            v.hourly_usd,
        );
    }
    bill
}

/// Lambda's charges for counted usage (requests and billed GB-seconds), as a
/// simulation tallies them; `None` for a profile that is not Lambda's.
pub fn price_lambda_usage(profile: &Profile, requests: u64, gb_seconds: f64) -> Option<Bill> {
    let l = profile.lambda.as_ref()?;
    let mut bill = Bill::new(profile);
    add_tiered(&mut bill, l, gb_seconds);
    bill.add(
        "requests",
        requests as f64,
        "requests",
        l.requests_per_million_usd / 1e6,
    );
    Some(bill)
}

/// SnapStart use in a function's records: its restores, and how long its
/// snapshot (a template) was kept, from the first record to the last (at
/// least Lambda's three hours).
struct SnapStartUsage {
    restores: u64,
    cache_s: f64,
    memory_gb: f64,
}

fn snap_start_usage(ran: &[&InvocationRecord]) -> Option<SnapStartUsage> {
    let restored: Vec<&&InvocationRecord> = ran.iter().filter(|r| r.restore_ms.is_some()).collect();
    let first = restored.first()?;
    let start = ran
        .iter()
        .filter_map(|r| epoch_s(&r.received_at))
        .reduce(f64::min);
    let end = ran
        .iter()
        .filter_map(|r| epoch_s(&r.finished_at))
        .reduce(f64::max);
    let span = match (start, end) {
        (Some(a), Some(b)) => (b - a).max(0.0),
        _ => 0.0,
    };
    Some(SnapStartUsage {
        restores: restored.len() as u64,
        cache_s: span.max(SNAP_START_MIN_CACHE_S),
        memory_gb: f64::from(first.memory_mb) / 1024.0,
    })
}

/// Lambda SnapStart's two charges: the cache of the version's snapshot
/// per GB-second, and each restore per GB. Restore time itself is not
/// billed duration (Lambda bills only runtime hooks after a restore, which
/// the built-in runtime has none of).
fn add_snap_start(bill: &mut Bill, l: &LambdaRates, restores: f64, cache_s: f64, memory_gb: f64) {
    match (l.snap_start_cache_gb_second_usd, l.snap_start_restore_gb_usd) {
        (Some(cache), Some(restore)) => {
            bill.note(format!(
                "snap_start = \"fork\" priced as Lambda SnapStart: the template as the version's cached snapshot ({memory_gb:.3} GB x {cache_s:.0} s, at least 3 h) and {restores:.0} restores x {memory_gb:.3} GB"
            ));
            bill.add("SnapStart cache", memory_gb * cache_s, "GB-s", cache);
            bill.add("SnapStart restores", memory_gb * restores, "GB", restore);
        }
        _ => bill.note(
            "snap_start = \"fork\": this profile has no SnapStart prices, so the template's memory and the restores are not priced",
        ),
    }
}

/// What a set of recorded invocations of one function cost under a profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedCost {
    pub function: String,
    pub profile: String,
    /// Invocations that count (throttled ones never ran and are not billed).
    pub requests: u64,
    pub bill: Bill,
    pub per_1000_requests_usd: f64,
    /// Projected monthly cost at `monthly_requests`, if asked.
    pub monthly: Option<Bill>,
    pub monthly_requests: Option<u64>,
}

fn epoch_s(t: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.timestamp_micros() as f64 / 1e6)
}

/// Prices `records` (one function's) under `profile`, optionally projecting
/// `monthly_requests` with the same per-request usage.
pub fn price_records(
    profile: &Profile,
    function: &str,
    records: &[InvocationRecord],
    monthly_requests: Option<u64>,
) -> RecordedCost {
    let ran: Vec<&InvocationRecord> = records
        .iter()
        .filter(|r| r.status != Status::Throttled)
        .collect();
    let n = ran.len() as u64;
    let mut bill = Bill::new(profile);
    let mean_duration_s = if n == 0 {
        0.0
    } else {
        ran.iter().map(|r| r.duration_ms).sum::<f64>() / n as f64 / 1000.0
    };
    let memory_mb = ran.first().map_or(128, |r| r.memory_mb);
    let mut monthly = None;

    if let Some(l) = &profile.lambda {
        let gb_s: f64 = ran
            .iter()
            .map(|r| {
                // Requests that rode in one batch share its invocation.
                profile.lambda_billed_ms(r.duration_ms, r.init_ms, &r.received_at) as f64 / 1000.0
                    * f64::from(r.memory_mb)
                    / 1024.0
                    / f64::from(r.batch_size.max(1))
            })
            .sum();
        bill.note(format!(
            "per invocation: ceil(duration [+ init when billed]) ms x memory / 1024 (shared by the requests of a batch) -> {gb_s:.4} GB-s over {n} invocations; throttled ones are not billed"
        ));
        add_tiered(&mut bill, l, gb_s);
        bill.add(
            "requests",
            n as f64,
            "requests",
            l.requests_per_million_usd / 1e6,
        );
        let snap = snap_start_usage(&ran);
        if let Some(u) = &snap {
            add_snap_start(&mut bill, l, u.restores as f64, u.cache_s, u.memory_gb);
        }
        if let Some(m) = monthly_requests {
            let mut mb = Bill::new(profile);
            let per = if n == 0 { 0.0 } else { gb_s / n as f64 };
            mb.note(format!("{m} requests x {per:.6} GB-s per request"));
            add_tiered(&mut mb, l, per * m as f64);
            mb.add(
                "requests",
                m as f64,
                "requests",
                l.requests_per_million_usd / 1e6,
            );
            if let Some(u) = &snap {
                let restores = u.restores as f64 / n.max(1) as f64 * m as f64;
                add_snap_start(&mut mb, l, restores, 730.0 * 3600.0, u.memory_gb);
            }
            monthly = Some(mb);
        }
    }
    if let Some(f) = &profile.fargate {
        // Service and job records carry their task's explicit vCPU.
        let vcpu = ran
            .iter()
            .find(|r| r.mode != Mode::Function)
            .and_then(|r| r.vcpu)
            .unwrap_or_else(|| crate::billing::vcpu_for_memory(memory_mb, usize::MAX));
        let (cpu, mem) = fargate_size(vcpu, memory_mb);
        // Each instance is priced as one task living from its spawn (service
        // and job records say when) or its first request (minus its init) to
        // the end of its last.
        let mut lifetimes: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
        for r in &ran {
            let (Some(id), Some(start), Some(end)) = (
                r.instance_id.as_deref(),
                epoch_s(&r.received_at),
                epoch_s(&r.finished_at),
            ) else {
                continue;
            };
            let start = match r.task_started_at.as_deref().and_then(epoch_s) {
                Some(spawned) => spawned,
                None => start - r.init_ms.or(r.restore_ms).unwrap_or(0.0) / 1000.0,
            };
            let e = lifetimes.entry(id).or_insert((start, end));
            e.0 = e.0.min(start);
            e.1 = e.1.max(end);
        }
        let billed: f64 = lifetimes
            .values()
            .map(|(s, e)| (e - s).ceil().max(f.minimum_seconds))
            .sum();
        bill.note(format!(
            "each of the {} instances as a {cpu} vCPU / {mem} GB task, alive from its first request to the end of its last, billed per second with a {}-second minimum: {billed} task-seconds",
            lifetimes.len(),
            f.minimum_seconds
        ));
        bill.add("vCPU", cpu * billed / 3600.0, "vCPU-h", f.vcpu_hour_usd);
        bill.add("memory", mem * billed / 3600.0, "GB-h", f.gb_hour_usd);
        if let Some(m) = monthly_requests {
            let mut mb = Bill::new(profile);
            let tasks = (m as f64 * mean_duration_s / SECONDS_PER_MONTH)
                .ceil()
                .max(1.0);
            mb.note(format!(
                "always-on tasks = max(1, ceil({m} requests x {mean_duration_s:.4} s / {SECONDS_PER_MONTH} s)) = {tasks}"
            ));
            mb.add(
                "vCPU",
                tasks * cpu * HOURS_PER_MONTH,
                "vCPU-h",
                f.vcpu_hour_usd,
            );
            mb.add(
                "memory",
                tasks * mem * HOURS_PER_MONTH,
                "GB-h",
                f.gb_hour_usd,
            );
            monthly = Some(mb);
        }
    }
    if let Some(v) = &profile.vm {
        let start = ran
            .iter()
            .filter_map(|r| epoch_s(&r.received_at))
            .fold(f64::INFINITY, f64::min);
        let end = ran
            .iter()
            .filter_map(|r| epoch_s(&r.finished_at))
            .fold(f64::NEG_INFINITY, f64::max);
        let seconds = if end > start {
            (end - start).ceil().max(60.0)
        } else {
            0.0
        };
        bill.note(format!(
            "an always-on {} for the span of the run ({seconds} s, per-second billing with a 60-second minimum)",
            v.instance
        ));
        bill.add(
            format!("{} on-demand", v.instance),
            seconds / 3600.0,
            "h",
            v.hourly_usd,
        );
        if let Some(m) = monthly_requests {
            let mut mb = Bill::new(profile);
            let share = crate::billing::vcpu_for_memory(memory_mb, usize::MAX);
            let vms = (m as f64 * mean_duration_s * share / (SECONDS_PER_MONTH * v.vcpu))
                .ceil()
                .max(1.0);
            mb.note(format!(
                "machines = max(1, ceil({m} requests x {mean_duration_s:.4} s x {share:.3} vCPU / ({SECONDS_PER_MONTH} s x {} vCPU))) = {vms}",
                v.vcpu
            ));
            mb.add(
                format!("{} on-demand", v.instance),
                vms * HOURS_PER_MONTH,
                "h",
                v.hourly_usd,
            );
            monthly = Some(mb);
        }
    }
    RecordedCost {
        function: function.to_string(),
        profile: profile.name.clone(),
        requests: n,
        per_1000_requests_usd: if n == 0 {
            0.0
        } else {
            bill.total_usd / n as f64 * 1000.0
        },
        bill,
        monthly,
        monthly_requests,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Trigger;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    fn workload(memory_mb: u32, duration_ms: f64, requests: u64) -> Workload {
        Workload {
            memory_mb,
            duration_ms,
            requests,
            init_ms: None,
            cold_ratio: 0.0,
            cpu: None,
            hours: None,
            as_of: "2026-11-01".into(),
            provisioned_concurrency: 0,
            provisioned_hours: 0.0,
            ephemeral_mb: 512,
        }
    }

    /// Provisioned concurrency, from the rates on the Lambda pricing page:
    /// 1 instance x 1 GB kept 1 h = 3600 GB-s x $0.0000041667 = $0.015; 1000
    /// requests of 100 ms at 1 GB = 100 GB-s x $0.0000097222.
    #[test]
    fn provisioned_concurrency_and_ephemeral_storage() {
        let p = Profile::built_in("lambda-x86").unwrap();
        let mut w = workload(1024, 100.0, 1000);
        w.provisioned_concurrency = 1;
        w.provisioned_hours = 1.0;
        w.init_ms = Some(500.0);
        w.cold_ratio = 1.0;
        let b = estimate(&p, &w);
        assert!(
            close(b.lines[0].cost_usd, 3600.0 * 0.0000041667, 1e-12),
            "{:?}",
            b.lines
        );
        assert!(
            close(b.lines[1].quantity, 100.0, 1e-9),
            "no init on provisioned instances"
        );
        assert!(close(b.lines[1].cost_usd, 100.0 * 0.0000097222, 1e-12));
        let mut w = workload(1024, 1000.0, 10);
        w.ephemeral_mb = 1536;
        let b = estimate(&p, &w);
        let e = b
            .lines
            .iter()
            .find(|l| l.item == "ephemeral storage")
            .unwrap();
        assert!(
            close(e.quantity, 10.0, 1e-9),
            "1 GB over the free 512 MB for 10 s"
        );
    }

    #[test]
    fn every_built_in_profile_parses() {
        for name in Profile::built_in_names() {
            let p = Profile::built_in(name).unwrap();
            assert_eq!(p.name, name);
        }
        assert!(matches!(
            Profile::built_in("lambda-mars"),
            Err(PricingError::Unknown(..))
        ));
    }

    /// AWS Lambda pricing page, x86 example ("mobile application backend"):
    /// 3M requests/month, 120 ms average, 1536 MB -> 540,000 GB-s x
    /// $0.0000166667 = $9.00 compute + 3M x $0.20/M = $0.60 requests = $9.60.
    #[test]
    fn lambda_x86_reproduces_the_published_example() {
        let p = Profile::built_in("lambda-x86").unwrap();
        let b = estimate(&p, &workload(1536, 120.0, 3_000_000));
        assert!(close(b.lines[0].quantity, 540_000.0, 1e-6), "{:?}", b.lines);
        assert!(close(b.lines[0].cost_usd, 9.00, 0.005));
        assert!(close(b.lines[1].cost_usd, 0.60, 1e-9));
        assert!(close(b.total_usd, 9.60, 0.005), "{}", b.total_usd);
    }

    /// AWS Fargate pricing page, example 1: 5 tasks x 1 vCPU x 2 GB, 10 minutes
    /// a day for 30 days -> vCPU $1.01 + memory $0.22 = $1.23.
    #[test]
    fn fargate_reproduces_the_published_example() {
        let p = Profile::built_in("fargate-x86").unwrap();
        let mut total = 0.0;
        for _ in 0..5 * 30 {
            let mut w = workload(2048, 600_000.0, 1);
            w.cpu = Some(1.0);
            total += estimate(&p, &w).total_usd;
        }
        assert!(close(total, 1.23, 0.005), "{total}");
    }

    #[test]
    fn the_studys_case_costs_what_the_prices_say() {
        // 150 ms at 512 MB: 0.075 GB-s x $0.0000166667 + $0.0000002 per request.
        let p = Profile::built_in("lambda-x86").unwrap();
        let b = estimate(&p, &workload(512, 150.0, 1000));
        assert!(close(b.total_usd, 0.00145, 0.00001), "{}", b.total_usd);
    }

    #[test]
    fn arm64_is_about_20_percent_cheaper_per_gb_second() {
        let x = Profile::built_in("lambda-x86").unwrap();
        let a = Profile::built_in("lambda-arm64").unwrap();
        let ratio =
            a.lambda.unwrap().tiers[0].gb_second_usd / x.lambda.unwrap().tiers[0].gb_second_usd;
        assert!(close(ratio, 0.8, 0.001), "{ratio}");
    }

    #[test]
    fn tiers_apply_beyond_six_billion_gb_seconds() {
        let p = Profile::built_in("lambda-x86").unwrap();
        let mut b = Bill::new(&p);
        add_tiered(&mut b, p.lambda.as_ref().unwrap(), 7e9);
        assert_eq!(b.lines.len(), 2);
        assert!(close(b.lines[0].quantity, 6e9, 1.0));
        assert!(close(b.lines[1].quantity, 1e9, 1.0));
        assert!(close(
            b.total_usd,
            6e9 * 0.0000166667 + 1e9 * 0.000015,
            1e-3
        ));
    }

    #[test]
    fn rounding_rules_ms_ceiling_and_fargate_minute() {
        let p = Profile::built_in("lambda-x86").unwrap();
        assert_eq!(p.lambda_billed_ms(1.01, None, "2026-01-01"), 2);
        let f = Profile::built_in("fargate-x86").unwrap();
        let mut w = workload(2048, 5_000.0, 1);
        w.cpu = Some(1.0);
        let b = estimate(&f, &w);
        // 5 s of work bills the 60 s minimum.
        assert!(close(b.lines[0].quantity, 60.0 / 3600.0, 1e-12));
        let mut w = workload(2048, 61_500.0, 1);
        w.cpu = Some(1.0);
        let b = estimate(&f, &w);
        assert!(close(b.lines[0].quantity, 62.0 / 3600.0, 1e-12));
    }

    #[test]
    fn init_billing_is_a_dated_rule() {
        let p = Profile::built_in("lambda-x86").unwrap();
        assert_eq!(p.lambda_billed_ms(10.0, Some(100.0), "2025-07-31"), 10);
        assert_eq!(p.lambda_billed_ms(10.0, Some(100.0), "2025-08-01"), 110);
        assert_eq!(
            p.lambda_billed_ms(10.0, Some(100.0), "2026-03-01T10:00:00Z"),
            110
        );
    }

    #[test]
    fn fargate_sizes_round_up_to_valid_tasks() {
        assert_eq!(fargate_size(0.29, 512), (0.5, 1.0));
        assert_eq!(fargate_size(0.2, 512), (0.25, 0.5));
        assert_eq!(fargate_size(1.0, 2048), (1.0, 2.0));
        assert_eq!(fargate_size(0.25, 3072), (0.5, 3.0));
        assert_eq!(fargate_size(1.0, 10240), (2.0, 10.0));
    }

    #[test]
    fn bad_profiles_are_explained() {
        let base = "name = \"x\"\nkind = \"lambda\"\nregion = \"r\"\narchitecture = \"a\"\ntaken = \"2026-01-01\"\n";
        let err = Profile::parse(base, "x.toml").unwrap_err();
        assert!(err.to_string().contains("[lambda]"), "{err}");
        let text = format!(
            "{base}[lambda]\nrequests_per_million_usd = -1\ntiers = [{{ gb_second_usd = 1.0 }}]\n"
        );
        assert!(Profile::parse(&text, "x.toml")
            .unwrap_err()
            .to_string()
            .contains("requests_per_million_usd"));
        let text = base.replace("2026-01-01", "yesterday");
        assert!(Profile::parse(&text, "x.toml")
            .unwrap_err()
            .to_string()
            .contains("taken"));
        let text = format!("{base}[lambda]\nrequests_per_million_usd = 0.2\ntiers = [{{ gb_second_usd = 1.0 }}]\nbogus = 1\n");
        assert!(Profile::parse(&text, "x.toml")
            .unwrap_err()
            .to_string()
            .contains("bogus"));
    }

    fn rec(
        instance: &str,
        start: &str,
        end: &str,
        duration_ms: f64,
        init_ms: Option<f64>,
        status: Status,
    ) -> InvocationRecord {
        InvocationRecord {
            request_id: "r".into(),
            function: "f".into(),
            version: "1".into(),
            instance_id: Some(instance.into()),
            trigger: Trigger::Http,
            cold: init_ms.is_some(),
            start: None,
            status,
            error_type: None,
            queue_ms: 0.0,
            init_ms,
            restore_ms: None,
            duration_ms,
            billed_ms: 0,
            memory_mb: 1024,
            max_memory_mb: None,
            limits_enforced: true,
            isolation: crate::Isolation::None,
            payload_bytes: 0,
            response_bytes: 0,
            received_at: start.into(),
            finished_at: end.into(),
            split: Default::default(),
            mode: Mode::Function,
            batch_size: 1,
            vcpu: None,
            task_started_at: None,
            caller_gone: false,
        }
    }

    #[test]
    fn batched_requests_share_their_invocation_and_services_bill_task_time() {
        let lambda = Profile::built_in("lambda-x86").unwrap();
        let fargate = Profile::built_in("fargate-x86").unwrap();
        let one = rec(
            "a",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:01Z",
            1000.0,
            None,
            Status::Success,
        );
        let mut batched = vec![one.clone(), one.clone(), one.clone(), one.clone()];
        for r in &mut batched {
            r.batch_size = 4;
        }
        let single = price_records(&lambda, "f", std::slice::from_ref(&one), None);
        let four = price_records(&lambda, "f", &batched, None);
        let compute = |c: &RecordedCost| c.bill.lines[0].quantity;
        assert!(close(compute(&four), compute(&single), 1e-12));

        // A service task of 2 vCPU alive for 120 s from its spawn.
        let mut a = rec(
            "t",
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:02:00Z",
            10.0,
            None,
            Status::Success,
        );
        a.mode = Mode::Service;
        a.vcpu = Some(2.0);
        a.task_started_at = Some("2026-01-01T00:00:00Z".into());
        let c = price_records(&fargate, "f", &[a], None);
        let vcpu_h = c
            .bill
            .lines
            .iter()
            .find(|l| l.item == "vCPU")
            .unwrap()
            .quantity;
        assert!(close(vcpu_h, 2.0 * 120.0 / 3600.0, 1e-9), "{vcpu_h}");
    }

    #[test]
    fn snap_start_pays_its_cache_and_restores_not_restore_time() {
        let mut forked = rec(
            "a",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00.100Z",
            99.2,
            None,
            Status::Success,
        );
        forked.restore_ms = Some(5000.0);
        forked.cold = true;
        let warm = rec(
            "a",
            "2026-01-01T00:00:10Z",
            "2026-01-01T00:00:10.100Z",
            99.2,
            None,
            Status::Success,
        );
        let l = price_records(
            &Profile::built_in("lambda-x86").unwrap(),
            "f",
            &[forked.clone(), warm.clone()],
            Some(1000),
        );
        // The 5 s restore is not billed duration: 2 x 100 ms x 1 GB.
        assert!(
            close(l.bill.lines[0].quantity, 0.2, 1e-9),
            "{:?}",
            l.bill.lines
        );
        let line = |b: &Bill, item: &str| b.lines.iter().find(|x| x.item == item).cloned();
        let cache = line(&l.bill, "SnapStart cache").unwrap();
        assert!(
            close(cache.quantity, 3.0 * 3600.0, 1e-6),
            "3 h at least: {cache:?}"
        );
        let restores = line(&l.bill, "SnapStart restores").unwrap();
        assert!(close(restores.quantity, 1.0, 1e-9), "{restores:?}");
        let m = l.monthly.unwrap();
        assert!(close(
            line(&m, "SnapStart restores").unwrap().quantity,
            500.0,
            1e-6
        ));
        // A spawned function pays neither; a profile without the prices says so.
        let plain = price_records(
            &Profile::built_in("lambda-x86").unwrap(),
            "f",
            &[warm],
            None,
        );
        assert!(line(&plain.bill, "SnapStart cache").is_none());
        let eu = price_records(
            &Profile::built_in("lambda-x86-eu-south-1").unwrap(),
            "f",
            &[forked],
            None,
        );
        assert!(
            eu.bill
                .explain
                .iter()
                .any(|n| n.contains("no SnapStart prices")),
            "{:?}",
            eu.bill.explain
        );
    }

    #[test]
    fn recorded_invocations_are_priced_per_profile() {
        let records = vec![
            rec(
                "a",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00.200Z",
                99.2,
                Some(100.0),
                Status::Success,
            ),
            rec(
                "a",
                "2026-01-01T00:00:10Z",
                "2026-01-01T00:00:10.100Z",
                99.2,
                None,
                Status::Success,
            ),
            rec(
                "b",
                "2026-01-01T00:00:10Z",
                "2026-01-01T00:00:10.100Z",
                0.0,
                None,
                Status::Throttled,
            ),
        ];
        let l = price_records(
            &Profile::built_in("lambda-x86").unwrap(),
            "f",
            &records,
            Some(1_000_000),
        );
        assert_eq!(l.requests, 2);
        // (200 + 100) ms x 1 GB = 0.3 GB-s.
        assert!(
            close(l.bill.lines[0].quantity, 0.3, 1e-9),
            "{:?}",
            l.bill.lines
        );
        assert!(close(
            l.per_1000_requests_usd,
            l.bill.total_usd / 2.0 * 1000.0,
            1e-12
        ));
        let m = l.monthly.unwrap();
        assert!(close(m.lines[0].quantity, 150_000.0, 1e-6));

        let f = price_records(
            &Profile::built_in("fargate-x86").unwrap(),
            "f",
            &records,
            None,
        );
        // One instance alive 10.2 s (+0.1 s init) -> 11 s -> the 60 s minimum; 1 GB/0.58 vCPU -> 1 vCPU/2 GB task.
        assert!(
            close(f.bill.lines[0].quantity, 60.0 / 3600.0, 1e-12),
            "{:?}",
            f.bill
        );
        let v = price_records(&Profile::built_in("vm").unwrap(), "f", &records, Some(10));
        assert!(close(v.bill.lines[0].quantity, 60.0 / 3600.0, 1e-12));
        assert!(close(v.monthly.unwrap().total_usd, 730.0 * 0.0416, 1e-9));
    }
}
