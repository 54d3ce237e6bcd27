//! Twins of the fuzz targets `batch_response` and `object_key` (in `fuzz/`),
//! on the stable toolchain: arbitrary bytes, and input that is nearly right,
//! which is where parsers break.

mod invariants;

use proptest::prelude::*;
use serde_json::{json, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `{"batch": [...], "errors": [...]}` with about the right number of
/// answers, errors of every shape, and sometimes a field renamed or cut.
fn near_batch_answer() -> impl Strategy<Value = (Vec<u8>, usize)> {
    let error = prop_oneof![
        Just(Value::Null),
        Just(json!({"errorType": "Bad", "errorMessage": "no"})),
        Just(json!({"errorMessage": "no type"})),
        Just(json!({"errorType": 7})),
        json_value(),
    ];
    (
        prop::collection::vec(json_value(), 0..6),
        prop::option::of(prop::collection::vec(error, 0..7)),
        0usize..3,
        prop::sample::select(vec!["batch", "Batch", "errors"]),
        0usize..8,
    )
        .prop_map(|(items, errors, off, field, cut)| {
            let n = (items.len() + off).saturating_sub(1);
            let mut answer = json!({ field: items });
            if let Some(e) = errors {
                answer["errors"] = Value::from(e);
            }
            let mut body = serde_json::to_vec(&answer).expect("JSON");
            if cut == 0 {
                body.truncate(body.len() / 2);
            }
            (body, n)
        })
}

fn near_key() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        "[a-z0-9._-]{1,8}",
        Just(".".to_string()),
        Just("..".to_string()),
        Just(String::new()),
        Just("...".to_string()),
        Just("a\u{0}b".to_string()),
        Just("\u{7f}".to_string()),
        Just("é.jpg".to_string()),
        Just("C:".to_string()),
        Just("\\..\\x".to_string()),
    ];
    (
        prop::sample::select(vec!["", "/", "./", "//"]),
        prop::collection::vec(segment, 1..6),
    )
        .prop_map(|(lead, segments)| format!("{lead}{}", segments.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_bytes_answer_every_member(body in prop::collection::vec(any::<u8>(), 0..256), n in 0usize..16) {
        invariants::batch_response(&body, n);
    }

    #[test]
    fn nearly_right_answers_answer_every_member((body, n) in near_batch_answer()) {
        invariants::batch_response(&body, n);
    }

    #[test]
    fn any_text_is_a_key_or_refused(key in any::<String>()) {
        invariants::object_key(&key);
    }

    #[test]
    fn nearly_right_keys_stay_in_their_bucket(key in near_key()) {
        invariants::object_key(&key);
    }

    #[test]
    fn well_formed_answers_come_back_in_order(items in prop::collection::vec(json_value(), 0..6)) {
        let body = serde_json::to_vec(&json!({ "batch": items })).expect("JSON");
        let out = virga_platform::scheduler::split_batch_answer(&body, items.len());
        for (answer, item) in out.iter().zip(&items) {
            let answer = answer.as_ref().expect("no errors were listed");
            // Byte for byte as the runtime wrote it.
            prop_assert_eq!(&answer[..], &serde_json::to_vec(item).expect("JSON")[..]);
        }
    }
}
