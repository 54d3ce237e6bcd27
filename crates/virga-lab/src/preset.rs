//! Experiment presets (`experiments/*.toml`): which functions to deploy, which
//! payloads to send, which scenarios to run. Parsed and checked completely
//! before anything runs, so a typo costs a second, not a half-finished run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::reference::{Reference, ReferenceTable};
use crate::scenario::{Scenario, ScenarioKind, Trace};
use crate::LabError;

/// A whole experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The source study it reproduces, if any (a file name in the seeds index).
    #[serde(default)]
    pub reproduces: Option<String>,
    #[serde(default)]
    pub functions: Vec<FunctionSpec>,
    #[serde(default)]
    pub payloads: BTreeMap<String, PayloadSpec>,
    #[serde(default)]
    pub pricing: PricingSpec,
    #[serde(default)]
    pub scenarios: Vec<Scenario>,
    /// The source study's published figures, joined with this run's rows.
    #[serde(default, rename = "reference")]
    pub references: Vec<Reference>,
    /// Per table of figures: the study's shape and why this host may differ.
    #[serde(default, rename = "reference_table")]
    pub reference_tables: Vec<ReferenceTable>,
    /// A client link to emulate (`RATE,RTT`, e.g. "50mbit,20ms"), as the
    /// study's clients had a WAN; `virga bench --link` overrides it.
    #[serde(default)]
    pub link: Option<String>,
    /// Directory of the preset file: manifests and files resolve against it.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// A function to deploy: a manifest file plus overrides of its top-level keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// The name it is deployed under (the manifest's own name is replaced).
    pub name: String,
    /// Manifest path, relative to the preset file.
    pub manifest: PathBuf,
    /// Top-level manifest keys to override, e.g. `{ memory_mb = 512 }`.
    #[serde(default)]
    pub set: toml::Table,
    /// The payload scenarios send it when they name none.
    #[serde(default)]
    pub payload: Option<String>,
    /// The platform may refuse it (e.g. `model.engine = "ort"` on a build
    /// without that engine): then its rows are skipped, with the platform's
    /// reason in the notes, instead of failing the run.
    #[serde(default)]
    pub optional: bool,
}

/// How requests are priced in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingSpec {
    /// Built-in profile names (`virga cost --help` lists them).
    #[serde(default = "default_profiles")]
    pub profiles: Vec<String>,
}

impl Default for PricingSpec {
    fn default() -> Self {
        PricingSpec {
            profiles: default_profiles(),
        }
    }
}

fn default_profiles() -> Vec<String> {
    vec!["lambda-x86".into()]
}

/// A request body, described rather than pasted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PayloadSpec {
    /// A literal JSON document.
    Json { value: String },
    /// `{"image": base64 PNG, "top_k": k}` with a seeded noise image of about
    /// `bytes` bytes (noise does not compress, so the size is what is asked).
    Image {
        bytes: usize,
        #[serde(default = "default_top_k")]
        top_k: usize,
    },
    /// `{"instances": rows x features}` of seeded values in `[lo, hi)`.
    Rows {
        rows: usize,
        features: usize,
        #[serde(default)]
        lo: f64,
        #[serde(default = "one")]
        hi: f64,
    },
    /// `{"inputs": [...]}` for text-embedding models.
    Texts { texts: Vec<String> },
    /// A file's bytes, sent as they are (path relative to the preset).
    File { path: PathBuf },
}

fn default_top_k() -> usize {
    5
}
fn one() -> f64 {
    1.0
}

impl Preset {
    /// Reads and checks a preset file.
    pub fn load(path: &Path) -> Result<Preset, LabError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LabError::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut p = Preset::parse(&text, &path.display().to_string())?;
        p.dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        p.check_files()?;
        Ok(p)
    }

    /// Parses and validates preset text (`source` names it in errors).
    pub fn parse(text: &str, source: &str) -> Result<Preset, LabError> {
        // toml's messages name the line and, for an unknown scenario kind,
        // list the kinds.
        let p: Preset = toml::from_str(text)
            .map_err(|e| LabError::Config(format!("{source}: {}", e.to_string().trim_end())))?;
        p.validate()
            .map_err(|m| LabError::Config(format!("{source}: {m}")))?;
        Ok(p)
    }

    /// The link to emulate, as `link` says.
    pub fn link(&self) -> Result<Option<crate::load::Link>, String> {
        self.link
            .as_deref()
            .map(|l| l.parse().map_err(|e| format!("`link`: {e}")))
            .transpose()
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("`name` must not be empty".into());
        }
        self.link()?;
        if self.scenarios.is_empty() {
            return Err("no [[scenarios]]: add at least one".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for f in &self.functions {
            if !names.insert(f.name.as_str()) {
                return Err(format!("function {:?} is declared twice", f.name));
            }
            if f.set.contains_key("name") {
                return Err(format!(
                    "function {:?}: `set` may not change the name",
                    f.name
                ));
            }
        }
        for p in &self.pricing.profiles {
            virga_spec::pricing::Profile::built_in(p)
                .map_err(|e| format!("[pricing] profiles: {e}"))?;
        }
        for (name, payload) in &self.payloads {
            match payload {
                PayloadSpec::Image { bytes, .. } if *bytes < 100 || *bytes > 4_000_000 => {
                    return Err(format!(
                        "payload {name:?}: image of {bytes} bytes: use 100..=4000000 (the Invoke API takes 6 MB after base64)"
                    ))
                }
                PayloadSpec::Rows { rows, features, .. } if *rows == 0 || *features == 0 => {
                    return Err(format!("payload {name:?}: rows and features must be > 0"))
                }
                PayloadSpec::Json { value } => {
                    serde_json::from_str::<serde_json::Value>(value)
                        .map_err(|e| format!("payload {name:?}: not JSON: {e}"))?;
                }
                _ => {}
            }
        }
        for (i, s) in self.scenarios.iter().enumerate() {
            let at = format!("scenario {} ({})", i + 1, s.kind());
            if s.functions.is_empty() {
                return Err(format!("{at}: `functions` is empty"));
            }
            for f in &s.functions {
                if !names.contains(f.as_str()) {
                    return Err(format!(
                        "{at}: unknown function {f:?}: declare it in [[functions]] (declared: {})",
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            let mut used: Vec<&str> = Vec::new();
            if let ScenarioKind::WarmLatency(w) = &s.kind {
                used.extend(w.payloads.iter().map(String::as_str));
            } else if let ScenarioKind::Train(_) = &s.kind {
                // Training sends no requests.
            } else {
                for f in &s.functions {
                    used.push(self.payload_for(s.payload.as_deref(), f).ok_or_else(|| {
                        format!("{at}: no payload for {f:?}: give the scenario a `payload` or the function one")
                    })?);
                }
            }
            for p in used {
                if !self.payloads.contains_key(p) {
                    return Err(format!(
                        "{at}: unknown payload {p:?}: declare it under [payloads] (declared: {})",
                        self.payloads.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            s.check(self).map_err(|m| format!("{at}: {m}"))?;
        }
        let declared: Vec<&str> = self.functions.iter().map(|f| f.name.as_str()).collect();
        crate::reference::check(
            &self.references,
            &self.reference_tables,
            &declared,
            self.scenarios.len(),
        )
    }

    fn check_files(&self) -> Result<(), LabError> {
        for f in &self.functions {
            let path = self.dir.join(&f.manifest);
            if !path.is_file() {
                return Err(LabError::Config(format!(
                    "function {:?}: manifest {} does not exist",
                    f.name,
                    path.display()
                )));
            }
        }
        for (name, p) in &self.payloads {
            if let PayloadSpec::File { path } = p {
                if !self.dir.join(path).is_file() {
                    return Err(LabError::Config(format!(
                        "payload {name:?}: file {} does not exist",
                        self.dir.join(path).display()
                    )));
                }
            }
        }
        for s in &self.scenarios {
            if let ScenarioKind::Trace(Trace { csv: Some(c), .. }) = &s.kind {
                if !self.dir.join(c).is_file() {
                    return Err(LabError::Config(format!(
                        "trace csv {} does not exist",
                        self.dir.join(c).display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The payload a scenario sends `function`: its own, else the function's.
    pub fn payload_for<'a>(&'a self, scenario: Option<&'a str>, function: &str) -> Option<&'a str> {
        scenario.or_else(|| self.function(function).and_then(|f| f.payload.as_deref()))
    }

    pub fn function(&self, name: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// Shrinks every scenario to a smoke run.
    pub fn quick(&mut self) {
        for s in &mut self.scenarios {
            s.quick();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "t"
[[functions]]
name = "iris"
manifest = "fn.toml"
set = { memory_mb = 512 }
[payloads.rows]
kind = "rows"
rows = 2
features = 4
[[scenarios]]
kind = "throughput"
functions = ["iris"]
payload = "rows"
users = [1, 8]
duration_s = 5
"#;

    fn err(text: &str) -> String {
        Preset::parse(text, "p.toml").unwrap_err().to_string()
    }

    #[test]
    fn parses_a_good_preset() {
        let p = Preset::parse(OK, "p.toml").unwrap();
        assert_eq!(p.scenarios[0].kind(), crate::scenario::Kind::Throughput);
        assert_eq!(p.functions[0].set["memory_mb"].as_integer(), Some(512));
    }

    #[test]
    fn bucket_traces_optional_functions_and_training_parse() {
        let text = format!(
            "{OK}[[scenarios]]\nkind = \"trace\"\nfunctions = [\"iris\"]\npayload = \"rows\"\ncounts = [2]\ninterval_s = 60\nvia = \"bucket\"\n[[scenarios]]\nkind = \"train\"\nfunctions = [\"iris\"]\nrows = 512\n"
        )
        .replace("set = { memory_mb = 512 }", "set = { memory_mb = 512 }\noptional = true");
        let p = Preset::parse(&text, "p.toml").unwrap();
        assert!(p.functions[0].optional);
        assert_eq!(p.scenarios[1].kind(), crate::scenario::Kind::Trace);
        assert_eq!(p.scenarios[2].kind(), crate::scenario::Kind::Train);
        let e = err(&text.replace("via = \"bucket\"", "via = \"pigeon\""));
        assert!(e.contains("pigeon"), "{e}");
        let e = err(&text.replace("rows = 512", "rows = 0"));
        assert!(e.contains("rows"), "{e}");
    }

    #[test]
    fn a_link_is_checked_with_the_preset() {
        let p = Preset::parse(&format!("link = \"50mbit,20ms\"\n{OK}"), "p.toml").unwrap();
        assert_eq!(p.link().unwrap().unwrap().bits_per_s, 50e6);
        let e = err(&format!("link = \"fast\"\n{OK}"));
        assert!(e.contains("p.toml") && e.contains("`link`"), "{e}");
    }

    #[test]
    fn unknown_scenario_kind_lists_the_kinds() {
        let e = err(&OK.replace("\"throughput\"", "\"thruput\""));
        assert!(e.contains("p.toml"), "{e}");
        assert!(e.contains("thruput") && e.contains("open-loop"), "{e}");
    }

    #[test]
    fn unknown_function_and_payload_are_named() {
        let e = err(&OK.replace("functions = [\"iris\"]", "functions = [\"ghost\"]"));
        assert!(
            e.contains("unknown function \"ghost\"") && e.contains("iris"),
            "{e}"
        );
        let e = err(&OK.replace("payload = \"rows\"", "payload = \"nope\""));
        assert!(e.contains("unknown payload \"nope\""), "{e}");
        let e = err(&OK.replace("payload = \"rows\"", ""));
        assert!(e.contains("no payload for \"iris\""), "{e}");
        // A function's own payload serves scenarios that name none.
        let own = OK.replace("payload = \"rows\"", "").replace(
            "set = { memory_mb = 512 }",
            "set = { memory_mb = 512 }\npayload = \"rows\"",
        );
        Preset::parse(&own, "p.toml").unwrap();
    }

    #[test]
    fn bad_grids_are_refused() {
        let sweep = |grid: &str| {
            format!(
                "{}\n[[scenarios]]\nkind = \"sweep\"\nfunctions = [\"iris\"]\npayload = \"rows\"\nrequests = 3\n{grid}\n",
                OK
            )
        };
        assert!(err(&sweep("")).contains("bad grid"));
        assert!(err(&sweep("memory_mb = [64]")).contains("out of range"));
        assert!(err(&sweep("max_concurrency = [0]")).contains("bad grid"));
        assert!(err(&sweep("memory_mb = [512]\ncold = 4")).contains("exceeds"));
    }

    #[test]
    fn unknown_fields_and_bad_numbers_are_refused() {
        assert!(err(&OK.replace("duration_s = 5", "duration_s = 5\nspeed = 1")).contains("speed"));
        assert!(err(&OK.replace("duration_s = 5", "duration_s = 0")).contains("duration_s"));
        assert!(err(&OK.replace("users = [1, 8]", "users = []")).contains("users"));
        for bad in ["-1", "1e9", "nan"] {
            let e = err(&OK.replace(
                "duration_s = 5",
                &format!("duration_s = 5\nthink_ms = {bad}"),
            ));
            assert!(e.contains("think_ms"), "{bad}: {e}");
        }
        let paced = Preset::parse(
            &OK.replace("duration_s = 5", "duration_s = 5\nthink_ms = 850"),
            "p.toml",
        )
        .unwrap();
        let ScenarioKind::Throughput(t) = &paced.scenarios[0].kind else {
            unreachable!()
        };
        assert_eq!(t.think_ms, 850.0);
        assert!(err("name = \"x\"").contains("no [[scenarios]]"));
        assert!(err(&format!("{OK}\n[pricing]\nprofiles = [\"heroku\"]")).contains("heroku"));
    }

    #[test]
    fn quick_shrinks_every_kind() {
        use crate::scenario::{KeepAlive, Throughput};
        let scenario = |kind| Scenario {
            title: None,
            functions: vec!["f".into()],
            payload: Some("p".into()),
            kind,
        };
        let mut s = scenario(ScenarioKind::Throughput(Throughput {
            users: vec![50, 100, 200],
            duration_s: 60.0,
            warmup_s: 10.0,
            think_ms: 850.0,
        }));
        s.quick();
        let ScenarioKind::Throughput(t) = s.kind else {
            unreachable!()
        };
        assert_eq!(t.users, vec![4, 4]);
        assert!(t.duration_s <= 1.0);
        // Pacing is the per-user rate, not a size: a smoke run keeps it.
        assert_eq!(t.think_ms, 850.0);
        let mut k = scenario(ScenarioKind::KeepAlive(KeepAlive {
            at: vec![0.0, 6.0, 16.0, 31.0, 61.0],
            unit_s: 1.0,
            keep_alive_units: vec![10.0, 15.0, 20.0],
        }));
        k.quick();
        let ScenarioKind::KeepAlive(k) = k.kind else {
            unreachable!()
        };
        assert_eq!(k.at.len(), 4);
        // 31 units still exceed every keep-alive; time shrinks.
        assert!(31.0 * k.unit_s <= 1.5 + 1e-9 && k.keep_alive_units == vec![10.0, 15.0, 20.0]);
    }

    #[test]
    fn study_presets_carry_their_figures() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
        let studies = [
            ("bansal-2024-lambda-vs-fargate", 24),
            ("daitan-tf-lambda", 8),
            ("timmer-2024-lambda-configs", 16),
            ("setlur-arun-frameworks", 16),
            // Its comparison table is a picture: the preset says so.
            ("feyzkhanov-2021-graviton", 0),
        ];
        for (name, figures) in studies {
            let p = Preset::load(&dir.join(format!("{name}.toml"))).unwrap();
            assert_eq!(p.references.len(), figures, "{name}");
            let seed = p.reproduces.clone().unwrap();
            assert!(p.references.iter().all(|r| r.study == seed), "{name}");
            // Every table of figures says what shape the study shows.
            for r in &p.references {
                assert!(
                    p.reference_tables.iter().any(|t| t.table == r.table),
                    "{name}: {} has no [[reference_table]]",
                    r.table
                );
            }
        }
    }

    #[test]
    fn warm_latency_takes_payloads_not_payload() {
        let warm = |extra: &str| {
            format!(
                "{OK}\n[[scenarios]]\nkind = \"warm-latency\"\nfunctions = [\"iris\"]\npayloads = [\"rows\"]\nrequests = 2\n{extra}\n"
            )
        };
        let p = Preset::parse(&warm(""), "p.toml").unwrap();
        assert_eq!(p.scenarios[1].kind(), crate::scenario::Kind::WarmLatency);
        assert_eq!(p.scenarios[1].title(), "warm-latency");
        assert!(err(&warm("payload = \"rows\"")).contains("`payloads`"));
    }
}
