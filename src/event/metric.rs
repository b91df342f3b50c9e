//! The monitor's finished window: what `api_metrics` holds, one document per window for all models
//! (`model` absent) and one per model. It replaces the original system's "性能指标" log line.

/// Figures of one window. Durations are seconds; costs are in RMB at the configured rate.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct MinuteMetrics {
    /// Window length in milliseconds (60,000 unless configured otherwise).
    pub window_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub request_count: u64,
    pub error_count: u64,
    /// Percent, 0 to 100, as the original computed it.
    pub error_rate: f64,
    pub avg_duration: f64,
    pub total_duration: f64,
    pub p50_duration: Option<f64>,
    pub p95_duration: Option<f64>,
    pub p99_duration: Option<f64>,
    pub avg_first_chunk: Option<f64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_rmb: f64,
    pub cost_calls: u64,
    /// The sum of the first-chunk times (seconds) and how many requests had one: averages of any
    /// span are then exact.
    pub first_chunk_total: f64,
    pub first_chunk_count: u64,
    /// The window's response times as a mergeable sketch (see `monitor::sketch`): percentiles of
    /// any span of windows, within 1 %.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_sketch: Option<String>,
    /// In the document for all models: the requests that named no model (for the statistics'
    /// `model: null` row).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmodelled: Option<Box<MinuteMetrics>>,
    /// A document of events that came after the window's own was written (to be added to it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}
