//! The Python client shipped in clients/python, against the real daemon.
//!
//! The first test uses the client the way the README shows. The others run the client's own test
//! modules (`clients/python/tests/test_*.py`, stdlib `unittest`) with `LNGPT_TEST_DAEMON_BIN` set to
//! the binary cargo built, so that they can start, stop, stall and restart daemons of their own.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::common::{docs, Daemon};

/// One Python test module at a time: the latency tests measure microseconds on two cores.
static PYTHON: Mutex<()> = Mutex::new(());

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python")
}

fn python() -> Command {
    let mut cmd = Command::new("python3");
    // No __pycache__ left in the work tree; nothing of the developer's client settings.
    cmd.env("PYTHONDONTWRITEBYTECODE", "1").env("PYTHONUNBUFFERED", "1");
    for (name, _) in std::env::vars() {
        if name.starts_with("LNGPT_COLLECTOR_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs `python3 -m unittest -v <module>` in clients/python/tests; fails with its output.
fn unittest(module: &str) {
    let _one_at_a_time = PYTHON.lock().unwrap_or_else(|e| e.into_inner());
    let out = python()
        .args(["-m", "unittest", "-v", module])
        .current_dir(client_dir().join("tests"))
        .env("LNGPT_TEST_DAEMON_BIN", common::BIN)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The latency figures, visible with --nocapture.
    print!("{stdout}");
    assert!(out.status.success(), "{module} failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("\nOK") && !stderr.contains("skipped"),
        "{module} ran no test or skipped some:\n{stderr}"
    );
}

#[test]
fn the_python_logging_handler_delivers_logs_costs_and_performance() {
    let d = Daemon::start("");
    let script = format!(
        r#"
import logging, sys
sys.path.insert(0, {clients:?})
from lngpt_collector import CollectorHandler
collector = CollectorHandler({socket:?}, spool_dir={spool:?})
logger = logging.getLogger("lngpt.api")
logger.addHandler(collector)
logger.setLevel(logging.DEBUG)
for i in range(100):
    logger.warning("API调用失败 %d", i, extra={{"data": {{"attempt": i, "api_key": "sk-abcdefghijklmnopqrstuv{{:04d}}".format(i)}}}})
collector.send({{"type": "cost", "model": "gpt-4o", "cost": 0.0123, "currency_symbol": "$", "input_tokens": 1200, "output_tokens": 300}})
collector.send({{"type": "performance", "response_time": 3.81, "status": "error", "error": "timeout", "model": "gpt-4o"}})
stats = collector.close(timeout=60)
print(stats["confirmed"], stats["events"], stats["rejected"], stats["spooled_bytes"])
"#,
        clients = client_dir().display().to_string(),
        socket = d.socket.display().to_string(),
        spool = d.dir.path().join("spool").display().to_string(),
    );
    let _one_at_a_time = PYTHON.lock().unwrap_or_else(|e| e.into_inner());
    let out = python().arg("-c").arg(&script).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "102 102 0 0");
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

#[test]
fn python_emit_never_waits_for_a_stopped_stalled_or_running_collector() {
    unittest("test_latency");
}

#[test]
fn python_spool_keeps_records_through_outages_stalls_and_restarts_exactly_once() {
    unittest("test_spool");
}

#[test]
fn python_forked_workers_log_over_their_own_connection_and_spool() {
    unittest("test_fork");
}

#[test]
fn python_original_api_handler_costs_performance_and_decorated_streams() {
    unittest("test_api");
}

#[test]
fn python_file_target_is_tailed_by_the_daemon_across_a_rotation() {
    unittest("test_file");
}

#[test]
fn python_novel_app_with_its_env_file_chat_messages_and_llm_api_cache() {
    unittest("test_novel_app");
}

#[test]
fn python_check_cost_limits_against_a_budget_api_stand_in() {
    unittest("test_budget");
}

#[test]
fn python_package_installs_offline_with_the_crates_version() {
    let _one_at_a_time = PYTHON.lock().unwrap_or_else(|e| e.into_inner());
    let target = tempfile::tempdir().expect("temp dir");
    // --no-index: nothing may be downloaded, not even a build backend.
    let out = python()
        .args([
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-cache-dir",
            "--quiet",
            "--target",
        ])
        .arg(target.path())
        .arg(client_dir())
        .output()
        .expect("run pip");
    assert!(
        out.status.success(),
        "pip install failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = python()
        .args([
            "-c",
            "import lngpt_collector, sys; print(lngpt_collector.__version__, lngpt_collector.__file__)",
        ])
        .env("PYTHONPATH", target.path())
        .current_dir(target.path())
        .output()
        .expect("python3");
    let printed = String::from_utf8_lossy(&out.stdout);
    let mut words = printed.split_whitespace();
    assert_eq!(words.next(), Some(env!("CARGO_PKG_VERSION")), "{printed}");
    assert!(words
        .next()
        .unwrap_or("")
        .starts_with(&target.path().display().to_string()));
    // The release's wheel, built the way the README says.
    let wheels = tempfile::tempdir().expect("temp dir");
    let out = python()
        .args([
            "-m",
            "pip",
            "wheel",
            "--no-index",
            "--no-deps",
            "--no-cache-dir",
            "--quiet",
            "-w",
        ])
        .arg(wheels.path())
        .arg(client_dir())
        .output()
        .expect("run pip wheel");
    assert!(
        out.status.success(),
        "pip wheel failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wheel = wheels.path().join(format!(
        "lngpt_collector-{}-py3-none-any.whl",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(wheel.exists(), "no {}", wheel.display());
    let pyproject = std::fs::read_to_string(client_dir().join("pyproject.toml")).unwrap();
    assert!(
        pyproject.contains(&format!("version = \"{}\"", env!("CARGO_PKG_VERSION"))),
        "pyproject.toml's version differs from the crate's"
    );
}

/// `check_cost_limits()` against the real daemon's `/api/budget`: allowed under the limit, the
/// original's exception and message once the hour's spend reaches it, and a model's own limit
/// refusing that model only.
#[test]
fn python_check_cost_limits_against_the_real_daemon_over_and_under_budget() {
    let d = Daemon::start(
        "[pipeline]\nmax_wait = \"10ms\"\n[monitor]\nevaluate_every = \"50ms\"\ngrace = \"50ms\"\n\
         [budget]\nhourly_limit_rmb = 10\ndaily_limit_rmb = 100\nrefresh = \"50ms\"\n\
         [budget.models.\"gpt-4o\"]\nhourly_limit_rmb = 5\n",
    );
    let api = format!("http://{}", d.api());
    let check = |model: &str| {
        let script = format!(
            r#"
import contextlib, json, sys, lngpt_collector
try:
    with contextlib.redirect_stdout(sys.stderr):  # the original's 警告 line, printed before it raises
        allowed = lngpt_collector.check_cost_limits(model={model}, api="{api}", fail_open=False)
    print(json.dumps({{"allowed": allowed}}))
except lngpt_collector.CostLimitExceeded as e:
    print(json.dumps({{"refused": str(e), "window": e.window, "model": e.model, "spent": e.spent_rmb}}))
"#,
            model = if model.is_empty() {
                "None".to_string()
            } else {
                format!("{model:?}")
            }
        );
        let out = python()
            .args(["-c", &script])
            .env("PYTHONPATH", client_dir())
            .output()
            .expect("python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("one JSON line")
    };
    assert_eq!(check("")["allowed"], true);
    // 6 ¥ on gpt-4o: over its own 5 ¥, under the overall 10 ¥.
    let cost = |model: &str, rmb: f64| {
        format!("{{\"type\":\"cost\",\"model\":\"{model}\",\"cost\":{rmb},\"currency_symbol\":\"￥\"}}\n")
    };
    d.send(cost("gpt-4o", 6.0).as_bytes());
    let own = common::wait_until(
        "gpt-4o refused by its own limit",
        || Some(check("gpt-4o")).filter(|v| v.get("refused").is_some()),
        || d.log(),
    );
    assert_eq!(own["refused"], "模型 gpt-4o 最近1小时内API调用费用超过设定上限！");
    assert_eq!(own["window"], "hour");
    assert_eq!(own["model"], "gpt-4o");
    assert_eq!(check("glm-4")["allowed"], true);
    assert_eq!(check("")["allowed"], true);
    // 4 ¥ more on another model: the overall hour reaches 10 ¥, and everyone is refused.
    d.send(cost("glm-4", 4.0).as_bytes());
    // (Right after a reading, an event stored during it may be counted twice until the next one:
    // the budget errs towards refusing early. The spend settles at the store's sum.)
    let all = common::wait_until(
        "every call refused, the spend settled",
        || Some(check("")).filter(|v| v.get("refused").is_some() && v["spent"] == 10.0),
        || d.log(),
    );
    assert_eq!(all["refused"], "最近1小时内API调用费用超过设定上限！");
}
