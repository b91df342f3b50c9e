//! One conformance suite for both stores: the same events written to SQLite and to MongoDB (the
//! stand-in, or a real one with MONGODB_TEST_URI) must answer every query the same, and the
//! aggregations must equal an independent computation over the test data.

use crate::common;

use std::sync::Arc;

use lngpt_collector::event::{Collection, Currency, Event, EventId, Level, Parser, Source, Timestamp};
use lngpt_collector::redact::{RedactConfig, Redactor};
use lngpt_collector::shutdown::Coordinator;
use lngpt_collector::store::mongo::MongoConfig;
use lngpt_collector::store::outbox::Outbox;
use lngpt_collector::store::query::{Cursor, Filter, FindQuery, Position, Query, TimeRange};
use lngpt_collector::store::retention::RetentionConfig;
use lngpt_collector::store::sqlite::Synchronous;
use lngpt_collector::store::{AnyStore, Batch, EmbeddedStore, MongoStore, Store};
use lngpt_collector::telemetry::Counters;
use serde_json::Value;

use crate::common::mongo::{block_on, unique_db, with_options, MongoServer};

fn events() -> Vec<Event> {
    let parser = Parser::new(Arc::new(Redactor::new(&RedactConfig::default()).unwrap()));
    let text = std::fs::read_to_string(common::testdata("novel-app-events.jsonl")).unwrap();
    let source = Source::from("conformance");
    text.lines()
        .map(|l| parser.parse(l.as_bytes(), &source, Timestamp(0), EventId::new()))
        .collect()
}

async fn write_all(store: &AnyStore, events: &[Event]) {
    for c in Collection::ALL {
        let batch: Vec<Event> = events.iter().filter(|e| e.collection() == c).cloned().collect();
        if !batch.is_empty() {
            store
                .write(Arc::new(Batch {
                    collection: c,
                    events: batch,
                }))
                .await
                .unwrap();
        }
    }
}

/// Both stores holding the test stream; kept alive for the test's duration.
struct Stores {
    sqlite: AnyStore,
    mongo: AnyStore,
    events: Vec<Event>,
    _dir: tempfile::TempDir,
    _server: MongoServer,
    _background: Coordinator,
}

fn stores() -> Stores {
    let server = MongoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let events = events();
    let background = Coordinator::new();
    let (sqlite, mongo) = block_on(async {
        let sqlite = AnyStore::Embedded(EmbeddedStore::open(&dir.path().join("c.db"), Synchronous::Normal).unwrap());
        let cfg = MongoConfig {
            uri: with_options(&server.uri()),
            database: unique_db("conformance"),
            ..MongoConfig::default()
        };
        let outbox = Outbox::open(&dir.path().join("outbox.db"), Synchronous::Normal, 1 << 30).unwrap();
        let redactor = Arc::new(Redactor::new(&RedactConfig::default()).unwrap());
        let mongo = MongoStore::open(
            &cfg,
            &RetentionConfig::default(),
            lngpt_collector::event::NaiveZone::Utc,
            outbox,
            Arc::new(Counters::default()),
            redactor,
            background.listener("MongoDB outbox forwarder"),
        )
        .await
        .unwrap();
        let mongo = AnyStore::Mongo(mongo);
        write_all(&sqlite, &events).await;
        write_all(&mongo, &events).await;
        (sqlite, mongo)
    });
    Stores {
        sqlite,
        mongo,
        events,
        _dir: dir,
        _server: server,
        _background: background,
    }
}

fn find(store: &AnyStore, q: &FindQuery) -> lngpt_collector::store::query::Found {
    block_on(store.find(q.clone())).unwrap()
}

/// Every page of `q`, followed by cursor.
fn all_pages(store: &AnyStore, q: &FindQuery) -> Vec<Value> {
    let mut out = Vec::new();
    let mut q = q.clone();
    loop {
        let page = find(store, &q);
        out.extend(page.docs);
        match page.next {
            Some(next) => q.after = Some(next),
            None => return out,
        }
    }
}

fn ids(docs: &[Value]) -> Vec<String> {
    docs.iter().map(|d| d["_id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn finds_answer_the_same_on_both_stores() {
    let s = stores();
    let logs = s.events.iter().filter(|e| e.collection() == Collection::Logs).count();
    let mut all = FindQuery::new(Collection::Logs);
    all.limit = 1000;
    all.count_up_to = 10_000;
    let a = find(&s.sqlite, &all);
    let b = find(&s.mongo, &all);
    assert_eq!(a.docs.len(), logs);
    assert_eq!(a.docs, b.docs, "the same documents, the same shape, the same order");
    assert_eq!(a.total, b.total);
    let times: Vec<&str> = a.docs.iter().map(|d| d["timestamp"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    let cases: Vec<(&str, Vec<Filter>)> = vec![
        ("level", vec![Filter::Eq("level", "ERROR".into())]),
        ("at least warning", vec![Filter::LevelAtLeast(Level::Warning)]),
        ("module", vec![Filter::Eq("module", "writer".into())]),
        ("logger", vec![Filter::Eq("logger", "lngpt.api".into())]),
        ("text", vec![Filter::Contains("api调用".into())]),
        (
            "text and level",
            vec![Filter::Contains("API".into()), Filter::LevelAtLeast(Level::Info)],
        ),
    ];
    for (name, filters) in cases {
        let mut q = all.clone();
        q.filters = filters;
        let (a, b) = (find(&s.sqlite, &q), find(&s.mongo, &q));
        assert!(
            !a.docs.is_empty() || name == "logger",
            "{name}: the test data has matches"
        );
        assert_eq!(ids(&a.docs), ids(&b.docs), "{name}");
        assert_eq!(a.total, b.total, "{name}");
    }
    // A time range: [from, to).
    let mut q = all.clone();
    q.range = TimeRange::between(
        Timestamp::parse_rfc3339("2026-11-26T08:01:00Z").unwrap(),
        Timestamp::parse_rfc3339("2026-11-26T08:02:00Z").unwrap(),
    );
    let (a, b) = (find(&s.sqlite, &q), find(&s.mongo, &q));
    assert!(!a.docs.is_empty());
    assert!(a
        .docs
        .iter()
        .all(|d| d["timestamp"].as_str().unwrap().starts_with("2026-11-26T08:01")));
    assert_eq!(ids(&a.docs), ids(&b.docs));
    // Every collection.
    for c in [Collection::Cost, Collection::Performance] {
        let mut q = FindQuery::new(c);
        q.limit = 1000;
        assert_eq!(find(&s.sqlite, &q).docs, find(&s.mongo, &q).docs, "{}", c.name());
    }
    let mut q = FindQuery::new(Collection::Performance);
    q.limit = 1000;
    q.filters = vec![Filter::Eq("status", "error".into())];
    let (a, b) = (find(&s.sqlite, &q), find(&s.mongo, &q));
    assert!(!a.docs.is_empty() && a.docs.iter().all(|d| d["status"] == "error"));
    assert_eq!(ids(&a.docs), ids(&b.docs));
}

#[test]
fn paging_by_cursor_and_by_page_reaches_everything_once_and_counts_are_capped() {
    let s = stores();
    let mut q = FindQuery::new(Collection::Logs);
    q.limit = 1000;
    let everything = ids(&find(&s.sqlite, &q).docs);
    for store in [&s.sqlite, &s.mongo] {
        let mut paged = q.clone();
        paged.limit = 7;
        assert_eq!(
            ids(&all_pages(store, &paged)),
            everything,
            "cursor pages: no gap, no repeat"
        );
        let mut by_page = Vec::new();
        for page in 0.. {
            let mut p = q.clone();
            p.limit = 50;
            p.skip = page * 50;
            let docs = find(store, &p).docs;
            if docs.is_empty() {
                break;
            }
            by_page.extend(ids(&docs));
        }
        assert_eq!(by_page, everything, "page/per_page");
        let mut capped = q.clone();
        capped.count_up_to = 100;
        let count = find(store, &capped).total.unwrap();
        assert_eq!((count.n, count.exact), (100, false), "a lower bound past the cap");
    }
    // A cursor made by one store is refused by the other, not misread.
    let mut first = q.clone();
    first.limit = 3;
    let next = find(&s.sqlite, &first).next.unwrap();
    let mut foreign = first.clone();
    foreign.after = Some(next);
    assert!(block_on(s.mongo.find(foreign)).is_err());
}

#[test]
fn a_cursor_stays_stable_while_inserts_continue() {
    let s = stores();
    for store in [&s.sqlite, &s.mongo] {
        let mut q = FindQuery::new(Collection::Logs);
        q.limit = 20;
        let first = find(store, &q);
        // Newer events arrive between page requests.
        let parser = Parser::new(Arc::new(Redactor::disabled()));
        let newer: Vec<Event> = (0..30)
            .map(|i| {
                let line = format!("{{\"message\":\"newer {i}\",\"timestamp\":\"2026-11-26T09:00:{i:02}Z\"}}");
                parser.parse(line.as_bytes(), &Source::from("t"), Timestamp(0), EventId::new())
            })
            .collect();
        block_on(write_all(store, &newer));
        let mut rest = q.clone();
        rest.after = first.next.clone();
        let mut seen = ids(&first.docs);
        seen.extend(ids(&all_pages(store, &rest)));
        let distinct: std::collections::HashSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), seen.len(), "no repeats");
        assert_eq!(
            seen.len(),
            s.events.iter().filter(|e| e.collection() == Collection::Logs).count()
        );
    }
    assert!(Cursor::decode("junk").is_none());
}

/// A stream's replay: events after one position and at or before another, where positions order
/// by time and then `_id` (events of one millisecond are told apart by their ids).
#[test]
fn position_bounds_select_by_time_then_id_the_same_on_both_stores() {
    let s = stores();
    let parser = Parser::new(Arc::new(Redactor::disabled()));
    // Three milliseconds of 10 events each; ids given out of their order of writing.
    let mut ids_given: Vec<EventId> = (0..30).map(|_| EventId::new()).collect();
    ids_given.reverse();
    let same_ms: Vec<Event> = ids_given
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let line = format!(
                "{{\"message\":\"tick {i}\",\"timestamp\":\"2026-11-27T10:00:00.{:03}Z\"}}",
                i / 10
            );
            parser.parse(line.as_bytes(), &Source::from("t"), Timestamp(0), *id)
        })
        .collect();
    let mut ordered: Vec<Position> = same_ms.iter().map(|e| Position::of(e.time, e.id)).collect();
    ordered.sort();
    // After the 4th of the first millisecond, through the 6th of the last.
    let (after, through) = (ordered[3], ordered[25]);
    let mut expected: Vec<String> = ordered[4..=25].iter().map(|p| p.id.to_string()).collect();
    expected.sort();
    for store in [&s.sqlite, &s.mongo] {
        block_on(write_all(store, &same_ms));
        let mut q = FindQuery::new(Collection::Logs);
        q.limit = 5;
        q.count_up_to = 1000;
        q.filters = vec![Filter::After(after), Filter::AtOrBefore(through)];
        let first = find(store, &q);
        assert_eq!(first.total.map(|t| (t.n, t.exact)), Some((22, true)));
        // (Within a millisecond SQLite lists in the order of writing, MongoDB by `_id`.)
        let docs = all_pages(store, &q);
        let times: Vec<&str> = docs.iter().map(|d| d["timestamp"].as_str().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
        let mut selected = ids(&docs);
        selected.sort();
        assert_eq!(selected, expected, "by time, then id");
        // Each bound alone.
        q.filters = vec![Filter::After(ordered[28])];
        assert_eq!(ids(&find(store, &q).docs), [ordered[29].id.to_string()]);
        q.filters = vec![Filter::AtOrBefore(ordered[0])];
        q.range = TimeRange::between(
            Timestamp::parse_rfc3339("2026-11-27T10:00:00Z").unwrap(),
            Timestamp::parse_rfc3339("2026-11-27T10:00:01Z").unwrap(),
        );
        assert_eq!(ids(&find(store, &q).docs), [ordered[0].id.to_string()]);
    }
}

#[test]
fn cost_and_request_aggregations_agree_with_each_other_and_with_the_data() {
    let s = stores();
    let range = TimeRange::default();
    let a = block_on(s.sqlite.cost_buckets(range)).unwrap();
    let b = block_on(s.mongo.cost_buckets(range)).unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (x.start_ms, &x.model, x.currency, x.calls),
            (y.start_ms, &y.model, y.currency, y.calls)
        );
        assert!((x.cost - y.cost).abs() < 1e-9);
        assert_eq!(
            (x.input_tokens, x.output_tokens, x.total_tokens),
            (y.input_tokens, y.output_tokens, y.total_tokens)
        );
    }
    // Independently, from the lines themselves.
    let text = std::fs::read_to_string(common::testdata("novel-app-events.jsonl")).unwrap();
    let (mut usd, mut cny, mut calls) = (0.0, 0.0, 0u64);
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let is_cost = v["type"] == "cost" || (v.get("type").is_none() && v.get("cost").is_some());
        if !is_cost {
            continue;
        }
        calls += 1;
        let symbol = v["currency_symbol"].as_str().or(v["currency"].as_str()).unwrap_or("$");
        let cost = v["cost"].as_f64().unwrap();
        if matches!(symbol, "$" | "USD" | "usd") {
            usd += cost;
        } else {
            cny += cost;
        }
    }
    let sum = |c: Currency| a.iter().filter(|b| b.currency == c).map(|b| b.cost).sum::<f64>();
    assert!(
        (sum(Currency::Usd) - usd).abs() < 1e-9,
        "{} vs {usd}",
        sum(Currency::Usd)
    );
    assert!((sum(Currency::Cny) - cny).abs() < 1e-9);
    assert_eq!(a.iter().map(|b| b.calls).sum::<u64>(), calls);

    let a = block_on(s.sqlite.request_buckets(range)).unwrap();
    let b = block_on(s.mongo.request_buckets(range)).unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (x.start_ms, &x.model, x.calls, x.errors),
            (y.start_ms, &y.model, y.calls, y.errors)
        );
        assert!((x.response_time_sum - y.response_time_sum).abs() < 1e-9);
        assert_eq!(x.first_chunk_count, y.first_chunk_count);
    }
    let performance = s
        .events
        .iter()
        .filter(|e| e.collection() == Collection::Performance)
        .count() as u64;
    assert_eq!(a.iter().map(|b| b.calls).sum::<u64>(), performance);
}

#[test]
fn response_times_are_the_same_on_both_stores_oldest_first_and_capped() {
    let s = stores();
    let range = TimeRange::default();
    let a = block_on(s.sqlite.response_times(range, None, 100_000)).unwrap();
    let b = block_on(s.mongo.response_times(range, None, 100_000)).unwrap();
    assert!(!a.truncated && !b.truncated);
    // Independently, from the lines themselves.
    let text = std::fs::read_to_string(common::testdata("novel-app-events.jsonl")).unwrap();
    let mut want: Vec<f64> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| {
            v["type"] == "performance"
                || v["type"] == "perf"
                || (v.get("type").is_none() && v.get("response_time").is_some())
        })
        .map(|v| v["response_time"].as_f64().unwrap())
        .collect();
    want.sort_by(f64::total_cmp);
    for got in [&a, &b] {
        assert!(
            got.samples.windows(2).all(|w| w[0].time_ms <= w[1].time_ms),
            "oldest first"
        );
        let mut seconds: Vec<f64> = got.samples.iter().map(|s| s.seconds).collect();
        seconds.sort_by(f64::total_cmp);
        assert_eq!(seconds, want);
    }
    let key = |r: &lngpt_collector::store::query::ResponseTime| (r.time_ms, r.model.clone(), r.seconds.to_bits());
    let mut ka: Vec<_> = a.samples.iter().map(key).collect();
    let mut kb: Vec<_> = b.samples.iter().map(key).collect();
    ka.sort();
    kb.sort();
    assert_eq!(ka, kb);

    let model = a.samples[0].model.clone().unwrap();
    let one = block_on(s.sqlite.response_times(range, Some(model.clone()), 100_000)).unwrap();
    let other = block_on(s.mongo.response_times(range, Some(model.clone()), 100_000)).unwrap();
    assert!(one.samples.iter().all(|r| r.model.as_deref() == Some(model.as_str())));
    assert_eq!(one.samples.len(), other.samples.len());
    let capped = block_on(s.sqlite.response_times(range, None, 10)).unwrap();
    let capped_mongo = block_on(s.mongo.response_times(range, None, 10)).unwrap();
    assert!(capped.truncated && capped_mongo.truncated);
    assert_eq!(capped.samples.len(), 10);
    assert_eq!(
        capped.samples.iter().map(|r| r.time_ms).collect::<Vec<_>>(),
        capped_mongo.samples.iter().map(|r| r.time_ms).collect::<Vec<_>>()
    );
}

#[test]
fn an_alert_fires_repeats_escalates_resolves_and_fires_again_the_same_on_both_stores() {
    use lngpt_collector::monitor::vocabulary::{AlertState, Severity, Unit};
    use lngpt_collector::store::alerts::{AlertRecord, AlertStore, Claim, Fired, Measured};
    let s = stores();
    let started = Timestamp(1_795_680_000_000);
    let record = AlertRecord {
        key: "budget{period=hour}".into(),
        rule: "budget".into(),
        severity: Severity::Warning,
        state: AlertState::Firing,
        title: "t".into(),
        message: "m".into(),
        value: 15.0,
        current: Some(15.0),
        unit: Unit::Rmb,
        threshold: 30.0,
        labels: Default::default(),
        started_at: started,
        ended_at: None,
        updated_at: Some(started),
        sent_at: Some(started),
        repeats: 0,
        claimed_by: "a".into(),
        queued: false,
    };
    let measured = |value: f64, severity: Severity| Measured {
        value,
        severity,
        title: format!("t{value}"),
        message: format!("m{value}"),
    };
    for store in [&s.sqlite, &s.mongo] {
        block_on(async {
            let key = record.key.clone();
            let claim = |now: Timestamp, by: &str| Claim {
                key: key.clone(),
                started_at: started,
                now,
                by: by.into(),
            };
            assert_eq!(store.fire(record.clone()).await.unwrap(), Fired::Claimed);
            assert!(matches!(
                store.fire(record.clone()).await.unwrap(),
                Fired::AlreadyFiring(_)
            ));
            let later = Timestamp(started.0 + 60_000);
            // One repeat per count seen: a second collector that saw the same count loses the claim.
            assert!(store
                .repeat(claim(later, "a"), 0, measured(18.0, Severity::Warning))
                .await
                .unwrap());
            assert!(!store
                .repeat(claim(later, "b"), 0, measured(18.0, Severity::Warning))
                .await
                .unwrap());
            let firing = store.firing().await.unwrap();
            assert_eq!(
                (firing.len(), firing[0].repeats, firing[0].value, firing[0].current),
                (1, 1, 15.0, Some(18.0))
            );
            // One escalation per step: the second collector, which saw the same severity, loses.
            assert!(store
                .escalate(claim(later, "a"), Severity::Warning, measured(25.0, Severity::High))
                .await
                .unwrap());
            assert!(!store
                .escalate(claim(later, "b"), Severity::Warning, measured(25.0, Severity::High))
                .await
                .unwrap());
            // The latest value, noted without a claim.
            store
                .refresh(key.clone(), started, later, measured(26.0, Severity::High))
                .await
                .unwrap();
            let firing = store.firing().await.unwrap();
            assert_eq!(
                (
                    firing[0].severity,
                    firing[0].current,
                    firing[0].message.as_str(),
                    firing[0].value
                ),
                (Severity::High, Some(26.0), "m26", 15.0)
            );
            assert!(store.resolve(claim(later, "a"), 5.0).await.unwrap());
            assert!(!store.resolve(claim(later, "b"), 5.0).await.unwrap());
            assert!(store.firing().await.unwrap().is_empty());
            // A new occurrence keeps the old one as history.
            let mut again = record.clone();
            again.started_at = Timestamp(started.0 + 120_000);
            assert_eq!(store.fire(again).await.unwrap(), Fired::Claimed);
            let mut q = FindQuery::new(Collection::Alerts);
            q.limit = 10;
            let docs = store.find(q).await.unwrap().docs;
            let states: Vec<&str> = docs.iter().map(|d| d["state"].as_str().unwrap()).collect();
            assert_eq!(states, ["firing", "resolved"], "newest first");
            assert_eq!(docs[1]["severity"], "high");
            assert_eq!(docs[1]["current"], 5.0);
        });
    }
}

/// Heartbeats: one document per collector whose counter moves at every beat; a clean stop is
/// recorded and the next start clears it; every collector is listed, the same on both stores.
#[test]
fn heartbeats_count_beats_and_record_a_clean_stop_the_same_on_both_stores() {
    use lngpt_collector::store::heartbeats::{Beat, Heartbeat, Heartbeats};
    let s = stores();
    let beat = |collector: &str, at: i64, stopping: bool| Beat {
        collector: collector.into(),
        host: format!("host-{collector}"),
        pid: 42,
        version: "1.2.3".into(),
        started_at: Timestamp(1_000),
        at: Timestamp(at),
        every_ms: 30_000,
        stopping,
    };
    let mut seen: Vec<Vec<Heartbeat>> = Vec::new();
    for store in [&s.sqlite, &s.mongo] {
        block_on(async {
            assert_eq!(store.heartbeats().await.unwrap(), vec![], "none yet");
            store.beat(beat("b", 2_000, false)).await.unwrap();
            store.beat(beat("a", 2_000, false)).await.unwrap();
            store.beat(beat("a", 32_000, false)).await.unwrap();
            store.beat(beat("b", 32_000, true)).await.unwrap();
        });
        let beats = block_on(store.heartbeats()).unwrap();
        let view: Vec<(&str, u64, i64, Option<i64>)> = beats
            .iter()
            .map(|h| {
                (
                    h.collector.as_str(),
                    h.beats,
                    h.beat_at.as_millis(),
                    h.stopped_at.map(|t| t.as_millis()),
                )
            })
            .collect();
        assert_eq!(
            view,
            [("a", 2, 32_000, None), ("b", 2, 32_000, Some(32_000))],
            "counted, stopped, in order"
        );
        assert_eq!(
            (
                beats[0].host.as_str(),
                beats[0].pid,
                beats[0].version.as_str(),
                beats[0].every_ms
            ),
            ("host-a", 42, "1.2.3", 30_000)
        );
        // The next start clears the stop.
        block_on(store.beat(beat("b", 62_000, false))).unwrap();
        let b = block_on(store.heartbeats()).unwrap().remove(1);
        assert_eq!((b.beats, b.stopped_at), (3, None));
        seen.push(block_on(store.heartbeats()).unwrap());
    }
    assert_eq!(seen[0], seen[1], "the same on both stores");
}
