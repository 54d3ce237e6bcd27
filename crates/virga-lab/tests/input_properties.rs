//! Twins of the fuzz targets `preset` and `trace_csv` (in `fuzz/`), on the
//! stable toolchain: arbitrary text, and the project's own presets and
//! traces bent a little, which is where parsers break.

mod invariants;

use proptest::prelude::*;

const PRESETS: &[&str] = &[
    include_str!("../../../experiments/quickstart.toml"),
    include_str!("../../../experiments/bansal-2024-lambda-vs-fargate.toml"),
    include_str!("../../../experiments/daitan-tf-lambda.toml"),
    include_str!("../../../experiments/feyzkhanov-2021-graviton.toml"),
    include_str!("../../../experiments/modes-and-batching.toml"),
    include_str!("../../../experiments/setlur-arun-frameworks.toml"),
    include_str!("../../../experiments/timmer-2024-lambda-configs.toml"),
];

/// One small change to a line: what a hand edit gets wrong.
#[derive(Debug, Clone)]
enum Edit {
    Drop,
    Repeat,
    /// Every number on the line becomes this.
    Number(&'static str),
    Cut(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        Just(Edit::Drop),
        Just(Edit::Repeat),
        prop::sample::select(vec![
            "0",
            "-1",
            "0.5",
            "1e9",
            "nan",
            "inf",
            "4294967296",
            "\"7\""
        ])
        .prop_map(Edit::Number),
        (0usize..40).prop_map(Edit::Cut),
    ]
}

fn bend(text: &str, edits: &[(usize, Edit)]) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for (at, e) in edits {
        if lines.is_empty() {
            break;
        }
        let i = at % lines.len();
        match e {
            Edit::Drop => {
                lines.remove(i);
            }
            Edit::Repeat => lines.insert(i, lines[i].clone()),
            Edit::Number(n) => {
                let mut out = String::new();
                let mut in_number = false;
                for c in lines[i].chars() {
                    let digit = c.is_ascii_digit() || (in_number && (c == '_' || c == '.'));
                    if digit && !in_number {
                        out.push_str(n);
                    } else if !digit {
                        out.push(c);
                    }
                    in_number = digit;
                }
                lines[i] = out;
            }
            Edit::Cut(k) => {
                let end = lines[i]
                    .char_indices()
                    .nth(*k)
                    .map_or(lines[i].len(), |(b, _)| b);
                lines[i].truncate(end);
            }
        }
    }
    lines.join("\n")
}

fn bent_preset() -> impl Strategy<Value = String> {
    (
        prop::sample::select(PRESETS),
        prop::collection::vec((any::<usize>(), edit()), 0..4),
    )
        .prop_map(|(text, edits)| bend(text, &edits))
}

/// An Azure-style CSV: a header of names and minute numbers, rows of cells.
fn trace() -> impl Strategy<Value = String> {
    let cell = prop_oneof![
        (0u32..50).prop_map(|n| n.to_string()),
        Just("4294967296".to_string()),
        Just("-1".to_string()),
        Just(String::new()),
        Just(" 3 ".to_string()),
        Just("x".to_string()),
    ];
    let header = prop::collection::vec(
        prop_oneof![
            (1u32..1441).prop_map(|n| n.to_string()),
            prop::sample::select(vec!["HashOwner", "HashApp", "HashFunction", "Trigger", ""])
                .prop_map(String::from),
        ],
        0..8,
    );
    let rows = prop::collection::vec(prop::collection::vec(cell, 0..9), 0..4);
    (
        header,
        rows,
        prop::sample::select(vec!["\n", "\r\n", "\n\n"]),
    )
        .prop_map(|(header, rows, eol)| {
            let mut lines = vec![header.join(",")];
            lines.extend(rows.iter().map(|r| r.join(",")));
            lines.join(eol)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_text_is_a_preset_or_an_error(text in any::<String>()) {
        invariants::preset(&text);
    }

    #[test]
    fn bent_presets_parse_or_are_refused(text in bent_preset()) {
        invariants::preset(&text);
    }

    #[test]
    fn any_text_is_a_trace_or_an_error(text in any::<String>(), row in 0usize..4, seed in any::<u64>()) {
        invariants::trace_csv(&text, row, seed);
    }

    #[test]
    fn nearly_right_traces_parse_or_are_refused(text in trace(), row in 0usize..4, seed in any::<u64>()) {
        invariants::trace_csv(&text, row, seed);
    }
}

/// The presets as shipped parse: the bent ones start from something right.
#[test]
fn every_shipped_preset_parses() {
    for text in PRESETS {
        virga_lab::preset::Preset::parse(text, "preset.toml").unwrap();
        invariants::preset(text);
    }
}
