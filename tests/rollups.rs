//! Statistics from the monitor's windows (issue 20): `/api/stats/performance` and
//! `/api/stats/errors` add up the per-minute documents in `api_metrics` (and the windows still in
//! memory) instead of reading every request, late events included; percentiles come from the
//! windows' sketches, within 1 %.

use std::io::Write;

use crate::common::http::get_ok;
use crate::common::{wait_until, Daemon};
use rusqlite::{Connection, OpenFlags};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What one record sent: its response time, whether it failed, its model.
type Sent = (f64, bool, Option<&'static str>);

/// `n` performance records in the minute at `minute`, from offset `first`: response times
/// 0.1 s, 0.2 s, …; every 5th an error; models a, b and none in turn.
fn records(minute: i64, first: usize, n: usize) -> (Vec<u8>, Vec<Sent>) {
    let mut out = Vec::new();
    let mut sent = Vec::new();
    for i in first..first + n {
        let seconds = 0.1 * (i + 1) as f64;
        let error = i % 5 == 0;
        let model = [Some("a"), Some("b"), None][i % 3];
        let model_field = model.map_or(String::new(), |m| format!(r#","model":"{m}""#));
        writeln!(
            out,
            r#"{{"type":"performance","timestamp":{:.3},"response_time":{seconds:.3},"status":"{}"{model_field},"first_chunk_time":0.5}}"#,
            (minute + 100 * i as i64) as f64 / 1000.0,
            if error { "error" } else { "success" }
        )
        .unwrap();
        sent.push((seconds, error, model));
    }
    (out, sent)
}

fn window_docs(d: &Daemon, minute: i64, late: bool) -> i64 {
    d.db()
        .query_row(
            "SELECT count(*) FROM api_metrics WHERE minute_ms = ?1 AND model IS NULL AND coalesce(json_extract(doc, '$.late'), 0) = ?2",
            rusqlite::params![minute, i64::from(late)],
            |r| r.get(0),
        )
        .unwrap()
}

fn nearest_rank(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((p * v.len() as f64).ceil() as usize).max(1) - 1]
}

#[test]
fn statistics_come_from_the_windows_late_events_included_not_from_the_requests() {
    let d = Daemon::start("[monitor]\nevaluate_every = \"100ms\"\ngrace = \"200ms\"\n");
    let api = d.api();
    // The minute before this one: its window is written at the next evaluation.
    let minute = now_ms() / 60_000 * 60_000 - 60_000;
    let (lines, mut sent) = records(minute, 0, 60);
    d.send(&lines);
    wait_until(
        "the window's document",
        || (window_docs(&d, minute, false) == 1).then_some(()),
        || d.log(),
    );
    // Late for a window already written: a document of their own.
    let (lines, late) = records(minute, 60, 30);
    d.send(&lines);
    sent.extend(late);
    wait_until(
        "the late events' document",
        || (window_docs(&d, minute, true) == 1).then_some(()),
        || d.log(),
    );
    // The requests themselves are gone: what the statistics say comes from the windows.
    let rw = Connection::open_with_flags(d.state.join("collector.db"), OpenFlags::SQLITE_OPEN_READ_WRITE).unwrap();
    rw.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(rw.execute("DELETE FROM api_performance", []).unwrap(), 90);
    drop(rw);

    let range = format!(
        "start_time={:.3}&end_time={:.3}",
        minute as f64 / 1000.0,
        (minute + 59_999) as f64 / 1000.0
    );
    let p = get_ok(&api, &format!("/api/stats/performance?{range}"));
    let errors = sent.iter().filter(|s| s.1).count() as u64;
    assert_eq!(p["calls"].as_u64(), Some(90), "{p}");
    assert_eq!(p["error_calls"].as_u64(), Some(errors));
    let times: Vec<f64> = sent.iter().map(|s| s.0).collect();
    let avg = times.iter().sum::<f64>() / 90.0;
    assert!((p["avg_response_time"].as_f64().unwrap() - avg).abs() < 1e-9);
    assert!((p["avg_first_chunk_time"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    for (field, q) in [
        ("p50_response_time", 0.5),
        ("p95_response_time", 0.95),
        ("p99_response_time", 0.99),
    ] {
        let (got, exact) = (p[field].as_f64().unwrap(), nearest_rank(times.clone(), q));
        assert!((got - exact).abs() <= exact * 0.01, "{field}: {got} vs {exact}");
    }
    assert_eq!(p["percentiles_from_samples"].as_u64(), Some(90));
    // Per model, the records without one as `null`.
    for row in p["by_model"].as_array().unwrap() {
        let model = row["model"].as_str();
        let want: Vec<f64> = sent.iter().filter(|s| s.2 == model).map(|s| s.0).collect();
        assert_eq!(row["calls"].as_u64(), Some(want.len() as u64), "{row}");
        let (got, exact) = (row["p95_response_time"].as_f64().unwrap(), nearest_rank(want, 0.95));
        assert!((got - exact).abs() <= exact * 0.01, "{row}: {got} vs {exact}");
    }
    assert_eq!(p["by_model"].as_array().unwrap().len(), 3);
    let series = p["series"].as_array().unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0]["calls"].as_u64(), Some(90));

    let e = get_ok(&api, &format!("/api/stats/errors?{range}"));
    assert_eq!(
        (e["total_calls"].as_u64(), e["error_calls"].as_u64()),
        (Some(90), Some(errors))
    );
    let one = get_ok(&api, &format!("/api/stats/performance?{range}&model=a"));
    assert_eq!(one["calls"].as_u64(), Some(30));
}
