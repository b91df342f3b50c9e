//! SIGHUP: the configuration file is read again; what can change while running changes, nothing
//! is lost meanwhile, and a file with problems changes nothing.

use crate::common::{docs, wait_until, Daemon};
use nix::sys::signal::Signal;

#[test]
fn sighup_applies_redaction_rules_and_the_log_level_without_losing_an_event() {
    let d = Daemon::start("[log]\nlevel = \"info\"\n");
    let before = d.send(b"{\"message\": \"ticket=ABCD-1234-EFGH\"}\n");
    assert_eq!(before.events, 1);
    // A steady stream while the configuration changes: every line must land.
    let socket = d.socket.clone();
    let stream = std::thread::spawn(move || {
        let mut total = 0;
        for batch in 0..50 {
            let body: String = (0..100)
                .map(|i| format!("{{\"message\": \"stream {batch} {i}\"}}\n"))
                .collect();
            total += lngpt_collector::send::send(&socket, &mut body.as_bytes())
                .expect("send")
                .events;
        }
        total
    });
    let config = std::fs::read_to_string(&d.config).unwrap();
    let changed = config
        .replace("[log]\n", "[log]\nlevel = \"debug\"\n")
        .replace("level = \"info\"\n", "")
        + "[redact]\npatterns = [\"ticket=(\\\\S+)\"]\n";
    std::fs::write(&d.config, changed).unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_for_log("SIGHUP: reloaded");
    let log = d.log();
    assert!(log.contains("[redact]") && log.contains("log.level"), "{log}");
    assert_eq!(stream.join().unwrap(), 5_000);
    d.send(b"{\"message\": \"ticket=WXYZ-9876-QRST\"}\n");
    d.wait_for_count("api_logs", 5_002);
    let messages: Vec<String> = docs(&d.db(), "api_logs")
        .iter()
        .filter_map(|m| m["message"].as_str().map(str::to_string))
        .filter(|m| m.starts_with("ticket="))
        .collect();
    assert_eq!(
        messages,
        ["ticket=ABCD-1234-EFGH", "ticket=***QRST"],
        "the new rule masks from then on"
    );
}

#[test]
fn a_bad_file_at_sighup_keeps_the_running_configuration() {
    let d = Daemon::start("[redact]\npatterns = [\"ticket=(\\\\S+)\"]\n");
    std::fs::write(&d.config, "state_dir = [\n").unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_for_log("SIGHUP: keeping the running configuration");
    d.send(b"{\"message\": \"ticket=ABCD-1234-EFGH\"}\n");
    let stored = wait_until("the line", || docs(&d.db(), "api_logs").into_iter().next(), || d.log());
    assert_eq!(stored["message"], "ticket=***EFGH", "the rules in force stay");
}
