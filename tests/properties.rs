//! Property tests: the line decoder against a reference model, and the parser on arbitrary input.

use std::sync::Arc;

use lngpt_collector::event::{Body, EventId, Parser, Source, Timestamp, MAX_RAW_BYTES};
use lngpt_collector::redact::RedactConfig;
use lngpt_collector::redact::Redactor;
use lngpt_collector::source::lines::{Frame, LineDecoder};
use lngpt_collector::store::document;
use proptest::prelude::*;

#[derive(Debug, PartialEq, Eq)]
enum Out {
    Line(Vec<u8>),
    TooLong { head: Vec<u8>, len: usize },
}

/// The obvious, whole-input definition of what the decoder must produce: lines end at `\n` or `\r`
/// (so `\r\n` ends a line and then an empty one, which is not emitted).
fn model(input: &[u8], max: usize) -> Vec<Out> {
    let mut out = Vec::new();
    let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n' || b == b'\r').collect();
    if input.ends_with(b"\n") || input.ends_with(b"\r") {
        parts.pop();
    }
    for part in parts {
        if part.len() > max {
            out.push(Out::TooLong {
                head: part[..part.len().min(MAX_RAW_BYTES)].to_vec(),
                len: part.len(),
            });
            continue;
        }
        if !part.iter().all(u8::is_ascii_whitespace) {
            out.push(Out::Line(part.to_vec()));
        }
    }
    out
}

fn decode(chunks: &[&[u8]], max: usize) -> Vec<Out> {
    let mut d = LineDecoder::new(max);
    let mut out = Vec::new();
    let mut emit = |f: Frame<'_>| {
        out.push(match f {
            Frame::Line(l) => Out::Line(l.to_vec()),
            Frame::TooLong { head, len } => Out::TooLong {
                head: head.to_vec(),
                len,
            },
        })
    };
    for c in chunks {
        d.feed(c, &mut emit);
    }
    d.finish(&mut emit);
    out
}

/// With NUL runs skipped (the file source): every complete line with its start offset, NULs before
/// a line not part of it; and where reading would resume (the committed offset).
fn model_skipping_nuls(input: &[u8], max: usize) -> (Vec<(u64, Out)>, u64) {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in input.iter().enumerate() {
        if b != b'\n' && b != b'\r' {
            continue;
        }
        let part = &input[start..i];
        let nuls = part.iter().take_while(|&&b| b == 0).count();
        let (at, line) = ((start + nuls) as u64, &part[nuls..]);
        if line.len() > max {
            let head = line[..line.len().min(MAX_RAW_BYTES)].to_vec();
            out.push((at, Out::TooLong { head, len: line.len() }));
        } else if !line.iter().all(u8::is_ascii_whitespace) {
            out.push((at, Out::Line(line.to_vec())));
        }
        start = i + 1;
    }
    // The unfinished last line starts past its NULs too (all of them, if that is all there is).
    let nuls = input[start..].iter().take_while(|&&b| b == 0).count();
    (out, (start + nuls) as u64)
}

/// Bytes rich in newlines, CRs and blanks, so that every framing path is taken.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![4 => any::<u8>(), 2 => Just(b'\n'), 1 => Just(b'\r'), 1 => Just(b' '), 2 => Just(b'x')],
        0..600,
    )
}

/// The same with runs of NULs.
fn stream_with_nuls() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![4 => any::<u8>(), 2 => Just(b'\n'), 1 => Just(b'\r'), 1 => Just(b' '), 2 => Just(b'x'), 3 => Just(0u8)],
        0..600,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoder_matches_the_model_however_the_input_is_cut(input in stream(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8), max in 1usize..64) {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut at = 0;
        for p in points {
            chunks.push(&input[at..p]);
            at = p;
        }
        chunks.push(&input[at..]);
        prop_assert_eq!(decode(&chunks, max), model(&input, max));
    }

    #[test]
    fn with_nul_runs_skipped_lines_and_offsets_match_the_model(input in stream_with_nuls(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8), max in 1usize..64) {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        points.sort_unstable();
        let mut d = LineDecoder::new(max).skipping_nul_runs();
        let mut got = Vec::new();
        let mut at = 0;
        for p in points.into_iter().chain([input.len()]) {
            d.feed_at(&input[at..p], &mut |f, start| got.push((start, match f {
                Frame::Line(l) => Out::Line(l.to_vec()),
                Frame::TooLong { head, len } => Out::TooLong { head: head.to_vec(), len },
            })));
            at = p;
        }
        let (expected, committed) = model_skipping_nuls(&input, max);
        prop_assert_eq!(got, expected);
        prop_assert_eq!(d.committed_offset(), committed);
    }

    #[test]
    fn every_non_blank_line_becomes_exactly_one_event_or_reject(input in stream()) {
        let parser = parser();
        let source = Source::from("prop");
        let mut events = Vec::new();
        let mut d = LineDecoder::new(1 << 20);
        let mut emit = |f: Frame<'_>| if let Frame::Line(l) = f { events.push(parser.parse(l, &source, Timestamp(0), EventId::new())) };
        d.feed(&input, &mut emit);
        d.finish(&mut emit);
        let expected = model(&input, 1 << 20).len();
        prop_assert_eq!(events.len(), expected);
        for e in &events {
            if let Body::Reject(r) = &e.body {
                prop_assert!(!r.reason.is_empty());
            }
        }
    }

    #[test]
    fn the_parser_never_panics_on_arbitrary_bytes(line in prop::collection::vec(any::<u8>(), 0..300)) {
        let parser = parser();
        let _ = parser.parse(&line, &Source::from("prop"), Timestamp(0), EventId::new());
    }

    #[test]
    fn json_objects_of_known_fields_become_an_event_or_a_reasoned_reject(fields in prop::collection::vec((field_name(), field_value()), 0..8)) {
        let object: serde_json::Map<String, serde_json::Value> = fields.into_iter().collect();
        let line = serde_json::to_vec(&object).unwrap();
        let parser = parser();
        let e = parser.parse(&line, &Source::from("prop"), Timestamp(0), EventId::new());
        match &e.body {
            Body::Reject(r) => prop_assert!(r.reason.contains('`') || r.reason.contains("JSON"), "reason names a field: {}", r.reason),
            Body::Log(l) => prop_assert!(object.contains_key("message") || object.contains_key("msg"), "{:?}", l),
            Body::Cost(c) => prop_assert!(c.cost >= 0.0),
            Body::Performance(p) => prop_assert!(p.response_time >= 0.0),
            Body::Metric(_) => prop_assert!(false, "a line never becomes a monitor document"),
        }
    }

    #[test]
    fn a_planted_secret_never_survives(prefix in "[a-z ]{0,20}", secret in "[A-Za-z0-9]{16,40}", field in prop::sample::select(vec!["api_key", "password", "OPENAI_API_KEY", "access_token"])) {
        let line = serde_json::json!({"message": format!("{prefix} Authorization: Bearer {secret} and sk-{secret}"), "extra": {field: secret.clone()}}).to_string();
        let parser = parser();
        let e = parser.parse(line.as_bytes(), &Source::from("prop"), Timestamp(0), EventId::new());
        let Body::Log(log) = &e.body else { panic!("{e:?}") };
        let stored = format!("{} {}", log.message, serde_json::Value::Object(log.extra.clone()));
        prop_assert!(!stored.contains(&secret), "{}", stored);
        let kept = format!("***{}", &secret[secret.len() - 4..]);
        prop_assert!(stored.contains(&kept), "the last four characters are kept: {}", stored);
    }

    #[test]
    fn any_integer_in_extra_is_stored_exactly_in_json_and_in_bson(n in integer_near_the_64_bit_edges()) {
        let line = format!(r#"{{"message": "x", "extra": {{"n": {n}}}, "top": [{n}]}}"#);
        let e = parser().parse(line.as_bytes(), &Source::from("prop"), Timestamp(0), EventId::new());
        prop_assert!(!e.is_reject(), "{:?}", e.body);
        let (json_n, bson_n) = match i64::try_from(n) {
            Ok(small) => (serde_json::json!(small), bson::Bson::Int64(small)),
            Err(_) => (serde_json::json!(n.to_string()), bson::Bson::String(n.to_string())),
        };
        let mut out = Vec::new();
        document::write_json(&e, "h", &mut out).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(&doc["extra"]["n"], &json_n);
        prop_assert_eq!(&doc["extra"]["top"][0], &json_n);
        let raw = document::to_bson(&e, "h").map_err(|err| TestCaseError::fail(err.to_string()))?;
        let doc = bson::Document::try_from(raw.as_ref()).unwrap();
        prop_assert_eq!(doc.get_document("extra").unwrap().get("n"), Some(&bson_n));
    }

    #[test]
    fn numbers_keep_their_value_or_their_exact_digits_whatever_surrounds_them(items in prop::collection::vec(number_or_string(), 1..12), nest in any::<bool>()) {
        let entries: Vec<String> = items.iter().enumerate().map(|(i, (literal, _))| format!("\"k{i}\": {literal}")).collect();
        let inner = format!("{{{}}}", entries.join(", "));
        let line = match nest {
            false => format!(r#"{{"message": "m", "extra": {inner}}}"#),
            true => format!(r#"{{"message": "m", "extra": {{"list": [{inner}, "\"[1e99]\"", 1e99]}}}}"#),
        };
        let e = parser().parse(line.as_bytes(), &Source::from("prop"), Timestamp(0), EventId::new());
        let Body::Log(log) = &e.body else { panic!("{line}: {e:?}") };
        let extra = match nest {
            false => serde_json::Value::Object(log.extra.clone()),
            true => log.extra["list"][0].clone(),
        };
        for (i, (literal, expected)) in items.iter().enumerate() {
            prop_assert_eq!(&extra[format!("k{i}")], expected, "{} in {}", literal, line);
        }
    }

    #[test]
    fn a_repeated_field_is_rejected_by_name(fields in prop::collection::btree_map(field_name(), field_value(), 1..8), pick in any::<prop::sample::Index>(), nested in any::<bool>()) {
        let entries: Vec<String> = fields.iter().map(|(k, v)| format!("{:?}: {v}", k)).collect();
        let (key, value) = fields.iter().nth(pick.index(fields.len())).unwrap();
        let repeated = format!("{:?}: {value}", key);
        let (line, path) = match nested {
            false => (format!("{{{}, {repeated}}}", entries.join(", ")), key.clone()),
            true => (format!(r#"{{"message": "m", "extra": {{{}, {repeated}}}}}"#, entries.join(", ")), format!("extra.{key}")),
        };
        let e = parser().parse(line.as_bytes(), &Source::from("prop"), Timestamp(0), EventId::new());
        let Body::Reject(r) = &e.body else { panic!("{line} was accepted: {e:?}") };
        prop_assert_eq!(&r.reason, &format!("field `{path}` appears twice; send it once"));
    }
}

/// Integers anywhere, but mostly next to the ends of the 64-bit ranges, where they stop fitting.
fn integer_near_the_64_bit_edges() -> impl Strategy<Value = i128> {
    let edges = [i64::MIN as i128, i64::MAX as i128, u64::MAX as i128];
    prop_oneof![
        (prop::sample::select(edges.to_vec()), -3i128..=3).prop_map(|(edge, d)| edge + d),
        any::<i64>().prop_map(i128::from),
        any::<i128>(),
    ]
}

/// A JSON literal and what it must be stored as: an integer as itself (or its exact digits beyond
/// 64 bits), a float as serde_json reads it, a string (with quotes, backslashes and digits) as is.
fn number_or_string() -> impl Strategy<Value = (String, serde_json::Value)> {
    use serde_json::{json, Value};
    prop_oneof![
        integer_near_the_64_bit_edges().prop_map(|n| {
            let stored = i64::try_from(n).map_or_else(|_| json!(n.to_string()), |small| json!(small));
            (n.to_string(), stored)
        }),
        prop_oneof![-1e300f64..1e300, -1e20f64..1e20].prop_map(|f| {
            let literal = format!("{f:e}");
            let stored: Value = serde_json::from_str(&literal).unwrap();
            (literal, stored)
        }),
        "[a-z0-9\"\\\\ \\[\\]{},]{0,16}".prop_map(|s| (serde_json::to_string(&s).unwrap(), json!(s))),
    ]
}

/// One parser for all cases: building the redactor's regexes is the slow part.
fn parser() -> &'static Parser {
    static PARSER: std::sync::OnceLock<Parser> = std::sync::OnceLock::new();
    PARSER.get_or_init(|| Parser::new(Arc::new(Redactor::new(&RedactConfig::default()).unwrap())))
}

fn field_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "type",
        "message",
        "msg",
        "level",
        "levelname",
        "timestamp",
        "created",
        "created_at",
        "cost",
        "model",
        "currency",
        "currency_symbol",
        "input_tokens",
        "prompt_tokens",
        "response_time",
        "duration_ms",
        "status",
        "ok",
        "line",
        "lineno",
        "extra",
        "chunk_count",
        "other",
    ])
    .prop_map(String::from)
}

fn field_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        any::<i64>().prop_map(|i| json!(i)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "log",
            "cost",
            "perf",
            "INFO",
            "warn",
            "success",
            "error",
            "$",
            "￥",
            "USD",
            "2026-11-26T08:00:00Z",
            "x"
        ])
        .prop_map(|s| json!(s)),
        Just(json!({"k": 1})),
        Just(json!([1, 2])),
    ]
}
