//! The log viewer page at `/`: how it is served (embedded, cached, without the token), the
//! thresholds route it reads, and the page itself in headless Chromium against the real daemon fed
//! with the test data — live tail, level filter, pause, search paging, cost against an independent
//! sum, an alert that fires and resolves, screenshots in light and dark mode, no console errors,
//! the first load's size, and main-thread busy time while 200 events a second stream in.

use crate::common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::cdp::{Browser, Page};
use crate::common::mongo::{free_port, mongodb_section, unique_db, MongoServer, Proxy};
use crate::common::{http, testdata, Daemon};

/// Browser tests run one at a time: the busy-time measurement must not share the CPU with another.
static BROWSER: Mutex<()> = Mutex::new(());

/// Batches written within 10 ms; a monitor with 300 ms windows evaluated every 50 ms, so that an
/// alert fires and resolves within a second.
const FAST: &str = "[pipeline]\nmax_wait = \"10ms\"\n[monitor]\nwindow = \"300ms\"\ngrace = \"300ms\"\nevaluate_every = \"50ms\"\nkeep = \"1m\"\n";

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("screenshots")
}

fn time_of(e: &Value) -> Option<(&'static str, i64)> {
    for key in ["timestamp", "created_at"] {
        if let Some(s) = e[key].as_str() {
            return Some((key, s.parse::<jiff::Timestamp>().ok()?.as_millisecond()));
        }
    }
    e["created"].as_f64().map(|s| ("created", (s * 1000.0).round() as i64))
}

/// The test data with every event moved so that the last one is a second ago (order and spacing
/// kept): all of it falls in the budget's hour and day and in the page's search ranges.
fn shifted_data() -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(testdata("novel-app-events.jsonl")).expect("test data");
    let mut events: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let last = events
        .iter()
        .filter_map(|e| time_of(e).map(|t| t.1))
        .max()
        .expect("times");
    let shift = jiff::Timestamp::now().as_millisecond() - 1000 - last;
    let mut out = String::new();
    for e in &mut events {
        let (key, ms) = time_of(e).expect("every event has a time");
        e[key] = if key == "created" {
            json!((ms + shift) as f64 / 1000.0)
        } else {
            json!(jiff::Timestamp::from_millisecond(ms + shift).unwrap().to_string())
        };
        out += &e.to_string();
        out.push('\n');
    }
    (out, events)
}

fn is_log(e: &Value) -> bool {
    e["type"] == "log" || (e.get("type").is_none() && e.get("levelname").is_some())
}

fn level_of(e: &Value) -> &str {
    e["level"].as_str().or(e["levelname"].as_str()).unwrap_or("INFO")
}

/// The test data's cost in RMB, summed here: dollars at the default rate of 7.
fn expected_rmb(events: &[Value]) -> (f64, u64) {
    let cost: Vec<&Value> = events.iter().filter(|e| e["type"] == "cost").collect();
    let rmb = cost
        .iter()
        .map(|e| {
            let usd = e["currency_symbol"] == "$" || e["currency"] == "USD";
            e["cost"].as_f64().expect("cost") * if usd { 7.0 } else { 1.0 }
        })
        .sum();
    (rmb, cost.len() as u64)
}

/// "¥1,234.57", as the page writes amounts.
fn money(v: f64) -> String {
    let s = format!("{v:.2}");
    let (int, frac) = s.split_once('.').unwrap();
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("¥{grouped}.{frac}")
}

fn log_line(level: &str, module: &str, message: &str, extra: Value) -> String {
    json!({"type": "log", "level": level, "module": module, "message": message, "extra": extra}).to_string() + "\n"
}

fn perf(ok: bool) -> String {
    format!(
        "{{\"type\":\"performance\",\"response_time\":0.5,\"status\":\"{}\",\"model\":\"glm-4\"}}\n",
        if ok { "success" } else { "error" }
    )
}

/// A tab at 1280×800 on the daemon's page, once it has its config and its live stream.
fn open(browser: &Browser, api: &str) -> (Page, u64) {
    let page = browser.page();
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
    );
    page.clear_events();
    page.navigate(&format!("http://{api}/"));
    page.wait_for(
        "the page with its config and a live stream",
        "document.body.dataset.ready === '1' && document.getElementById('live-state').dataset.state === 'live'",
    );
    // What the first load transferred: the document, its assets and the API answers it needed (the
    // live stream, which never finishes, not counted).
    let loaded: u64 = page
        .events("Network.loadingFinished")
        .iter()
        .map(|e| e["params"]["encodedDataLength"].as_f64().unwrap_or(0.0) as u64)
        .sum();
    (page, loaded)
}

/// Offline, the browser's new connections fail; open ones stay.
fn set_offline(page: &Page, on: bool) {
    page.call(
        "Network.emulateNetworkConditions",
        json!({"offline": on, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}),
    );
}

fn eval_strings(page: &Page, expr: &str) -> Vec<String> {
    page.eval(expr)
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

fn set_level(page: &Page, level: &str) {
    page.eval(&format!(
        "(() => {{ const s = document.getElementById('live-level'); s.value = '{level}'; s.dispatchEvent(new Event('change')); }})()"
    ));
}

/// The y-axis ticks of a chart, checked: from 0 in equal steps of 1, 2 or 5 times a power of ten.
fn axis_ticks(page: &Page, chart: &str) -> Vec<f64> {
    let ticks: Vec<f64> = page
        .eval(&format!("document.getElementById('{chart}').dataset.ticks"))
        .as_str()
        .unwrap_or_default()
        .split(',')
        .map(|t| t.parse().expect("a number"))
        .collect();
    assert!(ticks.len() >= 2 && ticks[0] == 0.0, "{chart}: {ticks:?}");
    let step = ticks[1];
    let mantissa = step / 10f64.powf(step.log10().floor());
    assert!(
        [1.0, 2.0, 5.0, 10.0].iter().any(|m| (mantissa - m).abs() < 1e-6),
        "{chart}: a 1-2-5 step, not {step} ({ticks:?})"
    );
    for pair in ticks.windows(2) {
        assert!(
            ((pair[1] - pair[0]) - step).abs() < step * 1e-6,
            "{chart}: equal steps {ticks:?}"
        );
    }
    ticks
}

/// Shows a panel and waits until it has loaded again.
fn show(page: &Page, panel: &str) {
    let before = page.eval(&format!("document.getElementById('p-{panel}').dataset.loaded || ''"));
    page.eval(&format!("location.hash = '#{panel}'"));
    page.wait_for(
        &format!("the {panel} panel loaded"),
        &format!(
            "(() => {{ const p = document.getElementById('p-{panel}'); return !p.hidden && (p.dataset.loaded || '') !== {before}; }})()"
        ),
    );
}

#[test]
fn the_page_is_embedded_cached_and_served_without_the_token() {
    let d = Daemon::start("[api]\ntoken = \"0123456789abcdef0123\"\n");
    let api = d.api();
    let index = http::get(&api, "/");
    assert_eq!(index.status, 200, "the page needs no token: {}", index.text());
    assert_eq!(index.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    assert!(index
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
    let etag = index.header("etag").expect("an ETag").to_string();
    let again = http::request(&api, "GET", "/", &[("If-None-Match", &etag)], b"");
    assert_eq!(again.status, 304);
    let html = index.text();
    let mut total = index.body.len();
    for (name, content_type) in [
        ("app", "text/javascript; charset=utf-8"),
        ("app", "text/css; charset=utf-8"),
        ("icon", "image/svg+xml"),
    ] {
        let ext = content_type.split(['/', ';']).nth(1).unwrap();
        let ext = match ext {
            "javascript" => "js",
            "svg+xml" => "svg",
            e => e,
        };
        let path = html
            .split("\"")
            .find(|p| p.starts_with(&format!("/assets/{name}.")) && p.ends_with(&format!(".{ext}")))
            .expect("an asset link");
        assert!(path.len() > format!("/assets/{name}.{ext}").len() + 8, "hashed: {path}");
        let r = http::get(&api, path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(content_type), "{path}");
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{path}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        total += r.body.len();
    }
    assert!(total < 300 * 1024, "the page's own files are {total} bytes");
    assert_eq!(http::get(&api, "/assets/nope.js").status, 404);
    // The data still needs the token.
    assert_eq!(http::get(&api, "/api/logs").status, 401);
    assert_eq!(http::get(&api, "/api/config/monitor").status, 401);
}

#[test]
fn the_monitor_config_route_gives_the_thresholds_in_force() {
    let d = Daemon::start(
        "[monitor]\nwindow = \"30s\"\n[monitor.rules]\nerror_rate = { threshold = 12.5 }\np95_duration = { enabled = false }\n\
         [budget]\nwarn_at = [0.6, 0.9]\ntimezone = \"Europe/Berlin\"\n",
    );
    let c = http::get_ok(&d.api(), "/api/config/monitor");
    assert_eq!(c["timezone"], "Europe/Berlin");
    assert_eq!(c["monitor"]["window_ms"], 30_000);
    assert_eq!(c["monitor"]["rules"]["error_rate"]["threshold"], 12.5);
    assert_eq!(c["monitor"]["rules"]["error_rate"]["severity"], "high");
    assert_eq!(c["monitor"]["rules"]["p95_duration"]["enabled"], false);
    assert_eq!(c["monitor"]["rules"]["p95_duration"]["threshold"], 15.0);
    assert_eq!(c["budget"]["warn_at"], json!([0.6, 0.9]));
    assert_eq!(c["budget"]["hourly_limit_rmb"], 100.0);
    assert_eq!(
        http::get(&d.api(), "/api/config/monitor?x=1").status,
        400,
        "unknown parameters are refused"
    );
}

#[test]
fn the_page_in_a_real_browser() {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    // A fixed port, so that the page finds the daemon again after a restart.
    let port = free_port();
    let mut d = Daemon::start(&format!("{FAST}[api]\nlisten = \"127.0.0.1:{port}\"\n"));
    let api = d.api();
    let browser = Browser::launch();
    let (page, first_load) = open(&browser, &api);
    println!("first load: {first_load} bytes");
    assert!(first_load > 10_000, "the load was measured: {first_load}");
    assert!(first_load < 300 * 1024, "the first load is {first_load} bytes");
    assert_eq!(
        page.eval("document.documentElement.lang"),
        "zh-CN",
        "Chinese by default"
    );
    assert_eq!(
        page.eval("document.querySelector('nav a[data-panel=live]').textContent"),
        "实时日志"
    );

    // Live tail: everything sent after the page loaded shows up.
    let (data, events) = shifted_data();
    assert_eq!(d.send(data.as_bytes()).events, 600);
    let logs: Vec<&Value> = events.iter().filter(|e| is_log(e)).collect();
    assert_eq!(logs.len(), 287);
    page.wait_for(
        "the 287 log entries in the tail",
        "document.querySelectorAll('#live-list li').length === 287",
    );
    let shown = eval_strings(
        &page,
        "[...document.querySelectorAll('#live-list .msg')].map(e => e.textContent)",
    );
    let last = logs.last().unwrap();
    let last_message = last["message"].as_str().or(last["msg"].as_str()).unwrap();
    assert_eq!(shown[0], last_message, "newest first");

    // A level filter hides what is below it, and only that.
    let count = |min: u8| {
        logs.iter()
            .filter(|e| {
                let rank = match level_of(e) {
                    "DEBUG" => 1,
                    "INFO" => 2,
                    "WARNING" => 3,
                    "ERROR" => 4,
                    _ => 5,
                };
                rank >= min
            })
            .count()
    };
    for (level, min) in [("ERROR", 4), ("WARNING", 3), ("INFO", 2)] {
        set_level(&page, level);
        let levels = eval_strings(
            &page,
            "[...document.querySelectorAll('#live-list li')].map(li => li.dataset.level)",
        );
        assert_eq!(levels.len(), count(min), "{level} and above");
        let allowed: &[&str] = match min {
            4 => &["ERROR", "CRITICAL"],
            3 => &["WARNING", "ERROR", "CRITICAL"],
            _ => &["INFO", "WARNING", "ERROR", "CRITICAL"],
        };
        assert!(
            levels.iter().all(|l| allowed.contains(&l.as_str())),
            "{level}: {levels:?}"
        );
    }
    set_level(&page, "");
    // Errors stand out.
    let bg = page.eval(
        "getComputedStyle(document.querySelector('#live-list li[data-level=ERROR]')).backgroundColor + '|' + getComputedStyle(document.querySelector('#live-list li[data-level=INFO]')).backgroundColor",
    );
    let (err_bg, info_bg) = bg.as_str().unwrap().split_once('|').unwrap();
    assert_ne!(err_bg, info_bg);

    // Pause: nothing moves; resume: what came meanwhile is there, nothing lost.
    page.eval("document.getElementById('live-pause').click()");
    let traceback =
        "Traceback (most recent call last):\n  File \"writer.py\", line 218, in stream_chat\nTimeoutError: 读取超时";
    let mut paused = String::new();
    for i in 0..4 {
        paused += &log_line("INFO", "pager", &format!("暂停期间 {i}"), json!({}));
    }
    paused += &log_line(
        "ERROR",
        "writer",
        "章节生成失败",
        json!({"exception": traceback, "chapter": 17}),
    );
    assert_eq!(d.send(paused.as_bytes()).events, 5);
    page.wait_for(
        "the paused tail counting 5 new entries",
        "document.getElementById('live-state').textContent.includes('5')",
    );
    assert_eq!(page.eval("document.querySelectorAll('#live-list li').length"), 287);
    page.eval("document.getElementById('live-pause').click()");
    page.wait_for(
        "the 5 entries after resuming",
        "document.querySelectorAll('#live-list li').length === 292",
    );
    // An entry expands to its extra and traceback.
    page.eval("document.querySelector('#live-list li[data-level=ERROR] summary').click()");
    let expanded = page.wait_for(
        "the expanded entry",
        "(() => { const d = document.querySelector('#live-list li[data-level=ERROR] details'); return d.open && d.querySelector('pre.tb') ? d.textContent : ''; })()",
    );
    let expanded = expanded.as_str().unwrap();
    assert!(
        expanded.contains("TimeoutError: 读取超时") && expanded.contains("\"chapter\": 17"),
        "{expanded}"
    );

    // A dropped connection: what is stored meanwhile arrives after it, replayed by Last-Event-ID.
    let errors = page.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    // The browser goes offline (new connections fail; the open stream stays), the daemon restarts
    // (the stream ends), events are stored while the page cannot reconnect; back online, the page
    // reconnects with Last-Event-ID and the stream replays them from the store.
    set_offline(&page, true);
    d.stop();
    page.wait_for(
        "the stream dropped",
        "document.getElementById('live-state').dataset.state === 'retrying'",
    );
    // Retries 1, 2, then 4 s apart, the wait counted down every second.
    page.wait_for(
        "the third retry's wait",
        "document.getElementById('live-state').textContent.includes('4 秒后重连')",
    );
    page.wait_for(
        "its countdown",
        "document.getElementById('live-state').textContent.includes('3 秒后重连')",
    );
    d.restart();
    assert_eq!(d.api(), api, "the same port");
    let meanwhile: String = (0..3)
        .map(|i| log_line("INFO", "net", &format!("断线期间 {i}"), json!({})))
        .collect();
    assert_eq!(d.send(meanwhile.as_bytes()).events, 3);
    set_offline(&page, false);
    page.wait_for(
        "the stream back, with what was stored meanwhile",
        "document.getElementById('live-state').dataset.state === 'live' && document.querySelectorAll('#live-list li').length === 295",
    );
    let messages = eval_strings(
        &page,
        "[...document.querySelectorAll('#live-list .msg')].map(e => e.textContent)",
    );
    for i in 0..3 {
        let m = format!("断线期间 {i}");
        assert_eq!(messages.iter().filter(|x| **x == m).count(), 1, "{m} once");
    }
    // The only errors are the failed loads while offline.
    let errors = page.console_errors();
    assert!(
        errors.iter().all(|e| e.contains("ERR_INTERNET_DISCONNECTED")),
        "{errors:#?}"
    );
    page.clear_events();

    // Search: WARNING and above over the last hour, 20 a page, every entry once.
    page.eval("location.hash = '#search?range=1h&min_level=WARNING&per_page=20'");
    let expected = count(3) + 1;
    let mut seen = Vec::new();
    for n in 1.. {
        page.wait_for(
            &format!("search page {n}"),
            &format!("document.getElementById('s-list').dataset.page === '{n}' && !document.getElementById('s-summary').textContent.includes('…')"),
        );
        seen.extend(eval_strings(
            &page,
            "[...document.querySelectorAll('#s-list li')].map(li => li.dataset.id)",
        ));
        if n == 1 {
            let summary = page.eval("document.getElementById('s-summary').textContent");
            assert!(summary.as_str().unwrap().contains(&expected.to_string()), "{summary}");
        }
        if page.eval("document.getElementById('s-next').disabled") == true {
            break;
        }
        page.eval("document.getElementById('s-next').click()");
    }
    assert_eq!(seen.len(), expected, "every match reached");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), expected, "each once");
    assert!(seen.iter().all(|id| id.len() == 24), "{seen:?}");
    // A link to this search reproduces it.
    let url = page.eval("location.href");
    assert!(url.as_str().unwrap().contains("min_level=WARNING"), "{url}");
    page.eval("document.getElementById('s-prev').click()");
    let pages = expected.div_ceil(20);
    page.wait_for(
        "the previous page",
        &format!("document.getElementById('s-list').dataset.page === '{}'", pages - 1),
    );
    page.screenshot(&screenshots().join("search.png"));

    // Cost: the hour, the day and the per-model table, each the same as the sum over the test data.
    let (rmb, calls) = expected_rmb(&events);
    let want = money(rmb);
    page.eval("location.hash = '#cost'");
    page.wait_for(
        "the cost panel's figures",
        &format!(
            "(() => {{ const q = (s) => (document.querySelector(s) || {{}}).textContent; \
             return q('#c-hour [data-k=spent]') === '{want}' && q('#c-day [data-k=spent]') === '{want}' && q('#c-table tfoot .rmb') === '{want}'; }})()"
        ),
    );
    assert_eq!(
        page.eval("document.querySelector('#c-table tfoot .calls').textContent"),
        calls.to_string()
    );
    let models: HashSet<&str> = events
        .iter()
        .filter(|e| e["type"] == "cost")
        .map(|e| e["model"].as_str().unwrap())
        .collect();
    let rows = eval_strings(
        &page,
        "[...document.querySelectorAll('#c-table tbody tr')].map(r => r.dataset.model)",
    );
    assert_eq!(rows.iter().map(String::as_str).collect::<HashSet<_>>(), models);
    let row_sum = page.eval(
        "[...document.querySelectorAll('#c-table tbody .rmb')].reduce((s, td) => s + Number(td.textContent.replace(/[¥,]/g, '')), 0)",
    );
    assert!(
        (row_sum.as_f64().unwrap() - rmb).abs() < 0.01 * models.len() as f64,
        "{row_sum} vs {rmb}"
    );
    let projection = page.eval("document.getElementById('c-projection').textContent");
    assert!(
        projection.as_str().unwrap().contains("最近速度：每小时"),
        "{projection}"
    );
    assert_eq!(page.eval("document.getElementById('c-hour').dataset.state"), "ok");
    page.wait_for(
        "the hourly chart",
        "document.querySelectorAll('#c-chart rect.barv').length >= 1",
    );

    // Health: charts per minute, the thresholds drawn.
    show(&page, "health");
    page.wait_for(
        "the p95 chart",
        "document.querySelector('#h-p95 path.series')?.getAttribute('d')",
    );
    assert_eq!(page.eval("document.getElementById('h-err').dataset.threshold"), "10");
    assert_eq!(page.eval("document.getElementById('h-p95').dataset.threshold"), "15");
    for chart in ["h-rpm", "h-err", "h-p95"] {
        axis_ticks(&page, chart);
    }
    page.eval("(() => { const s = document.getElementById('h-model'); s.value = s.options[1].value; s.dispatchEvent(new Event('change')); })()");
    page.wait_for(
        "the per-model charts (model_error_rate's threshold)",
        "document.getElementById('h-err').dataset.threshold === '20'",
    );

    // Alerts: one fired by the test appears, can be silenced, and goes when it resolves.
    show(&page, "alerts");
    page.wait_for(
        "no error-rate alert before the test fires one",
        "!document.querySelector('#a-active tr[data-rule=error_rate]')",
    );
    // Errors go on while the page looks: a quiet window is clear, and the alert would resolve
    // before the page's next poll.
    let stop_errors = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let errors = {
        let (socket, stop) = (d.socket.clone(), stop_errors.clone());
        std::thread::spawn(move || {
            let burst: String = (0..10).map(|i| perf(i % 2 == 0)).collect();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                lngpt_collector::send::send(&socket, &mut burst.as_bytes()).expect("send");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
    };
    page.wait_for(
        "the error-rate alert",
        "document.querySelector('#a-active tr[data-rule=error_rate]')",
    );
    let cells = eval_strings(
        &page,
        "[...document.querySelector('#a-active tr[data-rule=error_rate]').cells].map(c => c.textContent)",
    );
    assert_eq!(cells[0], "严重", "{cells:?}");
    assert!(cells[1].contains("错误率"), "{cells:?}");
    assert!(
        cells[2].starts_with("50.0%"),
        "the current value with its unit: {cells:?}"
    );
    assert_eq!(cells[3].as_str(), "10.0%", "{cells:?}");
    assert_eq!(page.eval("document.getElementById('alert-badge').hidden"), false);
    page.eval("document.querySelector('#a-active tr[data-rule=error_rate] button.silence').click()");
    page.wait_for(
        "the alert silenced",
        "document.querySelector('#a-active tr[data-rule=error_rate] button.unsilence')",
    );
    let silences = http::get_ok(&api, "/api/alerts/silences");
    assert_eq!(silences["silences"].as_array().unwrap().len(), 1, "{silences}");
    page.screenshot(&screenshots().join("alerts-firing.png"));
    stop_errors.store(true, std::sync::atomic::Ordering::Relaxed);
    errors.join().unwrap();
    let healthy: String = (0..10).map(|_| perf(true)).collect();
    d.send(healthy.as_bytes());
    page.wait_for(
        "the alert gone from the active ones and listed as resolved",
        "!document.querySelector('#a-active tr[data-rule=error_rate]') && document.querySelector('#a-resolved tr[data-rule=error_rate]')",
    );

    // Collector status, with a rejected line and its reason.
    assert_eq!(d.send(b"{\"type\": \"log\", \"level\": \"INFO\"\n").rejected, 1);
    show(&page, "status");
    page.wait_for(
        "the store's state, an event rate and the reject",
        "document.querySelector('#st-grid [data-k=store] dd')?.textContent === 'SQLite' && document.querySelector('#st-grid [data-k=rate] dd')?.textContent !== '—' \
         && document.querySelector('#st-grid [data-k=rejected] dd')?.textContent === '1' && document.querySelectorAll('#st-rejects tbody tr td').length === 3",
    );
    let reason = page.eval("document.querySelector('#st-rejects tbody tr td:nth-child(3)').textContent");
    assert!(reason.as_str().unwrap().to_lowercase().contains("json"), "{reason}");
    assert_eq!(
        page.eval("document.getElementById('st-rejects-link').getAttribute('href')"),
        "/api/rejects"
    );
    assert_eq!(
        page.eval("document.querySelector('#st-grid [data-k=reachable] dd').textContent"),
        "是"
    );

    // Screenshots of every panel, light then dark.
    for dark in [false, true] {
        if dark {
            page.call(
                "Emulation.setEmulatedMedia",
                json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
            );
            page.wait_for("dark mode", "document.documentElement.dataset.theme === 'dark'");
        }
        let suffix = if dark { "-dark" } else { "" };
        for panel in ["cost", "health", "alerts", "status"] {
            show(&page, panel);
            page.screenshot(&screenshots().join(format!("{panel}{suffix}.png")));
        }
        page.eval("location.hash = '#search?range=1h&min_level=WARNING'");
        page.wait_for("search page 1", "document.getElementById('s-list').dataset.page === '1' && document.querySelectorAll('#s-list li').length === 50");
        page.screenshot(&screenshots().join(format!("search{suffix}.png")));
        page.eval("location.hash = '#live'");
        page.wait_for(
            "the tail",
            "!document.getElementById('p-live').hidden && document.querySelectorAll('#live-list li').length > 0",
        );
        page.eval("document.querySelector('#live-list li[data-level=ERROR] details').open = true");
        page.screenshot(&screenshots().join(format!("live{suffix}.png")));
    }
    // Contrast: dark text on dark ground would be unreadable.
    let colors =
        page.eval("getComputedStyle(document.body).color + '|' + getComputedStyle(document.body).backgroundColor");
    assert_eq!(colors, "rgb(230, 237, 243)|rgb(13, 17, 23)");

    // English by the toggle.
    page.eval("document.getElementById('lang').click()");
    assert_eq!(
        page.eval("document.querySelector('nav a[data-panel=live]').textContent"),
        "Live tail"
    );
    assert_eq!(page.eval("document.documentElement.lang"), "en");
    page.eval("document.getElementById('lang').click()");
    assert_eq!(page.eval("document.documentElement.lang"), "zh-CN");

    let errors = page.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// As `tail -f`: the live tail opens with the newest stored entries (200 of them), newest first,
/// then adds what comes live on top, none twice.
#[test]
fn the_tail_opens_with_the_newest_stored_entries_then_goes_live() {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let d = Daemon::start(FAST);
    let stored: String = (0..250)
        .map(|i| log_line("INFO", "writer", &format!("stored {i}"), json!({})))
        .collect();
    assert_eq!(d.send(stored.as_bytes()).events, 250);
    let browser = Browser::launch();
    let (page, _) = open(&browser, &d.api());
    page.wait_for(
        "the newest 200 stored entries",
        "document.querySelectorAll('#live-list li').length === 200",
    );
    let shown = eval_strings(
        &page,
        "[...document.querySelectorAll('#live-list .msg')].map(e => e.textContent)",
    );
    let want: Vec<String> = (50..250).rev().map(|i| format!("stored {i}")).collect();
    assert_eq!(shown, want, "the newest 200, newest first");
    assert_eq!(
        d.send(log_line("ERROR", "writer", "live 0", json!({})).as_bytes())
            .events,
        1
    );
    page.wait_for(
        "the live entry on top",
        "document.querySelectorAll('#live-list li').length === 201 && document.querySelector('#live-list .msg').textContent === 'live 0'",
    );
}

#[test]
fn with_a_token_the_page_asks_once_and_keeps_it_for_the_session() {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let token = "0123456789abcdef0123";
    let d = Daemon::start(&format!("[api]\ntoken = \"{token}\"\n"));
    let api = d.api();
    let browser = Browser::launch();
    let page = browser.page();
    page.navigate(&format!("http://{api}/#status"));
    page.wait_for("the token dialog", "document.getElementById('token-dialog').open");
    page.eval(&format!(
        "document.getElementById('token-input').value = '{token}'; document.querySelector('#token-form button[value=save]').click()"
    ));
    page.wait_for(
        "the page with the token",
        "document.body.dataset.ready === '1' && document.getElementById('live-state').dataset.state === 'live' && document.querySelector('#st-grid [data-k=store] dd')",
    );
    assert_eq!(page.eval("sessionStorage.getItem('lngpt.token')"), token);
    // The stream carries the token (fetch, not EventSource): an event sent now shows.
    d.send(log_line("INFO", "auth", "带令牌的实时日志", json!({})).as_bytes());
    page.eval("location.hash = '#live'");
    page.wait_for(
        "the streamed entry",
        "[...document.querySelectorAll('#live-list .msg')].some(m => m.textContent === '带令牌的实时日志')",
    );
    // A reload in the same tab does not ask again.
    page.navigate(&format!("http://{api}/#cost"));
    page.wait_for(
        "the cost panel without asking",
        "document.getElementById('p-cost').dataset.loaded",
    );
    assert_eq!(page.eval("document.getElementById('token-dialog').open"), false);
    // The only errors are the first 401s, before the token was given.
    let errors = page.console_errors();
    assert!(errors.iter().all(|e| e.contains("401")), "{errors:#?}");
}

#[test]
/// Caught up, bounded, no errors. The main thread's busy time is printed, a measurement rather than a
/// threshold (a shared machine's load is not the page's): `cargo test --test it tail_keeps_up -- --nocapture`.
fn the_tail_keeps_up_with_200_events_a_second() {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let d = Daemon::start("[pipeline]\nmax_wait = \"20ms\"\n");
    let api = d.api();
    let browser = Browser::launch();
    let (page, _) = open(&browser, &api);
    const RATE: usize = 200;
    const TICK: Duration = Duration::from_millis(100);
    const SECONDS: u64 = 31;
    let socket = d.socket.clone();
    let sender = std::thread::spawn(move || {
        let levels = ["DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR"];
        let per_tick = RATE / 10;
        let ticks = SECONDS * 10;
        let start = Instant::now();
        let mut n = 0usize;
        for tick in 0..ticks {
            let mut body = String::new();
            for _ in 0..per_tick {
                body += &log_line(
                    levels[n % levels.len()],
                    ["writer", "llm_api", "planner"][n % 3],
                    &format!("第 {n} 条：章节生成进度更新，模型 glm-4-plus 返回 512 个 token"),
                    json!({"chapter": n % 40, "request_id": format!("req-{n:06}")}),
                );
                n += 1;
            }
            lngpt_collector::send::send(&socket, &mut body.as_bytes()).expect("send");
            // Pacing, not waiting for a condition: the next batch is due at its tick.
            let due = start + TICK * (tick as u32 + 1);
            if let Some(left) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(left);
            }
        }
        n
    });
    page.wait_for(
        "the first streamed entries",
        "document.querySelectorAll('#live-list li').length > 0",
    );
    let (m0, t0) = (page.metrics(), Instant::now());
    let sent = sender.join().expect("sender");
    let (m1, wall) = (page.metrics(), t0.elapsed());
    let busy0 = m0["TaskDuration"];
    let busy1 = m1["TaskDuration"];
    for k in [
        "TaskDuration",
        "ScriptDuration",
        "LayoutDuration",
        "RecalcStyleDuration",
    ] {
        println!("{k}: {:.3}", m1[k] - m0.get(k).copied().unwrap_or(0.0));
    }
    let busy = (busy1 - busy0) / wall.as_secs_f64();
    println!(
        "main thread busy {:.1} % over {:.1} s with {RATE} events/s ({sent} sent)",
        busy * 100.0,
        wall.as_secs_f64()
    );
    // Still responsive, and caught up: the last entry sent is at the top.
    page.wait_for(
        "the last entry in the tail",
        &format!(
            "document.querySelector('#live-list .msg')?.textContent.startsWith('第 {} 条')",
            sent - 1
        ),
    );
    let rows = page.eval("document.querySelectorAll('#live-list li').length");
    assert_eq!(rows, 2000, "the DOM keeps at most 2000 rows");
    assert!(wall >= Duration::from_secs(29), "measured over {wall:?}");
    let errors = page.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

#[test]
fn a_lagging_tail_waits_before_it_catches_up_with_last_event_id() {
    lag_then_catch_up("", |_| {});
}

/// More missed than `api.max_replay`: the replay itself says `lagged` (with its reason) before the
/// newest events; the page counts those as not shown and reads on, instead of reconnecting for the
/// same replay. Every event of the burst is either received or counted as not shown.
#[test]
fn a_lag_past_max_replay_is_counted_and_the_tail_goes_on() {
    lag_then_catch_up("[api]\nmax_replay = 2000\n", |page| {
        // (The status line is refreshed at most once a second.)
        let counts = "(() => { const s = document.getElementById('live-state').textContent; \
            const n = (re) => { const m = s.match(re); return m ? +m[1].replace(/,/g, '') : 0; }; \
            return [n(/已收 ([\\d,]+) 条/), n(/([\\d,]+) 条超出补取上限/)]; })()";
        page.wait_for("some counted as not shown", &format!("{counts}[1] > 0"));
        // Nothing counted twice, nothing lost, however many times the page caught up.
        page.wait_for_showing(
            "received + not shown = the burst",
            &format!("(([r, u]) => r + u === 10000)({counts})"),
            "JSON.stringify([document.getElementById('live-state').textContent, window.__states])",
        );
    });
}

/// On MongoDB, events stored while the page was away can still wait in the outbox when it comes back:
/// the replay says so, and the page shows it in the tail's status (not as an entry).
#[test]
fn a_replay_that_cannot_include_the_outbox_says_so_on_the_page() {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let server = MongoServer::start();
    let proxy = Proxy::start(server.tcp_port());
    // A port of its own: the page reconnects to it after the restart.
    let port = free_port();
    let mut d = Daemon::start(&mongodb_section(
        &format!("mongodb://127.0.0.1:{}", proxy.port),
        &unique_db("page"),
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\nquery_timeout = \"200ms\"\n"),
    ));
    let api = d.api();
    let browser = Browser::launch();
    let (page, _) = open(&browser, &api);
    let lines = |tag: &str, n: usize| -> String {
        (0..n)
            .map(|i| log_line("INFO", "outbox", &format!("{tag} {i}"), json!({})))
            .collect()
    };
    assert_eq!(d.send(lines("stored", 3).as_bytes()).events, 3);
    page.wait_for(
        "the 3 entries",
        "document.querySelectorAll('#live-list li').length === 3",
    );
    // MongoDB refuses the logs (as for a user without the privilege) while the page is away.
    proxy.refuse_inserts("api_logs", 13);
    set_offline(&page, true);
    d.stop();
    page.wait_for(
        "the stream dropped",
        "document.getElementById('live-state').dataset.state === 'retrying'",
    );
    d.restart();
    assert_eq!(d.api(), api, "the same port");
    assert_eq!(d.send(lines("waiting", 2).as_bytes()).events, 2);
    set_offline(&page, false);
    page.wait_for_showing(
        "the replay's notice in the status",
        "document.getElementById('live-state').dataset.state === 'live' && document.getElementById('live-state').textContent.includes('补取不全：2 events wait in the outbox')",
        "document.getElementById('live-state').textContent",
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#live-list li').length"),
        3,
        "no entry made of the notice"
    );
}

/// A burst the page's stream lags behind, then `more` checks on the page once it is live again.
fn lag_then_catch_up(extra: &str, more: impl FnOnce(&Page)) {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    // Small batches and the smallest memory budget: during a burst the sources wait for memory,
    // the stream holds its batches back, and more are stored than its feed keeps, so the page is
    // told it lagged.
    let d = Daemon::start(&format!(
        "[pipeline]\nmax_batch = 10\nmemory_budget = \"1MiB\"\n[socket]\nmax_line_bytes = 65536\n{extra}"
    ));
    let api = d.api();
    let browser = Browser::launch();
    let (page, _) = open(&browser, &api);
    // Every state the tail goes through, with the time it was entered.
    page.eval(
        "window.__states = []; new MutationObserver(() => window.__states.push(document.getElementById('live-state').dataset.state + '@' + Math.round(performance.now()))).observe(document.getElementById('live-state'), {attributes: true, attributeFilter: ['data-state']}); true",
    );
    const BURST: usize = 10_000;
    let burst: String = (0..BURST)
        .map(|i| log_line("INFO", "burst", &format!("burst {i}"), json!({})))
        .collect();
    assert_eq!(d.send(burst.as_bytes()).events, BURST as u64);
    // Live again with the end of the burst, replayed from the store (the lag may come before the
    // page saw any event: it then resumes from when its stream opened).
    page.wait_for(
        "the last entry of the burst, live again",
        &format!(
            "document.getElementById('live-state').dataset.state === 'live' && [...document.querySelectorAll('#live-list .msg')].some(e => e.textContent === 'burst {}')",
            BURST - 1
        ),
    );
    let states: Vec<(String, u64)> = eval_strings(&page, "window.__states")
        .iter()
        .map(|s| {
            let (state, at) = s.split_once('@').expect("state@time");
            (state.to_string(), at.parse().expect("a time"))
        })
        .collect();
    let lag = states
        .iter()
        .position(|(s, _)| s == "catching-up")
        .unwrap_or_else(|| panic!("the tail was told it lagged: {states:?}"));
    let (reconnect, at) = states[lag + 1].clone();
    assert_eq!(reconnect, "connecting", "{states:?}");
    assert!(
        at - states[lag].1 >= 900,
        "it waited about a second before replaying: {states:?}"
    );
    let status = page.eval("document.getElementById('live-state').textContent");
    assert!(
        status.as_str().is_some_and(|s| s.contains("跳过")),
        "the skipped count is shown: {status}"
    );
    // Nothing twice: the replay starts after the last entry shown.
    let messages = eval_strings(
        &page,
        "[...document.querySelectorAll('#live-list .msg')].map(e => e.textContent)",
    );
    let distinct: HashSet<&String> = messages.iter().collect();
    assert_eq!(distinct.len(), messages.len(), "no entry shown twice");
    more(&page);
}

/// The budget alert escalates on the page as one alert; then MongoDB is cut by the proxy and every
/// panel says what the daemon still knows, in the page's language: the store's address and since
/// when it is unreachable, the outbox, the budget from memory, the monitor's windows, the alerts this
/// collector knows are firing, a tail opened from the events held in memory, and what happens
/// next — the driver's own words only behind a "details" toggle. When MongoDB answers again, the
/// panels are whole again and nothing sent meanwhile is lost.
#[test]
fn with_mongodb_cut_every_panel_says_what_the_daemon_still_knows() {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let server = MongoServer::start();
    let proxy = Proxy::start(server.tcp_port());
    let db = unique_db("degraded");
    let d = Daemon::start(&mongodb_section(
        &format!("mongodb://127.0.0.1:{}", proxy.port),
        &db,
        &format!(
            "{FAST}[budget]\nwindow = \"sliding\"\ntimezone = \"Asia/Shanghai\"\nrefresh = \"50ms\"\n\
             hourly_limit_rmb = 10\ndaily_limit_rmb = 0\nwarn_at = [0.5, 0.8, 1.0]\n"
        ),
    ));
    let api = d.api();
    let cost = |rmb: f64| {
        format!("{{\"type\":\"cost\",\"model\":\"glm-4\",\"cost\":{rmb},\"currency_symbol\":\"￥\",\"input_tokens\":10,\"output_tokens\":5}}\n")
    };
    let logs = |tag: &str, n: usize| -> String {
        (0..n)
            .map(|i| log_line("INFO", "novel", &format!("{tag} {i}"), json!({})))
            .collect()
    };
    let browser = Browser::launch();
    let (page, _) = open(&browser, &api);
    let traffic = (0..8).map(|i| perf(i != 0)).collect::<String>() + &logs("stored", 3);
    assert_eq!(d.send(traffic.as_bytes()).events, 11);

    // The budget alert on the page: a warning at 55 % of the hourly limit, then the same alert
    // escalated to critical at 105 %, its current value beside the value at firing.
    page.eval("location.hash = '#alerts'");
    let budget_row = "document.querySelector('#a-active tr[data-rule=budget]')";
    d.send(cost(5.5).as_bytes());
    common::wait_until(
        "the budget alert as a warning in the API",
        || {
            let a = http::get_ok(&api, "/api/alerts/active");
            let found = a["alerts"].as_array()?.iter().any(|x| x["rule"] == "budget");
            found.then_some(())
        },
        || format!("{}\n{}", http::get_ok(&api, "/api/budget"), d.log()),
    );
    page.wait_for_showing(
        "the budget alert as a warning",
        &format!("{budget_row}.querySelector('.sev').textContent === '警告'"),
        "document.getElementById('p-alerts').innerText",
    );
    d.send(cost(5.0).as_bytes());
    page.wait_for_showing(
        "the budget alert escalated to critical",
        &format!("{budget_row}.querySelector('.sev').textContent === '紧急'"),
        "document.getElementById('a-active').innerText",
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#a-active tr[data-rule=budget]').length"),
        1,
        "one alert, escalated"
    );
    let value = page.eval(&format!("{budget_row}.cells[2].innerText"));
    let value = value.as_str().unwrap();
    assert!(
        value.contains("¥10.50") && value.contains("触发时 ¥5.50"),
        "current and at firing: {value}"
    );
    page.screenshot(&screenshots().join("alerts-escalated.png"));

    // MongoDB cut: what the app sends meanwhile waits in the outbox.
    proxy.cut();
    assert_eq!(d.send(logs("while cut", 2).as_bytes()).events, 2);
    let store = common::wait_until(
        "MongoDB known unreachable, the 2 entries in the outbox",
        || {
            let s = http::get(&api, "/readyz").json()["store"].clone();
            (s["reachable"] == false && s["outbox_events"].as_u64() >= Some(2)).then_some(s)
        },
        || d.log(),
    );
    let address = format!("127.0.0.1:{}", proxy.port);
    assert!(store["address"].as_str().unwrap().contains(&address), "{store}");
    assert!(store["unreachable_since"].is_string(), "{store}");
    assert!(store["outbox_oldest"].is_string(), "{store}");
    assert!(store["last_error"].is_string(), "the driver's words: {store}");
    // The API's errors: a stable code, a sentence, the driver's words apart.
    let refused = http::get(&api, "/api/logs");
    assert_eq!(refused.status, 503);
    let body = refused.json();
    assert_eq!(body["code"], "store_unavailable", "{body}");
    assert!(body["error"].as_str().unwrap().contains("/readyz"), "{body}");
    assert!(!body["details"].as_str().unwrap_or("").is_empty(), "{body}");

    // Status: the address, since when, the outbox with its oldest, and what happens next.
    page.eval("location.hash = '#status'");
    page.wait_for_showing(
        "the status panel's sentence on the outage",
        &format!(
            "(() => {{ const n = document.getElementById('st-next'); return !n.hidden && n.textContent.includes('MongoDB（{address}）') && n.textContent.includes('自 ') && n.textContent.includes('不会丢失'); }})()"
        ),
        "document.getElementById('p-status').innerText",
    );
    let row = |k: &str| {
        page.eval(&format!(
            "document.querySelector('#st-grid [data-k={k}] dd').textContent"
        ))
        .as_str()
        .unwrap_or_default()
        .to_string()
    };
    assert!(row("address").contains(&address), "{}", row("address"));
    assert!(row("reachable").starts_with("否，自 "), "{}", row("reachable"));
    let outbox = row("outbox");
    let waiting: u64 = outbox.split(' ').next().unwrap().replace(',', "").parse().unwrap();
    assert!(waiting >= 2 && outbox.contains("最早 "), "{outbox}");
    page.screenshot(&screenshots().join("degraded-status.png"));

    // Cost: the budget from memory with the time of its last reading; the tables need the store.
    page.eval("location.hash = '#cost'");
    page.wait_for_showing(
        "the budget from memory and the tables' degraded note",
        "(() => { const m = document.getElementById('c-memory'); const e = document.querySelector('#p-cost > .error.degraded'); return m && !m.hidden && m.textContent.includes('预算来自内存') && e && !e.hidden; })()",
        "document.getElementById('p-cost').innerText",
    );
    let hour = page.eval("document.getElementById('c-hour').innerText");
    assert!(hour.as_str().unwrap().contains("¥10.50"), "{hour}");
    let toggle = page.eval(
        "(() => { const d = document.querySelector('#p-cost > .error details'); return [d.open, d.querySelector('pre').textContent.length > 0, document.querySelector('#p-cost > .error > p').textContent]; })()",
    );
    assert_eq!(toggle[0], false, "the driver's words are behind the toggle: {toggle}");
    assert_eq!(toggle[1], true, "{toggle}");
    assert!(toggle[2].as_str().unwrap().contains("存储恢复后会自动刷新"), "{toggle}");
    page.screenshot(&screenshots().join("degraded-cost.png"));

    // Health: the monitor's windows held in memory.
    page.eval("location.hash = '#health'");
    page.wait_for_showing(
        "the health panel from memory",
        "(() => { const m = document.getElementById('h-memory'); return !m.hidden && m.textContent.includes('内存中最近') && document.getElementById('h-summary').textContent.startsWith('内存中最近 1m：8 次调用'); })()",
        "document.getElementById('p-health').innerText",
    );
    page.screenshot(&screenshots().join("degraded-health.png"));

    // Alerts: the escalated alert this collector knows is firing; resolved ones need the store.
    page.eval("location.hash = '#alerts'");
    page.wait_for_showing(
        "the alerts from memory",
        &format!(
            "!document.getElementById('a-memory').hidden && {budget_row}.querySelector('.sev').textContent === '紧急' && document.getElementById('a-resolved').innerText.includes('存储恢复后')"
        ),
        "document.getElementById('p-alerts').innerText",
    );
    page.screenshot(&screenshots().join("degraded-alerts.png"));

    // The tail of a page opened during the outage: the entries held in memory, said so.
    page.navigate(&format!("http://{api}/"));
    page.wait_for_showing(
        "a tail opened from memory",
        "document.getElementById('live-state').dataset.state === 'live' && document.getElementById('live-state').textContent.includes('存储无法应答，显示内存中最近的 5 条')",
        "document.getElementById('live-state').textContent",
    );
    page.wait_for(
        "the 5 entries shown",
        "document.querySelectorAll('#live-list li').length === 5",
    );
    assert_eq!(
        eval_strings(
            &page,
            "[...document.querySelectorAll('#live-list .msg')].map(e => e.textContent)"
        ),
        ["while cut 1", "while cut 0", "stored 2", "stored 1", "stored 0"],
        "newest first, each once"
    );
    page.wait_for(
        "the counts in the status",
        "document.getElementById('live-state').textContent.includes('显示 5 条')",
    );
    page.screenshot(&screenshots().join("degraded-live.png"));

    // In English, the same sentence.
    page.eval("document.getElementById('lang').click(); location.hash = '#status'");
    page.wait_for_showing(
        "the sentence in English",
        "(() => { const n = document.getElementById('st-next'); return !n.hidden && n.textContent.includes('has been unreachable since') && n.textContent.includes('none lost'); })()",
        "document.getElementById('st-next').textContent",
    );
    page.eval("document.getElementById('lang').click()");

    // MongoDB answers again: the outbox drains, the panels are whole, nothing was lost.
    proxy.heal();
    common::wait_until(
        "the outbox drained",
        || {
            let s = http::get(&api, "/readyz").json()["store"].clone();
            (s["reachable"] == true && s["outbox_events"] == 0).then_some(())
        },
        || d.log(),
    );
    page.eval("location.hash = '#cost'");
    page.wait_for_showing(
        "the cost panel whole again",
        "(() => { const e = document.querySelector('#p-cost > .error'); const m = document.getElementById('c-memory'); return (!e || e.hidden) && m.hidden && document.querySelector('#c-table tfoot .calls').textContent === '2'; })()",
        "document.getElementById('p-cost').innerText",
    );
    let client = server.client();
    assert_eq!(common::mongo::count(&client, &db, "api_logs"), 5);
    assert_eq!(common::mongo::count(&client, &db, "api_cost"), 2);
}

/// The embedded store locked by another process: the status panel says since when, where, and what
/// happens next.
#[test]
fn a_locked_database_is_said_on_the_status_panel() {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let d = Daemon::start("[pipeline]\nmax_wait = \"10ms\"\n");
    let api = d.api();
    let browser = Browser::launch();
    let (page, _) = open(&browser, &api);
    let locker = rusqlite::Connection::open(d.state.join("collector.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // The app's line is acknowledged once stored: it waits for the lock, so it is sent aside.
    let socket = d.socket.clone();
    let line = log_line("INFO", "novel", "waits for the lock", json!({}));
    let sender = std::thread::spawn(move || lngpt_collector::send::send(&socket, &mut line.as_bytes()));
    let store = common::wait_until(
        "the database known locked",
        || {
            let s = http::get(&api, "/readyz").json()["store"].clone();
            (s["reachable"] == false).then_some(s)
        },
        || d.log(),
    );
    assert!(store["unreachable_since"].is_string(), "{store}");
    assert!(store["last_error"].as_str().unwrap().contains("locked"), "{store}");
    page.eval("location.hash = '#status'");
    page.wait_for_showing(
        "the status panel's sentence on the locked file",
        "(() => { const n = document.getElementById('st-next'); return !n.hidden && n.textContent.includes('collector.db') && n.textContent.includes('无法写入'); })()",
        "document.getElementById('p-status').innerText",
    );
    assert!(
        page.eval("document.querySelector('#st-grid [data-k=outbox]') === null") == true,
        "no outbox without MongoDB"
    );
    page.screenshot(&screenshots().join("degraded-locked.png"));
    locker.execute_batch("COMMIT").unwrap();
    assert_eq!(sender.join().unwrap().expect("sent").events, 1);
    page.wait_for(
        "the sentence gone once the file is written",
        "document.getElementById('st-next').hidden",
    );
}

/// Ten alerts firing at 1280 px: every header and cell reads on its own lines (no word broken into
/// a column of single characters), the table fits without scrolling sideways; the error-rate axis
/// of models failing every call ends at 100 %; every table says its period.
#[test]
fn ten_alerts_read_well_at_1280_px_and_every_table_says_its_period() {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let d = Daemon::start(&format!(
        "{FAST}[monitor.rules]\nmodel_error_rate = {{ threshold = 20, min_requests = 1 }}\n"
    ));
    let api = d.api();
    let browser = Browser::launch();
    let (page, _) = open(&browser, &api);
    const MODELS: [&str; 10] = [
        "gpt-4o-mini-2024-07-18",
        "openrouter/anthropic/claude-3.5-sonnet",
        "glm-4-plus",
        "glm-4-flashx",
        "doubao-pro-32k-241215",
        "doubao-lite-128k",
        "deepseek-chat",
        "qwen-max-latest",
        "gpt-4o-2024-11-20",
        "moonshot-v1-8k",
    ];
    // Every call of every model fails, for as long as the page looks.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failing = {
        let (socket, stop) = (d.socket.clone(), stop.clone());
        std::thread::spawn(move || {
            let burst: String = MODELS
                .iter()
                .map(|m| {
                    format!(
                        "{{\"type\":\"performance\",\"response_time\":2.5,\"status\":\"error\",\"model\":\"{m}\"}}\n"
                    )
                })
                .collect();
            // Until told to stop, or the daemon is gone (a failed assertion stopped it).
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && lngpt_collector::send::send(&socket, &mut burst.as_bytes()).is_ok()
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    page.eval("location.hash = '#alerts'");
    page.wait_for_showing(
        "the ten models' alerts",
        "document.querySelectorAll('#a-active tr[data-rule=model_error_rate]').length === 10",
        "document.getElementById('a-active').innerText",
    );
    let layout = page.eval(
        r#"(() => {
          // The text lines a cell renders, and the characters on them.
          const lines = (cell) => {
            const tops = [];
            const walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
            for (let n = walk.nextNode(); n; n = walk.nextNode()) {
              const r = document.createRange();
              r.selectNodeContents(n);
              for (const q of r.getClientRects()) if (q.width > 0) tops.push(q.top);
            }
            tops.sort((a, b) => a - b);
            return tops.filter((top, i) => i === 0 || top - tops[i - 1] > 4).length;
          };
          const t = document.getElementById('a-active');
          const bad = [];
          for (const row of t.rows) {
            [...row.cells].forEach((c, i) => {
              const n = lines(c);
              const chars = c.innerText.replace(/\s+/g, '').length;
              // The title cell holds a message that may wrap; the value adds the value at firing
              // on a line of its own; every other cell is one line.
              const ok = i === 1 ? n <= 1 || chars / n >= 12 : n <= (i === 2 ? 2 : 1);
              if (!ok) bad.push(`${row.rowIndex}:${i} ${n} lines for "${c.innerText}"`);
            });
          }
          const box = t.parentElement;
          return { bad, fits: box.scrollWidth <= box.clientWidth };
        })()"#,
    );
    page.screenshot(&screenshots().join("alerts-ten.png"));
    assert_eq!(layout["bad"], json!([]), "{layout}");
    assert_eq!(layout["fits"], true, "{layout}");

    // Health: models failing every call put the error-rate axis at 100 %, not above.
    page.eval("location.hash = '#health'");
    page.wait_for("the error-rate chart", "document.querySelector('#h-err path.series')");
    let ticks = axis_ticks(&page, "h-err");
    assert_eq!(ticks.last(), Some(&100.0), "{ticks:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    failing.join().unwrap();

    // Every table and chart heading says its period.
    let headings = eval_strings(
        &page,
        "['h-models', 'h-hourly', 'h-resolved', 'h-rejects'].map((id) => document.getElementById(id).textContent)",
    );
    page.eval("location.hash = '#cost'");
    page.wait_for(
        "the cost table's period",
        "/（\\d\\d-\\d\\d \\d\\d:\\d\\d 至今）/.test(document.getElementById('h-models').textContent)",
    );
    assert!(headings[1].contains("最近 48 小时"), "{headings:?}");
    assert!(headings[2].contains("最近 7 天"), "{headings:?}");
    assert!(headings[3].contains("最近 24 小时"), "{headings:?}");
    let summary = page.eval("document.getElementById('h-summary').textContent");
    assert!(summary.as_str().unwrap().starts_with("最近 3 小时："), "{summary}");
}

/// The collector panel lists the collectors sharing MongoDB with their last heartbeat, and says
/// when one goes silent.
#[test]
fn the_collector_panel_lists_the_collectors_sharing_mongodb() {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let server = MongoServer::start();
    let config = mongodb_section(
        &server.uri(),
        &unique_db("collectors"),
        "[monitor]\nheartbeat_every = \"100ms\"\n[monitor.rules]\ncollector_silent = { threshold = 1.0 }\n",
    );
    let d = Daemon::start(&config);
    let mut peer = Daemon::start(&config);
    let browser = Browser::launch();
    let (page, _) = open(&browser, &d.api());
    page.eval("location.hash = '#status'");
    let rows = "[...document.querySelectorAll('#st-collectors tbody tr')]";
    page.wait_for_showing(
        "this collector and its peer, beating",
        &format!("{rows}.map(r => r.dataset.standing).join() === 'this,beating'"),
        "document.getElementById('st-collectors').innerText",
    );
    let cells = eval_strings(&page, &format!("[...{rows}[1].cells].map(c => c.textContent)"));
    assert_eq!(cells[2], env!("CARGO_PKG_VERSION"), "{cells:?}");
    assert!(cells[4].contains("秒前"), "the last heartbeat: {cells:?}");
    assert_eq!(cells[5], "正常", "{cells:?}");
    page.screenshot(&screenshots().join("collectors.png"));
    peer.signal(nix::sys::signal::Signal::SIGKILL);
    peer.wait_exit();
    page.wait_for_showing(
        "the peer silent",
        &format!("{rows}[1].dataset.standing === 'silent' && {rows}[1].cells[5].textContent.startsWith('失联')"),
        "document.getElementById('st-collectors').innerText",
    );
    page.screenshot(&screenshots().join("collectors-silent.png"));
}
