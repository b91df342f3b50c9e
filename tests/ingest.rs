//! The shared test streams through the real socket into the real embedded store.

use crate::common;

use std::collections::HashSet;

use crate::common::{docs, testdata, Daemon};
use serde_json::{json, Value};

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(testdata("expected.json")).unwrap()).unwrap()
}

/// Every secret planted in the app's stream: `api_key` values and bearer tokens.
fn planted_secrets(stream: &str) -> HashSet<String> {
    let re = regex::Regex::new(r#"(sk-[A-Za-z0-9\-]{8,})"#).unwrap();
    re.captures_iter(stream).map(|c| c[1].to_string()).collect()
}

#[test]
fn novel_app_stream_lands_in_the_right_collections_with_no_secret_on_disk() {
    let expected = expected();
    let stream = std::fs::read_to_string(testdata("novel-app-events.jsonl")).unwrap();
    let d = Daemon::start("");
    let ack = d.send(stream.as_bytes());
    assert_eq!(
        ack.events,
        expected["novel-app-events.jsonl"]["lines"].as_u64().unwrap()
    );
    assert_eq!(ack.rejected, 0);
    for (table, n) in expected["novel-app-events.jsonl"]["by_collection"].as_object().unwrap() {
        d.wait_for_count(table, n.as_u64().unwrap());
    }
    assert_eq!(d.count("api_rejects"), 0);

    let secrets = planted_secrets(&stream);
    assert!(
        secrets.len() >= 20,
        "the stream should hold planted secrets, found {}",
        secrets.len()
    );
    let lines_with_secrets = stream.lines().filter(|l| secrets.iter().any(|s| l.contains(s))).count() as u64;
    assert_eq!(
        lines_with_secrets,
        expected["novel-app-events.jsonl"]["secrets_planted"].as_u64().unwrap()
    );
    // Search every file's bytes under state_dir, WAL included, while the daemon runs and after.
    assert_no_secret_under(&d.state, &secrets);
    let mut d = d;
    assert!(d.stop().success());
    assert_no_secret_under(&d.state, &secrets);
    let masked = docs(&d.db(), "api_logs")
        .iter()
        .filter(|doc| doc.to_string().contains("***"))
        .count();
    assert!(
        masked >= 20,
        "masked values should be kept (last 4 characters), found {masked} documents"
    );
}

fn assert_no_secret_under(dir: &std::path::Path, secrets: &HashSet<String>) {
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        files += 1;
        for s in secrets {
            assert!(
                memchr::memmem::find(&bytes, s.as_bytes()).is_none(),
                "secret {s} found in {}",
                path.display()
            );
        }
    }
    assert!(files >= 1);
}

#[test]
fn bad_lines_are_rejected_in_order_with_reasons_naming_the_problem() {
    let expected = &expected()["bad-lines.jsonl"];
    let bad = std::fs::read(testdata("bad-lines.jsonl")).unwrap();
    let d = Daemon::start("");
    let ack = d.send(&bad);
    let keywords: Vec<&str> = expected["reason_keywords_in_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(ack.rejected, expected["rejects"].as_u64().unwrap());
    assert_eq!(ack.events, 0);
    d.wait_for_count("api_rejects", keywords.len() as u64);
    let rejects = docs(&d.db(), "api_rejects");
    let raw_lines: Vec<&str> = std::str::from_utf8(&bad)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    for ((doc, keyword), raw) in rejects.iter().zip(&keywords).zip(&raw_lines) {
        let reason = doc["reason"].as_str().unwrap();
        assert!(
            reason.to_lowercase().contains(keyword),
            "reason {reason:?} should name {keyword:?}"
        );
        assert_eq!(doc["raw"], *raw, "the raw line is kept");
        assert_eq!(doc["source"], "socket");
        assert!(doc["received_at"].as_str().unwrap().ends_with('Z'));
    }
    // The connection carried on: a good line after the bad ones in the same stream is stored.
    let ack = d.send(b"{\"message\": \"still here\"}\n");
    assert_eq!((ack.events, ack.rejected), (1, 0));
    d.wait_for_count("api_logs", 1);
}

#[test]
fn aliases_map_field_by_field() {
    let d = Daemon::start("");
    let lines = concat!(
        r#"{"created": 1795680002.171, "levelname": "warn", "msg": "开始API调用", "name": "lngpt.api", "module": "llm_api", "funcName": "stream_chat", "lineno": 225, "request_id": "req-000005"}"#,
        "\n",
        r#"{"type": "cost", "created_at": "2026-11-26T16:00:00.250+08:00", "gen_ai.request.model": "glm-4-plus", "cost": 0.65, "currency": "RMB", "gen_ai.usage.input_tokens": 100, "completion_tokens": 20, "gen_ai.provider.name": "zhipuai"}"#,
        "\n",
        r#"{"timestamp": 1795680004.062, "duration_ms": 3847, "ok": true, "model": "gpt-4o", "provider": "openai", "first_chunk_time": 1.092, "chunk_count": 753, "region": "us"}"#,
        "\n",
    );
    assert_eq!(d.send(lines.as_bytes()).events, 3);
    d.wait_for_count("api_logs", 1);
    d.wait_for_count("api_cost", 1);
    d.wait_for_count("api_performance", 1);
    let db = d.db();
    let log = &docs(&db, "api_logs")[0];
    assert_eq!(log["timestamp"], "2026-11-26T08:00:02.171Z");
    assert_eq!(log["level"], "WARNING");
    assert_eq!(log["message"], "开始API调用");
    assert_eq!(log["logger"], "lngpt.api");
    assert_eq!(log["module"], "llm_api");
    assert_eq!(log["function"], "stream_chat");
    assert_eq!(log["line"], 225);
    assert_eq!(log["extra"], json!({"request_id": "req-000005"}));
    assert_eq!(log["_id"].as_str().unwrap().len(), 24);
    let cost = &docs(&db, "api_cost")[0];
    assert_eq!(cost["created_at"], "2026-11-26T08:00:00.250Z");
    assert_eq!(cost["model"], "glm-4-plus");
    assert_eq!(cost["currency_symbol"], "￥");
    assert_eq!(
        (
            cost["input_tokens"].as_u64(),
            cost["output_tokens"].as_u64(),
            cost["total_tokens"].as_u64()
        ),
        (Some(100), Some(20), Some(120))
    );
    assert_eq!(cost["provider"], "zhipuai");
    assert_eq!(cost["cost_source"], "reported");
    let perf = &docs(&db, "api_performance")[0];
    assert_eq!(perf["timestamp"], "2026-11-26T08:00:04.062Z");
    assert_eq!(perf["response_time"], 3.847);
    assert_eq!(perf["status"], "success");
    assert_eq!(perf["chunk_count"], 753);
    assert_eq!(perf["extra"], json!({"region": "us"}));
    // The indexed columns agree with the documents.
    let (level, module): (String, String) = db
        .query_row("SELECT level, module FROM api_logs", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((level.as_str(), module.as_str()), ("WARNING", "llm_api"));
    let ms: i64 = db
        .query_row("SELECT timestamp_ms FROM api_performance", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ms, 1_795_680_004_062);
}

#[test]
fn retention_deletes_documents_older_than_configured() {
    let d = Daemon::start("[retention]\napi_logs = \"1d\"\ninterval = \"100ms\"\n");
    let old = r#"{"message": "old", "timestamp": "2020-01-01T00:00:00Z"}"#;
    let fresh = r#"{"message": "fresh"}"#;
    assert_eq!(d.send(format!("{old}\n{fresh}\n").as_bytes()).events, 2);
    common::wait_until(
        "only the fresh log left",
        || {
            let messages: Vec<Value> = docs(&d.db(), "api_logs")
                .iter()
                .map(|doc| doc["message"].clone())
                .collect();
            (messages == vec![json!("fresh")]).then_some(())
        },
        || d.log(),
    );
    d.wait_for_log("retention: deleted 1 api_logs documents");
}

#[test]
fn repeated_fields_are_rejected_and_integers_beyond_64_bits_are_stored_exactly() {
    let d = Daemon::start("");
    let lines = concat!(
        r#"{"type": "cost", "model": "gpt-4o", "cost": -5, "cost": 3}"#,
        "\n",
        r#"{"type": "cost", "model": "gpt-4o", "cost": 1, "input_tokens": 9223372036854775807, "output_tokens": 1}"#,
        "\n",
        r#"{"message": "big", "extra": {"id": 123456789012345678901234567890, "u": 18446744073709551615, "n": -5}}"#,
        "\n",
    );
    let ack = d.send(lines.as_bytes());
    assert_eq!((ack.events, ack.rejected), (1, 2));
    d.wait_for_count("api_rejects", 2);
    d.wait_for_count("api_logs", 1);
    let rejects = docs(&d.db(), "api_rejects");
    assert_eq!(rejects[0]["reason"], "field `cost` appears twice; send it once");
    assert!(
        rejects[1]["reason"]
            .as_str()
            .unwrap()
            .contains("is over 9223372036854775807"),
        "{}",
        rejects[1]["reason"]
    );
    let log = &docs(&d.db(), "api_logs")[0];
    assert_eq!(
        log["extra"],
        json!({"id": "123456789012345678901234567890", "u": "18446744073709551615", "n": -5})
    );
}

/// The original app writes `datetime.now()`: a naive local time. Read in the host's zone, an event
/// written just before midnight in Shanghai stays on that day; the next one starts the next day.
#[test]
fn naive_timestamps_are_read_in_the_host_zone_unless_configured() {
    let lines = concat!(
        r#"{"message": "before midnight", "timestamp": "2026-11-26T23:59:59.900"}"#,
        "\n",
        r#"{"message": "after midnight", "timestamp": "2026-11-27 00:00:00.100"}"#,
        "\n",
        r#"{"message": "with an offset", "timestamp": "2026-11-27T00:00:00Z"}"#,
        "\n",
    );
    let stored = |extra: &str| {
        let d = Daemon::start_with(extra, &[("TZ", "Asia/Shanghai")]);
        let ack = d.send(lines.as_bytes());
        assert_eq!((ack.events, ack.rejected), (3, 0));
        d.wait_for_count("api_logs", 3);
        docs(&d.db(), "api_logs")
            .iter()
            .map(|doc| {
                (
                    doc["message"].as_str().unwrap().to_string(),
                    doc["timestamp"].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    let pairs = |v: [(&str, &str); 3]| v.map(|(m, t)| (m.to_string(), t.to_string())).to_vec();
    assert_eq!(
        stored(""),
        pairs([
            ("before midnight", "2026-11-26T15:59:59.900Z"),
            ("after midnight", "2026-11-26T16:00:00.100Z"),
            ("with an offset", "2026-11-27T00:00:00.000Z"),
        ])
    );
    assert_eq!(
        stored("naive_timezone = \"UTC\"\n"),
        pairs([
            ("before midnight", "2026-11-26T23:59:59.900Z"),
            ("after midnight", "2026-11-27T00:00:00.100Z"),
            ("with an offset", "2026-11-27T00:00:00.000Z"),
        ])
    );
    assert_eq!(
        stored("naive_timezone = \"America/New_York\"\n")[0].1,
        "2026-11-27T04:59:59.900Z"
    );
}
