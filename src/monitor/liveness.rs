//! Liveness across collectors sharing a store: which of them beat, and which went silent.
//!
//! Every `monitor.heartbeat_every` this collector beats (see [`crate::store::heartbeats`]) and
//! reads everyone's beats. A collector is *silent* when its beat counter has not moved for the
//! `collector_silent` rule's threshold, measured on this collector's clock from when it last saw the
//! counter move. Until it has been watched that long, it is neither silent nor known to be alive:
//! a restart neither resolves an alert about a dead peer nor fires one about a slow one. A clean
//! stop (`stopped_at`) is not silence. While the beats cannot be read, nothing is judged, and every
//! peer is watched afresh once they can: a store outage is not every collector dying at once.

use std::collections::BTreeMap;

use serde::Serialize;

use super::messages::Text;
use super::rules::{fingerprint, unit_of, Condition, RuleConfig};
use crate::event::Timestamp;
use crate::store::heartbeats::Heartbeat;

/// What this collector knows of the others.
#[derive(Debug, Default)]
pub struct Liveness {
    /// This collector's id, so that it never judges itself.
    me: String,
    peers: BTreeMap<String, Watched>,
    /// Whether the latest read of the beats succeeded.
    readable: bool,
    /// When beats were last read (this collector's clock).
    read_at_ms: Option<i64>,
}

#[derive(Debug, Clone)]
struct Watched {
    beat: Heartbeat,
    /// When this collector saw `beat.beats` change (or started watching).
    moved_at_ms: i64,
    /// Whether it has seen the counter move since it started watching.
    seen_moving: bool,
}

/// How a collector looks from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// This collector.
    This,
    Beating,
    /// Watched for less than the threshold without a beat: not yet known either way.
    Watching,
    Silent,
    Stopped,
    /// The beats cannot be read right now.
    Unknown,
}

/// One collector as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CollectorView {
    #[serde(flatten)]
    pub beat: Heartbeat,
    pub standing: Standing,
    /// Seconds since this collector saw its counter move (absent for itself).
    pub silent_seconds: Option<f64>,
    /// When this collector last saw it beat (its clock).
    pub last_seen: Option<Timestamp>,
}

impl Liveness {
    pub fn new(me: String) -> Liveness {
        Liveness {
            me,
            ..Liveness::default()
        }
    }

    /// Takes a read of everyone's beats at `now`.
    pub fn observe(&mut self, beats: Vec<Heartbeat>, now: Timestamp) {
        let now_ms = now.as_millis();
        let after_outage = !self.readable;
        let mut seen = BTreeMap::new();
        for beat in beats {
            let watched = match self.peers.remove(&beat.collector) {
                // Beats could not be read for a while: what moved meanwhile cannot be told, so
                // every peer is watched afresh.
                Some(_) if after_outage && self.read_at_ms.is_some() => Watched {
                    moved_at_ms: now_ms,
                    seen_moving: false,
                    beat,
                },
                Some(w) if w.beat.beats != beat.beats => Watched {
                    moved_at_ms: now_ms,
                    seen_moving: true,
                    beat,
                },
                Some(w) => Watched { beat, ..w },
                None => Watched {
                    moved_at_ms: now_ms,
                    seen_moving: false,
                    beat,
                },
            };
            seen.insert(watched.beat.collector.clone(), watched);
        }
        // A collector whose document is gone (deleted by hand) is no longer watched.
        self.peers = seen;
        self.readable = true;
        self.read_at_ms = Some(now_ms);
    }

    /// The beats could not be read.
    pub fn unreadable(&mut self) {
        self.readable = false;
    }

    fn standing(&self, w: &Watched, threshold_ms: i64, now_ms: i64) -> Standing {
        if w.beat.collector == self.me {
            Standing::This
        } else if !self.readable {
            Standing::Unknown
        } else if w.beat.stopped_at.is_some() {
            Standing::Stopped
        } else if now_ms - w.moved_at_ms > threshold_ms {
            Standing::Silent
        } else if w.seen_moving {
            Standing::Beating
        } else {
            Standing::Watching
        }
    }

    /// One condition per other collector: over when silent past the rule's threshold (seconds),
    /// clear when it beats or stopped cleanly; neither while unknown.
    pub fn conditions(&self, rule: &RuleConfig, text: &Text, now: Timestamp) -> Vec<Condition> {
        let now_ms = now.as_millis();
        let threshold_ms = (rule.threshold * 1000.0) as i64;
        let mut out = Vec::new();
        for w in self.peers.values() {
            let standing = self.standing(w, threshold_ms, now_ms);
            if standing == Standing::This {
                continue;
            }
            let labels = BTreeMap::from([
                ("collector".to_string(), w.beat.collector.clone()),
                ("host".to_string(), w.beat.host.clone()),
            ]);
            let silent = (now_ms - w.moved_at_ms).max(0) as f64 / 1000.0;
            let (title, message) = text.collector_silent(&w.beat.host, &w.beat.collector, silent, rule.threshold);
            out.push(Condition {
                key: fingerprint("collector_silent", &labels),
                rule: "collector_silent",
                labels,
                severity: rule.severity,
                value: silent,
                unit: unit_of("collector_silent"),
                threshold: rule.threshold,
                over: standing == Standing::Silent,
                clear: matches!(standing, Standing::Beating | Standing::Stopped),
                for_evaluations: rule.for_evaluations,
                title,
                message,
            });
        }
        out
    }

    /// Every collector with its standing, this one first.
    pub fn collectors(&self, threshold_seconds: f64, now: Timestamp) -> Vec<CollectorView> {
        let now_ms = now.as_millis();
        let threshold_ms = (threshold_seconds * 1000.0) as i64;
        let mut out: Vec<CollectorView> = self
            .peers
            .values()
            .map(|w| {
                let standing = self.standing(w, threshold_ms, now_ms);
                let this = standing == Standing::This;
                CollectorView {
                    beat: w.beat.clone(),
                    standing,
                    silent_seconds: (!this).then(|| (now_ms - w.moved_at_ms).max(0) as f64 / 1000.0),
                    last_seen: (!this && w.seen_moving).then_some(Timestamp(w.moved_at_ms)),
                }
            })
            .collect();
        out.sort_by_key(|c| c.standing != Standing::This);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::vocabulary::{Language, Severity};

    fn beat(collector: &str, beats: u64, stopped: bool) -> Heartbeat {
        Heartbeat {
            collector: collector.into(),
            host: format!("host-{collector}"),
            pid: 1,
            version: "0".into(),
            started_at: Timestamp(0),
            beat_at: Timestamp(0),
            beats,
            every_ms: 1000,
            stopped_at: stopped.then_some(Timestamp(0)),
        }
    }

    fn verdicts(l: &Liveness, at: i64) -> Vec<(String, bool, bool)> {
        let rule = RuleConfig::new(10.0, Severity::High);
        let text = Text {
            language: Language::En,
            window: "1m",
        };
        l.conditions(&rule, &text, Timestamp(at))
            .into_iter()
            .map(|c| (c.labels["collector"].clone(), c.over, c.clear))
            .collect()
    }

    #[test]
    fn a_peer_is_silent_once_its_counter_stands_still_past_the_threshold() {
        let mut l = Liveness::new("me".into());
        l.observe(vec![beat("me", 1, false), beat("b", 5, false)], Timestamp(0));
        // Not yet known either way: neither fired nor resolved.
        assert_eq!(verdicts(&l, 5_000), [("b".into(), false, false)]);
        l.observe(vec![beat("me", 2, false), beat("b", 6, false)], Timestamp(5_000));
        assert_eq!(verdicts(&l, 6_000), [("b".into(), false, true)], "it beats");
        l.observe(vec![beat("me", 3, false), beat("b", 6, false)], Timestamp(14_000));
        assert_eq!(verdicts(&l, 15_000), [("b".into(), false, true)], "10 s not yet passed");
        assert_eq!(verdicts(&l, 15_001), [("b".into(), true, false)], "silent");
        l.observe(vec![beat("me", 4, false), beat("b", 7, false)], Timestamp(20_000));
        assert_eq!(verdicts(&l, 20_000), [("b".into(), false, true)], "back");
    }

    #[test]
    fn a_clean_stop_is_not_silence_and_an_unreadable_store_judges_nothing() {
        let mut l = Liveness::new("me".into());
        l.observe(vec![beat("b", 1, false), beat("c", 1, false)], Timestamp(0));
        l.observe(vec![beat("b", 2, true), beat("c", 2, false)], Timestamp(1_000));
        assert_eq!(
            verdicts(&l, 60_000),
            [("b".into(), false, true), ("c".into(), true, false)]
        );
        l.unreadable();
        assert_eq!(
            verdicts(&l, 61_000),
            [("b".into(), false, false), ("c".into(), false, false)]
        );
        // Readable again after an outage: watched afresh, so nobody is silent at once.
        l.observe(vec![beat("b", 2, true), beat("c", 2, false)], Timestamp(120_000));
        assert_eq!(
            verdicts(&l, 121_000),
            [("b".into(), false, true), ("c".into(), false, false)]
        );
        assert_eq!(
            verdicts(&l, 130_001),
            [("b".into(), false, true), ("c".into(), true, false)]
        );
    }
}
