//! One monitor evaluation over a full day of 100 models.
//!
//! `cargo bench --bench monitor_evaluation` stores one performance and one cost record per model
//! per minute for 1,440 minutes and 100 models (BENCH_MODELS, BENCH_MINUTES) in an embedded store,
//! shows them to a monitor that keeps the whole day in memory, with every default rule on and a
//! per-model budget for each model, and reads the budget from the store. It then times:
//! - the budget read (every `budget.refresh`; SQL over the stored day),
//! - the first evaluation, which also turns every finished window into `api_metrics` documents,
//! - the steady evaluation (every `monitor.evaluate_every`): median and worst of 200.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lngpt_collector::event::{Collection, Event, EventId, Parser, Source, Timestamp};
use lngpt_collector::monitor::budget::{BudgetConfig, ModelLimits};
use lngpt_collector::monitor::rules::MonitorConfig;
use lngpt_collector::monitor::Monitor;
use lngpt_collector::pipeline::tap::Observer;
use lngpt_collector::redact::Redactor;
use lngpt_collector::store::query::Query;
use lngpt_collector::store::sqlite::Synchronous;
use lngpt_collector::store::{Batch, EmbeddedStore, Store};

mod common;

use common::env_usize;

fn main() {
    let models = env_usize("BENCH_MODELS", 100);
    let minutes = env_usize("BENCH_MINUTES", 1440);
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = EmbeddedStore::open(&dir.path().join("bench.db"), Synchronous::Normal).expect("open store");

    // A day ending now, so the day's budget window holds all of it.
    let now = Timestamp::now();
    let first_minute = now.as_millis() / 60_000 * 60_000 - minutes as i64 * 60_000;
    let parser = Parser::new(Arc::new(Redactor::disabled()));
    let source = Source::from("bench");
    let (mut perf, mut cost) = (Vec::new(), Vec::new());
    for minute in 0..minutes {
        for m in 0..models {
            let t = Timestamp(first_minute + minute as i64 * 60_000 + (m as i64 * 397) % 60_000);
            let stamp = t.to_string();
            let status = if (minute + m) % 17 == 0 { "error" } else { "success" };
            let p = format!(
                r#"{{"type":"performance","timestamp":"{stamp}","response_time":{}.{m},"status":"{status}","model":"model-{m}"}}"#,
                1 + minute % 5
            );
            let c = format!(
                r#"{{"type":"cost","timestamp":"{stamp}","model":"model-{m}","cost":0.0002,"input_tokens":900,"output_tokens":300}}"#
            );
            perf.push(parser.parse(p.as_bytes(), &source, now, EventId::new()));
            cost.push(parser.parse(c.as_bytes(), &source, now, EventId::new()));
        }
    }

    let budget = BudgetConfig {
        models: (0..models)
            .map(|m| {
                (
                    format!("model-{m}"),
                    ModelLimits {
                        hourly_limit_rmb: 1.0,
                        daily_limit_rmb: 10.0,
                    },
                )
            })
            .collect(),
        ..BudgetConfig::default()
    };
    let monitor_cfg = MonitorConfig {
        keep: lngpt_collector::config::HumanDuration(Duration::from_secs(minutes as u64 * 60 + 120)),
        ..MonitorConfig::default()
    };
    let monitor = Monitor::new(monitor_cfg, budget, "bench".into());
    rt.block_on(async {
        for (collection, events) in [(Collection::Performance, perf), (Collection::Cost, cost)] {
            for chunk in events.chunks(1000) {
                let chunk: Vec<Event> = chunk.to_vec();
                monitor.stored(collection, &chunk);
                store
                    .write(Arc::new(Batch {
                        collection,
                        events: chunk,
                    }))
                    .await
                    .expect("write");
            }
        }
    });

    let t = Instant::now();
    rt.block_on(monitor.read_budget(&store));
    let read = t.elapsed();
    let status = monitor.budget_status();
    assert!(status.store_error.is_none(), "{:?}", status.store_error);
    assert_eq!(status.models.len(), models, "a status per model with a budget");

    let health = store.health();
    let t = Instant::now();
    let first = monitor.evaluate(&health, Timestamp::now());
    let first_time = t.elapsed();
    assert!(
        first.finished.len() >= minutes * (models + 1) - (models + 1),
        "every finished window is written: {}",
        first.finished.len()
    );

    let mut times = Vec::new();
    let mut conditions = 0;
    for _ in 0..200 {
        let t = Instant::now();
        let e = monitor.evaluate(&health, Timestamp::now());
        times.push(t.elapsed());
        conditions = e.conditions.len();
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "monitor evaluation: {models} models x {minutes} minutes ({} events)",
        2 * models * minutes
    );
    println!("  budget read from the store: {:.1} ms", ms(read));
    println!(
        "  first evaluation (writes {} window documents): {:.1} ms",
        first.finished.len(),
        ms(first_time)
    );
    println!(
        "  steady evaluation ({conditions} conditions): median {:.3} ms, worst {:.3} ms of {}",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len()
    );
}
