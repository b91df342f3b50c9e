//! Silences: "I know, stop telling me" for an alert, for a while. A silenced alert still fires,
//! repeats and resolves in `api_alerts` (the page and `/api/alerts/active` show it, marked), but
//! its notifications do not go to the webhooks until the silence ends.
//!
//! Silences are kept in the daemon's SQLite file (`alert_silences`), beside the webhook queues, so
//! they survive restarts. They belong to this collector: collectors sharing one MongoDB each keep
//! their own. The list is small and read at every notification, so it is also held in memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::alerts::{AlertSink, Delivering, Transition};
use crate::event::Timestamp;
use crate::store::alerts::AlertRecord;
use crate::store::sqlite::Synchronous;

/// Silences that ended this long ago are forgotten at the next start.
const HISTORY_MS: i64 = 7 * 86_400_000;

/// Which alerts a silence covers: every given part must match (an empty matcher covers nothing).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// One alert, by its key (the fingerprint `/api/alerts/active` shows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Every alert of a rule (`budget`, `error_rate`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Alerts whose labels include all of these (`{"model": "gpt-4o"}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Matcher {
    pub fn is_empty(&self) -> bool {
        self.key.is_none() && self.rule.is_none() && self.labels.is_empty()
    }

    pub fn matches(&self, alert: &AlertRecord) -> bool {
        !self.is_empty()
            && self.key.as_ref().is_none_or(|k| *k == alert.key)
            && self.rule.as_ref().is_none_or(|r| *r == alert.rule)
            && self.labels.iter().all(|(k, v)| alert.labels.get(k) == Some(v))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    #[serde(flatten)]
    pub matcher: Matcher,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    #[serde(default)]
    pub comment: String,
}

impl Silence {
    pub fn active_at(&self, now: Timestamp) -> bool {
        self.starts_at <= now && now < self.ends_at
    }
}

/// The silences, durable and in memory. Cheap to clone.
#[derive(Clone)]
pub struct Silences {
    shared: Arc<Shared>,
}

struct Shared {
    conn: Mutex<Connection>,
    list: Mutex<Vec<Silence>>,
}

impl Silences {
    /// Opens (creating if needed) the `alert_silences` table in the SQLite file at `path`.
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<Silences, String> {
        crate::state_dir::refuse_symlink(path)?;
        let conn = crate::store::sqlite::open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )
        .map_err(|e| e.to_string())?;
        let load = || -> rusqlite::Result<Vec<Silence>> {
            conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
            conn.execute_batch(&format!(
                "PRAGMA synchronous = {};
                 CREATE TABLE IF NOT EXISTS alert_silences (
                     id TEXT PRIMARY KEY, silence TEXT NOT NULL, ends_ms INTEGER NOT NULL);",
                synchronous.pragma()
            ))?;
            conn.execute(
                "DELETE FROM alert_silences WHERE ends_ms < ?1",
                [Timestamp::now().as_millis() - HISTORY_MS],
            )?;
            let mut stmt = conn.prepare("SELECT silence FROM alert_silences ORDER BY ends_ms")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for text in rows {
                match serde_json::from_str(&text?) {
                    Ok(s) => out.push(s),
                    Err(e) => tracing::warn!("a stored silence cannot be read and is ignored: {e}"),
                }
            }
            Ok(out)
        };
        let list = load().map_err(|e| format!("cannot open the silences in {}: {e}", path.display()))?;
        Ok(Silences {
            shared: Arc::new(Shared {
                conn: Mutex::new(conn),
                list: Mutex::new(list),
            }),
        })
    }

    /// Stores a new silence; it is in force once this returns.
    pub async fn add(
        &self,
        matcher: Matcher,
        starts_at: Timestamp,
        ends_at: Timestamp,
        comment: String,
    ) -> Result<Silence, String> {
        let mut id = [0u8; 12];
        getrandom::fill(&mut id).map_err(|e| format!("cannot make a silence id: {e}"))?;
        let silence = Silence {
            id: id.iter().map(|b| format!("{b:02x}")).collect(),
            matcher,
            starts_at,
            ends_at,
            comment,
        };
        let text = serde_json::to_string(&silence).map_err(|e| e.to_string())?;
        let row = (silence.id.clone(), text, ends_at.as_millis());
        self.blocking(move |conn| {
            conn.execute(
                "INSERT INTO alert_silences (id, silence, ends_ms) VALUES (?1, ?2, ?3)",
                rusqlite::params![row.0, row.1, row.2],
            )
            .map(|_| ())
        })
        .await?;
        self.list().push(silence.clone());
        Ok(silence)
    }

    /// Ends a silence now (it stays listed as ended). False if there is no such silence.
    pub async fn expire(&self, id: &str, now: Timestamp) -> Result<Option<Silence>, String> {
        let Some(mut silence) = self.list().iter().find(|s| s.id == id).cloned() else {
            return Ok(None);
        };
        if silence.ends_at > now {
            silence.ends_at = now;
        }
        if silence.starts_at > silence.ends_at {
            silence.starts_at = silence.ends_at;
        }
        let text = serde_json::to_string(&silence).map_err(|e| e.to_string())?;
        let row = (silence.id.clone(), text, silence.ends_at.as_millis());
        self.blocking(move |conn| {
            conn.execute(
                "UPDATE alert_silences SET silence = ?2, ends_ms = ?3 WHERE id = ?1",
                rusqlite::params![row.0, row.1, row.2],
            )
            .map(|_| ())
        })
        .await?;
        if let Some(s) = self.list().iter_mut().find(|s| s.id == silence.id) {
            *s = silence.clone();
        }
        Ok(Some(silence))
    }

    /// Every silence known (in force, pending or ended within the last week), latest end first.
    pub fn all(&self) -> Vec<Silence> {
        let mut out = self.list().clone();
        out.sort_by_key(|s| std::cmp::Reverse(s.ends_at));
        out
    }

    /// The silence in force at `now` that covers `alert`, if any.
    pub fn covering(&self, alert: &AlertRecord, now: Timestamp) -> Option<Silence> {
        self.list()
            .iter()
            .find(|s| s.active_at(now) && s.matcher.matches(alert))
            .cloned()
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Silence>> {
        self.shared.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn blocking(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static,
    ) -> Result<(), String> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let conn = shared.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn).map_err(|e| format!("cannot store the silence: {e}"))
        })
        .await
        .map_err(|e| format!("the silence task failed: {e}"))?
    }
}

/// A sink that holds back what a silence covers: the webhooks stay quiet, the log says why.
pub struct Silenced<S> {
    pub silences: Silences,
    pub inner: S,
}

impl<S: AlertSink> AlertSink for Silenced<S> {
    fn deliver(&self, t: Transition) -> Delivering<'_> {
        if let Some(s) = self.silences.covering(&t.record, Timestamp::now()) {
            tracing::info!(
                alert = %t.record.key,
                "alert {} ({:?}) not sent to webhooks: silenced by {} until {}",
                t.record.title,
                t.kind,
                s.id,
                s.ends_at
            );
            return Box::pin(async { Ok(()) });
        }
        self.inner.deliver(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::vocabulary::{AlertState, Severity};

    fn alert(rule: &str, labels: &[(&str, &str)]) -> AlertRecord {
        AlertRecord {
            key: format!("{rule}-key"),
            rule: rule.into(),
            severity: Severity::High,
            state: AlertState::Firing,
            title: String::new(),
            message: String::new(),
            value: 1.0,
            current: None,
            unit: Default::default(),
            threshold: 1.0,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            started_at: Timestamp(0),
            ended_at: None,
            updated_at: None,
            sent_at: None,
            repeats: 0,
            claimed_by: String::new(),
            queued: false,
        }
    }

    #[test]
    fn a_matcher_needs_every_part_and_an_empty_one_covers_nothing() {
        let budget = alert("budget", &[("period", "daily"), ("model", "gpt-4o")]);
        let by_rule = Matcher {
            rule: Some("budget".into()),
            ..Matcher::default()
        };
        assert!(by_rule.matches(&budget));
        let by_label = Matcher {
            labels: [("model".to_string(), "gpt-4o".to_string())].into(),
            ..Matcher::default()
        };
        assert!(by_label.matches(&budget));
        let other_model = Matcher {
            rule: Some("budget".into()),
            labels: [("model".to_string(), "glm-4".to_string())].into(),
            ..Matcher::default()
        };
        assert!(!other_model.matches(&budget));
        assert!(!Matcher {
            key: Some("error_rate-key".into()),
            ..Matcher::default()
        }
        .matches(&budget));
        assert!(!Matcher::default().matches(&budget));
    }
}
