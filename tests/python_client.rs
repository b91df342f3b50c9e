//! The Python client shipped in clients/python, used the way the README shows, against the real daemon.

mod common;

use common::{docs, Daemon};

#[test]
fn the_python_logging_handler_delivers_logs_costs_and_performance() {
    let d = Daemon::start("");
    let script = format!(
        r#"
import logging, sys
sys.path.insert(0, {clients:?})
from lngpt_collector import CollectorHandler
collector = CollectorHandler({socket:?})
logger = logging.getLogger("lngpt.api")
logger.addHandler(collector)
logger.setLevel(logging.DEBUG)
for i in range(100):
    logger.warning("API调用失败 %d", i, extra={{"data": {{"attempt": i, "api_key": "sk-abcdefghijklmnopqrstuv{{:04d}}".format(i)}}}})
collector.send({{"type": "cost", "model": "gpt-4o", "cost": 0.0123, "currency_symbol": "$", "input_tokens": 1200, "output_tokens": 300}})
collector.send({{"type": "performance", "response_time": 3.81, "status": "error", "error": "timeout", "model": "gpt-4o"}})
print(collector.close())
"#,
        clients = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python"),
        socket = d.socket.display().to_string(),
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "{'events': 102, 'rejected': 0}"
    );
    d.wait_for_count("api_logs", 100);
    d.wait_for_count("api_cost", 1);
    d.wait_for_count("api_performance", 1);
    let logs = docs(&d.db(), "api_logs");
    assert_eq!(logs[7]["message"], "API调用失败 7");
    assert_eq!(logs[7]["level"], "WARNING");
    assert_eq!(logs[7]["logger"], "lngpt.api");
    assert_eq!(logs[7]["extra"]["attempt"], 7);
    assert_eq!(logs[7]["extra"]["api_key"], "***0007");
}

/// The app's front end, as the original one asks: `/api/logs?page=…&per_page=…` with urllib.
#[test]
fn a_python_front_end_pages_through_logs_with_the_original_query_shape() {
    let d = Daemon::start("");
    d.send(&std::fs::read(common::testdata("novel-app-events.jsonl")).unwrap());
    let api = d.api();
    let script = format!(
        r#"
import json, urllib.request, urllib.parse
base = "http://{api}"
def get(path, **params):
    with urllib.request.urlopen(base + path + "?" + urllib.parse.urlencode(params)) as r:
        return json.load(r)
first = get("/api/logs", page=1, per_page=20)
assert first["success"] is True
p = first["pagination"]
seen = []
for page in range(1, p["pages"] + 1):
    answer = get("/api/logs", page=page, per_page=20)
    seen.extend(log["_id"] for log in answer["logs"])
errors = get("/api/logs", level="ERROR", module="app", start_time="2026-11-26T00:00:00", end_time="2026-11-27T00:00:00")
assert all(l["level"] == "ERROR" and l["module"] == "app" for l in errors["logs"])
try:
    get("/api/logs", per_page="many")
    raise SystemExit("a bad per_page was accepted")
except urllib.error.HTTPError as e:
    bad = json.load(e)
    assert e.code == 400 and bad["success"] is False and "per_page" in bad["error"], bad
print(json.dumps({{"total": p["total"], "pages": p["pages"], "seen": len(seen), "unique": len(set(seen)), "keys": sorted(p)}}))
"#
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["total"], 287);
    assert_eq!(answer["pages"], 15);
    assert_eq!(answer["seen"], 287);
    assert_eq!(answer["unique"], 287);
    assert_eq!(
        answer["keys"],
        serde_json::json!([
            "next_cursor",
            "page",
            "pages",
            "per_page",
            "total",
            "total_is_lower_bound"
        ])
    );
}
