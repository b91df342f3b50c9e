//! MongoDB as the store: the real binary, the MongoDB stand-in (or a real MongoDB with
//! MONGODB_TEST_URI), outages through a TCP proxy, the outbox.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use crate::common::http::Sse;
use crate::common::mongo::{
    self, count, find_all, free_port, mongodb_section, real_mongodb, unique_db, MongoServer, Proxy,
};
use crate::common::{testdata, wait_until, Daemon};
use mongodb::bson::Bson;

fn wait_for_mongo_count(client: &mongodb::Client, db: &str, coll: &str, n: u64, d: &Daemon) {
    wait_until(
        &format!("{n} documents in {coll}"),
        || {
            let c = count(client, db, coll);
            assert!(c <= n, "{coll} holds {c} documents, more than the {n} expected");
            (c == n).then_some(())
        },
        || format!("{coll} holds {}\n{}", count(client, db, coll), d.log()),
    );
}

fn log_lines(n: usize, tag: &str) -> String {
    (0..n)
        .map(|i| format!("{{\"message\":\"{tag} {i}\",\"module\":\"outage\",\"extra\":{{\"seq\":{i}}}}}\n"))
        .collect()
}

fn distinct_ids(client: &mongodb::Client, db: &str, coll: &str) -> usize {
    find_all(client, db, coll)
        .iter()
        .map(|d| d.get_object_id("_id").expect("ObjectId _id"))
        .collect::<HashSet<_>>()
        .len()
}

#[test]
fn the_shared_streams_land_in_mongodb_with_bson_types_and_indexes() {
    let server = MongoServer::start();
    let db = unique_db("streams");
    let mut d = Daemon::start(&mongodb_section(&server.uri(), &db, ""));
    let events = std::fs::read(testdata("novel-app-events.jsonl")).unwrap();
    let bad = std::fs::read(testdata("bad-lines.jsonl")).unwrap();
    assert_eq!(d.send(&events).events, 600);
    assert_eq!(d.send(&bad).rejected, 13);
    let client = server.client();
    for (coll, n) in [
        ("api_logs", 287),
        ("api_cost", 136),
        ("api_performance", 177),
        ("api_rejects", 13),
    ] {
        wait_for_mongo_count(&client, &db, coll, n, &d);
    }
    assert!(
        !d.state.join("collector.db").exists() || d.count_outbox() == 0,
        "nothing went to the outbox"
    );

    let cost = &find_all(&client, &db, "api_cost")[0];
    assert!(matches!(cost.get("created_at"), Some(Bson::DateTime(_))), "{cost}");
    assert!(matches!(cost.get("cost"), Some(Bson::Double(_))), "{cost}");
    assert!(matches!(cost.get("_id"), Some(Bson::ObjectId(_))), "{cost}");
    match cost.get("total_tokens") {
        Some(Bson::Int64(_)) => {}
        // The stand-in returns int64 values as int32; real MongoDB keeps int64.
        Some(Bson::Int32(_)) if !real_mongodb() => {}
        other => panic!("total_tokens should be int64, is {other:?}"),
    }
    // A Python `logging` record (created, levelname, msg, name, funcName, lineno) mapped field by field.
    let logs = find_all(&client, &db, "api_logs");
    let py = logs
        .iter()
        .find(|l| l.get_str("logger").is_ok())
        .expect("a record with a logger name");
    assert!(matches!(py.get("timestamp"), Some(Bson::DateTime(_))));
    assert!(
        py.get_str("function").is_ok() && py.get("line").is_some() && py.get_document("extra").is_ok(),
        "{py}"
    );
    // No planted secret reaches MongoDB.
    let stored = format!("{logs:?}");
    let planted = regex::Regex::new(r"sk-[A-Za-z0-9\-]{8,}").unwrap();
    let secrets: HashSet<&str> = planted
        .find_iter(std::str::from_utf8(&events).unwrap())
        .map(|m| m.as_str())
        .collect();
    assert!(secrets.len() >= 20);
    for secret in secrets {
        assert!(!stored.contains(secret), "secret {secret} reached MongoDB");
    }

    // Indexes, with the retention as TTL on the time index.
    let indexes = list_indexes(&client, &db, "api_logs");
    let by_name = |name: &str| {
        indexes
            .iter()
            .find(|i| i.options.as_ref().and_then(|o| o.name.as_deref()) == Some(name))
    };
    let ttl = by_name("timestamp_-1")
        .expect("timestamp index")
        .options
        .as_ref()
        .unwrap()
        .expire_after;
    assert_eq!(ttl, Some(Duration::from_secs(30 * 86_400)));
    assert!(
        by_name("level_1_timestamp_-1").is_some() && by_name("module_1_timestamp_-1").is_some(),
        "{indexes:?}"
    );

    // A changed retention changes the TTL in place (collMod) instead of failing on a conflict.
    assert!(d.stop().success());
    let config = std::fs::read_to_string(&d.config).unwrap() + "[retention]\napi_logs = \"7d\"\n";
    std::fs::write(&d.config, config).unwrap();
    d.restart();
    d.wait_for_log("changed the TTL of api_logs.timestamp_-1");
    d.wait_for_log("MongoDB indexes are in place");
    if real_mongodb() {
        // The stand-in answers collMod with ok but changes nothing, so only real MongoDB can show it.
        let indexes = list_indexes(&client, &db, "api_logs");
        let ttl = indexes
            .iter()
            .find_map(|i| i.options.as_ref().filter(|o| o.name.as_deref() == Some("timestamp_-1")))
            .unwrap()
            .expire_after;
        assert_eq!(ttl, Some(Duration::from_secs(7 * 86_400)));
    }
}

#[test]
fn a_ten_second_partition_during_50000_events_loses_and_duplicates_nothing() {
    const TOTAL: usize = 50_000;
    const CHUNK: usize = 1_000;
    let server = MongoServer::start();
    let proxy = Proxy::start(server.tcp_port());
    let db = unique_db("partition");
    let mut d = Daemon::start(&mongodb_section(
        &format!("mongodb://127.0.0.1:{}", proxy.port),
        &db,
        "",
    ));
    let client = server.client();
    let socket = d.socket.clone();
    let sender = std::thread::spawn(move || {
        let mut accepted = 0;
        for c in 0..TOTAL / CHUNK {
            let body: String = (c * CHUNK..(c + 1) * CHUNK)
                .map(|i| format!("{{\"message\":\"event {i}\",\"module\":\"outage\",\"extra\":{{\"seq\":{i}}}}}\n"))
                .collect();
            accepted += lngpt_collector::send::send(&socket, &mut body.as_bytes())
                .expect("send")
                .events;
            std::thread::sleep(Duration::from_millis(150));
        }
        accepted
    });
    wait_until(
        "the first events stored",
        || (count(&client, &db, "api_logs") >= 5_000).then_some(()),
        || d.log(),
    );
    proxy.cut();
    d.wait_for_log("MongoDB is unreachable");
    // The partition itself is the scenario: it lasts ten seconds while events keep coming.
    std::thread::sleep(Duration::from_secs(10));
    assert!(d.count_outbox() > 0, "events waited in the outbox during the partition");
    proxy.heal();
    assert_eq!(sender.join().unwrap(), TOTAL as u64, "the app was never refused");
    wait_for_mongo_count(&client, &db, "api_logs", TOTAL as u64, &d);
    assert_eq!(distinct_ids(&client, &db, "api_logs"), TOTAL);
    let seqs: HashSet<i64> = find_all(&client, &db, "api_logs")
        .iter()
        .map(|doc| {
            doc.get_document("extra")
                .unwrap()
                .get("seq")
                .and_then(Bson::as_i64)
                .or_else(|| doc.get_document("extra").unwrap().get_i32("seq").ok().map(i64::from))
                .unwrap()
        })
        .collect();
    assert_eq!(seqs.len(), TOTAL, "every event exactly once");
    d.wait_for_log("MongoDB answers again");
    d.wait_for_empty_outbox();
    let log = d.log();
    assert_eq!(
        log.matches("MongoDB is unreachable").count(),
        1,
        "said once, not per batch:\n{log}"
    );
    assert_eq!(log.matches("MongoDB answers again").count(), 1, "said once:\n{log}");
    // The stop line says what still waits (nothing, after the drain), not what was ever deferred.
    assert!(d.stop().success(), "{}", d.log());
    let log = d.log();
    let stopped = log
        .lines()
        .find(|l| l.contains("stopped: "))
        .unwrap_or_else(|| panic!("no stop line:\n{log}"));
    assert!(
        stopped.contains(", 0 events wait in the outbox for MongoDB"),
        "{stopped}"
    );
}

#[test]
fn sigterm_during_an_outage_keeps_the_rest_in_the_outbox_and_the_next_start_delivers_it() {
    let server = MongoServer::start();
    let proxy = Proxy::start(server.tcp_port());
    let db = unique_db("sigterm");
    let mut d = Daemon::start(&mongodb_section(
        &format!("mongodb://127.0.0.1:{}", proxy.port),
        &db,
        "",
    ));
    let client = server.client();
    assert_eq!(d.send(log_lines(1_000, "before").as_bytes()).events, 1_000);
    wait_for_mongo_count(&client, &db, "api_logs", 1_000, &d);
    proxy.cut();
    assert_eq!(d.send(log_lines(5_000, "during").as_bytes()).events, 5_000);
    assert!(d.stop().success(), "exit 0:\n{}", d.log());
    assert_eq!(
        d.count_outbox(),
        5_000,
        "what could not reach MongoDB is in the outbox:\n{}",
        d.log()
    );
    assert_eq!(count(&client, &db, "api_logs"), 1_000);
    proxy.heal();
    d.restart();
    d.wait_for_log("5000 events wait in the outbox from an earlier run");
    wait_for_mongo_count(&client, &db, "api_logs", 6_000, &d);
    d.wait_for_empty_outbox();
    assert_eq!(distinct_ids(&client, &db, "api_logs"), 6_000);
}

#[test]
fn sigterm_while_mongodb_hangs_puts_the_rest_in_the_outbox_within_the_timeout() {
    let server = MongoServer::start();
    let proxy = Proxy::start(server.tcp_port());
    let db = unique_db("hang");
    let config = mongodb_section(
        &format!("mongodb://127.0.0.1:{}", proxy.port),
        &db,
        "write_timeout = \"1s\"",
    ) + "[pipeline]\nshutdown_timeout = \"4s\"\n"
        // The monitor finishes windows (documents for api_metrics) and evaluates alert rules
        // against the store all along: their writes meet the hang too.
        + "[monitor]\nwindow = \"300ms\"\ngrace = \"250ms\"\nevaluate_every = \"50ms\"\n";
    let mut d = Daemon::start(&config);
    let client = server.client();
    assert_eq!(d.send(log_lines(1_000, "before").as_bytes()).events, 1_000);
    wait_for_mongo_count(&client, &db, "api_logs", 1_000, &d);
    // Black-holed: connections stay open, nothing answers, no error comes back.
    proxy.stall();
    assert_eq!(d.send(log_lines(3_000, "during").as_bytes()).events, 3_000);
    let started = std::time::Instant::now();
    assert!(d.stop().success(), "exit 0:\n{}", d.log());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "stopped within shutdown_timeout, took {:?}",
        started.elapsed()
    );
    assert_eq!(
        d.count_outbox(),
        3_000,
        "what MongoDB did not take is in the outbox:\n{}",
        d.log()
    );
    proxy.heal();
    d.restart();
    wait_for_mongo_count(&client, &db, "api_logs", 4_000, &d);
    d.wait_for_empty_outbox();
    assert_eq!(distinct_ids(&client, &db, "api_logs"), 4_000);
}

#[test]
fn an_alert_is_sent_while_mongodb_hangs_and_recorded_once_it_answers() {
    use common::webhook::{generic_notifications, Receiver, Reply};
    let server = MongoServer::start();
    let proxy = Proxy::start(server.tcp_port());
    let db = unique_db("alertdown");
    let rx = Receiver::start(|_, _| Reply::status(204, ""));
    let config = mongodb_section(
        &format!("mongodb://127.0.0.1:{}", proxy.port),
        &db,
        "write_timeout = \"1s\"",
    ) + "[monitor]\nevaluate_every = \"50ms\"\n[monitor.rules.store_unreachable]\nthreshold = 0.5\n"
        + &format!(
            "[[webhook]]\nname = \"ops\"\nurl = {:?}\nformat = \"generic\"\ngroup_wait = \"10ms\"\n",
            rx.url("/hooks")
        );
    let mut d = Daemon::start(&config);
    let client = server.client();
    assert_eq!(d.send(log_lines(100, "before").as_bytes()).events, 100);
    wait_for_mongo_count(&client, &db, "api_logs", 100, &d);
    let sent = |state: &str| {
        rx.received()
            .iter()
            .flat_map(generic_notifications)
            .filter(|n| n.0 == "store_unreachable" && n.1 == state)
            .count()
    };
    // Black-holed: the next batch meets the hang, and the alert about it must not wait for
    // MongoDB, where alerts are claimed.
    proxy.stall();
    assert_eq!(d.send(log_lines(100, "during").as_bytes()).events, 100);
    wait_until(
        "the store_unreachable alert while MongoDB hangs",
        || (sent("firing") == 1).then_some(()),
        || d.log(),
    );
    proxy.heal();
    // Recorded in api_alerts once MongoDB answers, then resolved there and sent once more.
    wait_until(
        "the alert recorded and resolved in api_alerts",
        || {
            find_all(&client, &db, "api_alerts")
                .into_iter()
                .find(|a| a.get_str("rule") == Ok("store_unreachable") && a.get_str("state") == Ok("resolved"))
        },
        || d.log(),
    );
    wait_until(
        "the resolved notification",
        || (sent("resolved") == 1).then_some(()),
        || d.log(),
    );
    assert_eq!(sent("firing"), 1, "sent once:\n{}", d.log());
    wait_for_mongo_count(&client, &db, "api_logs", 200, &d);
    assert!(d.stop().success(), "exit 0:\n{}", d.log());
}

#[test]
fn mongodb_unreachable_at_start_then_appearing_gets_everything() {
    let port = free_port();
    let db = unique_db("late");
    // A real MongoDB cannot be started late here; a proxy that is down until healed stands in.
    let (late_server, proxy) = if real_mongodb() {
        let server = MongoServer::start();
        let proxy = Proxy::start(server.tcp_port());
        proxy.cut();
        (Some(server), Some(proxy))
    } else {
        (None, None)
    };
    let uri = match &proxy {
        Some(p) => format!("mongodb://127.0.0.1:{}", p.port),
        None => format!("mongodb://127.0.0.1:{port}"),
    };
    let d = Daemon::start(&mongodb_section(&uri, &db, ""));
    assert_eq!(d.send(log_lines(1_000, "early").as_bytes()).events, 1_000);
    wait_until(
        "the events wait in the outbox",
        || (d.count_outbox() == 1_000).then_some(()),
        || d.log(),
    );
    let server = match (late_server, proxy) {
        (Some(server), Some(proxy)) => {
            proxy.heal();
            server
        }
        _ => MongoServer::start_on(port),
    };
    let client = server.client();
    wait_for_mongo_count(&client, &db, "api_logs", 1_000, &d);
    d.wait_for_log("MongoDB indexes are in place");
}

#[test]
fn a_document_over_16_mib_is_rejected_and_the_rest_of_its_batch_lands() {
    let server = MongoServer::start();
    let db = unique_db("big");
    let d = Daemon::start(
        &(mongodb_section(&server.uri(), &db, "")
            + "[socket]\nmax_line_bytes = 20971520\n[pipeline]\nmemory_budget = \"96MiB\"\n"),
    );
    let big = format!("{{\"message\":\"{}\"}}\n", "x".repeat(17 * 1024 * 1024));
    let body = log_lines(3, "before") + &big + &log_lines(3, "after");
    assert_eq!(
        d.send(body.as_bytes()).events,
        7,
        "the line itself is within max_line_bytes"
    );
    let client = server.client();
    wait_for_mongo_count(&client, &db, "api_logs", 6, &d);
    wait_for_mongo_count(&client, &db, "api_rejects", 1, &d);
    let reject = &find_all(&client, &db, "api_rejects")[0];
    let reason = reject.get_str("reason").unwrap();
    assert!(
        reason.contains("over MongoDB's limit of 16777216 bytes (16 MiB)"),
        "{reason}"
    );
    assert!(reject.get_str("raw").unwrap().len() <= 64 * 1024);
}

#[test]
fn past_the_outbox_cap_the_oldest_events_are_dropped_counted_and_logged() {
    let port = free_port();
    let db = unique_db("cap");
    // 1 MiB cap; nothing answers on the port, so everything goes to the outbox.
    let d = Daemon::start(&mongodb_section(
        &format!("mongodb://127.0.0.1:{port}"),
        &db,
        "max_outbox_bytes = 1048576\n",
    ));
    let mut accepted = 0;
    for c in 0..20 {
        accepted += d.send(log_lines(1_000, &format!("chunk {c:02}")).as_bytes()).events;
    }
    assert_eq!(accepted, 20_000);
    d.wait_for_log("dropped the oldest");
    let (dropped, waiting) = wait_until(
        "every event either waiting in the outbox or counted as dropped",
        || {
            let dropped = last_drop_count(&d.log())?;
            let waiting = d.count_outbox();
            (dropped + waiting == 20_000).then_some((dropped, waiting))
        },
        || format!("outbox holds {}\n{}", d.count_outbox(), d.log()),
    );
    assert!(dropped > 0 && waiting > 0, "dropped {dropped}, waiting {waiting}");
    let bytes: i64 = d
        .db()
        .query_row("SELECT sum(bytes) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert!(bytes <= 1_048_576, "the outbox holds {bytes} bytes");
    // The newest are kept: the last chunk is whole in the outbox.
    if !real_mongodb() {
        let server = MongoServer::start_on(port);
        let client = server.client();
        wait_for_mongo_count(&client, &db, "api_logs", waiting, &d);
        let messages: Vec<String> = find_all(&client, &db, "api_logs")
            .iter()
            .map(|l| l.get_str("message").unwrap().to_string())
            .collect();
        assert!(messages.contains(&"chunk 19 999".to_string()));
        assert!(!messages.contains(&"chunk 00 0".to_string()), "the oldest were dropped");
    }
}

fn list_indexes(client: &mongodb::Client, db: &str, coll: &str) -> Vec<mongodb::IndexModel> {
    use futures_util::TryStreamExt;
    mongo::block_on(async {
        let coll = client.database(db).collection::<mongodb::bson::Document>(coll);
        // A collection that does not exist (yet) has none.
        match coll.list_indexes().await {
            Ok(cursor) => cursor.try_collect::<Vec<_>>().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    })
}

/// The running total in the last "dropped the oldest N events (T since start)" line.
fn last_drop_count(log: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("dropped the oldest"))?;
    line.split(" since start")
        .next()?
        .rsplit('(')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn file_lines_reach_mongodb_exactly_once_across_a_kill_9() {
    let server = MongoServer::start();
    let db = unique_db("filekill");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app.log");
    let section = format!(
        "[[file]]\npath = {:?}\npoll_interval = \"100ms\"\n",
        log.display().to_string()
    );
    let mut d = Daemon::start(&(mongodb_section(&server.uri(), &db, "") + &section));
    let client = server.client();
    std::fs::write(&log, log_lines(3_000, "first")).unwrap();
    wait_until(
        "some lines stored",
        || (count(&client, &db, "api_logs") >= 1_000).then_some(()),
        || d.log(),
    );
    d.signal(nix::sys::signal::Signal::SIGKILL);
    d.wait_exit();
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, log_lines(2_000, "second").as_bytes()).unwrap();
    d.restart();
    // Lines re-read after the crash carry the same derived ObjectIds: MongoDB keeps one of each.
    wait_for_mongo_count(&client, &db, "api_logs", 5_000, &d);
    assert_eq!(distinct_ids(&client, &db, "api_logs"), 5_000);
}

#[test]
fn one_collection_refused_by_the_server_waits_in_the_outbox_without_a_retry_storm_or_holding_up_the_rest() {
    let server = MongoServer::start();
    let proxy = Proxy::start(server.tcp_port());
    let db = unique_db("refused");
    let d = Daemon::start(&mongodb_section(
        &format!("mongodb://127.0.0.1:{}", proxy.port),
        &db,
        "",
    ));
    let client = server.client();
    // As MongoDB answers a user without the insert privilege on one collection.
    proxy.refuse_inserts("api_cost", 13);
    let cost = |i: usize| format!("{{\"type\":\"cost\",\"model\":\"m\",\"cost\":0.01,\"extra\":{{\"seq\":{i}}}}}\n");
    for round in 0..5 {
        let body: String = (0..100).map(cost).collect::<String>() + &log_lines(200, &format!("round {round}"));
        let ack = d.send(body.as_bytes());
        assert_eq!(ack.events, 300, "the refused events are durable in the outbox");
    }
    // The other collections are not held up.
    wait_for_mongo_count(&client, &db, "api_logs", 1_000, &d);
    assert_eq!(count(&client, &db, "api_cost"), 0);
    assert_eq!(d.count_outbox(), 500);
    let attempts = proxy.inserts_seen("api_cost");
    assert!(attempts <= 10, "{attempts} inserts into api_cost: a retry storm");
    let log = d.log();
    assert_eq!(
        log.matches("MongoDB refuses writes to api_cost (code 13)").count(),
        1,
        "said once:\n{log}"
    );
    assert!(!log.contains("unreachable"), "a refusal is not an outage:\n{log}");
    // The reason reads as the server's message: no raw reply dumped as hex (issue 20).
    let ready = common::http::get(&d.api(), "/readyz").text();
    for said in [log.as_str(), ready.as_str()] {
        let line = said
            .lines()
            .find(|l| l.contains("refuses writes to api_cost"))
            .unwrap_or_default();
        assert!(!line.is_empty(), "no refusal in {said}");
        assert!(
            !line.contains("RawDocumentBuf") && !line.contains("server response"),
            "a raw dump in: {line}"
        );
    }
    // Once the privilege is granted, the waiting events are delivered without a restart.
    proxy.accept_inserts();
    wait_for_mongo_count(&client, &db, "api_cost", 500, &d);
    d.wait_for_empty_outbox();
    d.wait_for_log("MongoDB accepts writes to api_cost again");
}

/// A stream resumed while events wait in the outbox: MongoDB does not have them yet, so the replay
/// waits for them (at most `api.query_timeout`) and says so when they are still waiting.
#[test]
fn a_resume_waits_for_the_outbox_and_says_what_it_could_not_replay() {
    let server = MongoServer::start();
    let proxy = Proxy::start(server.tcp_port());
    let db = unique_db("replay");
    let d = Daemon::start(&mongodb_section(
        &format!("mongodb://127.0.0.1:{}", proxy.port),
        &db,
        "[api]\nquery_timeout = \"5s\"\n",
    ));
    let api = d.api();
    let mut first = Sse::open(&api, "/api/logs/stream", &[]);
    d.send(log_lines(5, "seen").as_bytes());
    let seen: Vec<_> = (0..5).map(|_| first.next().expect("an event")).collect();
    let last = seen[4].id.clone().expect("an id");
    drop(first);
    let messages = |sse: &mut Sse, n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                let e = sse.next().expect("an event");
                assert_eq!(e.event, None, "{e:?}");
                e.json()["message"].as_str().expect("a message").to_string()
            })
            .collect()
    };

    // Refused for a moment (the outbox tries again after a second): the replay waits until
    // MongoDB has them, and has them all.
    proxy.refuse_inserts("api_logs", 13);
    assert_eq!(d.send(log_lines(20, "waited for").as_bytes()).events, 20);
    assert_eq!(d.count_outbox(), 20);
    proxy.accept_inserts();
    let mut again = Sse::open(&api, "/api/logs/stream", &[("Last-Event-ID", &last)]);
    assert_eq!(
        messages(&mut again, 20),
        (0..20).map(|i| format!("waited for {i}")).collect::<Vec<_>>()
    );
    drop(again);

    // Refused for longer than the wait: the replay says what it could not include, and sends
    // what MongoDB has.
    proxy.refuse_inserts("api_logs", 13);
    assert_eq!(d.send(log_lines(7, "still waiting").as_bytes()).events, 7);
    let mut third = Sse::open(&api, "/api/logs/stream", &[("Last-Event-ID", &last)]);
    let said = third.next().expect("an event");
    assert_eq!(said.event.as_deref(), Some("error"), "{said:?}");
    let error = said.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("7 events wait in the outbox"), "{error}");
    assert_eq!(
        messages(&mut third, 20),
        (0..20).map(|i| format!("waited for {i}")).collect::<Vec<_>>()
    );
}

#[test]
fn inserts_whose_replies_are_lost_are_counted_as_stored_once() {
    let server = MongoServer::start();
    let proxy = Proxy::start(server.tcp_port());
    let db = unique_db("replies");
    // Without the driver's own retry (which a replica set answers from its session table), the
    // daemon's retry meets the documents its first attempt stored.
    let mut d = Daemon::start(&mongodb_section(
        &format!("mongodb://127.0.0.1:{}/?retryWrites=false", proxy.port),
        &db,
        "",
    ));
    let client = server.client();
    proxy.drop_reply_of_next_inserts(3);
    for round in 0..5 {
        assert_eq!(d.send(log_lines(1_000, &format!("r{round}")).as_bytes()).events, 1_000);
    }
    wait_for_mongo_count(&client, &db, "api_logs", 5_000, &d);
    d.wait_for_empty_outbox();
    assert!(d.stop().success());
    let log = d.log();
    assert!(
        log.contains("5000 events and 0 rejects accepted since start, 5000 documents stored"),
        "the count includes inserts that landed before their reply was lost:\n{log}"
    );
    let already: u64 = log
        .split("documents stored (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        already > 0,
        "the lost replies made retries meet their own documents:\n{log}"
    );
}

#[test]
fn indexes_lost_by_a_server_restart_are_made_again_without_restarting_the_daemon() {
    if real_mongodb() {
        return; // a real server cannot be restarted empty from here
    }
    let port = free_port();
    let server = MongoServer::start_on(port);
    let db = unique_db("reindex");
    let d = Daemon::start(&mongodb_section(&server.uri(), &db, ""));
    let has_indexes = |client: &mongodb::Client| list_indexes(client, &db, "api_logs").len() >= 3;
    let client = server.client();
    wait_until("indexes", || has_indexes(&client).then_some(()), || d.log());
    // The in-memory server comes back empty: no collections, no indexes.
    drop(server);
    let server = MongoServer::start_on(port);
    let client = server.client();
    assert!(!has_indexes(&client));
    assert_eq!(d.send(log_lines(10, "after").as_bytes()).events, 10);
    wait_until("indexes made again", || has_indexes(&client).then_some(()), || d.log());
}

#[test]
fn two_hosts_tailing_files_that_begin_alike_into_one_mongodb_keep_each_others_lines() {
    let server = MongoServer::start();
    let db = unique_db("twohosts");
    let client = server.client();
    let banner = "{\"message\":\"novel app starting\",\"module\":\"main\"}\n";
    let mut daemons = Vec::new();
    for host in ["a", "b"] {
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("app.log");
        std::fs::write(&log, format!("{banner}{}", log_lines(1_000, host))).unwrap();
        let section = format!(
            "[[file]]\npath = {:?}\npoll_interval = \"100ms\"\n",
            log.display().to_string()
        );
        daemons.push((
            Daemon::start(&(mongodb_section(&server.uri(), &db, "") + &section)),
            logs,
        ));
    }
    wait_for_mongo_count(&client, &db, "api_logs", 2 * 1_001, &daemons[1].0);
    assert_eq!(distinct_ids(&client, &db, "api_logs"), 2_002);
}

#[test]
fn a_damaged_outbox_row_is_set_aside_as_a_reject_and_the_rest_is_delivered() {
    let server = MongoServer::start();
    let proxy = Proxy::start(server.tcp_port());
    proxy.cut();
    let db = unique_db("corrupt");
    let mut d = Daemon::start(&mongodb_section(
        &format!("mongodb://127.0.0.1:{}", proxy.port),
        &db,
        "",
    ));
    for round in 0..3 {
        assert_eq!(d.send(log_lines(100, &format!("r{round}")).as_bytes()).events, 100);
    }
    assert!(d.stop().success());
    assert_eq!(d.count_outbox(), 300);
    {
        let db = rusqlite::Connection::open(d.state.join("collector.db")).unwrap();
        let damaged = db
            .execute(
                "UPDATE outbox SET docs = x'0fff00' || docs WHERE seq = (SELECT min(seq) FROM outbox)",
                [],
            )
            .unwrap();
        assert_eq!(damaged, 1);
    }
    proxy.heal();
    d.restart();
    let client = server.client();
    d.wait_for_empty_outbox();
    wait_for_mongo_count(&client, &db, "api_logs", 200, &d);
    let rejects = find_all(&client, &db, "api_rejects");
    assert_eq!(rejects.len(), 1);
    let reason = rejects[0].get_str("reason").unwrap();
    assert!(
        reason.contains("could not be read back") && reason.contains("100 events"),
        "{reason}"
    );
}

/// A python3 with pymongo, the app's driver (`.ci/run` installs it from PyPI).
fn python_with_pymongo() -> &'static str {
    for python in ["python3", "/usr/bin/python3"] {
        let ok = std::process::Command::new(python)
            .args(["-c", "import pymongo"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return python;
        }
    }
    panic!("no python3 with pymongo: python3 -m pip install pymongo (.ci/run does)");
}

/// Writes into `db` what the app itself writes with `ENABLE_MONGODB=true`, with pymongo, in the
/// app's zone: its `record_api_cost` documents (naive `datetime.now()`), older history, the
/// original handler's log documents, and its response cache. Prints the log records' times.
const THE_APPS_OWN_WRITES: &str = r#"
import datetime, json, logging, os, struct, sys, time
from bson import ObjectId
from pymongo import MongoClient

db = MongoClient(sys.argv[1])[sys.argv[2]]

def inserted_at(t):
    """The _id pymongo would have made at time t."""
    return ObjectId(struct.pack(">I", int(t)) + os.urandom(8))

# record_api_cost(messages) this hour: 20 RMB + 2 USD (14.4 RMB at 7.2) + 1.6 RMB = 36 RMB.
for model, cost, currency, tin, tout in [("glm-4-air", 20.0, "￥", 1000, 500),
                                         ("gpt-4o", 2.0, "$", 3000, 800),
                                         ("glm-4-flashx", 1.6, "￥", 400, 100)]:
    db.api_cost.insert_one({"created_at": datetime.datetime.now(), "model": model, "cost": cost,
                            "currency_symbol": currency, "input_tokens": tin, "output_tokens": tout,
                            "total_tokens": tin + tout})
# History: written 2 and 40 days ago.
for days in (2, 40):
    t = time.time() - days * 86400
    db.api_cost.insert_one({"_id": inserted_at(t), "created_at": datetime.datetime.fromtimestamp(t),
                            "model": "glm-4-air", "cost": 5.0, "currency_symbol": "￥",
                            "input_tokens": 10, "output_tokens": 10, "total_tokens": 20})

created = []
class OriginalMongoDBHandler(logging.Handler):
    def emit(self, record):
        db.api_logs.insert_one({"timestamp": datetime.datetime.fromtimestamp(record.created),
                                "level": record.levelname, "message": record.getMessage(),
                                "module": record.module, "function": record.funcName,
                                "line": record.lineno, "extra": getattr(record, "extra", {})})
        created.append(record.created)

log = logging.getLogger("lngpt.api")
log.addHandler(OriginalMongoDBHandler())
log.setLevel(logging.INFO)
for i in range(5):
    log.info("原应用日志 %d", i)

db.stream_chat.insert_one({"created_at": datetime.datetime.now(), "return_value": [{"role": "user", "content": "你好"}],
                           "func_name": "stream_chat", "args": [], "kwargs": {},
                           "yields": [{"index": 0, "delay": 0.1}], "cache_key": "k1"})
print(json.dumps(created))
"#;

fn rfc3339_ms(secs: f64) -> String {
    let ms = (secs * 1000.0).floor() as i64;
    let t = jiff::Timestamp::from_millisecond(ms).unwrap();
    format!("{}", t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
}

/// A deployment that ran the app with MongoDB holds its own documents with naive local times. The
/// collector adopts them in place (times converted, originals kept), so the budget, statistics,
/// listings and streams count them; it leaves the response cache alone, keeps the old history
/// from the TTL, touches nothing twice across a restart, and adopts what an old copy of the app
/// still writes directly.
#[test]
fn the_apps_own_documents_count_in_budget_statistics_listings_and_streams() {
    if real_mongodb() {
        return; // pymongo writes to the stand-in this test starts
    }
    let server = MongoServer::start();
    let db = unique_db("app_data");
    let client = server.client();
    let uri = mongo::with_options(&server.uri());
    let python = python_with_pymongo();
    let out = std::process::Command::new(python)
        .args(["-c", THE_APPS_OWN_WRITES, &uri, &db])
        .env("TZ", "Asia/Shanghai")
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Vec<f64> = serde_json::from_slice(&out.stdout).unwrap();
    // One document already adopted by a pass that was cut short: left as it is.
    let adopted_before = mongodb::bson::DateTime::from_millis(1_700_000_000_000);
    mongo::block_on(async {
        client
            .database(&db)
            .collection::<mongodb::bson::Document>("api_logs")
            .insert_one(mongodb::bson::doc! { "timestamp": adopted_before, "level": "INFO", "message": "adopted earlier", "source": "app" })
            .await
    })
    .unwrap();
    let cache_before = find_all(&client, &db, "stream_chat");

    let config = mongodb_section(
        &server.uri(),
        &db,
        "[budget]\nrefresh = \"100ms\"\nhourly_limit_rmb = 30.0\ndaily_limit_rmb = 80.0\nusd_to_rmb_rate = 7.2\n",
    );
    let env = [
        ("TZ", "Asia/Shanghai"),
        ("LNGPT_COLLECTOR_NAIVE_TIMEZONE", "Asia/Shanghai"),
    ];
    let mut d = Daemon::start_with(&config, &env);
    let api = d.api();

    // The budget counts the hour the app spent: 36 RMB, over its limit of 30.
    let budget = wait_until(
        "the app's 36 RMB in the hour",
        || {
            let b = common::http::get_ok(&api, "/api/budget");
            ((b["hour"]["spent_rmb"].as_f64().unwrap() - 36.0).abs() < 1e-6).then_some(b)
        },
        || format!("{}\n{}", common::http::get_ok(&api, "/api/budget"), d.log()),
    );
    assert_eq!(budget["allowed"], false, "{budget}");
    assert!(
        (budget["day"]["spent_rmb"].as_f64().unwrap() - 36.0).abs() < 1e-6,
        "the 2-day-old cost is outside the day: {budget}"
    );

    // Statistics by model over the day.
    let stats = common::http::get_ok(&api, "/api/stats/cost");
    let by_model: std::collections::BTreeMap<String, f64> = stats["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["model"].as_str().unwrap().to_string(),
                r["total_cost"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_model,
        [
            ("glm-4-air".to_string(), 20.0),
            ("glm-4-flashx".into(), 1.6),
            ("gpt-4o".into(), 2.0)
        ]
        .into(),
        "{stats}"
    );

    // Listings: the original handler's documents at their real instants, newest first.
    let logs = common::http::get_ok(&api, "/api/logs?per_page=10");
    let listed: Vec<(String, String)> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["message"].as_str().unwrap().to_string(),
                l["timestamp"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut want: Vec<(String, String)> = created
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("原应用日志 {i}"), rfc3339_ms(*t)))
        .rev()
        .collect();
    want.push(("adopted earlier".into(), "2023-11-14T22:13:20.000Z".into()));
    assert_eq!(listed, want);

    // A stream opened with the tail shows them too, oldest first.
    let mut tail = Sse::open(&api, "/api/logs/stream?tail=5", &[]);
    let streamed: Vec<String> = (0..5)
        .map(|_| {
            tail.next().expect("an event").json()["message"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(streamed, (0..5).map(|i| format!("原应用日志 {i}")).collect::<Vec<_>>());
    drop(tail);

    // The originals are kept beside the converted time; the response cache is untouched.
    let cost_docs = find_all(&client, &db, "api_cost");
    for doc in &cost_docs {
        assert_eq!(doc.get_str("source").unwrap(), "app", "{doc}");
        let adopted = doc.get_document("adopted").unwrap();
        assert_eq!(
            adopted
                .get_i64("offset_minutes")
                .unwrap_or_else(|_| adopted.get_i32("offset_minutes").unwrap() as i64),
            480,
            "{doc}"
        );
        let naive = adopted.get_datetime("naive").unwrap().timestamp_millis();
        let real = doc.get_datetime("created_at").unwrap().timestamp_millis();
        assert_eq!(naive - real, 8 * 3_600_000, "{doc}");
    }
    assert_eq!(
        find_all(&client, &db, "stream_chat"),
        cache_before,
        "stream_chat is not the collector's"
    );

    // The 40-day-old history stays: no TTL would delete it, and the start said why.
    assert_eq!(cost_docs.len(), 5);
    let time_index = list_indexes(&client, &db, "api_cost")
        .into_iter()
        .find(|m| m.options.as_ref().and_then(|o| o.name.as_deref()) == Some("created_at_-1"))
        .expect("the time index");
    assert_eq!(time_index.options.and_then(|o| o.expire_after), None);
    d.wait_for_log("api_cost holds documents the app wrote itself that are older than retention.api_cost");

    // A restart adopts nothing twice; a document an old copy of the app writes meanwhile is adopted.
    d.stop();
    let through = |client: &mongodb::Client| {
        find_all(client, &db, "collector_state")
            .iter()
            .find(|s| s.get_str("name") == Ok("adopted:api_cost"))
            .and_then(|s| s.get_datetime("through").ok().copied())
    };
    let first_pass = through(&client).expect("the first pass noted how far it got");
    let again = std::process::Command::new(python)
        .args([
            "-c",
            "import datetime, sys; from pymongo import MongoClient; MongoClient(sys.argv[1])[sys.argv[2]].api_cost.insert_one({'created_at': datetime.datetime.now(), 'model': 'glm-4-air', 'cost': 3.5, 'currency_symbol': '￥', 'input_tokens': 1, 'output_tokens': 1, 'total_tokens': 2})",
            &uri,
            &db,
        ])
        .env("TZ", "Asia/Shanghai")
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    d.restart();
    wait_until(
        "a pass after the restart",
        || through(&client).filter(|t| *t > first_pass),
        || d.log(),
    );
    let after: Vec<_> = find_all(&client, &db, "api_cost");
    for before in &cost_docs {
        let same = after.iter().find(|a| a.get("_id") == before.get("_id")).unwrap();
        assert_eq!(same, before, "adopted once, not again");
    }
    let new = after.iter().find(|a| a.get_f64("cost") == Ok(3.5)).unwrap();
    assert_eq!(
        new.get_str("source"),
        Ok("app"),
        "{new}\n{:?}\n{}",
        find_all(&client, &db, "collector_state"),
        d.log()
    );
    wait_until(
        "the budget with the new 3.5 RMB",
        || {
            let b = common::http::get_ok(&d.api(), "/api/budget");
            ((b["hour"]["spent_rmb"].as_f64().unwrap() - 39.5).abs() < 1e-6).then_some(())
        },
        || common::http::get_ok(&d.api(), "/api/budget").to_string(),
    );
}
