//! Twins of the fuzz targets `manifest` and `schedule` (in `fuzz/`), on the
//! stable toolchain: arbitrary text, and text that is nearly right, which is
//! where parsers break.

mod invariants;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

/// Times from 1970 to 2200, when EventBridge's years end.
fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..7_258_118_400, 0u32..1_000_000_000)
        .prop_map(|(s, ns)| DateTime::from_timestamp(s, ns).expect("in range"))
}

/// One cron field: what EventBridge takes, and what it is one step from.
fn cron_field() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("*".to_string()),
        Just("?".to_string()),
        Just("L".to_string()),
        Just("LW".to_string()),
        (0u32..2300).prop_map(|n| n.to_string()),
        (0u32..40).prop_map(|n| format!("{n}W")),
        (0u32..9).prop_map(|n| format!("{n}L")),
        (0u32..9, 0u32..7).prop_map(|(d, n)| format!("{d}#{n}")),
        (0u32..70, 0u32..70).prop_map(|(a, b)| format!("{a}-{b}")),
        (0u32..70, 0u32..70).prop_map(|(a, s)| format!("{a}/{s}")),
        (1960u32..2210, 0u32..3).prop_map(|(a, s)| format!("{a}/{s}")),
        prop::sample::select(vec![
            "MON-FRI", "SUN", "sat", "JAN,JUL", "DEC", "FOO", "*/5", "/"
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec(atom, 1..3).prop_map(|v| v.join(","))
}

fn near_schedule() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(cron_field(), 4..8).prop_map(|f| format!("cron({})", f.join(" "))),
        // EventBridge's own shapes: ? in one day field.
        (
            cron_field(),
            cron_field(),
            cron_field(),
            cron_field(),
            cron_field()
        )
            .prop_map(|(m, h, d, mo, y)| format!("cron({m} {h} {d} {mo} ? {y})")),
        (
            cron_field(),
            cron_field(),
            cron_field(),
            cron_field(),
            cron_field()
        )
            .prop_map(|(m, h, mo, w, y)| format!("cron({m} {h} ? {mo} {w} {y})")),
        (
            any::<u64>(),
            prop::sample::select(vec!["second", "minutes", "hour", "days", "weeks"])
        )
            .prop_map(|(n, unit)| format!("rate({n} {unit})")),
        (
            0u64..100_000,
            prop::sample::select(vec!["minute", "hours", "days"])
        )
            .prop_map(|(n, unit)| format!("rate({n} {unit})")),
    ]
}

/// A manifest assembled from parts, each one right or slightly wrong.
fn near_manifest() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "echo",
        "ok_1",
        "fn-2",
        "",
        "a b",
        "x".repeat(65).leak(),
    ]);
    let memory = prop::sample::select(vec![128u32, 512, 1769, 10_240, 0, 10_241]);
    let mode = prop::sample::select(vec![
        "",
        "mode = \"function\"\n",
        "mode = \"service\"\ncpu = 1.0\n",
        "mode = \"service\"\ncpu = 0.3\n",
        "mode = \"job\"\n",
        "mode = \"lambda\"\n",
    ]);
    let extra = prop::sample::select(vec![
        "",
        "timeout_ms = 0\n",
        "min_instances = 3\nmax_concurrency = 2\n",
        "env = { KEY = \"v\", AWS_LAMBDA_X = \"no\" }\n",
        "[batching]\nmax_batch_size = 8\nmax_delay_ms = 5\n",
        "[batching]\nmax_batch_size = 0\n",
        "[scaling]\ntarget_utilization = 0.7\n",
        "[scaling]\ntarget_utilization = nan\n",
        "unknown = 1\n",
        "version = 2\n",
    ]);
    let trigger = prop_oneof![
        near_schedule().prop_map(|e| format!(
            "[[triggers]]\ntype = \"schedule\"\nexpression = {}\n",
            toml_string(&e)
        )),
        Just("[[triggers]]\ntype = \"schedule\"\nexpression = \"rate(1 minute)\"\ninput = '{\"warm\": true}'\n".to_string()),
        Just("[[triggers]]\ntype = \"schedule\"\nexpression = \"rate(1 minute)\"\ninput = 'not json'\n".to_string()),
        Just("[[triggers]]\ntype = \"bucket\"\nbucket = \"uploads\"\nprefix = \"in/\"\n".to_string()),
        Just("[[triggers]]\ntype = \"bucket\"\nbucket = \"Up\"\n".to_string()),
        Just("[[triggers]]\ntype = \"queue\"\nqueue = \"jobs\"\nbatch_size = 0\n".to_string()),
        Just("[[triggers]]\ntype = \"topic\"\ntopic = \"t\"\n".to_string()),
        Just("[[triggers]]\ntype = \"smoke\"\n".to_string()),
    ];
    (
        name,
        memory,
        mode,
        extra,
        prop::collection::vec(trigger, 0..3),
    )
        .prop_map(|(name, memory, mode, extra, triggers)| {
            // Top-level keys first: a table header ends them.
            let (keys, tables) = match extra.find('[') {
                Some(0) => ("", extra),
                _ => (extra, ""),
            };
            format!(
                "name = \"{name}\"\ncommand = [\"x\"]\nmemory_mb = {memory}\n{mode}{keys}{tables}{}",
                triggers.concat()
            )
        })
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.into()).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_text_is_a_manifest_or_an_error(text in any::<String>()) {
        invariants::manifest(&text);
    }

    #[test]
    fn nearly_right_manifests_parse_or_are_refused(text in near_manifest()) {
        invariants::manifest(&text);
    }

    #[test]
    fn any_text_is_a_schedule_or_an_error(text in any::<String>(), after in time()) {
        invariants::schedule(&text, after);
        invariants::schedule(&format!("cron({text})"), after);
        invariants::schedule(&format!("rate({text})"), after);
    }

    #[test]
    fn nearly_right_schedules_parse_or_are_refused(text in near_schedule(), after in time()) {
        invariants::schedule(&text, after);
    }
}
