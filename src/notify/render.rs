//! The words and layout the chat formats share: severity and state names, numbers, local times,
//! and one notification laid out as lines. `title` and `message` come rendered from the monitor;
//! only the words around them are chosen here, by [`Language`].

use super::Notification;
use crate::event::Timestamp;
use crate::monitor::vocabulary::{AlertState, Language, Severity};

/// Longest title and message kept per notification, in characters: a group of them must fit the
/// vendors' message limits (WeCom: 4096 bytes).
pub const TITLE_CHARS: usize = 120;
pub const MESSAGE_CHARS: usize = 600;
const LABELS_SHOWN: usize = 10;
const LABEL_CHARS: usize = 64;

/// How notifications speak: the language of the words around title and message, and the time
/// zone their times are shown in (`budget.timezone`, the page's too).
#[derive(Debug, Clone)]
pub struct Speech {
    pub lang: Language,
    pub zone: jiff::tz::TimeZone,
}

impl Default for Speech {
    fn default() -> Self {
        Speech {
            lang: Language::Zh,
            zone: jiff::tz::TimeZone::UTC,
        }
    }
}

pub struct Words {
    pub escalated: &'static str,
    pub value: &'static str,
    pub at_firing: &'static str,
    pub threshold: &'static str,
    pub labels: &'static str,
    pub started: &'static str,
    pub ended: &'static str,
    pub id: &'static str,
}

pub fn words(lang: Language) -> &'static Words {
    match lang {
        Language::Zh => &Words {
            escalated: "升级",
            value: "当前值",
            at_firing: "触发时",
            threshold: "阈值",
            labels: "标签",
            started: "开始",
            ended: "结束",
            id: "编号",
        },
        Language::En => &Words {
            escalated: "ESCALATED",
            value: "Now",
            at_firing: "at firing",
            threshold: "Threshold",
            labels: "Labels",
            started: "Started",
            ended: "Ended",
            id: "ID",
        },
    }
}

/// `[紧急·告警] 日预算超支` — the line that heads one notification: the severity's one word, and
/// the state (or `升级` for an escalation).
pub fn heading(n: &Notification, speech: &Speech) -> String {
    let state = match n.escalated_from {
        Some(_) => words(speech.lang).escalated,
        None => n.state.word(speech.lang),
    };
    format!(
        "[{}·{state}] {}",
        n.severity.word(speech.lang),
        truncate_chars(&n.title, TITLE_CHARS)
    )
}

/// The title of a whole message: the one notification's heading, or a count. Starts with
/// `lngpt`, so that a robot with keyword security can be given that keyword.
pub fn message_title(items: &[Notification], speech: &Speech) -> String {
    let lang = speech.lang;
    match items {
        [one] => format!("lngpt {}", heading(one, speech)),
        _ => {
            let firing = items.iter().filter(|n| n.state == AlertState::Firing).count();
            let resolved = items.len() - firing;
            match lang {
                Language::Zh => format!("lngpt 告警：{firing} 条告警，{resolved} 条恢复"),
                Language::En => format!("lngpt alerts: {firing} firing, {resolved} resolved"),
            }
        }
    }
}

/// The highest severity among `items` (for colours).
pub fn top_severity(items: &[Notification]) -> Severity {
    items.iter().map(|n| n.severity).max().unwrap_or(Severity::Info)
}

/// The facts under a heading, one per line: value and threshold, labels, times, id.
pub fn facts(n: &Notification, speech: &Speech) -> Vec<String> {
    let lang = speech.lang;
    let w = words(lang);
    let sep = if lang == Language::Zh { "：" } else { ": " };
    let (open, close) = if lang == Language::Zh {
        ("（", "）")
    } else {
        (" (", ")")
    };
    let mut value = format!("{}{sep}{}", w.value, n.unit.format(n.current));
    if n.current != n.value {
        value.push_str(&format!("{open}{} {}{close}", w.at_firing, n.unit.format(n.value)));
    }
    let mut lines = vec![format!("{value}  {}{sep}{}", w.threshold, n.unit.format(n.threshold))];
    if !n.labels.is_empty() {
        let mut shown: Vec<String> = n
            .labels
            .iter()
            .take(LABELS_SHOWN)
            .map(|(k, v)| format!("{}={}", truncate_chars(k, LABEL_CHARS), truncate_chars(v, LABEL_CHARS)))
            .collect();
        if n.labels.len() > LABELS_SHOWN {
            shown.push(format!("… (+{})", n.labels.len() - LABELS_SHOWN));
        }
        lines.push(format!("{}{sep}{}", w.labels, shown.join(", ")));
    }
    lines.push(format!("{}{sep}{}", w.started, local_time(n.starts_at, &speech.zone)));
    if let Some(end) = n.ends_at {
        lines.push(format!("{}{sep}{}", w.ended, local_time(end, &speech.zone)));
    }
    lines.push(format!("{}{sep}{}", w.id, n.id));
    lines
}

/// The message, cut to [`MESSAGE_CHARS`].
pub fn message(n: &Notification) -> String {
    truncate_chars(&n.message, MESSAGE_CHARS)
}

/// A number as people write it: `0.25`, `12`, `1234.5678`.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// `2026-11-26 16:00:00 +08:00`, in `zone` (the display zone the page uses too).
pub fn local_time(t: Timestamp, zone: &jiff::tz::TimeZone) -> String {
    match jiff::Timestamp::from_millisecond(t.as_millis()) {
        Ok(ts) => ts.to_zoned(zone.clone()).strftime("%Y-%m-%d %H:%M:%S %:z").to_string(),
        Err(_) => t.to_string(),
    }
}

pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub("…".len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_cuts() {
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(12.0), "12");
        assert_eq!(number(1234.56789), "1234.5679");
        assert_eq!(number(-0.00001), "0");
        assert_eq!(truncate_chars("预算超支了", 2), "预算…");
        let cut = truncate_bytes("预算超支了", 8);
        assert!(cut.len() <= 8 && cut.starts_with('预'), "{cut}");
        assert_eq!(
            local_time(Timestamp(0), &jiff::tz::TimeZone::UTC),
            "1970-01-01 00:00:00 +00:00"
        );
        let shanghai = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
        assert_eq!(
            local_time(Timestamp(1_795_680_000_000), &shanghai),
            "2026-11-26 16:00:00 +08:00"
        );
    }

    #[test]
    fn one_severity_word_and_values_with_their_unit_now_and_at_firing() {
        let mut n = crate::notify::queue::tests::note("n1", AlertState::Firing);
        n.title = "最近1小时API费用超过限制".into();
        n.severity = Severity::Critical;
        n.escalated_from = Some(Severity::High);
        n.unit = crate::monitor::vocabulary::Unit::Rmb;
        (n.value, n.current, n.threshold) = (20.0, 39.0, 30.0);
        let speech = Speech {
            lang: Language::Zh,
            zone: jiff::tz::TimeZone::get("Asia/Shanghai").unwrap(),
        };
        assert_eq!(heading(&n, &speech), "[紧急·升级] 最近1小时API费用超过限制");
        let facts = facts(&n, &speech);
        assert_eq!(facts[0], "当前值：¥39.00（触发时 ¥20.00）  阈值：¥30.00");
        assert!(
            facts.iter().any(|f| f == "开始：2026-11-26 16:00:00 +08:00"),
            "{facts:?}"
        );
        n.escalated_from = None;
        n.severity = Severity::Warning;
        assert_eq!(heading(&n, &speech), "[警告·告警] 最近1小时API费用超过限制");
    }
}
