//! MongoDB as the store: the real binary, the MongoDB stand-in (or a real MongoDB with
//! MONGODB_TEST_URI), outages through a TCP proxy, the outbox.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::mongo::{self, count, find_all, free_port, mongodb_section, real_mongodb, unique_db, MongoServer, Proxy};
use common::{testdata, wait_until, Daemon};
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
    let indexes = mongo::block_on(async {
        use futures_util::TryStreamExt;
        let coll = client.database(&db).collection::<mongodb::bson::Document>("api_logs");
        coll.list_indexes()
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    });
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
        let indexes = mongo::block_on(async {
            use futures_util::TryStreamExt;
            let coll = client.database(&db).collection::<mongodb::bson::Document>("api_logs");
            coll.list_indexes()
                .await
                .unwrap()
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
        });
        let ttl = indexes
            .iter()
            .find_map(|i| i.options.as_ref().filter(|o| o.name.as_deref() == Some("timestamp_-1")))
            .unwrap()
            .expire_after;
        assert_eq!(ttl, Some(Duration::from_secs(7 * 86_400)));
    }
}
