//! The HTTP API against the real binary on a real loopback port: listings and paging on both
//! stores, statistics against an independent computation, streams (resume, stalled clients),
//! access rules, `POST /api/events`, probes and `/metrics`.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use crate::common::http::{get, get_ok, request, Sse};
use crate::common::mongo::{mongodb_section, unique_db, MongoServer};
use crate::common::{testdata, wait_until, Daemon};
use serde_json::Value;

/// `n` log lines with increasing times one millisecond apart from `start_ms`; every 10th an ERROR.
fn log_lines(start_ms: i64, n: usize, tag: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let level = if i % 10 == 0 { "ERROR" } else { "INFO" };
        let module = ["writer", "llm_api", "app"][i % 3];
        writeln!(
            out,
            r#"{{"timestamp": {:.3}, "level": "{level}", "message": "{tag} line {i}", "module": "{module}"}}"#,
            (start_ms + i as i64) as f64 / 1000.0
        )
        .unwrap();
    }
    out
}

fn ids(docs: &Value) -> Vec<String> {
    docs.as_array()
        .unwrap()
        .iter()
        .map(|d| d["_id"].as_str().unwrap().to_string())
        .collect()
}

/// The same checks on a daemon with the embedded store and one with MongoDB.
fn on_both_stores(check: impl Fn(&Daemon)) {
    let sqlite = Daemon::start("");
    check(&sqlite);
    drop(sqlite);
    let server = MongoServer::start();
    let mongo = Daemon::start(&mongodb_section(&server.uri(), &unique_db("api"), ""));
    check(&mongo);
}

#[test]
fn listings_answer_in_the_original_shape_with_filters_and_ranges_on_both_stores() {
    on_both_stores(|d| {
        let ack = d.send(&std::fs::read(testdata("novel-app-events.jsonl")).unwrap());
        assert_eq!(ack.rejected, 0);
        let api = d.api();
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(testdata("expected.json")).unwrap()).unwrap();
        let n_logs = expected["novel-app-events.jsonl"]["by_collection"]["api_logs"]
            .as_u64()
            .unwrap();

        let page = get_ok(&api, "/api/logs?page=1&per_page=50");
        assert_eq!(page["success"], true);
        assert_eq!(page["logs"].as_array().unwrap().len(), 50);
        let p = &page["pagination"];
        assert_eq!((p["page"].as_u64(), p["per_page"].as_u64()), (Some(1), Some(50)));
        assert_eq!(p["total"].as_u64(), Some(n_logs));
        assert_eq!(p["pages"].as_u64(), Some(n_logs.div_ceil(50)));
        assert_eq!(p["total_is_lower_bound"], false);
        // Newest first, in the stored shape.
        let times: Vec<&str> = page["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["timestamp"].as_str().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]));
        for field in ["_id", "timestamp", "level", "message"] {
            assert!(page["logs"][0].get(field).is_some(), "{field} in {}", page["logs"][0]);
        }

        // Filters against a count made here.
        let events: Vec<Value> = std::fs::read_to_string(testdata("novel-app-events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let is_log = |e: &&Value| e.get("message").is_some() || e.get("msg").is_some();
        let level_of = |e: &Value| {
            e.get("level")
                .or(e.get("levelname"))
                .and_then(Value::as_str)
                .unwrap_or("INFO")
                .to_string()
        };
        let errors = events.iter().filter(is_log).filter(|e| level_of(e) == "ERROR").count() as u64;
        let writer = events.iter().filter(is_log).filter(|e| e["module"] == "writer").count() as u64;
        let total_of = |path: &str| get_ok(&api, path)["pagination"]["total"].as_u64().unwrap();
        assert_eq!(total_of("/api/logs?level=ERROR"), errors);
        assert_eq!(total_of("/api/logs?level=error"), errors, "level names in any case");
        assert_eq!(total_of("/api/logs?module=writer"), writer);
        let at_least_warning = events
            .iter()
            .filter(is_log)
            .filter(|e| ["WARNING", "ERROR", "CRITICAL"].contains(&level_of(e).as_str()))
            .count() as u64;
        assert_eq!(total_of("/api/logs?min_level=WARNING"), at_least_warning);
        let with_text = events
            .iter()
            .filter(is_log)
            .filter(|e| {
                e.get("message")
                    .or(e.get("msg"))
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_ascii_lowercase()
                    .contains("cache hit")
            })
            .count() as u64;
        assert!(with_text > 0);
        assert_eq!(total_of("/api/logs?q=CACHE%20HIT"), with_text);
        let with_request_id = get_ok(&api, "/api/logs?request_id=req-000005");
        assert_eq!(with_request_id["logs"][0]["message"], "开始API调用");
        assert!(total_of("/api/logs?logger=lngpt.api") > 0);

        // A time range, both ends inclusive as in the original.
        let all = get_ok(&api, "/api/logs?per_page=1000");
        let logs = all["logs"].as_array().unwrap();
        let (newest, oldest) = (
            logs[0]["timestamp"].as_str().unwrap(),
            logs[logs.len() - 1]["timestamp"].as_str().unwrap(),
        );
        assert_eq!(
            total_of(&format!("/api/logs?start_time={oldest}&end_time={newest}")),
            n_logs
        );
        assert_eq!(total_of(&format!("/api/logs?start_time={newest}")), 1);
        assert_eq!(total_of(&format!("/api/logs?end_time={oldest}")), 1);

        // The other collections, the same shape.
        let cost = get_ok(&api, "/api/cost?per_page=5&model=glm-4-plus");
        assert!(cost["cost"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["model"] == "glm-4-plus"));
        let by = &expected["novel-app-events.jsonl"]["by_collection"];
        assert_eq!(total_of("/api/cost"), by["api_cost"].as_u64().unwrap());
        assert_eq!(total_of("/api/performance"), by["api_performance"].as_u64().unwrap());
        let errors = get_ok(&api, "/api/performance?status=error");
        assert!(errors["performance"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "error"));
        assert_eq!(total_of("/api/rejects"), 0);
    });
}

#[test]
fn paging_through_10000_documents_has_no_gap_and_no_repeat_while_inserts_continue_on_both_stores() {
    on_both_stores(|d| {
        let base = 1_795_680_000_000;
        d.send(&log_lines(base, 10_000, "first"));
        let api = d.api();
        let first = get_ok(&api, "/api/logs?per_page=1000");
        assert_eq!(first["pagination"]["total"], 10_000);
        let mut seen: Vec<String> = ids(&first["logs"]);
        let mut cursor = first["pagination"]["next_cursor"].as_str().map(str::to_string);
        let mut round = 0;
        while let Some(c) = cursor {
            // Newer events arrive between pages; the cursor's pages are unaffected.
            d.send(&log_lines(base + 20_000 + round * 100, 100, "later"));
            round += 1;
            let page = get_ok(&api, &format!("/api/logs?per_page=1000&cursor={c}"));
            seen.extend(ids(&page["logs"]));
            cursor = page["pagination"]["next_cursor"].as_str().map(str::to_string);
        }
        assert_eq!(seen.len(), 10_000, "every document once");
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 10_000, "no repeats");

        // The original's page numbers over a fixed range: also every document once.
        let end = "2026-11-26T08:00:09.999Z";
        let mut by_page = Vec::new();
        for page in 1..=10 {
            let p = get_ok(&api, &format!("/api/logs?end_time={end}&per_page=1000&page={page}"));
            assert_eq!(p["pagination"]["pages"], 10);
            by_page.extend(ids(&p["logs"]));
        }
        assert_eq!(by_page.iter().collect::<HashSet<_>>().len(), 10_000);
        assert_eq!(
            by_page.iter().collect::<HashSet<_>>(),
            seen.iter().collect::<HashSet<_>>()
        );

        // Counting stops at the cap and says so.
        let lower = get_ok(&api, "/api/logs?per_page=1");
        assert_eq!(lower["pagination"]["total"], 10_000);
        assert_eq!(lower["pagination"]["total_is_lower_bound"], true);
    });
}

#[test]
fn bad_parameters_are_refused_with_the_parameter_and_what_was_expected() {
    let d = Daemon::start("");
    let api = d.api();
    for (path, words) in [
        ("/api/logs?per_page=5000", &["per_page", "5000", "1 to 1000"][..]),
        ("/api/logs?per_page=ten", &["per_page", "whole number"]),
        ("/api/logs?page=0", &["page", "from 1"]),
        (
            "/api/logs?level=LOUD",
            &["level", "DEBUG, INFO, WARNING, ERROR or CRITICAL"],
        ),
        (
            "/api/logs?start_time=yesterday",
            &["start_time", "2026-11-26T08:00:00Z"],
        ),
        ("/api/logs?cursor=abc", &["cursor", "next_cursor"]),
        ("/api/logs?levle=INFO", &["unknown parameter `levle`", "level"]),
        (
            "/api/logs?start_time=2026-11-27&end_time=2026-11-26",
            &["start_time", "end_time"],
        ),
        ("/api/performance?status=maybe", &["status", "success or error"]),
        ("/api/stats/cost?group_by=week", &["group_by", "model, hour or day"]),
        ("/api/logs/stream?level=LOUD", &["level"]),
    ] {
        let r = get(&api, path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let body = r.json();
        assert_eq!(body["success"], false);
        let error = body["error"].as_str().unwrap();
        for w in words {
            assert!(error.contains(w), "{path}: {error:?} lacks {w:?}");
        }
    }
    let r = get(&api, "/api/nothing");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("/api/logs"));
    let r = request(&api, "DELETE", "/api/logs", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["success"], false);
    let long = format!("/api/logs?q={}", "x".repeat(10_000));
    let r = get(&api, &long);
    assert_eq!(r.status, 414);
    assert!(r.json()["error"].as_str().unwrap().contains("api.max_query_bytes"));
}

/// Cost, error and performance statistics against a computation over the test data here.
#[test]
fn statistics_match_an_independent_computation_on_both_stores() {
    let events: Vec<Value> = std::fs::read_to_string(testdata("novel-app-events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let costs: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "cost" || (e.get("cost").is_some() && e.get("type").is_none()))
        .collect();
    let perf: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["type"] == "performance"
                || e["type"] == "perf"
                || (e.get("response_time").is_some() && e.get("type").is_none())
        })
        .collect();
    let symbol = |c: &Value| -> &str {
        match c
            .get("currency_symbol")
            .or(c.get("currency"))
            .and_then(Value::as_str)
            .unwrap_or("$")
        {
            "$" | "USD" | "usd" => "$",
            _ => "￥",
        }
    };
    // (model, symbol) → (cost, input, output, total, calls)
    type Sums = (f64, u64, u64, u64, u64);
    let mut by_model: BTreeMap<(String, String), Sums> = BTreeMap::new();
    for c in &costs {
        let input = c["input_tokens"].as_u64().unwrap_or(0);
        let output = c["output_tokens"].as_u64().unwrap_or(0);
        let total = c["total_tokens"].as_u64().unwrap_or(input + output);
        let e = by_model
            .entry((c["model"].as_str().unwrap().to_string(), symbol(c).to_string()))
            .or_default();
        e.0 += c["cost"].as_f64().unwrap();
        e.1 += input;
        e.2 += output;
        e.3 += total;
        e.4 += 1;
    }
    let rmb: f64 = by_model
        .iter()
        .map(|((_, s), v)| if s == "$" { v.0 * 7.0 } else { v.0 })
        .sum();
    let calls = perf.len() as u64;
    let errors = perf.iter().filter(|p| p["status"] == "error").count() as u64;
    let mut times: Vec<f64> = perf.iter().map(|p| p["response_time"].as_f64().unwrap()).collect();
    times.sort_by(f64::total_cmp);
    let nearest_rank = |p: f64| times[((p / 100.0 * times.len() as f64).ceil() as usize).max(1) - 1];

    on_both_stores(|d| {
        d.send(&std::fs::read(testdata("novel-app-events.jsonl")).unwrap());
        let api = d.api();
        let range = "start_time=2026-11-26T00:00:00Z&end_time=2026-11-27T00:00:00Z";
        let stats = get_ok(&api, &format!("/api/stats/cost?{range}"));
        let rows = stats["stats"].as_array().unwrap();
        assert_eq!(rows.len(), by_model.len());
        for row in rows {
            let key = (
                row["model"].as_str().unwrap().to_string(),
                row["currency_symbol"].as_str().unwrap().to_string(),
            );
            let want = by_model.get(&key).unwrap_or_else(|| panic!("unexpected row {row}"));
            assert!((row["total_cost"].as_f64().unwrap() - want.0).abs() < 1e-9, "{row}");
            assert_eq!(
                (
                    row["input_tokens"].as_u64(),
                    row["output_tokens"].as_u64(),
                    row["total_tokens"].as_u64(),
                    row["call_count"].as_u64()
                ),
                (Some(want.1), Some(want.2), Some(want.3), Some(want.4)),
                "{row}"
            );
            let rate = if key.1 == "$" { 7.0 } else { 1.0 };
            assert!((row["total_rmb"].as_f64().unwrap() - want.0 * rate).abs() < 1e-9);
        }
        assert!((stats["total_rmb"].as_f64().unwrap() - rmb).abs() < 1e-6);
        assert_eq!(stats["timezone"], "Asia/Shanghai");

        // Hours and days of Asia/Shanghai add up to the same totals.
        for group in ["hour", "day"] {
            let s = get_ok(&api, &format!("/api/stats/cost?{range}&group_by={group}"));
            assert!((s["total_rmb"].as_f64().unwrap() - rmb).abs() < 1e-6, "{group}");
            for row in s["stats"].as_array().unwrap() {
                let period = row["period"].as_str().unwrap();
                assert!(period.ends_with("+08:00"), "{period}");
                if group == "day" {
                    assert!(period.contains("T00:00:00"), "{period}");
                } else {
                    assert!(period.contains(":00:00+"), "{period}");
                }
            }
        }

        let e = get_ok(&api, &format!("/api/stats/errors?{range}"));
        assert_eq!(
            (e["total_calls"].as_u64(), e["error_calls"].as_u64()),
            (Some(calls), Some(errors))
        );
        assert_eq!(e["success_calls"].as_u64(), Some(calls - errors));
        assert!((e["error_rate"].as_f64().unwrap() - errors as f64 / calls as f64 * 100.0).abs() < 1e-9);
        let per_model: u64 = e["by_model"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["total_calls"].as_u64().unwrap())
            .sum();
        assert_eq!(per_model, calls);
        let per_minute: u64 = e["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["total_calls"].as_u64().unwrap())
            .sum();
        assert_eq!(per_minute, calls);

        let p = get_ok(&api, &format!("/api/stats/performance?{range}"));
        assert_eq!(p["calls"].as_u64(), Some(calls));
        let avg = times.iter().sum::<f64>() / times.len() as f64;
        assert!((p["avg_response_time"].as_f64().unwrap() - avg).abs() < 1e-9);
        for (field, pct) in [
            ("p50_response_time", 50.0),
            ("p95_response_time", 95.0),
            ("p99_response_time", 99.0),
        ] {
            // From mergeable sketches: within 1 % of the nearest rank.
            let (got, exact) = (p[field].as_f64().unwrap(), nearest_rank(pct));
            assert!((got - exact).abs() <= exact * 0.01 + 1e-12, "{field}: {got} vs {exact}");
        }
        assert_eq!(p["percentiles_truncated"], false);
        assert!(p["avg_first_chunk_time"].as_f64().unwrap() > 0.0);
        let model = p["by_model"][0]["model"].as_str().unwrap().to_string();
        let one = get_ok(&api, &format!("/api/stats/performance?{range}&model={model}"));
        let want = perf.iter().filter(|x| x["model"] == model.as_str()).count() as u64;
        assert_eq!(one["calls"].as_u64(), Some(want));
    });
}

#[test]
fn events_posted_over_http_are_answered_once_durable_with_rejects_counted() {
    let d = Daemon::start("");
    let api = d.api();
    let mut body = std::fs::read(testdata("novel-app-events.jsonl")).unwrap();
    body.extend(std::fs::read(testdata("bad-lines.jsonl")).unwrap());
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(testdata("expected.json")).unwrap()).unwrap();
    let r = request(
        &api,
        "POST",
        "/api/events",
        &[("Content-Type", "application/x-ndjson")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    let rejects = expected["bad-lines.jsonl"]["rejects"].as_u64().unwrap();
    let bad_events = expected["bad-lines.jsonl"]["lines"].as_u64().unwrap() - rejects - 1;
    assert_eq!(answer["events"].as_u64(), Some(600 + bad_events));
    assert_eq!(answer["rejected"].as_u64(), Some(rejects));
    // Durable before the answer: the rows are there without waiting.
    assert_eq!(d.count("api_rejects"), rejects);
    let listed = get_ok(&api, "/api/rejects?source=http");
    assert_eq!(listed["pagination"]["total"].as_u64(), Some(rejects));
    // Secrets are masked on this path too.
    let logs = get_ok(&api, "/api/logs?per_page=1000").to_string();
    assert!(!logs.contains("sk-"), "an unmasked key went through");

    // A last line without a newline counts.
    let r = request(&api, "POST", "/api/events", &[], br#"{"message": "no newline"}"#);
    assert_eq!(r.json()["events"], 1);
    let r = request(&api, "GET", "/api/events", &[], b"");
    assert_eq!(r.status, 405);
}

#[test]
fn a_body_over_the_limit_is_refused_after_storing_what_came_before() {
    let d = Daemon::start("[api]\nmax_body_bytes = \"4KiB\"\n");
    let api = d.api();
    let body = log_lines(1_795_680_000_000, 200, "big");
    let r = request(&api, "POST", "/api/events", &[], &body);
    assert_eq!(r.status, 413, "{}", r.text());
    let answer = r.json();
    assert!(answer["error"].as_str().unwrap().contains("api.max_body_bytes"));
    let stored = answer["events"].as_u64().unwrap();
    assert_eq!(d.count("api_logs"), stored);
}

fn messages(events: &[common::http::SseEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.json()["message"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_stream_resumed_with_last_event_id_misses_nothing_and_repeats_nothing() {
    let d = Daemon::start("");
    let api = d.api();
    let base = 1_795_680_000_000;
    let mut first = Sse::open(&api, "/api/logs/stream", &[]);
    assert_eq!(first.status, 200);
    assert!(first
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.starts_with("text/event-stream")));
    d.send(&log_lines(base, 100, "a"));
    let seen: Vec<_> = (0..50).map(|_| first.next().expect("an event")).collect();
    assert_eq!(
        messages(&seen),
        (0..50).map(|i| format!("a line {i}")).collect::<Vec<_>>()
    );
    // The original's shape.
    let shape = seen[0].json();
    let keys: HashSet<&str> = shape.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        HashSet::from(["timestamp", "level", "message", "module", "extra"])
    );
    let last = seen[49].id.clone().expect("every event has an id");
    drop(first);

    // Sent while the browser was away, then more while it reconnects.
    d.send(&log_lines(base + 100, 100, "b"));
    let mut again = Sse::open(&api, "/api/logs/stream", &[("Last-Event-ID", &last)]);
    assert_eq!(again.status, 200);
    let sender = {
        let socket = d.socket.clone();
        std::thread::spawn(move || {
            for round in 0..4 {
                let lines = log_lines(base + 200 + round * 25, 25, &format!("c{round}"));
                lngpt_collector::send::send(&socket, &mut &lines[..]).unwrap();
            }
        })
    };
    sender.join().unwrap();
    d.send(b"{\"timestamp\": 1795690000, \"message\": \"the end\"}\n");
    let mut got = Vec::new();
    loop {
        let e = again.next().expect("an event");
        assert_eq!(e.event, None, "no lag expected: {e:?}");
        let m = e.json()["message"].as_str().unwrap().to_string();
        got.push(m.clone());
        if m == "the end" {
            break;
        }
    }
    let mut want: Vec<String> = (50..100).map(|i| format!("a line {i}")).collect();
    want.extend((0..100).map(|i| format!("b line {i}")));
    for round in 0..4 {
        want.extend((0..25).map(|i| format!("c{round} line {i}")));
    }
    want.push("the end".into());
    assert_eq!(got, want);
}

/// `?tail=N` opens with the newest N stored events (filters applied), oldest of them first, then
/// goes live without repeating one; a resume ignores it.
#[test]
fn a_stream_with_tail_opens_with_the_newest_stored_events_then_goes_live_on_both_stores() {
    on_both_stores(|d| {
        let api = d.api();
        let base = 1_795_680_000_000;
        d.send(&log_lines(base, 50, "a"));
        let mut tail = Sse::open(&api, "/api/logs/stream?tail=10", &[]);
        assert_eq!(tail.status, 200);
        let opened: Vec<_> = (0..10).map(|_| tail.next().expect("a stored event")).collect();
        assert_eq!(
            messages(&opened),
            (40..50).map(|i| format!("a line {i}")).collect::<Vec<_>>()
        );
        d.send(&log_lines(base + 50, 5, "b"));
        let live: Vec<_> = (0..5).map(|_| tail.next().expect("a live event")).collect();
        assert_eq!(
            messages(&live),
            (0..5).map(|i| format!("b line {i}")).collect::<Vec<_>>(),
            "live after the tail, none repeated"
        );
        // Filters apply to the tail as to the live part.
        let mut errors = Sse::open(&api, "/api/logs/stream?tail=3&level=ERROR", &[]);
        let got: Vec<_> = (0..3).map(|_| errors.next().expect("a stored error")).collect();
        assert_eq!(messages(&got), ["a line 30", "a line 40", "b line 0"]);
        // A resume replays from its position, whatever tail says.
        let last = opened[9].id.clone().unwrap();
        let mut resumed = Sse::open(&api, "/api/logs/stream?tail=10", &[("Last-Event-ID", &last)]);
        let got: Vec<_> = (0..5).map(|_| resumed.next().expect("a replayed event")).collect();
        assert_eq!(
            messages(&got),
            (0..5).map(|i| format!("b line {i}")).collect::<Vec<_>>()
        );
        let r = get(&api, "/api/logs/stream?tail=5000");
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("tail"), "{}", r.text());
    });
}

/// More missed than `api.max_replay`: the newest are replayed after a `lagged` that counts the rest
/// exactly, the events the client saw in its last event's millisecond not among them.
#[test]
fn a_resume_past_max_replay_counts_exactly_what_it_leaves_out() {
    let d = Daemon::start("[api]\nmax_replay = 10\n");
    let api = d.api();
    let same_ms = 1_795_680_000.5;
    let mut first = Sse::open(&api, "/api/logs/stream", &[]);
    let burst: String = (0..20)
        .map(|i| format!("{{\"timestamp\": {same_ms}, \"message\": \"a line {i}\"}}\n"))
        .collect();
    d.send(burst.as_bytes());
    let seen: Vec<_> = (0..5).map(|_| first.next().expect("an event")).collect();
    assert_eq!(
        messages(&seen),
        (0..5).map(|i| format!("a line {i}")).collect::<Vec<_>>()
    );
    let last = seen[4].id.clone().expect("an id");
    drop(first);

    d.send(&log_lines(1_795_680_001_000, 30, "b"));
    let mut again = Sse::open(&api, "/api/logs/stream", &[("Last-Event-ID", &last)]);
    let lag = again.next().expect("an event");
    assert_eq!(lag.event.as_deref(), Some("lagged"), "{lag:?}");
    // 15 more in that millisecond and 30 after it: 45 missed, the newest 10 replayed.
    assert_eq!(lag.json()["skipped"], 35, "{lag:?}");
    let replayed: Vec<_> = (0..10).map(|_| again.next().expect("an event")).collect();
    assert_eq!(
        messages(&replayed),
        (20..30).map(|i| format!("b line {i}")).collect::<Vec<_>>()
    );
}

/// A client resumes while events keep being stored: each event after its Last-Event-ID is then
/// replayed, counted as skipped, or sent live — exactly one of these, whenever the replay runs
/// between the writes.
#[test]
fn a_resume_while_events_are_stored_accounts_for_each_event_once_on_both_stores() {
    // Skipped counts are exact up to 10 × max_replay: each round stays below that.
    let config = "[api]\nmax_replay = 30\n[pipeline]\nmax_batch = 10\n";
    resume_while_events_are_stored(&Daemon::start(config));
    let server = MongoServer::start();
    resume_while_events_are_stored(&Daemon::start(&mongodb_section(
        &server.uri(),
        &unique_db("api"),
        config,
    )));
}

fn resume_while_events_are_stored(d: &Daemon) {
    let api = d.api();
    const T0: i64 = 1_795_680_000_000;
    const ROUNDS: usize = 20;
    const PER_ROUND: usize = 200;
    let mut first = Sse::open(&api, "/api/logs/stream", &[]);
    d.send(&log_lines(T0, 20, "a"));
    let seen: Vec<_> = (0..5).map(|_| first.next().expect("an event")).collect();
    let mut last = seen[4].id.clone().expect("an id");
    drop(first);
    let mut stored_after_last = 15;
    let mut rounds_past_max_replay = 0;
    for round in 0..ROUNDS {
        let tag = format!("r{round}");
        let lines = log_lines(T0 + 1000 * (round as i64 + 1), PER_ROUND, &tag);
        let lines = &lines;
        let (received, skipped) = std::thread::scope(|s| {
            // Many small writes, so that some land while the replay reads the store; the client
            // resumes after a different number of them each round.
            let (wrote, written) = std::sync::mpsc::channel();
            s.spawn(move || {
                let lines: Vec<&[u8]> = lines.split_inclusive(|b| *b == b'\n').collect();
                for (i, chunk) in lines.chunks(10).enumerate() {
                    if i == round % (PER_ROUND / 10) {
                        let _ = wrote.send(());
                    }
                    assert_eq!(d.send(&chunk.concat()).events, 10);
                }
            });
            written.recv().expect("the writer started");
            let mut sse = Sse::open(&api, "/api/logs/stream", &[("Last-Event-ID", &last)]);
            assert_eq!(sse.status, 200);
            let (mut received, mut skipped) = (BTreeMap::new(), 0);
            let end = format!("{tag} line {}", PER_ROUND - 1);
            loop {
                let e = sse
                    .next()
                    .unwrap_or_else(|| panic!("round {round}: the stream went quiet before {end:?}"));
                if e.event.as_deref() == Some("lagged") {
                    skipped += e.json()["skipped"].as_u64().expect("a count");
                    continue;
                }
                let message = e.json()["message"].as_str().expect("a message").to_string();
                let done = message == end;
                let id = e.id.expect("an id");
                assert!(
                    received.insert(message.clone(), id).is_none(),
                    "round {round}: {message:?} sent twice"
                );
                if done {
                    return (received, skipped);
                }
            }
        });
        stored_after_last += PER_ROUND;
        assert_eq!(
            received.len() + skipped as usize,
            stored_after_last,
            "round {round}: received {}, counted as skipped {skipped}",
            received.len()
        );
        rounds_past_max_replay += usize::from(skipped > 0);
        // The next round resumes from near this one's end (the newest 30 are always received).
        last = received[&format!("{tag} line {}", PER_ROUND - 5)].clone();
        stored_after_last = 4;
    }
    assert!(rounds_past_max_replay > 0, "some rounds missed more than max_replay");
}

#[test]
fn streams_filter_by_level_module_and_text_and_send_keep_alives() {
    let d = Daemon::start("[api]\nkeep_alive = \"50ms\"\n");
    let api = d.api();
    let mut errors = Sse::open(&api, "/api/logs/stream?level=ERROR&module=writer", &[]);
    let mut text = Sse::open(&api, "/api/logs/stream?q=LINE%2099", &[]);
    let mut cost = Sse::open(&api, "/api/cost/stream?model=gpt-4o", &[]);
    errors.until_comments(2);
    d.send(&log_lines(1_795_680_000_000, 100, "f"));
    d.send(b"{\"type\": \"cost\", \"model\": \"gpt-4o\", \"cost\": 0.5}\n{\"type\": \"cost\", \"model\": \"other\", \"cost\": 0.5}\n");
    // ERROR every 10th line, writer every 3rd: lines 0, 30, 60, 90.
    let got: Vec<_> = (0..4).map(|_| errors.next().unwrap()).collect();
    assert_eq!(messages(&got), ["f line 0", "f line 30", "f line 60", "f line 90"]);
    assert_eq!(messages(&[text.next().unwrap()]), ["f line 99"]);
    let c = cost.next().unwrap().json();
    assert_eq!((c["model"].as_str(), c["cost"].as_f64()), (Some("gpt-4o"), Some(0.5)));
    // Nothing else matched: the next thing on each is a keep-alive.
    let before = errors.comments;
    assert!(errors.until_comments(before + 2).is_empty());
    let before = cost.comments;
    assert!(cost.until_comments(before + 2).is_empty());
}

#[test]
fn stream_clients_are_capped_and_streams_end_at_shutdown() {
    let mut d = Daemon::start("[api]\nmax_stream_clients = 2\nkeep_alive = \"20ms\"\n");
    let api = d.api();
    let one = Sse::open(&api, "/api/logs/stream", &[]);
    let mut two = Sse::open(&api, "/api/performance/stream", &[]);
    let r = get(&api, "/api/cost/stream");
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].as_str().unwrap().contains("api.max_stream_clients"));
    drop(one);
    // The server learns of the departure at its next keep-alive.
    let mut three = wait_until(
        "a stream slot freed",
        || {
            let s = Sse::open(&api, "/api/cost/stream", &[]);
            (s.status == 200).then_some(s)
        },
        || d.log(),
    );
    two.until_comments(1);
    three.until_comments(1);
    let status = d.stop();
    assert!(status.success(), "{}", d.log());
    assert!(two.next().is_none(), "the stream ends at shutdown");
    assert!(three.next().is_none());
}

/// The nice value of each of the daemon's threads named `name`.
fn thread_nices(pid: i32, name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if head.split_once('(').map(|(_, comm)| comm) == Some(name) {
            // Field 19 of stat(5), counted from the state, the first field after the name.
            out.push(rest.split_whitespace().nth(16).unwrap().parse().unwrap());
        }
    }
    out
}

/// Streams run on a thread of their own at `api.stream_nice` below the daemon's priority (their
/// connections too), or with the rest of the daemon at 0; they send the same either way.
#[test]
fn streams_run_on_a_niced_thread_of_their_own_unless_stream_nice_is_0() {
    for (extra, niced) in [("", true), ("[api]\nstream_nice = 0\n", false)] {
        let d = Daemon::start(extra);
        let api = d.api();
        let mut unfiltered = Sse::open(&api, "/api/logs/stream", &[]);
        let mut errors = Sse::open(&api, "/api/logs/stream?level=ERROR", &[]);
        // Enough for the batch to go as the hub's shared text, not copied.
        d.send(&log_lines(1_795_680_000_000, 200, "n"));
        let got: Vec<_> = (0..200).map(|_| unfiltered.next().expect("an event")).collect();
        assert_eq!(
            messages(&got),
            (0..200).map(|i| format!("n line {i}")).collect::<Vec<_>>()
        );
        let got: Vec<_> = (0..20).map(|_| errors.next().expect("an event")).collect();
        assert_eq!(
            messages(&got),
            (0..200).step_by(10).map(|i| format!("n line {i}")).collect::<Vec<_>>()
        );
        let base = thread_nices(d.pid(), "collector")[0];
        let streams = thread_nices(d.pid(), "streams");
        if niced {
            assert!(!streams.is_empty(), "a streams thread");
            assert!(
                streams.iter().all(|&n| n == (base + 19).min(19)),
                "{streams:?}, daemon at {base}"
            );
        } else {
            assert!(streams.is_empty(), "{streams:?}");
        }
    }
}

/// A client that never reads while a million events stream in: ingest goes on, memory stays
/// bounded, and once it reads it learns how many events it missed.
#[test]
fn a_stalled_stream_client_neither_slows_ingest_nor_grows_memory() {
    const TOTAL: usize = 1_000_000;
    const CHUNK: usize = 50_000;
    // A stream that stops moving is closed after api.idle_timeout (60 s): on a busy machine sending
    // the million events can take longer, and this client must stay.
    let d = Daemon::start("[api]\nidle_timeout = \"1h\"\n");
    let api = d.api();
    let mut stalled = Sse::open(&api, "/api/logs/stream", &[]);
    assert_eq!(stalled.status, 200);
    let (rss_before, _) = d.rss();
    let mut peak = 0;
    for round in 0..TOTAL / CHUNK {
        let ack = d.send(&log_lines(
            1_795_680_000_000 + (round * CHUNK) as i64,
            CHUNK,
            &format!("s{round}"),
        ));
        assert_eq!(ack.events, CHUNK as u64);
        peak = peak.max(d.rss().0);
    }
    let (_, hwm) = d.rss();
    assert_eq!(d.count("api_logs"), TOTAL as u64);
    // The memory budget (8 MiB), SQLite's caches and one client's share of the live feed; not the stream.
    assert!(
        hwm < rss_before + 160 * 1024 * 1024,
        "peak RSS {} MiB (started at {} MiB)",
        hwm >> 20,
        rss_before >> 20
    );
    // Every event is either read or counted as skipped. (Batches are written concurrently, so
    // the last line sent need not be the last one stored: read until all are accounted for.)
    let (mut read, mut skipped, mut lags) = (0u64, 0u64, 0);
    while read + skipped < TOTAL as u64 {
        let e = stalled.next().expect("the stream goes on");
        match e.event.as_deref() {
            Some("lagged") => {
                lags += 1;
                skipped += e.json()["skipped"].as_u64().unwrap();
            }
            None => read += 1,
            Some(other) => panic!("unexpected event {other}"),
        }
    }
    assert!(lags > 0 && skipped > 0, "the client was told it lagged");
    assert_eq!(read + skipped, TOTAL as u64, "read {read}, skipped {skipped}");
    eprintln!(
        "stalled client: read {read} events, {skipped} skipped in {lags} lags; peak RSS {} MiB, start {} MiB",
        peak.max(hwm) >> 20,
        rss_before >> 20
    );
}

#[test]
fn a_token_is_required_when_set_and_compared_exactly() {
    let token = "0123456789abcdef0123456789abcdef";
    let d = Daemon::start(&format!("[api]\nlisten = \"127.0.0.2:0\"\ntoken = \"{token}\"\n"));
    let api = d.api();
    assert!(api.starts_with("127.0.0.2:"), "{api}");
    for path in ["/api/logs", "/metrics", "/healthz", "/api/logs/stream"] {
        let r = get(&api, path);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert!(r.json()["error"].as_str().unwrap().contains("Authorization: Bearer"));
    }
    let wrong = format!("Bearer {}x", &token[..token.len() - 1]);
    assert_eq!(
        request(&api, "GET", "/api/logs", &[("Authorization", &wrong)], b"").status,
        401
    );
    let short = format!("Bearer {}", &token[..10]);
    assert_eq!(
        request(&api, "GET", "/api/logs", &[("Authorization", &short)], b"").status,
        401
    );
    let right = format!("Bearer {token}");
    let r = request(&api, "GET", "/api/logs", &[("Authorization", &right)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(
        &api,
        "POST",
        "/api/events",
        &[("Authorization", &right)],
        b"{\"message\": \"hi\"}\n",
    );
    assert_eq!(r.json()["events"], 1);
    let r = request(&api, "POST", "/api/events", &[], b"{\"message\": \"hi\"}\n");
    assert_eq!(r.status, 401);
    assert_eq!(d.count("api_logs"), 1);
}

#[test]
fn listening_beyond_loopback_needs_a_token_and_bind_errors_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("c.toml");
    let sock = dir.path().join("c.sock");
    std::fs::write(
        &config,
        common::base_config(&state, &sock, "[api]\nlisten = \"0.0.0.0:0\"\n"),
    )
    .unwrap();
    let out = common::run_until_exit(&config);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("api.listen")
            && stderr.contains("not a loopback address")
            && stderr.contains("LNGPT_COLLECTOR_API_TOKEN"),
        "{stderr}"
    );
    // With the token from the environment, the configuration is accepted (checked, not bound).
    let out = std::process::Command::new(common::BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .env("LNGPT_COLLECTOR_API_TOKEN", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("0123456789abcdef"),
        "the token is not printed"
    );
    // A short token is refused.
    let out = std::process::Command::new(common::BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .env("LNGPT_COLLECTOR_API_TOKEN", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("api.token"));

    // A port in use: a start-up error that says what to change.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    std::fs::write(
        &config,
        common::base_config(&state, &sock, &format!("[api]\nlisten = \"{addr}\"\n")),
    )
    .unwrap();
    let out = common::run_until_exit(&config);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr} for the HTTP API")) && stderr.contains("api.listen"),
        "{stderr}"
    );
}

#[test]
fn the_api_can_listen_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let d = Daemon::start(&format!("[api]\nlisten = \"unix:{}\"\n", path.display()));
    d.wait_for_log("HTTP API listening on unix:");
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"alive\""), "{answer}");
}

#[test]
fn cors_is_off_unless_origins_are_configured() {
    let origin = ("Origin", "https://novel.example.com");
    let d = Daemon::start("");
    let r = request(&d.api(), "GET", "/api/logs", &[origin], b"");
    assert_eq!(r.header("access-control-allow-origin"), None);
    let d = Daemon::start("[api]\ncors_origins = [\"https://novel.example.com\"]\n");
    let r = request(&d.api(), "GET", "/api/logs", &[origin], b"");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://novel.example.com")
    );
    let r = request(
        &d.api(),
        "GET",
        "/api/logs",
        &[("Origin", "https://evil.example.com")],
        b"",
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn probes_and_metrics_say_what_the_daemon_does() {
    let d = Daemon::start("");
    let api = d.api();
    assert_eq!(get_ok(&api, "/healthz")["status"], "alive");
    let ready = get_ok(&api, "/readyz");
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["store"]["kind"], "sqlite");
    d.send(&std::fs::read(testdata("novel-app-events.jsonl")).unwrap());
    d.send(&std::fs::read(testdata("bad-lines.jsonl")).unwrap());
    request(&api, "POST", "/api/events", &[], b"{\"message\": \"over http\"}\n");
    let _stream = Sse::open(&api, "/api/logs/stream", &[]);
    let r = get(&api, "/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().contains("openmetrics-text"));
    let text = r.text();
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"));
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(testdata("expected.json")).unwrap()).unwrap();
    let logs = expected["novel-app-events.jsonl"]["by_collection"]["api_logs"]
        .as_f64()
        .unwrap();
    let rejects = expected["bad-lines.jsonl"]["rejects"].as_f64().unwrap();
    assert_eq!(
        value(
            "lngpt_collector_events_received_total",
            &[("source", "http"), ("collection", "api_logs")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "lngpt_collector_events_received_total",
            &[("source", "socket"), ("collection", "api_rejects")]
        ),
        rejects
    );
    assert!(value("lngpt_collector_events_stored_total", &[("collection", "api_logs")]) >= logs + 1.0);
    assert_eq!(value("lngpt_collector_events_rejected_total", &[]), rejects);
    assert_eq!(value("lngpt_collector_stream_clients", &[]), 1.0);
    assert_eq!(value("lngpt_collector_memory_limit_bytes", &[]), 8.0 * 1024.0 * 1024.0);
    assert_eq!(value("lngpt_collector_store_up", &[]), 1.0);
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "lngpt_collector_batch_write_seconds")
        .expect("histogram");
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => assert!(buckets.iter().any(|b| b.count > 0.0)),
        other => panic!("batch_write_seconds is {other:?}"),
    }
}

#[test]
fn with_mongodb_away_the_daemon_is_ready_while_the_outbox_takes_events() {
    let port = common::mongo::free_port();
    let d = Daemon::start(&mongodb_section(&format!("mongodb://127.0.0.1:{port}"), "away", ""));
    let api = d.api();
    d.send(b"{\"message\": \"kept in the outbox\"}\n");
    let ready = get_ok(&api, "/readyz");
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["store"]["kind"], "mongodb");
    let text = get(&api, "/metrics").text();
    assert!(text.contains("lngpt_collector_mongodb_up 0"), "{text}");
    assert!(text.contains("lngpt_collector_outbox_events 1"), "{text}");
}

#[test]
fn a_query_past_the_timeout_is_cancelled_with_a_503_that_says_so() {
    let d = Daemon::start("[api]\nquery_timeout = \"10ms\"\ncount_limit = 100000000\n");
    for round in 0..4 {
        d.send(&log_lines(1_795_680_000_000 + round * 50_000, 50_000, "slow"));
    }
    let r = get(&d.api(), "/api/logs?q=nothing%20like%20this");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("api.query_timeout"));
}
