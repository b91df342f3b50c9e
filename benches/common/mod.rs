//! What the benchmarks share: the event lines they send, and readings of the collector process.

#![allow(dead_code)]

/// Event `i` of a benchmark stream, about 235 bytes: half logs, a quarter cost, a quarter
/// performance records, in time order (1,000 per second of event time), Chinese text included.
pub fn line(i: usize) -> String {
    let (sec, ms) = (i / 1000, i % 1000);
    let stamp = format!(
        "2026-11-26T{:02}:{:02}:{:02}.{ms:03}Z",
        8 + sec / 3600 % 16,
        sec / 60 % 60,
        sec % 60
    );
    let line = match i % 4 {
        0 | 1 => format!(
            r#"{{"type":"log","timestamp":"{stamp}","level":"INFO","message":"API调用成功: stream_chat request {i}","module":"writer","function":"stream_chat","line":218,"extra":{{"model":"glm-4-flash","tokens":{},"chapter":16}}}}"#,
            i % 9000
        ),
        2 => format!(
            r#"{{"type":"cost","created_at":"{stamp}","model":"glm-4-plus","cost":0.65325,"currency_symbol":"￥","input_tokens":9519,"output_tokens":3546,"total_tokens":13065,"provider":"zhipuai","request_id":"req-{i:08}"}}"#
        ),
        _ => format!(
            r#"{{"type":"performance","timestamp":"{stamp}","response_time":4.069,"status":"success","model":"anthropic/claude-3.5-sonnet","provider":"openrouter","request_id":"req-{i:08}","first_chunk_time":0.792,"chunk_count":796}}"#
        ),
    };
    line + "\n"
}

/// Record `i` of the app's log: what `setup_logging()` writes, 1 % of them errors with a 5-line
/// traceback. [`text_line`] and [`json_record`] write the same records.
struct AppRecord {
    /// Local time, without an offset, as logging's `asctime` has it: (`2026-11-26`, `08:00:00`, ms).
    date: &'static str,
    time: String,
    ms: usize,
    logger: &'static str,
    level: &'static str,
    message: String,
    traceback: Option<String>,
}

impl AppRecord {
    fn new(i: usize) -> AppRecord {
        let (sec, ms) = (i / 1000, i % 1000);
        let time = format!("{:02}:{:02}:{:02}", 8 + sec / 3600 % 16, sec / 60 % 60, sec % 60);
        let (logger, level, message, traceback) = if i % 100 == 99 {
            (
                "lngpt.api",
                "ERROR",
                format!("API调用失败: stream_chat request {i} model=glm-4-flash"),
                Some(format!(
                    "Traceback (most recent call last):\n  File \"/srv/app/llm_api.py\", line 218, in stream_chat\n    response = client.chat.completions.create(**params)\n  File \"/srv/app/llm_api.py\", line 96, in create\nRuntimeError: upstream timeout after 30s for request {i}"
                )),
            )
        } else {
            (
                "lngpt.writer",
                "INFO",
                format!(
                    "API调用成功: stream_chat request {i} module=writer function=stream_chat line=218 model=glm-4-flash tokens={} chapter=16 provider=zhipuai",
                    i % 9000
                ),
                None,
            )
        };
        AppRecord {
            date: "2026-11-26",
            time,
            ms,
            logger,
            level,
            message,
            traceback,
        }
    }
}

/// Record `i` of the app's text log, in the original LOG_FORMAT (about 195 bytes).
pub fn text_line(i: usize) -> String {
    let r = AppRecord::new(i);
    let mut text = format!(
        "{} {},{:03} - {} - {} - {}\n",
        r.date, r.time, r.ms, r.logger, r.level, r.message
    );
    if let Some(tb) = r.traceback {
        text.push_str(&tb);
        text.push('\n');
    }
    text
}

/// The same record as [`text_line`], as one JSON line (the same naive local time, so that both are
/// read in `naive_timezone`): the like-for-like JSON a text record is compared with.
pub fn json_record(i: usize) -> String {
    let r = AppRecord::new(i);
    let mut doc = serde_json::json!({
        "timestamp": format!("{}T{}.{:03}", r.date, r.time, r.ms),
        "level": r.level,
        "logger": r.logger,
        "message": r.message,
    });
    if let Some(tb) = r.traceback {
        doc["traceback"] = serde_json::Value::from(tb);
    }
    doc.to_string() + "\n"
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// VmHWM: the largest resident set the process has had, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// User + system CPU seconds of a process so far, from /proc (clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// SIGTERM: the collector stores everything it accepted before it exits.
pub fn stop(child: &mut std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    assert!(child.wait().expect("wait").success(), "the collector exits 0");
}

/// Events stored in the three event tables of the embedded store at `db`.
pub fn stored_events(db: &std::path::Path) -> usize {
    let db = rusqlite::Connection::open(db).expect("open db");
    ["api_logs", "api_cost", "api_performance"]
        .iter()
        .map(|t| {
            db.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get::<_, i64>(0))
                .expect("count") as usize
        })
        .sum()
}
