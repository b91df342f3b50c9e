//! The words and layout the chat formats share: severity and state names, numbers, local times,
//! and one notification laid out as lines. `title` and `message` come rendered from the monitor;
//! only the words around them are chosen here, by [`Language`].

use super::{AlertState, Language, Notification, Severity};
use crate::event::Timestamp;

/// Longest title and message kept per notification, in characters: a group of them must fit the
/// vendors' message limits (WeCom: 4096 bytes).
pub const TITLE_CHARS: usize = 120;
pub const MESSAGE_CHARS: usize = 600;
const LABELS_SHOWN: usize = 10;
const LABEL_CHARS: usize = 64;

pub struct Words {
    pub firing: &'static str,
    pub resolved: &'static str,
    pub value: &'static str,
    pub threshold: &'static str,
    pub labels: &'static str,
    pub started: &'static str,
    pub ended: &'static str,
    pub id: &'static str,
}

pub fn words(lang: Language) -> &'static Words {
    match lang {
        Language::Zh => &Words {
            firing: "告警",
            resolved: "已恢复",
            value: "当前值",
            threshold: "阈值",
            labels: "标签",
            started: "开始",
            ended: "结束",
            id: "编号",
        },
        Language::En => &Words {
            firing: "FIRING",
            resolved: "RESOLVED",
            value: "Value",
            threshold: "Threshold",
            labels: "Labels",
            started: "Started",
            ended: "Ended",
            id: "ID",
        },
    }
}

pub fn severity(s: Severity, lang: Language) -> &'static str {
    match (lang, s) {
        (Language::Zh, Severity::Info) => "提示",
        (Language::Zh, Severity::Medium) => "一般",
        (Language::Zh, Severity::High) => "严重",
        (Language::Zh, Severity::Critical) => "紧急",
        (Language::En, Severity::Info) => "info",
        (Language::En, Severity::Medium) => "medium",
        (Language::En, Severity::High) => "high",
        (Language::En, Severity::Critical) => "critical",
    }
}

pub fn state(s: AlertState, lang: Language) -> &'static str {
    match s {
        AlertState::Firing => words(lang).firing,
        AlertState::Resolved => words(lang).resolved,
    }
}

/// `[紧急·告警] 日预算超支` — the line that heads one notification.
pub fn heading(n: &Notification, lang: Language) -> String {
    format!(
        "[{}·{}] {}",
        severity(n.severity, lang),
        state(n.state, lang),
        truncate_chars(&n.title, TITLE_CHARS)
    )
}

/// The title of a whole message: the one notification's heading, or a count. Starts with
/// `lngpt`, so that a robot with keyword security can be given that keyword.
pub fn message_title(items: &[Notification], lang: Language) -> String {
    match items {
        [one] => format!("lngpt {}", heading(one, lang)),
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
pub fn facts(n: &Notification, lang: Language) -> Vec<String> {
    let w = words(lang);
    let sep = if lang == Language::Zh { "：" } else { ": " };
    let mut lines = vec![format!(
        "{}{sep}{}  {}{sep}{}",
        w.value,
        number(n.value),
        w.threshold,
        number(n.threshold)
    )];
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
    lines.push(format!("{}{sep}{}", w.started, local_time(n.starts_at)));
    if let Some(end) = n.ends_at {
        lines.push(format!("{}{sep}{}", w.ended, local_time(end)));
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

/// `2026-11-26 16:00:00 +08:00`, in the machine's time zone (`TZ`, `/etc/localtime`).
pub fn local_time(t: Timestamp) -> String {
    let secs = t.as_millis().div_euclid(1000);
    let offset = utc_offset_secs(secs);
    let local = Timestamp((secs + offset) * 1000).to_string();
    // `YYYY-MM-DDTHH:MM:SS.mmmZ` → `YYYY-MM-DD HH:MM:SS`
    let (date, time) = (&local[..10], &local[11..19]);
    let sign = if offset < 0 { '-' } else { '+' };
    let off = offset.abs();
    format!("{date} {time} {sign}{:02}:{:02}", off / 3600, off % 3600 / 60)
}

fn utc_offset_secs(epoch_secs: i64) -> i64 {
    let t: nix::libc::time_t = epoch_secs as nix::libc::time_t;
    // SAFETY: `localtime_r` writes only into the `tm` we pass, which lives for the call; a zeroed
    // `tm` is a valid value of that plain C struct.
    unsafe {
        let mut tm: nix::libc::tm = std::mem::zeroed();
        if nix::libc::localtime_r(&t, &mut tm).is_null() {
            0
        } else {
            tm.tm_gmtoff as i64
        }
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
        assert_eq!(local_time(Timestamp(0)).len(), "1970-01-01 00:00:00 +00:00".len());
    }
}
