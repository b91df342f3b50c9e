//! One HTTP attempt and what its answer means.
//!
//! Following the Standard Webhooks "Delivery success and failure" guidance: 2xx is success (then
//! the vendor's body is judged), redirects are not followed (update the URL instead), 429 and 503
//! are retried after `Retry-After`, 408 and 5xx and every network failure are retried with backoff,
//! and other 4xx are given up. Errors never show the URL (it holds the key).

use std::time::Duration;

use super::formats::{BodyVerdict, Format, Outgoing};

/// Bytes of an answer kept for the record and for judging; vendors' answers are tiny.
const ANSWER_BYTES: usize = 64 * 1024;
/// Characters of an answer's body shown in records and logs.
pub const SNIPPET_CHARS: usize = 300;
/// The longest `Retry-After` obeyed; a longer one is cut to it (and said so).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lngpt-collector/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {}", chain(&e)))
}

/// What an attempt got.
#[derive(Debug, Clone)]
pub struct Answer {
    /// None: no HTTP answer (refused, timed out, reset, TLS).
    pub status: Option<u16>,
    pub body: Vec<u8>,
    pub retry_after: Option<Duration>,
    /// The network error, when there was no answer.
    pub error: Option<String>,
}

impl Answer {
    /// `HTTP 429: {"errcode":…}` or `no answer: connection refused`, for records and logs.
    pub fn describe(&self) -> String {
        match (self.status, &self.error) {
            (Some(status), _) => {
                let body = String::from_utf8_lossy(&self.body);
                let snippet = super::render::truncate_chars(body.trim(), SNIPPET_CHARS);
                if snippet.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {snippet}")
                }
            }
            (None, Some(e)) => format!("no answer: {e}"),
            (None, None) => "no answer".to_string(),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Try again; `after` when the receiver said when (`Retry-After`, a vendor's rate limit).
    Retry {
        after: Option<Duration>,
        why: String,
    },
    GiveUp(String),
}

pub async fn send(client: &reqwest::Client, out: Outgoing, timeout: Duration) -> Answer {
    let mut request = client.post(out.url).timeout(timeout).body(out.body);
    for (name, value) in out.headers {
        request = request.header(name, value);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return no_answer(&e, timeout),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let mut body = Vec::new();
    let mut response = response;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = ANSWER_BYTES.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if room <= chunk.len() {
                    break;
                }
            }
            Ok(None) => break,
            // The status came; a body cut short still tells enough.
            Err(_) => break,
        }
    }
    Answer {
        status: Some(status),
        body,
        retry_after,
        error: None,
    }
}

fn no_answer(e: &reqwest::Error, timeout: Duration) -> Answer {
    let error = if e.is_timeout() {
        format!("no answer within {} (timeout)", crate::units::HumanDuration(timeout))
    } else if e.is_connect() {
        format!("cannot connect: {}", chain(e))
    } else {
        chain(e)
    };
    Answer {
        status: None,
        body: Vec::new(),
        retry_after: None,
        error: Some(error),
    }
}

/// The error and its causes, without the URL (which holds the key).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        let text = match err.downcast_ref::<reqwest::Error>() {
            Some(re) => strip_url(re),
            None => err.to_string(),
        };
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

fn strip_url(e: &reqwest::Error) -> String {
    // `without_url` needs ownership; the message of a reqwest error is "<kind> for url (<url>)".
    let text = e.to_string();
    match text.find(" for url (") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// What an answer means for `format`.
pub fn judge(format: &dyn Format, answer: &Answer, rate_window: Duration) -> Verdict {
    let why = answer.describe();
    let Some(status) = answer.status else {
        return Verdict::Retry { after: None, why };
    };
    match status {
        200..=299 => match format.judge(&answer.body) {
            BodyVerdict::Ok => Verdict::Delivered,
            BodyVerdict::RateLimited(msg) => Verdict::Retry {
                after: Some(rate_window),
                why: msg,
            },
            BodyVerdict::Transient(msg) => Verdict::Retry { after: None, why: msg },
            BodyVerdict::Refused(msg) => Verdict::GiveUp(msg),
        },
        429 | 503 => Verdict::Retry {
            after: answer.retry_after,
            why,
        },
        408 | 425 | 500..=599 => Verdict::Retry {
            after: answer.retry_after,
            why,
        },
        300..=399 => Verdict::GiveUp(format!(
            "{why} (a redirect: redirects are not followed; set the URL it points to)"
        )),
        410 => Verdict::GiveUp(format!("{why} (the receiver is gone: remove or fix this webhook)")),
        400..=499 => Verdict::GiveUp(why),
        _ => Verdict::Retry { after: None, why },
    }
}

/// `Retry-After`: seconds, or an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let wait = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = parse_http_date(v)?;
        let now = crate::event::Timestamp::now().as_millis();
        Duration::from_millis(u64::try_from(at * 1000 - now).unwrap_or(0))
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// IMF-fixdate, the form HTTP/1.1 senders must use; epoch seconds.
fn parse_http_date(v: &str) -> Option<i64> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let rest = v.split_once(", ")?.1;
    let parts: Vec<&str> = rest.split(' ').collect();
    if parts.len() != 5 || parts[4] != "GMT" {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == parts[1])? + 1;
    let text = format!("{}-{month:02}-{:0>2}T{}Z", parts[2], parts[0], parts[3]);
    crate::event::Timestamp::parse_rfc3339(&text)
        .ok()
        .map(|t| t.as_millis() / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
