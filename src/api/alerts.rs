//! The monitor's side of the API: the budget (`/api/budget`, what the app's `check_cost_limits()`
//! asks before each call), the alerts firing now, and silences.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::params::{Params, RawQuery};
use super::{Api, ApiError};
use crate::event::Timestamp;
use crate::monitor::silences::Matcher;
use crate::store::alerts::AlertStore;
use crate::units::HumanDuration;

/// Longest silence: a forgotten one should not hide a problem for ever.
const MAX_SILENCE_MS: i64 = 30 * 86_400_000;

/// Silences in force or pending at once: each is checked against every alert, and kept in memory
/// and in the state file, so a script gone wrong must not add them without end.
const MAX_SILENCES: usize = 100;
/// Largest `POST /api/alerts/silences` body, and the parts of one silence.
const MAX_SILENCE_BODY: usize = 16 * 1024;
const MAX_COMMENT_CHARS: usize = 1000;
const MAX_LABELS: usize = 20;
const MAX_NAME_BYTES: usize = 200;

/// `GET /api/budget[?model=]`: spend this hour and day against the limits, in RMB, and whether a
/// new call is allowed. With `model`, that model's own limits count too.
pub async fn budget(State(api): State<Api>, query: RawQuery) -> Result<Json<Value>, ApiError> {
    let params = Params::new(query, &["model"])?;
    let model = params.string("model", 200)?;
    let monitor = &api.inner.monitor;
    if !api.inner.monitor_running || !monitor.budget_read() {
        // Nobody refreshes the totals in the background, or they were never read: read them for
        // this answer (a failed or slow read is reported in `store_error`).
        let limit = api.config().query_timeout.0;
        if tokio::time::timeout(limit, monitor.read_budget(api.store()))
            .await
            .is_err()
        {
            tracing::debug!("/api/budget: the store did not answer within api.query_timeout");
        }
    }
    let status = monitor.budget_status_for(model.as_deref());
    let mut body =
        serde_json::to_value(&status).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    body["success"] = Value::Bool(true);
    Ok(Json(body))
}

/// `GET /api/alerts/active`: every alert firing now, from the store (so alerts claimed by another
/// collector sharing MongoDB show too), each with the silence covering it, if any.
pub async fn active(State(api): State<Api>, query: RawQuery) -> Result<Json<Value>, ApiError> {
    Params::new(query, &[])?;
    let firing = api.timed(api.store().firing()).await?;
    let now = Timestamp::now();
    let silences = &api.inner.silences;
    let alerts: Vec<Value> = firing
        .iter()
        .map(|a| {
            let mut v = json!({
                "key": a.key, "rule": a.rule, "severity": a.severity, "state": a.state.as_str(),
                "title": a.title, "message": a.message, "value": a.value, "current": a.current_value(),
                "unit": a.unit, "threshold": a.threshold, "labels": a.labels, "started_at": a.started_at,
                "updated_at": a.updated_at, "repeats": a.repeats, "last_sent_at": a.sent_at,
            });
            v["silenced_by"] = match silences.covering(a, now) {
                Some(s) => json!({"id": s.id, "ends_at": s.ends_at, "comment": s.comment}),
                None => Value::Null,
            };
            v
        })
        .collect();
    Ok(Json(json!({"success": true, "count": alerts.len(), "alerts": alerts})))
}

/// `GET /api/alerts/silences`: silences in force, pending, and ended within the last week.
pub async fn list_silences(State(api): State<Api>, query: RawQuery) -> Result<Json<Value>, ApiError> {
    Params::new(query, &[])?;
    let silences = &api.inner.silences;
    let now = Timestamp::now();
    let list: Vec<Value> = silences
        .all()
        .into_iter()
        .map(|s| {
            let active = s.active_at(now);
            let mut v = serde_json::to_value(&s).unwrap_or(Value::Null);
            v["active"] = Value::Bool(active);
            v
        })
        .collect();
    Ok(Json(json!({"success": true, "silences": list})))
}

/// The body of `POST /api/alerts/silences`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    #[serde(flatten)]
    matcher: Matcher,
    /// How long from now (`"2h"`), or
    duration: Option<String>,
    /// until when (RFC 3339).
    ends_at: Option<String>,
    starts_at: Option<String>,
    #[serde(default)]
    comment: String,
}

/// `POST /api/alerts/silences`: holds back the webhooks of the alerts the matcher covers.
pub async fn add_silence(
    State(api): State<Api>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let silences = &api.inner.silences;
    if body.len() > MAX_SILENCE_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the silence is {} bytes; at most {MAX_SILENCE_BODY} bytes (a comment of {MAX_COMMENT_CHARS} characters, {MAX_LABELS} labels)",
                body.len()
            ),
        ));
    }
    let new: NewSilence = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the silence cannot be read: {e}; expected a JSON object such as {{\"rule\": \"budget\", \"labels\": {{\"model\": \"gpt-4o\"}}, \"duration\": \"2h\", \"comment\": \"…\"}}"
        ))
    })?;
    if new.matcher.is_empty() {
        return Err(ApiError::bad_request(
            "the silence matches nothing; give at least one of `key`, `rule` or `labels`",
        ));
    }
    check_sizes(&new)?;
    let now = Timestamp::now();
    let in_force = silences.all().iter().filter(|s| s.ends_at > now).count();
    if in_force >= MAX_SILENCES {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{in_force} silences are in force or pending, the most there may be ({MAX_SILENCES}); end some first (DELETE /api/alerts/silences/<id>), or silence by `rule` or `labels` to cover more alerts with one"
            ),
        ));
    }
    let time = |name: &str, v: &str| {
        Timestamp::parse_rfc3339_in(v, &api.inner.naive)
            .map_err(|e| ApiError::bad_request(format!("`{name}` {v:?} {e}")))
    };
    let starts_at = match &new.starts_at {
        Some(v) => time("starts_at", v)?,
        None => now,
    };
    let ends_at = match (&new.duration, &new.ends_at) {
        (Some(d), None) => {
            let d = HumanDuration::parse(d).map_err(|e| {
                ApiError::bad_request(format!(
                    "`duration` {d:?} {e}; expected a duration such as \"30m\" or \"2h\""
                ))
            })?;
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            Timestamp(starts_at.as_millis().saturating_add(ms))
        }
        (None, Some(v)) => time("ends_at", v)?,
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `duration` (\"2h\") or `ends_at` (RFC 3339)",
            ))
        }
    };
    if ends_at <= starts_at.max(now) {
        return Err(ApiError::bad_request(
            "the silence would end before it starts (or in the past)",
        ));
    }
    if ends_at.as_millis() - starts_at.as_millis() > MAX_SILENCE_MS {
        return Err(ApiError::bad_request(
            "a silence lasts at most 30 days; silence again later, or switch the rule off in [monitor.rules]",
        ));
    }
    let silence = silences
        .add(new.matcher, starts_at, ends_at, new.comment)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    tracing::info!(
        "silence {} added until {}: {:?}",
        silence.id,
        silence.ends_at,
        silence.matcher
    );
    Ok((StatusCode::CREATED, Json(json!({"success": true, "silence": silence}))))
}

/// Refuses a silence whose parts are larger than any real one needs, naming the part.
fn check_sizes(new: &NewSilence) -> Result<(), ApiError> {
    let chars = new.comment.chars().count();
    if chars > MAX_COMMENT_CHARS {
        return Err(ApiError::bad_request(format!(
            "`comment` is {chars} characters; at most {MAX_COMMENT_CHARS}"
        )));
    }
    if new.matcher.labels.len() > MAX_LABELS {
        return Err(ApiError::bad_request(format!(
            "`labels` has {} entries; at most {MAX_LABELS}",
            new.matcher.labels.len()
        )));
    }
    let names = [
        ("key", new.matcher.key.as_deref()),
        ("rule", new.matcher.rule.as_deref()),
    ]
    .into_iter()
    .filter_map(|(what, v)| v.map(|v| (what.to_string(), v)))
    .chain(new.matcher.labels.iter().flat_map(|(k, v)| {
        [
            (format!("a label's name ({k:.40})"), k.as_str()),
            (format!("label `{k:.40}`"), v.as_str()),
        ]
    }));
    for (what, v) in names {
        if v.len() > MAX_NAME_BYTES {
            return Err(ApiError::bad_request(format!(
                "{what} is {} bytes; at most {MAX_NAME_BYTES}",
                v.len()
            )));
        }
    }
    Ok(())
}

/// `DELETE /api/alerts/silences/{id}`: ends a silence now.
pub async fn expire_silence(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    match api.inner.silences.expire(&id, Timestamp::now()).await {
        Ok(Some(s)) => {
            tracing::info!("silence {} ended", s.id);
            Ok(Json(json!({"success": true, "silence": s})))
        }
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no silence {id:?}; GET /api/alerts/silences lists them"),
        )),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

/// `GET /api/config/monitor`: the thresholds the page draws (`[monitor]` with its rules, `[budget]`
/// with `warn_at`), as in force after any reload. Read-only; nothing in these sections is secret.
pub async fn monitor_config(State(api): State<Api>, query: RawQuery) -> Result<Json<Value>, ApiError> {
    Params::new(query, &[])?;
    let (monitor, budget) = api.inner.monitor.config();
    let internal = |e: serde_json::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let mut monitor_json = serde_json::to_value(&monitor).map_err(internal)?;
    monitor_json["window_ms"] = Value::from(u64::try_from(monitor.window.0.as_millis()).unwrap_or(u64::MAX));
    monitor_json["evaluate_every_ms"] =
        Value::from(u64::try_from(monitor.evaluate_every.0.as_millis()).unwrap_or(u64::MAX));
    Ok(Json(json!({
        "success": true,
        "timezone": budget.timezone,
        "monitor": monitor_json,
        "budget": serde_json::to_value(&budget).map_err(internal)?,
    })))
}
