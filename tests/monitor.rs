//! The monitor against the real binary: windows written to `api_metrics`, alert rules with their
//! lifecycle in `api_alerts`, damping of flapping conditions. Windows and intervals are shortened
//! to milliseconds; events carry their own timestamps where a test needs to place them.

use crate::common;

use serde_json::Value;

use crate::common::{docs, wait_until, Daemon};

/// A fast monitor: 300 ms windows, evaluated every 50 ms; batches written within 10 ms, so that a
/// window's events are stored before its grace ends.
fn fast(extra: &str) -> String {
    format!(
        "[pipeline]\nmax_wait = \"10ms\"\n[monitor]\nwindow = \"300ms\"\ngrace = \"300ms\"\nevaluate_every = \"50ms\"\nkeep = \"1m\"\n{extra}\n"
    )
}

fn perf(model: &str, seconds: f64, ok: bool) -> String {
    format!(
        "{{\"type\":\"performance\",\"response_time\":{seconds},\"status\":\"{}\",\"model\":\"{model}\"}}\n",
        if ok { "success" } else { "error" }
    )
}

fn now_iso(offset_ms: i64) -> String {
    let ms = lngpt_collector::event::Timestamp::now().as_millis() + offset_ms;
    lngpt_collector::event::Timestamp(ms).to_string()
}

#[test]
fn finished_windows_are_written_to_api_metrics_overall_and_per_model() {
    let d = Daemon::start(&(fast("") + "[budget]\nhourly_limit_rmb = 0\ndaily_limit_rmb = 0\n"));
    // Ten calls to one model (two failed), five to another, all in one window (their own timestamp).
    let at = now_iso(0);
    let mut body = String::new();
    for i in 0..10 {
        body += &perf("glm-4", 1.0 + i as f64 / 10.0, i >= 2)
            .replace("{\"type\"", &format!("{{\"timestamp\":\"{at}\",\"type\""));
    }
    for _ in 0..5 {
        body += &perf("gpt-4o", 3.0, true).replace("{\"type\"", &format!("{{\"timestamp\":\"{at}\",\"type\""));
    }
    body += &format!("{{\"type\":\"cost\",\"timestamp\":\"{at}\",\"model\":\"gpt-4o\",\"cost\":1.0,\"currency_symbol\":\"$\",\"input_tokens\":100,\"output_tokens\":50}}\n");
    assert_eq!(d.send(body.as_bytes()).events, 16);
    let metrics: Vec<Value> = wait_until(
        "the window's documents",
        || {
            let all = docs(&d.db(), "api_metrics");
            let busy: Vec<Value> = all
                .into_iter()
                .filter(|m| m["request_count"].as_u64() > Some(0))
                .collect();
            (busy.len() == 3).then_some(busy)
        },
        || d.log(),
    );
    let overall = metrics
        .iter()
        .find(|m| m.get("model").is_none())
        .expect("a document for all models");
    assert_eq!(overall["request_count"], 15);
    assert_eq!(overall["error_count"], 2);
    assert!(
        (overall["error_rate"].as_f64().unwrap() - 13.333).abs() < 0.01,
        "{overall}"
    );
    let avg = (10.0 + 4.5 + 15.0) / 15.0;
    assert!(
        (overall["avg_duration"].as_f64().unwrap() - avg).abs() < 1e-9,
        "{overall}"
    );
    assert!(overall["p95_duration"].as_f64().unwrap() > 2.9, "{overall}");
    assert_eq!(overall["cost_rmb"], 7.0, "one dollar at the default rate of 7");
    assert_eq!(overall["input_tokens"], 100);
    let glm = metrics.iter().find(|m| m["model"] == "glm-4").unwrap();
    assert_eq!(
        (glm["request_count"].as_u64(), glm["error_count"].as_u64()),
        (Some(10), Some(2))
    );
    let p50 = glm["p50_duration"].as_f64().unwrap();
    assert!((p50 - 1.4).abs() < 0.05, "p50 of 1.0..1.9 is about 1.4-1.5: {p50}");
    assert_eq!(glm["minute"], overall["minute"]);
}

#[test]
fn an_error_rate_alert_fires_once_is_stored_and_resolves() {
    let d = Daemon::start(&fast(""));
    let burst: String = (0..10).map(|i| perf("glm-4", 0.5, i % 2 == 0)).collect();
    assert_eq!(d.send(burst.as_bytes()).events, 10);
    let alert = wait_until(
        "the error-rate alert",
        || {
            docs(&d.db(), "api_alerts")
                .into_iter()
                .find(|a| a["rule"] == "error_rate")
        },
        || d.log(),
    );
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["value"], 50.0);
    assert_eq!(alert["threshold"], 10.0);
    assert!(alert["message"].as_str().unwrap().contains("错误率 50.0%"), "{alert}");
    assert!(
        alert["key"].as_str().unwrap().starts_with("error_rate{host="),
        "{alert}"
    );
    d.wait_for_log("告警 alert: [严重] 错误率过高");
    // Healthy traffic: the alert resolves, and the resolution is logged once.
    let healthy: String = (0..10).map(|_| perf("glm-4", 0.5, true)).collect();
    d.send(healthy.as_bytes());
    wait_until(
        "the alert resolved",
        || {
            docs(&d.db(), "api_alerts")
                .into_iter()
                .find(|a| a["rule"] == "error_rate" && a["state"] == "resolved")
        },
        || d.log(),
    );
    d.wait_for_log("alert resolved: [严重] 错误率过高");
    assert_eq!(
        d.log().matches("告警 alert: [严重] 错误率过高").count(),
        1,
        "fired once:\n{}",
        d.log()
    );
    assert_eq!(d.log().matches("alert resolved: [严重] 错误率过高").count(), 1);
}

#[test]
fn a_condition_flapping_every_window_is_damped_by_for() {
    // The error rate swings between 100 % and 0 % every 200 ms window for 10 windows; the rule wants
    // three consecutive evaluations over the threshold (each window is evaluated about twice).
    let d = Daemon::start(
        "[pipeline]\nmax_wait = \"10ms\"\n[monitor]\nwindow = \"200ms\"\ngrace = \"50ms\"\nevaluate_every = \"100ms\"\nkeep = \"1m\"\n\
         [monitor.rules]\nerror_rate = { min_requests = 2, for = 3 }\n",
    );
    let now = lngpt_collector::event::Timestamp::now().as_millis();
    let first = now - now.rem_euclid(200) + 400;
    let mut body = String::new();
    for w in 0..10 {
        let at = lngpt_collector::event::Timestamp(first + w * 200 + 50).to_string();
        for _ in 0..4 {
            let line = perf("m", 0.2, w % 2 == 1);
            body += &line.replace("{\"type\"", &format!("{{\"timestamp\":\"{at}\",\"type\""));
        }
    }
    d.send(body.as_bytes());
    // Until every window has been evaluated.
    let end = first + 10 * 200 + 400;
    wait_until(
        "the ten windows to pass",
        || (lngpt_collector::event::Timestamp::now().as_millis() > end).then_some(()),
        || d.log(),
    );
    wait_until(
        "the last window's document",
        || {
            (docs(&d.db(), "api_metrics")
                .iter()
                .filter(|m| m.get("model").is_none() && m["request_count"] == 4)
                .count()
                == 10)
                .then_some(())
        },
        || d.log(),
    );
    let alerts = docs(&d.db(), "api_alerts");
    assert!(
        alerts.iter().all(|a| a["rule"] != "error_rate"),
        "no alert from a flapping condition: {alerts:?}"
    );
}

#[test]
fn a_restart_takes_up_firing_alerts_without_firing_them_again() {
    let mut d = Daemon::start(&fast("[monitor.rules]\nerror_rate = { min_requests = 2 }\n"));
    let errors: String = (0..4).map(|_| perf("m", 0.1, false)).collect();
    d.send(errors.as_bytes());
    let fired = wait_until(
        "the alert",
        || {
            docs(&d.db(), "api_alerts")
                .into_iter()
                .find(|a| a["rule"] == "error_rate" && a["state"] == "firing")
        },
        || d.log(),
    );
    assert!(d.stop().success());
    d.restart();
    d.wait_for_log("alerts were firing before the restart");
    // Nothing more arrives: the empty windows clear the condition, and the taken-up alert resolves.
    let resolved = wait_until(
        "the resolution",
        || {
            docs(&d.db(), "api_alerts")
                .into_iter()
                .find(|a| a["rule"] == "error_rate" && a["state"] == "resolved")
        },
        || d.log(),
    );
    assert_eq!(resolved["started_at"], fired["started_at"], "the same occurrence");
    assert!(
        !d.log().contains("告警 alert:"),
        "no second firing after the restart:\n{}",
        d.log()
    );
    assert_eq!(docs(&d.db(), "api_alerts").len(), 1);
}

/// The notifications in a generic webhook's body, as (rule, state, id).
#[test]
fn an_alert_reaches_the_webhooks_when_it_fires_and_when_it_resolves() {
    use common::webhook::{Receiver, Reply};
    let rx = Receiver::start(|_, _| Reply::status(204, ""));
    let d = Daemon::start(&fast(&format!(
        "[[webhook]]\nname = \"ops\"\nurl = {:?}\nformat = \"generic\"\ngroup_wait = \"10ms\"\n",
        rx.url("/hooks")
    )));
    let burst: String = (0..10).map(|i| perf("glm-4", 0.5, i % 2 == 0)).collect();
    d.send(burst.as_bytes());
    let fired = wait_until(
        "the firing notification",
        || {
            rx.received()
                .iter()
                .flat_map(common::webhook::generic_notifications)
                .find(|n| n.0 == "error_rate")
        },
        || d.log(),
    );
    assert_eq!(fired.1, "firing");
    assert!(
        fired.2.starts_with("error_rate{host=") && fired.2.ends_with(":firing"),
        "{fired:?}"
    );
    // Healthy windows: the resolution follows, once.
    d.send((0..10).map(|_| perf("glm-4", 0.5, true)).collect::<String>().as_bytes());
    wait_until(
        "the resolved notification",
        || {
            rx.received()
                .iter()
                .flat_map(common::webhook::generic_notifications)
                .find(|n| n.0 == "error_rate" && n.1 == "resolved")
        },
        || d.log(),
    );
    let sent: Vec<_> = rx
        .received()
        .iter()
        .flat_map(common::webhook::generic_notifications)
        .filter(|n| n.0 == "error_rate")
        .collect();
    assert_eq!(sent.len(), 2, "one firing, one resolved: {sent:?}");
}

#[test]
fn two_collectors_sharing_one_mongodb_share_one_budget_and_send_its_alert_once() {
    use common::mongo::{mongodb_section, unique_db, MongoServer};
    use common::webhook::{Receiver, Reply};
    let server = MongoServer::start();
    let db = unique_db("sharedbudget");
    let rx = Receiver::start(|_, _| Reply::status(204, ""));
    let config = mongodb_section(&server.uri(), &db, "")
        + &fast(&format!(
            "[budget]\nhourly_limit_rmb = 10.0\ndaily_limit_rmb = 0\nwarn_at = [1.0]\nrefresh = \"50ms\"\n\
             [[webhook]]\nname = \"ops\"\nurl = {:?}\nformat = \"generic\"\ngroup_wait = \"10ms\"\n",
            rx.url("/hooks")
        ));
    let a = Daemon::start(&config);
    let b = Daemon::start(&config);
    // Six yuan through each host: neither reaches the limit alone, together they do.
    let cost = |host: &str| {
        format!("{{\"type\":\"cost\",\"model\":\"glm-4\",\"cost\":6.0,\"currency_symbol\":\"￥\",\"request_id\":\"{host}\"}}\n")
    };
    assert_eq!(a.send(cost("a").as_bytes()).events, 1);
    assert_eq!(b.send(cost("b").as_bytes()).events, 1);
    let fired = wait_until(
        "the budget alert",
        || {
            rx.received()
                .iter()
                .flat_map(common::webhook::generic_notifications)
                .find(|n| n.0 == "budget")
        },
        || format!("{}\n---\n{}", a.log(), b.log()),
    );
    assert_eq!(fired.1, "firing");
    let client = server.client();
    let alerts = common::mongo::find_all(&client, &db, "api_alerts");
    let budget: Vec<_> = alerts.iter().filter(|d| d.get_str("rule") == Ok("budget")).collect();
    assert_eq!(budget.len(), 1, "{alerts:?}");
    // (The stand-in, in JavaScript, gives a whole double back as an integer.)
    let value = match budget[0].get("value") {
        Some(mongodb::bson::Bson::Double(v)) => *v,
        Some(mongodb::bson::Bson::Int32(v)) => f64::from(*v),
        Some(mongodb::bson::Bson::Int64(v)) => *v as f64,
        other => panic!("value is {other:?}"),
    };
    assert_eq!(value, 12.0, "the spend of both hosts");
    // Both collectors keep evaluating (every 50 ms); the notification still goes out once.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let budget_sent = rx
        .received()
        .iter()
        .flat_map(common::webhook::generic_notifications)
        .filter(|n| n.0 == "budget")
        .count();
    assert_eq!(
        budget_sent,
        1,
        "claimed once across the two collectors:\n{}\n---\n{}",
        a.log(),
        b.log()
    );
    let claims = a.log().matches("告警 alert:").count() + b.log().matches("告警 alert:").count();
    assert_eq!(claims, 1, "one collector claimed it:\n{}\n---\n{}", a.log(), b.log());
}

#[test]
fn tokens_without_an_amount_are_priced_from_the_table_and_unknown_models_alert() {
    let d = Daemon::start(&fast(
        "[prices.\"gpt-4o\"]\ninput_per_million = 2.5\noutput_per_million = 10.0\ncurrency = \"$\"\n",
    ));
    let ack = d.send(
        b"{\"type\":\"cost\",\"model\":\"openai/gpt-4o\",\"input_tokens\":100000,\"output_tokens\":10000}\n\
          {\"type\":\"cost\",\"model\":\"mystery-model\",\"input_tokens\":5000}\n\
          {\"type\":\"cost\",\"model\":\"nothing\"}\n",
    );
    assert_eq!(
        (ack.events, ack.rejected),
        (2, 1),
        "a cost with neither amount nor tokens is a reject"
    );
    d.wait_for_count("api_cost", 2);
    let costs = docs(&d.db(), "api_cost");
    let priced = costs.iter().find(|c| c["model"] == "openai/gpt-4o").unwrap();
    assert_eq!(priced["cost_source"], "price_table");
    assert!((priced["cost"].as_f64().unwrap() - 0.35).abs() < 1e-12, "{priced}");
    assert_eq!(priced["currency_symbol"], "$");
    let unpriced = costs.iter().find(|c| c["model"] == "mystery-model").unwrap();
    assert_eq!(
        (unpriced["cost_source"].as_str(), unpriced["cost"].as_f64()),
        (Some("unpriced"), Some(0.0))
    );
    let alert = wait_until(
        "the unpriced alert",
        || {
            docs(&d.db(), "api_alerts")
                .into_iter()
                .find(|a| a["rule"] == "unpriced")
        },
        || d.log(),
    );
    assert_eq!(alert["labels"]["model"], "mystery-model");
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("[prices.\"mystery-model\"]"),
        "{alert}"
    );
}

/// `line` (a performance or cost record) timed at `at`.
fn timed(at: &str, line: &str) -> String {
    let field = if line.contains("\"type\":\"cost\"") {
        "created_at"
    } else {
        "timestamp"
    };
    line.replacen('{', &format!("{{\"{field}\":\"{at}\","), 1)
}

fn cost(model: &str, rmb: f64) -> String {
    format!("{{\"type\":\"cost\",\"model\":\"{model}\",\"cost\":{rmb},\"currency_symbol\":\"￥\"}}\n")
}

fn budget_hour(api: &str) -> (f64, Option<String>) {
    let b = common::http::get_ok(api, "/api/budget");
    (
        b["hour"]["spent_rmb"].as_f64().unwrap(),
        b["as_of"].as_str().map(str::to_string),
    )
}

/// One record timed far from the collector's clock — 8 hours or 2099 ahead (a naive local time
/// read as UTC, a clock set wrong), 8 hours or 1970 behind — neither moves the windows nor hides
/// spend: real traffic after it still fires the error-rate alert; the ones ahead are stored as they
/// are, flagged with `extra.clock_skew_ms`, and counted at arrival by the budget, from memory and
/// from the store alike; each source's first of each kind is reported once, with the likely cause.
#[test]
fn a_wrong_clock_neither_switches_the_monitor_off_nor_hides_spend_on_both_stores() {
    let check = |d: &Daemon| {
        let api = d.api();
        let ahead_8h = now_iso(8 * 3_600_000);
        let behind_8h = now_iso(-8 * 3_600_000);
        let mut wrong = String::new();
        for at in [
            ahead_8h.as_str(),
            "2099-01-01T00:00:00Z",
            behind_8h.as_str(),
            "1970-01-01T00:00:01Z",
        ] {
            wrong += &timed(at, &perf("glm-4", 0.5, true));
        }
        wrong += &timed(&ahead_8h, &cost("glm-4", 10.0));
        wrong += &timed("2099-01-01T00:00:00Z", &cost("glm-4", 5.0));
        wrong += &timed(&behind_8h, &cost("glm-4", 100.0));
        wrong += &timed("1970-01-01T00:00:01Z", &cost("glm-4", 100.0));
        assert_eq!(d.send(wrong.as_bytes()).events, 8);
        let sent_at = lngpt_collector::event::Timestamp::now().to_string();
        // Real traffic at half errors: the alert fires, whatever came before.
        let burst: String = (0..400).map(|i| perf("glm-4", 0.5, i % 2 == 0)).collect();
        assert_eq!(d.send(burst.as_bytes()).events, 400);
        wait_until(
            "the error-rate alert",
            || {
                let active = common::http::get_ok(&api, "/api/alerts/active");
                active["alerts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a["rule"] == "error_rate")
                    .then_some(())
            },
            || d.log(),
        );
        // The ahead costs count at arrival (15), the behind ones in their own time (not this hour):
        // from memory, and after a reading of the store too. (Stored during a reading, they count
        // twice until the next one.)
        wait_until(
            "the ahead costs counted at arrival",
            || (budget_hour(&api).0 == 15.0).then_some(()),
            || format!("{:?}\n{}", budget_hour(&api), d.log()),
        );
        wait_until(
            "a reading of the store after the costs",
            || {
                let (spent, as_of) = budget_hour(&api);
                (as_of.is_some_and(|t| t > sent_at) && spent == 15.0).then_some(())
            },
            || format!("{:?}\n{}", budget_hour(&api), d.log()),
        );
        for _ in 0..5 {
            assert_eq!(budget_hour(&api).0, 15.0, "the spend stays after each reading");
            std::thread::sleep(std::time::Duration::from_millis(120));
        }
        // Stored as they are, the ahead ones flagged.
        let perf_docs = common::http::get_ok(&api, "/api/performance?start_time=2099-01-01&per_page=10");
        let far = &perf_docs["performance"][0];
        assert_eq!(far["timestamp"], "2099-01-01T00:00:00.000Z", "{perf_docs}");
        let skew = far["extra"]["clock_skew_ms"].as_f64();
        assert!(skew.is_some_and(|ms| ms > 70.0 * 365.0 * 86_400_000.0), "{far}");
        // Counted on /metrics, reported once per kind with the likely cause.
        let metrics = common::http::get(&api, "/metrics").text();
        assert!(
            metrics.contains("lngpt_collector_events_clock_skewed_total{source=\"socket\",direction=\"ahead\"} 4"),
            "{metrics}"
        );
        assert!(
            metrics.contains("lngpt_collector_events_clock_skewed_total{source=\"socket\",direction=\"behind\"} 4"),
            "{metrics}"
        );
        let log = d.log();
        assert_eq!(
            log.matches("ahead of the collector's clock: a naive time read as UTC? set naive_timezone")
                .count(),
            1,
            "{log}"
        );
        assert_eq!(log.matches("after their own time").count(), 1, "{log}");
    };
    let extra = fast("[budget]\nrefresh = \"100ms\"\nhourly_limit_rmb = 1000.0\ndaily_limit_rmb = 0\n");
    check(&Daemon::start(&extra));
    let server = common::mongo::MongoServer::start();
    check(&Daemon::start(&common::mongo::mongodb_section(
        &server.uri(),
        &common::mongo::unique_db("skew"),
        &extra,
    )));
}

/// After traffic stops, a quiet window is clear: the error-rate alert resolves, once, and is not
/// sent again (it used to repeat the last busy window's figures for ever).
#[test]
fn an_alert_resolves_once_when_traffic_stops() {
    let d = Daemon::start(&fast(""));
    let burst: String = (0..10).map(|i| perf("glm-4", 0.5, i % 2 == 0)).collect();
    d.send(burst.as_bytes());
    d.wait_for_log("告警 alert: [严重] 错误率过高");
    d.wait_for_log("alert resolved: [严重] 错误率过高");
    let sent = d.log().matches("告警 alert: [严重] 错误率过高").count();
    // Ten more windows of quiet: nothing more about it.
    let until = lngpt_collector::event::Timestamp::now().as_millis() + 3_000;
    wait_until(
        "ten quiet windows",
        || (lngpt_collector::event::Timestamp::now().as_millis() > until).then_some(()),
        || d.log(),
    );
    let log = d.log();
    assert_eq!(log.matches("alert resolved: [严重] 错误率过高").count(), 1, "{log}");
    assert_eq!(
        log.matches("告警 alert: [严重] 错误率过高").count(),
        sent,
        "nothing sent after it resolved:\n{log}"
    );
    let alerts = docs(&d.db(), "api_alerts");
    let error_rate: Vec<&Value> = alerts.iter().filter(|a| a["rule"] == "error_rate").collect();
    assert_eq!(error_rate.len(), 1, "{alerts:?}");
    assert_eq!(error_rate[0]["state"], "resolved");
}

/// A restart neither resolves nor fires again an alert that goes on, whatever the window's width
/// (one that is not a whole minute cannot be refilled from the store).
#[test]
fn a_restart_during_an_ongoing_alert_neither_resolves_nor_fires_it_again() {
    let mut d = Daemon::start(
        "[pipeline]\nmax_wait = \"10ms\"\n[monitor]\nwindow = \"700ms\"\ngrace = \"100ms\"\nevaluate_every = \"50ms\"\nkeep = \"1m\"\n\
         [monitor.rules]\nerror_rate = { min_requests = 2 }\nmodel_error_rate = { enabled = false }\n",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (socket, stop) = (d.socket.clone(), stop.clone());
        std::thread::spawn(move || {
            let errors: String = (0..6).map(|i| perf("glm-4", 0.2, i % 3 == 0)).collect();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // The daemon is away during its restart: try again.
                let _ = lngpt_collector::send::send(&socket, &mut errors.as_bytes());
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
    };
    let fired = wait_until(
        "the alert",
        || {
            docs(&d.db(), "api_alerts")
                .into_iter()
                .find(|a| a["rule"] == "error_rate" && a["state"] == "firing")
        },
        || d.log(),
    );
    assert!(d.stop().success());
    d.restart();
    d.wait_for_log("alerts were firing before the restart");
    // Five windows after the restart, with the errors going on.
    let until = lngpt_collector::event::Timestamp::now().as_millis() + 3_500;
    wait_until(
        "five windows",
        || (lngpt_collector::event::Timestamp::now().as_millis() > until).then_some(()),
        || d.log(),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
    let alerts = docs(&d.db(), "api_alerts");
    assert_eq!(alerts.len(), 1, "one occurrence: {alerts:?}\n{}", d.log());
    assert_eq!(alerts[0]["started_at"], fired["started_at"]);
    assert_eq!(alerts[0]["state"], "firing");
    let log = d.log();
    assert!(
        !log.contains("alert resolved:") && !log.contains("告警 alert:"),
        "{log}"
    );
}

/// Liveness across collectors sharing one MongoDB (beats every 100 ms, silent after 1 s): one is
/// killed (-9); the two still running alert once between them (one claim, one webhook
/// notification) and resolve once when it is back; one stopped cleanly is not silence.
/// `/api/collectors` lists them all, this one first, each with its latest beat.
#[test]
fn a_collector_that_goes_silent_is_alerted_once_and_resolved_when_it_returns() {
    use common::http::get_ok;
    use common::mongo::{mongodb_section, unique_db, MongoServer};
    use common::webhook::{Receiver, Reply};
    let server = MongoServer::start();
    let db = unique_db("liveness");
    let rx = Receiver::start(|_, _| Reply::status(204, ""));
    let config = mongodb_section(&server.uri(), &db, "")
        + &fast(&format!(
            "heartbeat_every = \"100ms\"\n[monitor.rules]\ncollector_silent = {{ threshold = 1.0 }}\n\
             [[webhook]]\nname = \"ops\"\nurl = {:?}\nformat = \"generic\"\ngroup_wait = \"10ms\"\nrules = [\"collector_silent\"]\n",
            rx.url("/hooks")
        ));
    let mut killed = Daemon::start(&config);
    let watcher = Daemon::start(&config);
    let other_watcher = Daemon::start(&config);
    let mut stopped = Daemon::start(&config);
    let api = watcher.api();
    let collectors = || {
        get_ok(&api, "/api/collectors")["collectors"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let standing_of = |pid: i32| -> Option<String> {
        collectors()
            .iter()
            .find(|c| c["pid"] == pid)
            .and_then(|c| c["standing"].as_str().map(str::to_string))
    };
    // Everyone beating, as the watcher sees it.
    let listed = wait_until(
        "four collectors, the three others beating",
        || {
            let list = collectors();
            let beating = list.iter().filter(|c| c["standing"] == "beating").count();
            (list.len() == 4 && beating == 3).then_some(list)
        },
        || format!("{:?}\n{}", collectors(), watcher.log()),
    );
    assert_eq!(listed[0]["standing"], "this");
    assert_eq!(listed[0]["pid"], watcher.pid());
    for c in &listed {
        assert!(c["beats"].as_u64() >= Some(1) && c["beat_at"].is_string(), "{c}");
        assert_eq!(c["version"], env!("CARGO_PKG_VERSION"));
    }

    // A clean stop, then a crash.
    let stopped_pid = stopped.pid();
    assert!(stopped.stop().success());
    wait_until(
        "the clean stop seen",
        || (standing_of(stopped_pid).as_deref() == Some("stopped")).then_some(()),
        || format!("{:?}", collectors()),
    );
    let killed_pid = killed.pid();
    let killed_id = listed.iter().find(|c| c["pid"] == killed_pid).unwrap()["collector"].clone();
    killed.signal(nix::sys::signal::Signal::SIGKILL);
    killed.wait_exit();
    let silent = |state: &str| {
        rx.received()
            .iter()
            .flat_map(|r| {
                r.json()["data"]["notifications"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|n| n["rule"] == "collector_silent" && n["state"] == state)
            .collect::<Vec<_>>()
    };
    let fired = wait_until(
        "the silence alerted",
        || silent("firing").pop(),
        || format!("{:?}\n{}", collectors(), watcher.log()),
    );
    assert_eq!(fired["labels"]["collector"], killed_id, "{fired}");
    // (The other watcher may have judged it a beat earlier.)
    wait_until(
        "the watcher's list says silent",
        || (standing_of(killed_pid).as_deref() == Some("silent")).then_some(()),
        || format!("{:?}", collectors()),
    );

    // Back: the same installation beats again, and the alert resolves.
    killed.restart();
    let resolved = wait_until(
        "the alert resolved",
        || silent("resolved").pop(),
        || format!("{:?}\n{}", collectors(), watcher.log()),
    );
    assert_eq!(resolved["labels"]["collector"], killed_id);
    assert_eq!(silent("firing").len(), 1, "sent once by the two watchers");
    assert_eq!(silent("resolved").len(), 1);
    let claims = watcher.log().matches("告警 alert:").count() + other_watcher.log().matches("告警 alert:").count();
    assert_eq!(claims, 1, "one of them claimed it");
    // The clean stop was never taken for silence (more than the threshold has passed since).
    assert!(
        rx.received()
            .iter()
            .flat_map(|r| r.json()["data"]["notifications"]
                .as_array()
                .cloned()
                .unwrap_or_default())
            .all(|n| n["labels"]["collector"] == killed_id),
        "only the killed collector was alerted"
    );
}
