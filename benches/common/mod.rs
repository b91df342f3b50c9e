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

/// Record `i` of the app's text log (the original LOG_FORMAT), about as long as [`line`]: the same
/// information a log line of the JSON benchmark carries, as `setup_logging()` writes it. Every
/// 100th record is an error with a 5-line traceback.
pub fn text_line(i: usize) -> String {
    let (sec, ms) = (i / 1000, i % 1000);
    let stamp = format!(
        "2026-11-26 {:02}:{:02}:{:02},{ms:03}",
        8 + sec / 3600 % 16,
        sec / 60 % 60,
        sec % 60
    );
    if i % 100 == 99 {
        return format!(
            "{stamp} - lngpt.api - ERROR - API调用失败: stream_chat request {i} model=glm-4-flash\nTraceback (most recent call last):\n  File \"/srv/app/llm_api.py\", line 218, in stream_chat\n    response = client.chat.completions.create(**params)\n  File \"/srv/app/llm_api.py\", line 96, in create\nRuntimeError: upstream timeout after 30s for request {i}\n"
        );
    }
    format!(
        "{stamp} - lngpt.writer - INFO - API调用成功: stream_chat request {i} module=writer function=stream_chat line=218 model=glm-4-flash tokens={} chapter=16 provider=zhipuai\n",
        i % 9000
    )
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
