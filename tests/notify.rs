//! Webhook delivery through the library's `Notifier`, against real HTTP receivers on loopback:
//! each format's layout and signature (checked by the vendors' algorithms, written here on their
//! own), faults (5xx, 429 with Retry-After, a hanging receiver, a refused port, 4xx), the rate
//! limit, Alertmanager's re-posts, reloads, and a SIGKILL between enqueue and delivery.
//!
//! Every interval is configured down to milliseconds; tests wait on conditions, never on sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::common::webhook::{Received, Receiver, Reply};
use crate::common::PATIENCE;
use lngpt_collector::config::HumanDuration;
use lngpt_collector::event::Timestamp;
use lngpt_collector::monitor::vocabulary::{AlertState, Severity, Unit};
use lngpt_collector::notify::{FormatKind, Notification, Notifier, Options, ReceiverStats, WebhookConfig};
use lngpt_collector::shutdown::Coordinator;

// ---------- harness ----------

fn ms(n: u64) -> HumanDuration {
    HumanDuration(Duration::from_millis(n))
}

/// A receiver with test-sized intervals: no group wait, fast retries.
fn webhook(name: &str, url: &str, format: FormatKind) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url: url.into(),
        format,
        timeout: ms(2000),
        group_wait: ms(0),
        backoff: ms(20),
        max_backoff: ms(100),
        ..WebhookConfig::default()
    }
}

fn note(id: &str, severity: Severity, state: AlertState) -> Notification {
    let mut labels = BTreeMap::new();
    labels.insert("model".to_string(), "gpt-4o".to_string());
    Notification {
        id: id.into(),
        alert_key: format!("error_rate:{id}"),
        rule: "error_rate".into(),
        severity,
        escalated_from: None,
        state,
        title: "错误率过高".into(),
        message: "过去 5 分钟 gpt-4o 的错误率为 23%，超过阈值 10%；请检查 API 密钥与额度。".into(),
        value: 23.0,
        current: 23.0,
        unit: Unit::Percent,
        threshold: 10.0,
        labels,
        starts_at: Timestamp(1_795_680_000_000),
        ends_at: (state == AlertState::Resolved).then_some(Timestamp(1_795_680_600_000)),
    }
}

fn firing(id: &str) -> Notification {
    note(id, Severity::High, AlertState::Firing)
}

struct Running {
    notifier: Notifier,
    coordinator: Coordinator,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(db: &Path, receivers: &[WebhookConfig]) -> Running {
        let notifier = Notifier::open(db, receivers, Options::default()).expect("open the notifier");
        let coordinator = Coordinator::new();
        let task = tokio::spawn(notifier.clone().run(coordinator.listener("webhook delivery")));
        Running {
            notifier,
            coordinator,
            task,
        }
    }

    async fn stop(self) {
        self.coordinator
            .shutdown_by(tokio::time::Instant::now() + PATIENCE)
            .await
            .expect("the notifier stops");
        self.task.await.expect("run ended");
    }

    fn stats(&self, name: &str) -> ReceiverStats {
        self.notifier
            .stats()
            .into_iter()
            .find(|s| s.name == name)
            .expect("stats of the receiver")
    }
}

/// Polls `check` until it yields, without blocking the runtime.
async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `receiver` got at least `n` requests; returns them.
async fn requests(receiver: &Receiver, n: usize) -> Vec<Received> {
    wait_for(&format!("{n} requests"), || {
        let got = receiver.received();
        (got.len() >= n).then_some(got)
    })
    .await
}

/// The ids of the notifications a generic delivery carries.
fn generic_ids(r: &Received) -> Vec<String> {
    r.json()["data"]["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_string())
        .collect()
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn now_secs() -> i64 {
    Timestamp::now().as_millis() / 1000
}

/// Rows of `notify_queue`: (id, status, answer).
fn queue_rows(db: &Path, receiver: &str) -> Vec<(String, String, Option<String>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, status, answer FROM notify_queue WHERE receiver = ?1 ORDER BY seq")
        .unwrap();
    let rows = stmt
        .query_map([receiver], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

// ---------- formats and signatures ----------

/// Standard Webhooks, verified as its specification says: HMAC-SHA256 over "{id}.{timestamp}.{body}"
/// with the base64-decoded secret, `v1,` + base64 in `webhook-signature`.
fn verify_standard_webhooks(r: &Received, secret: &str) {
    let id = r.header("webhook-id").expect("webhook-id");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    assert!(
        (ts.parse::<i64>().unwrap() - now_secs()).abs() < 300,
        "timestamp {ts} is now"
    );
    let key = B64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(&r.body);
    let expected = format!("v1,{}", B64.encode(hmac(&key, &signed)));
    let header = r.header("webhook-signature").expect("webhook-signature");
    assert!(header.split(' ').any(|s| s == expected), "{header} != {expected}");
}

#[tokio::test]
async fn generic_deliveries_are_signed_as_standard_webhooks_specify_and_bursts_share_one() {
    let secret = format!("whsec_{}", B64.encode(b"a secret of at least 24 bytes!!"));
    let rx = Receiver::start(|_, _| Reply::status(204, ""));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let mut cfg = webhook("ops", &rx.url("/hooks/lngpt"), FormatKind::Generic);
    cfg.secret = secret.clone();
    cfg.group_wait = ms(300);
    let run = Running::start(&db, &[cfg]);
    let mut one = note("n1", Severity::Critical, AlertState::Resolved);
    one.labels.insert("host".into(), "web1".into());
    run.notifier.enqueue(one).await.unwrap();
    run.notifier.enqueue(firing("n2")).await.unwrap();
    run.notifier.enqueue(firing("n3")).await.unwrap();
    let got = requests(&rx, 1).await;
    let r = &got[0];
    assert_eq!((r.method.as_str(), r.path()), ("POST", "/hooks/lngpt"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    verify_standard_webhooks(r, &secret);
    let body = r.json();
    assert_eq!(body["type"], "alert.notifications");
    assert_eq!(generic_ids(r), ["n1", "n2", "n3"], "the burst went as one message");
    assert_eq!(body["data"]["delivery_id"], r.header("webhook-id").unwrap());
    assert!(r.header("webhook-id").unwrap().starts_with("dlv_"));
    let n1 = &body["data"]["notifications"][0];
    assert_eq!(n1["severity"], "critical");
    assert_eq!(n1["state"], "resolved");
    assert_eq!(n1["starts_at"], "2026-11-26T08:00:00.000Z");
    assert_eq!(n1["ends_at"], "2026-11-26T08:10:00.000Z");
    assert_eq!(n1["labels"]["host"], "web1");
    assert_eq!(
        (n1["value"].as_f64(), n1["current"].as_f64(), n1["unit"].as_str()),
        (Some(23.0), Some(23.0), Some("percent"))
    );
    wait_for("delivered counted", || (run.stats("ops").delivered == 3).then_some(())).await;
    assert_eq!(run.stats("ops").pending, 0);
    // Alone, a notification's own id is the delivery's id.
    run.notifier.enqueue(firing("n4")).await.unwrap();
    let got = requests(&rx, 2).await;
    assert_eq!(got[1].header("webhook-id"), Some("n4"));
    verify_standard_webhooks(&got[1], &secret);
    run.stop().await;
}

#[tokio::test]
async fn feishu_cards_carry_timestamp_and_sign_in_the_body() {
    let rx = Receiver::start(|_, _| Reply::status(200, r#"{"code":0,"data":{},"msg":"success"}"#));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = webhook("fs", &rx.url("/open-apis/bot/v2/hook/abc"), FormatKind::Feishu);
    cfg.secret = "feishu-secret".into();
    let run = Running::start(&dir.path().join("c.db"), &[cfg]);
    run.notifier
        .enqueue(note("f1", Severity::Critical, AlertState::Firing))
        .await
        .unwrap();
    let r = &requests(&rx, 1).await[0];
    let body = r.json();
    // Feishu: sign = base64(HmacSHA256(key = timestamp + "\n" + secret, message = "")).
    let ts = body["timestamp"].as_str().expect("timestamp is a string of seconds");
    assert!((ts.parse::<i64>().unwrap() - now_secs()).abs() < 300);
    let key = format!("{ts}\nfeishu-secret");
    assert_eq!(body["sign"].as_str().unwrap(), B64.encode(hmac(key.as_bytes(), b"")));
    assert_eq!(body["msg_type"], "interactive");
    assert_eq!(body["card"]["header"]["template"], "red");
    let title = body["card"]["header"]["title"]["content"].as_str().unwrap();
    assert!(
        title.contains("lngpt") && title.contains("错误率过高") && title.contains("紧急"),
        "{title}"
    );
    let text = body["card"]["elements"][0]["text"]["content"].as_str().unwrap();
    assert!(
        text.contains("当前值：23.0%") && text.contains("阈值：10.0%") && text.contains("编号：f1"),
        "{text}"
    );
    wait_for("delivered", || (run.stats("fs").delivered == 1).then_some(())).await;
    run.stop().await;
}

#[tokio::test]
async fn dingtalk_markdown_is_signed_in_the_query() {
    let rx = Receiver::start(|_, _| Reply::status(200, r#"{"errcode":0,"errmsg":"ok"}"#));
    let dir = tempfile::tempdir().unwrap();
    let secret = "SECb6f2a4d1c0e9+/=";
    let mut cfg = webhook("dt", &rx.url("/robot/send?access_token=tok123"), FormatKind::Dingtalk);
    cfg.secret = secret.into();
    let run = Running::start(&dir.path().join("c.db"), &[cfg]);
    run.notifier.enqueue(firing("d1")).await.unwrap();
    let r = &requests(&rx, 1).await[0];
    assert_eq!(r.raw_query("access_token").as_deref(), Some("tok123"));
    // DingTalk: sign = urlEncode(base64(HmacSHA256(key = secret, message = timestamp + "\n" + secret))),
    // timestamp in milliseconds.
    let ts = r.raw_query("timestamp").expect("timestamp");
    assert!((ts.parse::<i64>().unwrap() / 1000 - now_secs()).abs() < 300);
    let b64 = B64.encode(hmac(secret.as_bytes(), format!("{ts}\n{secret}").as_bytes()));
    let encoded = b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    assert_eq!(r.raw_query("sign").unwrap(), encoded);
    let body = r.json();
    assert_eq!(body["msgtype"], "markdown");
    let text = body["markdown"]["text"].as_str().unwrap();
    assert!(text.contains("错误率过高") && text.contains("model=gpt-4o"), "{text}");
    assert!(body["markdown"]["title"].as_str().unwrap().starts_with("lngpt"));
    wait_for("delivered", || (run.stats("dt").delivered == 1).then_some(())).await;
    run.stop().await;
}

#[tokio::test]
async fn wecom_and_slack_messages_are_laid_out_in_their_markup() {
    let wecom = Receiver::start(|_, _| Reply::status(200, r#"{"errcode":0,"errmsg":"ok"}"#));
    let slack = Receiver::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(
        &dir.path().join("c.db"),
        &[
            webhook("wc", &wecom.url("/cgi-bin/webhook/send?key=k-1"), FormatKind::Wecom),
            webhook("sl", &slack.url("/services/T1/B1/x"), FormatKind::Slack),
        ],
    );
    let mut n = firing("w1");
    n.message = "<b>&</b>".into();
    run.notifier.enqueue(n).await.unwrap();
    let w = &requests(&wecom, 1).await[0];
    assert_eq!(w.raw_query("key").as_deref(), Some("k-1"));
    let body = w.json();
    assert_eq!(body["msgtype"], "markdown");
    let content = body["markdown"]["content"].as_str().unwrap();
    assert!(content.contains("错误率过高") && content.len() <= 4096, "{content}");
    let s = &requests(&slack, 1).await[0];
    let body = s.json();
    assert!(body["text"].as_str().unwrap().contains("错误率过高"));
    assert_eq!(body["blocks"][0]["type"], "header");
    let section = body["blocks"][1]["text"]["text"].as_str().unwrap();
    assert!(
        section.contains("&lt;b&gt;&amp;&lt;/b&gt;"),
        "mrkdwn escaped: {section}"
    );
    wait_for("both delivered", || {
        (run.stats("wc").delivered == 1 && run.stats("sl").delivered == 1).then_some(())
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn alertmanager_gets_firing_alerts_again_until_they_resolve_with_ends_at() {
    let rx = Receiver::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = webhook("am", &rx.url(""), FormatKind::Alertmanager);
    cfg.resend_interval = ms(100);
    let run = Running::start(&dir.path().join("c.db"), &[cfg]);
    let alerts = |r: &Received| -> Vec<serde_json::Value> { r.json().as_array().expect("an array").clone() };
    let names = |r: &Received| -> BTreeSet<String> {
        alerts(r)
            .iter()
            .map(|a| a["annotations"]["alert_key"].as_str().unwrap().to_string())
            .collect()
    };
    for id in ["a", "b"] {
        let mut n = firing(id);
        n.labels.insert("instance".into(), id.into());
        run.notifier.enqueue(n).await.unwrap();
    }
    let first = &requests(&rx, 1).await[0];
    assert_eq!(first.path(), "/api/v2/alerts");
    let a = &alerts(first)[0];
    assert_eq!(a["labels"]["alertname"], "error_rate");
    assert_eq!(a["labels"]["severity"], "high");
    assert_eq!(a["labels"]["model"], "gpt-4o");
    assert_eq!(a["annotations"]["summary"], "错误率过高");
    assert_eq!(a["startsAt"], "2026-11-26T08:00:00.000Z");
    assert!(a.get("endsAt").is_none(), "a firing alert has no endsAt: {a}");
    // Re-posted while firing.
    let got = wait_for("re-posts of both alerts", || {
        let got = rx.received();
        let reposts = got.iter().filter(|r| names(r).len() == 2).count();
        (reposts >= 3).then_some(got)
    })
    .await;
    let before_resolve = got.len();
    let mut resolved = note("a-res", Severity::High, AlertState::Resolved);
    resolved.alert_key = "error_rate:a".into();
    resolved.labels.insert("instance".into(), "a".into());
    run.notifier.enqueue(resolved).await.unwrap();
    let got = wait_for("the resolve and two later re-posts", || {
        let got = rx.received();
        let at = got[before_resolve..].iter().position(|r| {
            alerts(r)
                .iter()
                .any(|a| a["annotations"]["alert_key"] == "error_rate:a" && a.get("endsAt").is_some())
        })?;
        (got.len() >= before_resolve + at + 3).then_some((got, before_resolve + at))
    })
    .await;
    let (all, resolve_at) = got;
    let ends = alerts(&all[resolve_at])
        .into_iter()
        .find(|a| a["annotations"]["alert_key"] == "error_rate:a")
        .unwrap();
    assert_eq!(ends["endsAt"], "2026-11-26T08:10:00.000Z");
    for later in &all[resolve_at + 1..] {
        assert_eq!(
            names(later),
            BTreeSet::from(["error_rate:b".to_string()]),
            "a resolved alert is not posted again"
        );
    }
    run.stop().await;
}

// ---------- faults ----------

#[tokio::test]
async fn a_500_is_retried_with_the_same_delivery_id() {
    let rx = Receiver::start(|_, n| {
        if n == 0 {
            Reply::status(500, "oops")
        } else {
            Reply::ok()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let run = Running::start(&db, &[webhook("g", &rx.url("/"), FormatKind::Generic)]);
    run.notifier.enqueue(firing("r1")).await.unwrap();
    let got = requests(&rx, 2).await;
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(got[0].body, got[1].body, "the same delivery, byte for byte");
    wait_for("delivered", || (run.stats("g").delivered == 1).then_some(())).await;
    let s = run.stats("g");
    assert_eq!((s.retried, s.failed, s.pending), (1, 0, 0));
    assert!(s.last_error.unwrap().contains("HTTP 500: oops"));
    assert_eq!(queue_rows(&db, "g")[0].1, "delivered");
    run.stop().await;
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let rx = Receiver::start(|_, n| {
        if n == 0 {
            Reply::Respond {
                status: 429,
                headers: vec![("Retry-After", "2".into())],
                body: "slow down".into(),
            }
        } else {
            Reply::ok()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(
        &dir.path().join("c.db"),
        &[webhook("g", &rx.url("/"), FormatKind::Generic)],
    );
    run.notifier.enqueue(firing("r1")).await.unwrap();
    let got = requests(&rx, 2).await;
    let gap = got[1].at - got[0].at;
    // The backoff alone would have retried after 10–20 ms.
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
    assert!(gap < Duration::from_secs(10), "retried after {gap:?}");
    wait_for("delivered", || (run.stats("g").delivered == 1).then_some(())).await;
    run.stop().await;
}

#[tokio::test]
async fn a_hanging_receiver_times_out_and_the_delivery_is_retried() {
    let rx = Receiver::start(|_, n| if n == 0 { Reply::Hang } else { Reply::ok() });
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = webhook("g", &rx.url("/"), FormatKind::Generic);
    cfg.timeout = ms(300);
    let run = Running::start(&dir.path().join("c.db"), &[cfg]);
    let enqueued = Instant::now();
    run.notifier.enqueue(firing("h1")).await.unwrap();
    let got = requests(&rx, 2).await;
    // The first attempt started after the enqueue and ran into its timeout before the second began.
    // (The receiver's own clock for the first request is no bound: its thread may read it late.)
    assert!(
        got[1].at - enqueued >= Duration::from_millis(300),
        "{:?}",
        got[1].at - enqueued
    );
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    wait_for("delivered", || (run.stats("g").delivered == 1).then_some(())).await;
    assert!(run.stats("g").last_error.unwrap().contains("timeout"));
    run.stop().await;
}

#[tokio::test]
async fn a_refused_receiver_gets_the_alert_once_it_is_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/hook");
    let run = Running::start(&dir.path().join("c.db"), &[webhook("g", &url, FormatKind::Generic)]);
    run.notifier.enqueue(firing("up1")).await.unwrap();
    wait_for("a few refused attempts", || (run.stats("g").retried >= 3).then_some(())).await;
    assert!(run.stats("g").last_error.unwrap().contains("cannot connect"));
    assert_eq!(run.stats("g").pending, 1);
    let rx = Receiver::start_on(port, |_, _| Reply::ok());
    let got = requests(&rx, 1).await;
    assert_eq!(generic_ids(&got[0]), ["up1"]);
    wait_for("delivered", || (run.stats("g").delivered == 1).then_some(())).await;
    run.stop().await;
}

#[tokio::test]
async fn other_4xx_and_vendor_refusals_are_given_up_recorded_and_counted_without_blocking() {
    let rx = Receiver::start(|r, _| {
        if r.body.windows(3).any(|w| w == b"bad") {
            Reply::status(400, "invalid payload")
        } else {
            Reply::ok()
        }
    });
    let fs = Receiver::start(|_, _| Reply::status(200, r#"{"code":19021,"msg":"sign match fail"}"#));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let mut feishu = webhook("fs", &fs.url("/hook/x"), FormatKind::Feishu);
    feishu.secret = "wrong".into();
    let run = Running::start(&db, &[webhook("g", &rx.url("/"), FormatKind::Generic), feishu]);
    run.notifier.enqueue(firing("bad")).await.unwrap();
    wait_for("given up", || (run.stats("g").failed == 1).then_some(())).await;
    run.notifier.enqueue(firing("good")).await.unwrap();
    wait_for("the next one delivered", || {
        (run.stats("g").delivered == 1).then_some(())
    })
    .await;
    let rows = queue_rows(&db, "g");
    assert_eq!(rows[0].0, "bad");
    assert_eq!(rows[0].1, "failed");
    assert!(
        rows[0].2.as_deref().unwrap().contains("HTTP 400: invalid payload"),
        "{rows:?}"
    );
    assert_eq!(rx.received().len(), 2, "a 4xx is not retried");
    wait_for("feishu refusal given up", || {
        (run.stats("fs").failed == 2).then_some(())
    })
    .await;
    let rows = queue_rows(&db, "fs");
    assert!(rows.iter().all(|r| r.1 == "failed"));
    assert!(rows[0].2.as_deref().unwrap().contains("19021"), "{rows:?}");
    run.stop().await;
}

#[tokio::test]
async fn a_vendor_rate_limit_code_waits_a_rate_window() {
    let rx = Receiver::start(|_, n| {
        if n == 0 {
            Reply::status(
                200,
                r#"{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}"#,
            )
        } else {
            Reply::status(200, r#"{"errcode":0,"errmsg":"ok"}"#)
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = webhook("dt", &rx.url("/robot/send?access_token=t"), FormatKind::Dingtalk);
    cfg.rate_window = ms(500);
    let run = Running::start(&dir.path().join("c.db"), &[cfg]);
    run.notifier.enqueue(firing("x")).await.unwrap();
    let got = requests(&rx, 2).await;
    assert!(got[1].at - got[0].at >= Duration::from_millis(500));
    wait_for("delivered", || (run.stats("dt").delivered == 1).then_some(())).await;
    run.stop().await;
}

// ---------- rate limit, filters, idempotency, reload ----------

#[tokio::test]
async fn thirty_alerts_to_dingtalk_never_put_more_than_twenty_posts_in_a_window() {
    let rx = Receiver::start(|_, _| Reply::status(200, r#"{"errcode":0,"errmsg":"ok"}"#));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = webhook("dt", &rx.url("/robot/send?access_token=t"), FormatKind::Dingtalk);
    cfg.secret = "SECx".into();
    cfg.rate_window = ms(1000);
    let window = Duration::from_millis(1000);
    let run = Running::start(&dir.path().join("c.db"), &[cfg.clone()]);
    assert_eq!(cfg.max_posts(), 20, "DingTalk's own limit by default");
    for i in 0..30 {
        run.notifier.enqueue(firing(&format!("a{i:02}"))).await.unwrap();
    }
    wait_for("all 30 delivered", || (run.stats("dt").delivered == 30).then_some(())).await;
    let got = rx.received();
    let mentioned: BTreeSet<String> = (0..30)
        .map(|i| format!("a{i:02}"))
        .filter(|id| {
            got.iter()
                .any(|r| String::from_utf8_lossy(&r.body).contains(&format!("编号：{id}")))
        })
        .collect();
    assert_eq!(mentioned.len(), 30, "every alert is in some message");
    assert!(
        got.len() < 30,
        "the ones over the limit waited and went together ({} posts)",
        got.len()
    );
    for (i, first) in got.iter().enumerate() {
        if let Some(twenty_first) = got.get(i + 20) {
            assert!(
                twenty_first.at - first.at >= window,
                "posts {i} and {} are {:?} apart",
                i + 20,
                twenty_first.at - first.at
            );
        }
    }
    run.stop().await;
}

#[tokio::test]
async fn severity_and_rule_filters_and_ids_already_queued() {
    let rx = Receiver::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = webhook("g", &rx.url("/"), FormatKind::Generic);
    cfg.min_severity = Severity::High;
    cfg.rules = vec!["error_rate".into()];
    let run = Running::start(&dir.path().join("c.db"), &[cfg]);
    run.notifier
        .enqueue(note("low", Severity::Warning, AlertState::Firing))
        .await
        .unwrap();
    let mut other_rule = firing("budget");
    other_rule.rule = "budget_daily".into();
    run.notifier.enqueue(other_rule).await.unwrap();
    run.notifier.enqueue(firing("yes")).await.unwrap();
    wait_for("delivered", || (run.stats("g").delivered == 1).then_some(())).await;
    // The same id again, after delivery: not sent twice.
    run.notifier.enqueue(firing("yes")).await.unwrap();
    run.notifier.enqueue(firing("yes2")).await.unwrap();
    wait_for("the next delivered", || (run.stats("g").delivered == 2).then_some(())).await;
    let ids: Vec<Vec<String>> = rx.received().iter().map(generic_ids).collect();
    assert_eq!(ids, [vec!["yes".to_string()], vec!["yes2".to_string()]]);
    run.stop().await;
}

#[tokio::test]
async fn reload_keeps_the_queues_of_receivers_that_remain() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let kept = webhook("kept", &format!("http://127.0.0.1:{port}/"), FormatKind::Generic);
    let gone = webhook("gone", &format!("http://127.0.0.1:{port}/"), FormatKind::Generic);
    let run = Running::start(&dir.path().join("c.db"), &[kept.clone(), gone]);
    run.notifier.enqueue(firing("k1")).await.unwrap();
    wait_for("refused attempts", || (run.stats("kept").retried >= 1).then_some(())).await;
    let rx = Receiver::start(|_, _| Reply::ok());
    let mut moved = kept.clone();
    moved.url = rx.url("/moved");
    let added = webhook("added", &rx.url("/added"), FormatKind::Generic);
    run.notifier.reload(&[moved, added]).unwrap();
    let names: Vec<String> = run.notifier.stats().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["added", "kept"]);
    wait_for("the kept queue delivered at the new URL", || {
        (run.stats("kept").delivered == 1).then_some(())
    })
    .await;
    run.notifier.enqueue(firing("k2")).await.unwrap();
    let got = requests(&rx, 3).await;
    let by_path: BTreeSet<(String, Vec<String>)> = got.iter().map(|r| (r.path().to_string(), generic_ids(r))).collect();
    assert!(
        by_path.contains(&("/moved".to_string(), vec!["k1".to_string()])),
        "{by_path:?}"
    );
    assert!(
        by_path.contains(&("/moved".to_string(), vec!["k2".to_string()])),
        "{by_path:?}"
    );
    assert!(
        by_path.contains(&("/added".to_string(), vec!["k2".to_string()])),
        "{by_path:?}"
    );
    run.stop().await;
}

// ---------- SIGKILL ----------

/// Entry of the child process of the SIGKILL test: opens the notifier on the given database,
/// enqueues one notification, says so, and runs until killed.
#[test]
fn sigkill_child() {
    let Ok(spec) = std::env::var("LNGPT_NOTIFY_CHILD") else {
        return;
    };
    let (db, url) = spec.split_once('|').expect("db|url");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let run = Running::start(Path::new(db), &[webhook("g", url, FormatKind::Generic)]);
        run.notifier.enqueue(firing("survivor")).await.unwrap();
        println!("ENQUEUED");
        std::future::pending::<()>().await;
    });
}

#[tokio::test]
async fn sigkill_with_an_alert_unanswered_then_restart_delivers_it_once_by_id() {
    use std::io::BufRead;
    // The first request hangs (the receiver got it, the daemon never learns); later ones succeed.
    let rx = Receiver::start(|_, n| if n == 0 { Reply::Hang } else { Reply::ok() });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["notify::sigkill_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("LNGPT_NOTIFY_CHILD", format!("{}|{}", db.display(), rx.url("/hook")))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("ENQUEUED"))
    })
    .await
    .unwrap();
    assert!(line.is_some(), "the child enqueued");
    requests(&rx, 1).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    assert_eq!(queue_rows(&db, "g")[0].1, "pending", "killed before the answer");

    let run = Running::start(&db, &[webhook("g", &rx.url("/hook"), FormatKind::Generic)]);
    wait_for("delivered after the restart", || {
        (run.stats("g").delivered == 1).then_some(())
    })
    .await;
    run.stop().await;
    let got = rx.received();
    assert_eq!(got.len(), 2, "sent again once");
    assert_eq!(got[0].header("webhook-id"), Some("survivor"));
    assert_eq!(got[1].header("webhook-id"), Some("survivor"));
    let unique: BTreeSet<String> = got.iter().flat_map(generic_ids).collect();
    assert_eq!(
        unique,
        BTreeSet::from(["survivor".to_string()]),
        "once by idempotency key"
    );
    assert_eq!(queue_rows(&db, "g")[0].1, "delivered");
    // A third start finds nothing to send.
    let run = Running::start(&db, &[webhook("g", &rx.url("/hook"), FormatKind::Generic)]);
    assert_eq!(run.stats("g").pending, 0);
    run.stop().await;
    assert_eq!(rx.received().len(), 2);
}
