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
