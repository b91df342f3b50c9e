//! `GET /metrics`: the daemon's counters in the Prometheus text format (OpenMetrics), read at
//! scrape time from what the daemon already keeps, so nothing is counted twice.
//!
//! The monitor's metrics (budget spend, alerts firing, webhook deliveries) are a second
//! [`Collector`], [`MonitorMetrics`], registered beside the daemon's.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use super::{Api, ApiError};
use crate::event::Collection;
use crate::pipeline::memory::MemoryBudget;
use crate::store::query::Query;
use crate::store::AnyStore;
use crate::telemetry::Counters;

pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub(crate) fn new(
        counters: Arc<Counters>,
        memory: MemoryBudget,
        store: AnyStore,
        streams: Arc<Semaphore>,
        max_streams: usize,
    ) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(DaemonMetrics {
            counters,
            memory,
            store,
            streams,
            max_streams,
        }));
        Metrics { registry }
    }

    /// Adds metrics kept elsewhere (the monitor's), read at every scrape.
    pub fn register(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

pub(crate) async fn scrape(State(api): State<Api>) -> Response {
    match api.inner.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}"),
        )
        .into_response(),
    }
}

/// What the daemon keeps anyway, shown as metrics.
struct DaemonMetrics {
    counters: Arc<Counters>,
    memory: MemoryBudget,
    store: AnyStore,
    streams: Arc<Semaphore>,
    max_streams: usize,
}

impl std::fmt::Debug for DaemonMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DaemonMetrics")
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for DaemonMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let totals = self.counters.snapshot();
        {
            let mut family = e.encode_descriptor(
                "lngpt_collector_events_received",
                "Lines accepted, by source and collection (rejects under api_rejects)",
                None,
                MetricType::Counter,
            )?;
            for (source, collection, n) in self.counters.received_by_source() {
                let labels = [("source", &*source), ("collection", collection.name())];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = e.encode_descriptor(
                "lngpt_collector_events_clock_skewed",
                "Events whose own time was far from the collector's clock at arrival, by source: `ahead` (more than max_clock_skew: counted at arrival) or `behind` (more than an hour: counted in their own time)",
                None,
                MetricType::Counter,
            )?;
            for (source, ahead, behind) in self.counters.clock_by_source() {
                for (direction, n) in [("ahead", ahead), ("behind", behind)] {
                    let labels = [("source", &*source), ("direction", direction)];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = e.encode_descriptor(
                "lngpt_collector_events_stored",
                "Events newly stored, by collection",
                None,
                MetricType::Counter,
            )?;
            for c in Collection::ALL {
                let labels = [("collection", c.name())];
                ConstCounter::new(totals.stored[c.index()]).encode(family.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut e,
            "lngpt_collector_events_rejected",
            "Lines rejected (stored in api_rejects with the reason)",
            totals.rejected,
        )?;
        counter(
            &mut e,
            "lngpt_collector_events_duplicate",
            "Events whose id was already stored (retries, re-read lines)",
            totals.duplicates,
        )?;
        counter(
            &mut e,
            "lngpt_collector_events_deferred",
            "Events committed to the outbox instead of MongoDB",
            totals.deferred,
        )?;
        gauge(
            &mut e,
            "lngpt_collector_events_pending",
            "Events accepted and not yet durable",
            totals.accepted_not_stored() as i64,
        )?;
        gauge(
            &mut e,
            "lngpt_collector_memory_used_bytes",
            "Memory budget held by events accepted and not yet stored",
            self.memory.used() as i64,
        )?;
        gauge(
            &mut e,
            "lngpt_collector_memory_limit_bytes",
            "The memory budget (pipeline.memory_budget)",
            self.memory.limit() as i64,
        )?;
        {
            let (sum, count, buckets) = self.counters.write_latency.read();
            let mut m = e.encode_descriptor(
                "lngpt_collector_batch_write_seconds",
                "Time a successful batch write took",
                None,
                MetricType::Histogram,
            )?;
            let mut buckets = buckets;
            buckets.push((f64::INFINITY, count));
            m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;
        }
        let health = self.store.health();
        gauge(
            &mut e,
            "lngpt_collector_store_up",
            "Whether the last write or probe reached the store",
            i64::from(health.reachable),
        )?;
        if health.kind == "mongodb" {
            gauge(
                &mut e,
                "lngpt_collector_mongodb_up",
                "Whether MongoDB answers",
                i64::from(health.reachable),
            )?;
            gauge(
                &mut e,
                "lngpt_collector_outbox_events",
                "Events waiting in the outbox for MongoDB",
                health.outbox_events as i64,
            )?;
            gauge(
                &mut e,
                "lngpt_collector_outbox_bytes",
                "Bytes the outbox holds",
                health.outbox_bytes as i64,
            )?;
            counter(
                &mut e,
                "lngpt_collector_outbox_dropped",
                "Events dropped by the outbox cap since start",
                health.outbox_dropped,
            )?;
        }
        let streams = self.max_streams.saturating_sub(self.streams.available_permits());
        gauge(
            &mut e,
            "lngpt_collector_stream_clients",
            "Live stream (SSE) clients connected",
            streams as i64,
        )?;
        Ok(())
    }
}

/// The budget, the alerts and the webhooks, read from the monitor and the notifier at scrape time.
pub struct MonitorMetrics {
    monitor: crate::monitor::Monitor,
    notifier: crate::notify::Notifier,
}

impl MonitorMetrics {
    pub fn new(monitor: crate::monitor::Monitor, notifier: crate::notify::Notifier) -> MonitorMetrics {
        MonitorMetrics { monitor, notifier }
    }
}

impl std::fmt::Debug for MonitorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MonitorMetrics")
    }
}

impl Collector for MonitorMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.monitor.budget_status();
        for (name, help, hour, day) in [
            (
                "lngpt_collector_budget_spent_rmb",
                "Spend in the budget's hour and day windows, in RMB",
                status.hour.spent_rmb,
                status.day.spent_rmb,
            ),
            (
                "lngpt_collector_budget_limit_rmb",
                "The hourly and daily limits in RMB (0: no limit)",
                status.hour.limit_rmb,
                status.day.limit_rmb,
            ),
        ] {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (period, v) in [("hour", hour), ("day", day)] {
                ConstGauge::new(v).encode(family.encode_family(&[("period", period)])?)?;
            }
        }
        gauge(
            &mut e,
            "lngpt_collector_budget_allowed",
            "Whether a new API call is within the limits (what /api/budget answers)",
            i64::from(status.allowed),
        )?;
        {
            let mut firing: std::collections::BTreeMap<(String, String), i64> = Default::default();
            for a in self.monitor.firing() {
                *firing.entry((a.rule, a.severity.name().to_string())).or_default() += 1;
            }
            let mut family = e.encode_descriptor(
                "lngpt_collector_alerts_firing",
                "Alerts firing now, by rule and severity",
                None,
                MetricType::Gauge,
            )?;
            for ((rule, severity), n) in firing {
                let labels = [("rule", rule.as_str()), ("severity", severity.as_str())];
                ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let receivers = self.notifier.stats();
        for (name, help, counter_kind, value) in [
            (
                "lngpt_collector_webhook_delivered",
                "Notifications a webhook receiver accepted",
                true,
                (|r: &crate::notify::ReceiverStats| r.delivered) as fn(&crate::notify::ReceiverStats) -> u64,
            ),
            (
                "lngpt_collector_webhook_failed",
                "Notifications given up (kept in notify_queue)",
                true,
                |r| r.failed,
            ),
            (
                "lngpt_collector_webhook_retried",
                "Attempts that failed and were retried",
                true,
                |r| r.retried,
            ),
            (
                "lngpt_collector_webhook_pending",
                "Notifications waiting to be delivered",
                false,
                |r| r.pending,
            ),
        ] {
            let kind = if counter_kind {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut family = e.encode_descriptor(name, help, None, kind)?;
            for r in &receivers {
                let labels = [("receiver", r.name.as_str())];
                if counter_kind {
                    ConstCounter::new(value(r)).encode(family.encode_family(&labels)?)?;
                } else {
                    ConstGauge::new(value(r) as i64).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// The heavy reads' own memory (`api.read_memory`) and the reads given up for a client that left.
pub(crate) struct ReadMetrics(pub(crate) super::reads::Reads);

impl std::fmt::Debug for ReadMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadMetrics")
    }
}

impl Collector for ReadMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            &mut e,
            "lngpt_collector_read_memory_used_bytes",
            "Memory held by listings, replays and statistics being answered (api.read_memory)",
            self.0.used() as i64,
        )?;
        gauge(
            &mut e,
            "lngpt_collector_read_memory_limit_bytes",
            "The heavy reads' memory budget (api.read_memory)",
            self.0.limit() as i64,
        )?;
        counter(
            &mut e,
            "lngpt_collector_reads_abandoned",
            "Stream replays given up because their client left",
            self.0.abandoned(),
        )
    }
}
