//! The HTTP API against the real binary on a real loopback port: listings and paging on both
//! stores, statistics against an independent computation, streams (resume, stalled clients),
//! access rules, `POST /api/events`, probes and `/metrics`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use common::http::{get, get_ok, request};
use common::mongo::{mongodb_section, unique_db, MongoServer};
use common::{testdata, Daemon};
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
        .map(|((_, s), v)| if s == "$" { v.0 * 7.2 } else { v.0 })
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
            let rate = if key.1 == "$" { 7.2 } else { 1.0 };
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
            assert_eq!(p[field].as_f64(), Some(nearest_rank(pct)), "{field}");
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
