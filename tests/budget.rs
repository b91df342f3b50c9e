//! The budget and alerts as the app and the operator see them over HTTP: `/api/budget` against an
//! independent sum across hour and day boundaries in Asia/Shanghai (and after a restart), on both
//! stores; a model's own limits; `/api/alerts/active`; silences that keep webhooks quiet and
//! survive a restart; the monitor's figures in `/metrics`.

use crate::common;

use std::time::Duration;

use crate::common::http::{get, get_ok, request};
use crate::common::mongo::{find_all, mongodb_section, unique_db, MongoServer};
use crate::common::{wait_until, Daemon};
use lngpt_collector::event::Timestamp;
use serde_json::Value;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Asia/Shanghai has kept UTC+8 without daylight saving since 1991.
const SHANGHAI_MS: i64 = 8 * HOUR_MS;
const RATE: f64 = 7.0;

/// A monitor that evaluates and reads the budget every 50 ms, with sliding windows (the last hour
/// and day: events timestamped a second ago are inside them whenever the test runs).
fn fast_budget(extra: &str) -> String {
    fast_budget_in("sliding", extra)
}

/// The same with `window` = `"calendar"` (this hour and day in Shanghai) or `"sliding"`.
fn fast_budget_in(window: &str, extra: &str) -> String {
    format!(
        "[pipeline]\nmax_wait = \"10ms\"\n[monitor]\nwindow = \"300ms\"\ngrace = \"300ms\"\nevaluate_every = \"50ms\"\nkeep = \"1m\"\n\
         [budget]\nwindow = \"{window}\"\ntimezone = \"Asia/Shanghai\"\nrefresh = \"50ms\"\nusd_to_rmb_rate = {RATE:.1}\n{extra}\n"
    )
}

fn cost_line(at_ms: i64, model: &str, cost: f64, currency: &str) -> String {
    format!(
        "{{\"type\":\"cost\",\"timestamp\":\"{}\",\"model\":\"{model}\",\"cost\":{cost},\"currency_symbol\":\"{currency}\",\"input_tokens\":10,\"output_tokens\":5}}\n",
        Timestamp(at_ms)
    )
}

/// The start of the Shanghai hour and day that contain `ms`.
fn shanghai_starts(ms: i64) -> (i64, i64) {
    let hour = ms - ms.rem_euclid(HOUR_MS);
    let local = ms + SHANGHAI_MS;
    let day = local - local.rem_euclid(DAY_MS) - SHANGHAI_MS;
    (hour, day)
}

/// Waits out the last seconds of a Shanghai hour, so a test's windows do not turn under it.
fn away_from_the_hour_boundary() {
    let now = Timestamp::now().as_millis();
    let left = HOUR_MS - now.rem_euclid(HOUR_MS);
    if left < 30_000 {
        std::thread::sleep(Duration::from_millis(left as u64 + 100));
    }
}

fn window_start(spend: &Value) -> i64 {
    let text = spend["window_start"].as_str().expect("window_start");
    Timestamp::parse_rfc3339(text).expect("an RFC 3339 time").as_millis()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.001
}

/// Stored cost documents as (time ms, RMB), read straight from the store.
fn stored_costs(d: &Daemon, mongo: Option<(&MongoServer, &str)>) -> Vec<(i64, f64)> {
    let rmb = |cost: f64, currency: &str| if currency == "$" { cost * RATE } else { cost };
    match mongo {
        None => {
            // An independent SQL sum would do as well; the rows are few, so keep them.
            let db = d.db();
            let mut stmt = db
                .prepare("SELECT created_at_ms, cost, currency FROM api_cost")
                .unwrap();
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?, r.get::<_, String>(2)?))
                })
                .unwrap();
            rows.map(|r| r.unwrap()).map(|(t, c, cur)| (t, rmb(c, &cur))).collect()
        }
        Some((server, db)) => find_all(&server.client(), db, "api_cost")
            .iter()
            .map(|doc| {
                let t = doc.get_datetime("created_at").unwrap().timestamp_millis();
                let cost = match doc.get("cost") {
                    Some(mongodb::bson::Bson::Double(v)) => *v,
                    Some(mongodb::bson::Bson::Int32(v)) => f64::from(*v),
                    Some(mongodb::bson::Bson::Int64(v)) => *v as f64,
                    other => panic!("cost is {other:?}"),
                };
                (t, rmb(cost, doc.get_str("currency_symbol").unwrap()))
            })
            .collect(),
    }
}

fn budget_spend_matches_the_store(d: &mut Daemon, mongo: Option<(&MongoServer, &str)>) {
    away_from_the_hour_boundary();
    let now = Timestamp::now().as_millis();
    let (hour, day) = shanghai_starts(now);
    // Either side of the day's and the hour's first millisecond, in dollars and in yuan; the
    // daemon restarts between the day's events and the hour's.
    let mut before = String::new();
    before += &cost_line(day - 1, "gpt-4o", 1.0, "$"); // yesterday: in neither window
    before += &cost_line(day, "gpt-4o", 2.0, "$"); // today's first millisecond
    before += &cost_line(day + 1, "glm-4", 3.5, "￥");
    let mut after = String::new();
    if hour > day {
        after += &cost_line(hour - 1, "glm-4", 4.0, "￥"); // today, the hour before
    }
    after += &cost_line(hour, "gpt-4o", 0.5, "$"); // this hour's first millisecond
    after += &cost_line(now - 1000, "doubao-lite-32k", 1.25, "￥");

    let expected = |costs: &[(i64, f64)], from: i64| costs.iter().filter(|c| c.0 >= from).map(|c| c.1).sum::<f64>();
    let check = |d: &Daemon, n: u64| {
        let api = d.api();
        wait_until(
            "the budget to count every stored cost",
            || {
                let costs = stored_costs(d, mongo);
                if costs.len() as u64 != n {
                    return None;
                }
                let b = get_ok(&api, "/api/budget");
                let (h, dd) = (b["hour"]["spent_rmb"].as_f64()?, b["day"]["spent_rmb"].as_f64()?);
                // The windows the daemon used: on a busy machine the hour may turn during the test.
                let (hs, ds) = (window_start(&b["hour"]), window_start(&b["day"]));
                assert_eq!(hs.rem_euclid(HOUR_MS), 0, "an hour starts on the hour: {b}");
                assert_eq!(
                    (ds + SHANGHAI_MS).rem_euclid(DAY_MS),
                    0,
                    "a day starts at Shanghai's midnight: {b}"
                );
                (close(h, expected(&costs, hs)) && close(dd, expected(&costs, ds))).then_some(b)
            },
            || format!("{}\n{}", get(&api, "/api/budget").text(), d.log()),
        )
    };
    let n_before = before.lines().count() as u64;
    assert_eq!(d.send(before.as_bytes()).events, n_before);
    let first = check(d, n_before);
    let day_before_restart = 2.0 * RATE + 3.5;
    assert!(
        close(first["day"]["spent_rmb"].as_f64().unwrap(), day_before_restart),
        "{first}"
    );
    // A restart reads the totals again before answering: nothing is forgotten or counted twice.
    d.stop();
    d.restart();
    let n_after = after.lines().count() as u64;
    assert_eq!(d.send(after.as_bytes()).events, n_after);
    let n = n_before + n_after;
    let b = check(d, n);
    assert_eq!(b["success"], true);
    assert_eq!(b["window"], "calendar");
    assert_eq!(b["timezone"], "Asia/Shanghai");
    if window_start(&b["hour"]) != hour {
        return; // the hour turned during the test: the sums above were checked against the new one
    }
    assert_eq!(b["day"]["window_start"], Timestamp(day).to_string());
    // Independent figures: 2 $ + 0.5 $ (+ 0.5 $ in the hour), 3.5 + 4 (if earlier today) + 1.25 ¥.
    let day_rmb = 2.5 * RATE + 3.5 + 1.25 + if hour > day { 4.0 } else { 0.0 };
    let hour_rmb = 0.5 * RATE + 1.25 + if hour == day { 2.0 * RATE + 3.5 } else { 0.0 };
    assert!(close(b["day"]["spent_rmb"].as_f64().unwrap(), day_rmb), "{b}");
    assert!(close(b["hour"]["spent_rmb"].as_f64().unwrap(), hour_rmb), "{b}");
    assert_eq!(b["allowed"], true);
    assert!(b["as_of"].is_string(), "{b}");
}

#[test]
fn budget_spend_is_the_stores_sum_across_hour_and_day_boundaries_in_shanghai_and_after_a_restart() {
    let mut d = Daemon::start(&fast_budget_in(
        "calendar",
        "hourly_limit_rmb = 1000\ndaily_limit_rmb = 5000",
    ));
    budget_spend_matches_the_store(&mut d, None);
}

#[test]
fn budget_spend_is_the_stores_sum_with_mongodb_too() {
    let server = MongoServer::start();
    let db = unique_db("budget");
    let config = mongodb_section(&server.uri(), &db, "")
        + &fast_budget_in("calendar", "hourly_limit_rmb = 1000\ndaily_limit_rmb = 5000");
    let mut d = Daemon::start(&config);
    budget_spend_matches_the_store(&mut d, Some((&server, &db)));
}

#[test]
fn a_reached_limit_refuses_and_a_models_own_limit_refuses_only_that_model() {
    let d = Daemon::start(&fast_budget(
        "hourly_limit_rmb = 100\ndaily_limit_rmb = 0\n[budget.models.\"gpt-4o\"]\nhourly_limit_rmb = 10",
    ));
    let api = d.api();
    let now = Timestamp::now().as_millis();
    // 2 $ = 14 ¥ on gpt-4o: over its own 10 ¥, well under the overall 100 ¥.
    d.send(cost_line(now - 1000, "gpt-4o", 2.0, "$").as_bytes());
    let own = wait_until(
        "gpt-4o's own limit reached",
        || {
            let b = get_ok(&api, "/api/budget?model=gpt-4o");
            (b["allowed"] == false).then_some(b)
        },
        || d.log(),
    );
    let m = &own["models"][0];
    assert_eq!(m["model"], "gpt-4o");
    assert!(close(m["hour"]["spent_rmb"].as_f64().unwrap(), 14.0), "{own}");
    assert_eq!(m["hour"]["limit_rmb"], 10.0);
    // Other models, and the app's call without a model, are still allowed.
    let other = get_ok(&api, "/api/budget?model=glm-4");
    assert_eq!(other["allowed"], true, "{other}");
    assert_eq!(other["models"][0]["hour"]["spent_rmb"], 0.0);
    assert_eq!(get_ok(&api, "/api/budget")["allowed"], true);
    // The day's limit is off (0), so only the hour counts: 90 ¥ more reaches 100 ¥.
    d.send(cost_line(now - 500, "glm-4", 90.0, "￥").as_bytes());
    let all = wait_until(
        "the hourly limit reached",
        || {
            let b = get_ok(&api, "/api/budget");
            (b["allowed"] == false).then_some(b)
        },
        || d.log(),
    );
    assert!(close(all["hour"]["spent_rmb"].as_f64().unwrap(), 104.0), "{all}");
    assert_eq!(all["hour"]["remaining_rmb"], 0.0);
    // A bad parameter is named.
    let r = get(&api, "/api/budget?modle=gpt-4o");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("unknown parameter `modle`"), "{}", r.text());
}

/// The `(rule, state)` of each notification in a `generic` webhook body.
fn generic_rules(r: &common::webhook::Received) -> Vec<(String, String)> {
    common::webhook::generic_notifications(r)
        .into_iter()
        .map(|(rule, state, _)| (rule, state))
        .collect()
}

fn post_json(api: &str, path: &str, body: &str) -> common::http::Response {
    request(
        api,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

#[test]
fn a_silence_keeps_the_webhooks_quiet_survives_a_restart_and_ends_on_delete() {
    use common::webhook::{Receiver, Reply};
    let rx = Receiver::start(|_, _| Reply::status(204, ""));
    let mut d = Daemon::start(&fast_budget(&format!(
        "hourly_limit_rmb = 10\ndaily_limit_rmb = 0\nwarn_at = [1.0]\n\
         [[webhook]]\nname = \"ops\"\nurl = {:?}\nformat = \"generic\"\ngroup_wait = \"10ms\"\n",
        rx.url("/hooks")
    )));
    let api = d.api();
    // Refusals first: each names what is wrong.
    for (body, says) in [
        (r#"{"duration": "1h"}"#, "matches nothing"),
        (r#"{"rule": "budget"}"#, "exactly one of `duration`"),
        (r#"{"rule": "budget", "duration": "soon"}"#, "`duration`"),
        (r#"{"rule": "budget", "duration": "90d"}"#, "at most 30 days"),
        (
            r#"{"rule": "budget", "duration": "1h", "colour": "red"}"#,
            "unknown field",
        ),
        ("not json", "cannot be read"),
    ] {
        let r = post_json(&api, "/api/alerts/silences", body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(says), "{body}: {}", r.text());
    }
    let r = post_json(
        &api,
        "/api/alerts/silences",
        r#"{"rule": "budget", "labels": {"period": "hourly"}, "duration": "1h", "comment": "known overrun"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let silence = r.json()["silence"].clone();
    let id = silence["id"].as_str().unwrap().to_string();
    assert_eq!(silence["comment"], "known overrun");

    // The hourly budget is reached: the alert fires and shows as silenced; no webhook hears of it.
    let now = Timestamp::now().as_millis();
    d.send(cost_line(now - 1000, "glm-4", 12.0, "￥").as_bytes());
    let active = wait_until(
        "the budget alert, silenced",
        || {
            let a = get_ok(&api, "/api/alerts/active");
            let alerts = a["alerts"].as_array()?.clone();
            alerts.into_iter().find(|x| x["rule"] == "budget")
        },
        || d.log(),
    );
    assert_eq!(active["state"], "firing");
    assert_eq!(active["silenced_by"]["id"], id.as_str(), "{active}");
    assert_eq!(active["labels"]["period"], "hourly");
    d.wait_for_log("silenced by");
    // A webhook that saw it would have been sent by now: the log line comes after the claim.
    assert!(
        rx.received()
            .iter()
            .flat_map(generic_rules)
            .all(|(rule, _)| rule != "budget"),
        "nothing about the budget reached the webhook: {:?}",
        rx.received().iter().flat_map(generic_rules).collect::<Vec<_>>()
    );

    // Restart: the silence is still there and still in force.
    d.stop();
    d.restart();
    let api = d.api();
    let listed = get_ok(&api, "/api/alerts/silences");
    let kept = listed["silences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("the silence survives a restart: {listed}"));
    assert_eq!(kept["active"], true);
    assert_eq!(kept["rule"], "budget");

    // Ending it: listed as ended; an unknown id is a 404 that says where to look.
    let r = request(&api, "DELETE", &format!("/api/alerts/silences/{id}"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let listed = get_ok(&api, "/api/alerts/silences");
    assert_eq!(listed["silences"][0]["active"], false, "{listed}");
    let r = request(&api, "DELETE", "/api/alerts/silences/nope", &[], b"");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("GET /api/alerts/silences"), "{}", r.text());
    let a = get_ok(&api, "/api/alerts/active");
    let budget = a["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["rule"] == "budget")
        .cloned();
    assert_eq!(budget.map(|b| b["silenced_by"].clone()), Some(Value::Null), "{a}");
}

#[test]
fn metrics_show_the_budget_the_alerts_and_the_webhooks() {
    use common::webhook::{Receiver, Reply};
    let rx = Receiver::start(|_, _| Reply::status(204, ""));
    let d = Daemon::start(&fast_budget(&format!(
        "hourly_limit_rmb = 10\ndaily_limit_rmb = 50\nwarn_at = [1.0]\n\
         [[webhook]]\nname = \"ops\"\nurl = {:?}\nformat = \"generic\"\ngroup_wait = \"10ms\"\n",
        rx.url("/hooks")
    )));
    let api = d.api();
    d.send(cost_line(Timestamp::now().as_millis() - 1000, "glm-4", 11.0, "￥").as_bytes());
    wait_until(
        "the budget alert delivered",
        || {
            rx.received()
                .iter()
                .flat_map(generic_rules)
                .find(|(rule, state)| rule == "budget" && state == "firing")
        },
        || d.log(),
    );
    let text = wait_until(
        "the delivery counted",
        || {
            let t = get(&api, "/metrics").text();
            t.contains("lngpt_collector_webhook_delivered_total{receiver=\"ops\"} 1")
                .then_some(t)
        },
        || get(&api, "/metrics").text(),
    );
    // The same alert in the history listing, and the monitor's windows in theirs.
    let alerts = get_ok(&api, "/api/alerts?state=firing&rule=budget");
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), 1, "{alerts}");
    assert_eq!(alerts["alerts"][0]["labels"]["period"], "hourly");
    let minutes = wait_until(
        "a window in /api/metrics/minutes",
        || {
            let m = get_ok(&api, "/api/metrics/minutes?per_page=5");
            (!m["metrics"].as_array()?.is_empty()).then_some(m)
        },
        || d.log(),
    );
    assert_eq!(minutes["metrics"][0]["window_ms"], 300, "{minutes}");
    for line in [
        "lngpt_collector_budget_spent_rmb{period=\"hour\"} 11",
        "lngpt_collector_budget_limit_rmb{period=\"hour\"} 10",
        "lngpt_collector_budget_limit_rmb{period=\"day\"} 50",
        "lngpt_collector_budget_allowed 0",
        "lngpt_collector_alerts_firing{rule=\"budget\",severity=\"critical\"} 1",
        "lngpt_collector_webhook_pending{receiver=\"ops\"} 0",
    ] {
        assert!(text.lines().any(|l| l.starts_with(line)), "{line} in\n{text}");
    }
}

#[test]
fn api_times_without_an_offset_are_read_in_the_naive_timezone() {
    // The original front end sends the browser's local time, naive: 2026-11-26T00:30:00 in
    // Shanghai is 2026-11-25T16:30:00Z.
    let d = Daemon::start_with("naive_timezone = \"Asia/Shanghai\"\n", &[]);
    let api = d.api();
    let at = |iso: &str| Timestamp::parse_rfc3339(iso).unwrap().as_millis();
    let mut lines = String::new();
    for (iso, msg) in [
        ("2026-11-25T16:29:59Z", "before"),
        ("2026-11-25T16:30:00Z", "inside"),
        ("2026-11-25T17:30:01Z", "after"),
    ] {
        lines += &format!(
            "{{\"timestamp\":\"{}\",\"level\":\"INFO\",\"message\":\"{msg}\"}}\n",
            Timestamp(at(iso))
        );
    }
    d.send(lines.as_bytes());
    let page = wait_until(
        "the one log inside the local range",
        || {
            let p = get_ok(
                &api,
                "/api/logs?start_time=2026-11-26T00:30:00&end_time=2026-11-26T01:30:00",
            );
            (p["logs"].as_array()?.len() == 1).then_some(p)
        },
        || get(&api, "/api/logs").text(),
    );
    assert_eq!(page["logs"][0]["message"], "inside");
    // With an offset, the offset counts.
    let p = get_ok(
        &api,
        "/api/logs?start_time=2026-11-25T16:30:00Z&end_time=2026-11-25T17:30:00Z",
    );
    assert_eq!(p["logs"][0]["message"], "inside");
}

#[test]
fn alerts_and_minutes_are_listed_alike_with_mongodb() {
    let server = MongoServer::start();
    let db = unique_db("alertlist");
    let config = mongodb_section(&server.uri(), &db, "")
        + &fast_budget("hourly_limit_rmb = 10\ndaily_limit_rmb = 0\nwarn_at = [1.0]");
    let d = Daemon::start(&config);
    let api = d.api();
    d.send(cost_line(Timestamp::now().as_millis() - 1000, "glm-4", 12.0, "￥").as_bytes());
    let active = wait_until(
        "the budget alert, active",
        || {
            let a = get_ok(&api, "/api/alerts/active");
            a["alerts"].as_array()?.iter().find(|x| x["rule"] == "budget").cloned()
        },
        || d.log(),
    );
    assert_eq!(active["silenced_by"], Value::Null);
    let listed = get_ok(&api, "/api/alerts?state=firing&rule=budget");
    assert_eq!(listed["alerts"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["alerts"][0]["key"], active["key"]);
    let minutes = wait_until(
        "a window in /api/metrics/minutes",
        || {
            let m = get_ok(&api, "/api/metrics/minutes?per_page=5");
            (!m["metrics"].as_array()?.is_empty()).then_some(m)
        },
        || d.log(),
    );
    assert_eq!(minutes["metrics"][0]["window_ms"], 300, "{minutes}");
}

/// One budget alert per period that escalates: 50 % → warning, 80 % → high, 100 % → critical, the
/// same occurrence (one document, one `alert_key`) whose webhook notifications are a firing and
/// two escalations; its current value follows the spend in the API; it resolves once when the spend
/// falls back under the lowest step (here: the costs age out of the sliding hour).
#[test]
fn the_budget_alert_escalates_through_its_steps_as_one_alert_and_resolves_once() {
    use common::webhook::{Receiver, Reply};
    let rx = Receiver::start(|_, _| Reply::status(204, ""));
    // The spend is what the monitor saw (one reading of the store at the start): a cost stored
    // while a reading is under way counts twice until the next one (README, Budgets), which here
    // could pass a step by itself.
    let config = fast_budget(&format!(
        "hourly_limit_rmb = 10\ndaily_limit_rmb = 0\nwarn_at = [0.5, 0.8, 1.0]\n\
         [[webhook]]\nname = \"ops\"\nurl = {:?}\nformat = \"generic\"\ngroup_wait = \"10ms\"\n",
        rx.url("/hooks")
    ))
    .replace("refresh = \"50ms\"", "refresh = \"1h\"");
    let d = Daemon::start(&config);
    let api = d.api();
    // Costs that leave the sliding hour 15 s from now: time enough to pass the three steps on a
    // busy machine.
    let leaves_at = Timestamp::now().as_millis() + 15_000;
    let at = leaves_at - HOUR_MS;
    let active_budget = |severity: &str| {
        wait_until(
            &format!("the budget alert at {severity}"),
            || {
                let a = get_ok(&api, "/api/alerts/active");
                a["alerts"]
                    .as_array()?
                    .iter()
                    .find(|x| x["rule"] == "budget" && x["severity"] == severity)
                    .cloned()
            },
            || format!("{}\n{}", get_ok(&api, "/api/alerts/active"), d.log()),
        )
    };
    d.send(cost_line(at, "glm-4", 5.5, "￥").as_bytes());
    let warning = active_budget("warning");
    assert_eq!(
        (warning["value"].as_f64(), warning["unit"].as_str()),
        (Some(5.5), Some("rmb")),
        "{warning}"
    );
    d.send(cost_line(at + 1, "glm-4", 3.0, "￥").as_bytes());
    let high = active_budget("high");
    d.send(cost_line(at + 2, "glm-4", 2.0, "￥").as_bytes());
    let critical = active_budget("critical");
    for a in [&high, &critical] {
        assert_eq!(a["key"], warning["key"], "one alert: {a}");
        assert_eq!(a["started_at"], warning["started_at"], "one occurrence: {a}");
    }
    assert_eq!(critical["value"], 5.5, "the value at firing stays: {critical}");
    assert_eq!(
        critical["current"], 10.5,
        "the current value follows the spend: {critical}"
    );
    assert!(critical["message"].as_str().unwrap().contains("¥10.50"), "{critical}");
    // Back under the lowest step: resolved once.
    let resolved = wait_until(
        "the budget alert resolved",
        || {
            let a = get_ok(&api, "/api/alerts?state=resolved");
            a["alerts"].as_array()?.iter().find(|x| x["rule"] == "budget").cloned()
        },
        || d.log(),
    );
    assert_eq!(resolved["started_at"], warning["started_at"]);
    let all = get_ok(&api, "/api/alerts?rule=budget");
    assert_eq!(all["alerts"].as_array().unwrap().len(), 1, "one document: {all}");
    // The webhook saw one alert: fired, escalated twice, resolved — each once, all one key.
    let notes = wait_until(
        "four notifications",
        || {
            let notes: Vec<serde_json::Value> = rx
                .received()
                .iter()
                .flat_map(|r| {
                    r.json()["data"]["notifications"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .filter(|n| n["rule"] == "budget")
                .collect();
            (notes.len() >= 4).then_some(notes)
        },
        || format!("{:?}", rx.received().iter().map(|r| r.json()).collect::<Vec<_>>()),
    );
    let steps: Vec<(String, String, String)> = notes
        .iter()
        .map(|n| {
            (
                n["state"].as_str().unwrap().to_string(),
                n["severity"].as_str().unwrap().to_string(),
                n["escalated_from"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("firing".to_string(), "warning".to_string(), String::new()),
            ("firing".into(), "high".into(), "warning".into()),
            ("firing".into(), "critical".into(), "high".into()),
            ("resolved".into(), "critical".into(), String::new()),
        ]
    );
    assert!(notes.iter().all(|n| n["alert_key"] == notes[0]["alert_key"]));
}
