//! The redaction rules, category by category (README, "Redaction"): each case plants a secret and
//! checks that it is gone from what would be stored, that the last four characters are kept (or
//! `***` for short values), and that masking again changes nothing. Then what must stay intact, and
//! one run of the real daemon that searches its files and its stderr for every planted secret.

use std::sync::{Arc, OnceLock};

use crate::common::{docs, Daemon};
use lngpt_collector::event::{Body, Event, EventId, Parser, Source, Timestamp};
use lngpt_collector::redact::{RedactConfig, Redactor};
use lngpt_collector::store::document;
use serde_json::{json, Value};

fn redactor() -> &'static Redactor {
    static R: OnceLock<Redactor> = OnceLock::new();
    R.get_or_init(|| Redactor::new(&RedactConfig::default()).unwrap())
}

fn parse(line: &str) -> Event {
    static P: OnceLock<Parser> = OnceLock::new();
    let parser = P.get_or_init(|| Parser::new(Arc::new(Redactor::new(&RedactConfig::default()).unwrap())));
    parser.parse(line.as_bytes(), &Source::from("test"), Timestamp(0), EventId::new())
}

/// The document the stores would write for a line: an event's, or a reject's with reason and raw line.
fn stored(line: &str) -> String {
    let mut out = Vec::new();
    document::write_json(&parse(line), "host", &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// What a masked `secret` looks like.
fn masked(secret: &str) -> String {
    let n = secret.chars().count();
    if n < 8 {
        "***".into()
    } else {
        format!("***{}", secret.chars().skip(n - 4).collect::<String>())
    }
}

/// `secret` is gone from `out`, and its masked form is there.
fn assert_masked(category: &str, input: &str, out: &str, secret: &str) {
    assert!(
        !out.contains(secret),
        "[{category}] secret {secret:?} survived in {out}\n  input: {input}"
    );
    assert!(
        out.contains(&masked(secret)),
        "[{category}] {out} should hold {}\n  input: {input}",
        masked(secret)
    );
}

/// Strings with a secret inside, by the shape of the value: (category, text, the secret).
const SHAPES: &[(&str, &str, &str)] = &[
    (
        "bearer",
        "Authorization: Bearer 9FD8C3877FFDCE80aa",
        "9FD8C3877FFDCE80aa",
    ),
    (
        "basic auth",
        "Authorization: Basic dXNlcjpodW50ZXIyaHVudGVy",
        "dXNlcjpodW50ZXIyaHVudGVy",
    ),
    (
        "basic auth",
        "headers={'authorization': 'Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=='}",
        "QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
    ),
    (
        "token scheme",
        "Authorization: Token 0123456789abcdef0123",
        "0123456789abcdef0123",
    ),
    (
        "bare JWT",
        "got eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U back",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    (
        "openai key",
        "key sk-qgwz4kguf46maat8b3k990ep4l3t9p9ity3rm8wk used",
        "sk-qgwz4kguf46maat8b3k990ep4l3t9p9ity3rm8wk",
    ),
    (
        "openai key glued",
        "keysk-proj0a1B2c3D4e5F6g7H8i9J0",
        "sk-proj0a1B2c3D4e5F6g7H8i9J0",
    ),
    (
        "openai key glued",
        "OPENAI_API_KEYsk-ant-api03-Zx81Qw72Er63",
        "sk-ant-api03-Zx81Qw72Er63",
    ),
    (
        "aws access key",
        "using AKIAIOSFODNN7EXAMPLE for s3",
        "AKIAIOSFODNN7EXAMPLE",
    ),
    (
        "aws access key",
        "creds ASIAY34FZKBOKMUTVV7A expire",
        "ASIAY34FZKBOKMUTVV7A",
    ),
    (
        "url query",
        "GET https://maps.example.com/api?key=AIzaSyD4kP9xQ2mN7vB3&q=x",
        "AIzaSyD4kP9xQ2mN7vB3",
    ),
    (
        "url query",
        "redirect to /cb?state=ok&access_token=ya29a0AfH6SMBx1y2z3 done",
        "ya29a0AfH6SMBx1y2z3",
    ),
    (
        "url query",
        "https://api.example.com/v1/x?api_key=Q1w2E3r4T5y6U7i8&page=2",
        "Q1w2E3r4T5y6U7i8",
    ),
    (
        "url password",
        "connecting to mongodb://collector:S3cr3tPassw0rd@db1:27017/?authSource=admin",
        "S3cr3tPassw0rd",
    ),
    (
        "url password",
        "fetch https://alice:hunter2hunter2@example.com/repo.git",
        "hunter2hunter2",
    ),
    ("url password", "redis://:R3d1sPassw0rd!@cache:6379/0", "R3d1sPassw0rd!"),
    ("key=value", "api_key=Zq8vN3xL0pRt5Kw2 model=gpt-4o", "Zq8vN3xL0pRt5Kw2"),
    ("key=value", "accessToken=Mn7Bv6Cx5Zl4Kj3H", "Mn7Bv6Cx5Zl4Kj3H"),
    ("key=value", "clientSecret: 'Pl9Ok8Ij7Uh6Yg5T'", "Pl9Ok8Ij7Uh6Yg5T"),
    ("key=value", "{'password': 'two words here'}", "two words here"),
    // A bare `key` (an API's error quoting the request): issue 20 found it in a `error` field.
    (
        "key=value",
        "upstream refused key=Xc4Vb5Nm6Qw7Er8T: quota",
        "Xc4Vb5Nm6Qw7Er8T",
    ),
    ("key=value", "retry with key: Lp0Ok9Ij8Uh7Yg6T", "Lp0Ok9Ij8Uh7Yg6T"),
    ("full-width colon", "api_key：Wd3Fg4Hj5Kl6Zx7C", "Wd3Fg4Hj5Kl6Zx7C"),
    ("chinese name", "数据库密码=Qa1Ws2Ed3Rf4Tg5Y", "Qa1Ws2Ed3Rf4Tg5Y"),
    ("chinese name", "密码：Yh6Uj7Ik8Ol9Pz0X", "Yh6Uj7Ik8Ol9Pz0X"),
    (
        "password is",
        "the admin password is Hz5Jx6Kc7Lv8Bn9M",
        "Hz5Jx6Kc7Lv8Bn9M",
    ),
    (
        "json in a message",
        r#"request body {"api_key": "Tr5Ew4Qa3Sd2Fg1H"}"#,
        "Tr5Ew4Qa3Sd2Fg1H",
    ),
    (
        "json in a message",
        r#"config {"llm": {"apiKey": "Gh2Jk3Lm4Nb5Vc6X"}}"#,
        "Gh2Jk3Lm4Nb5Vc6X",
    ),
    (
        "json in a message",
        r#"dump {"password": {"v": "Vb7Nm8Qw9Er0Ty1U"}}"#,
        "Vb7Nm8Qw9Er0Ty1U",
    ),
];

#[test]
fn secrets_are_masked_by_the_shape_of_the_value() {
    for (category, input, secret) in SHAPES {
        let out = redactor().text(input);
        assert_masked(category, input, &out, secret);
        assert_eq!(redactor().text(&out), out, "[{category}] masking twice changes nothing");
    }
}

/// Every shape, in every kind's string fields: a performance record's `error` as a log's `message`.
#[test]
fn every_shape_is_masked_in_every_stored_string_field() {
    for (category, input, secret) in SHAPES {
        let lines = [
            json!({"message": input, "module": input, "extra": {"note": input}}),
            json!({"type": "performance", "response_time": 1.5, "status": "error", "error": input, "provider": input}),
            json!({"type": "cost", "model": "gpt-4o", "cost": 1, "request_id": input}),
        ];
        for line in lines {
            let line = line.to_string();
            assert!(!parse(&line).is_reject(), "[{category}] {line}");
            let doc = stored(&line);
            assert_masked(category, &line, &doc, secret);
        }
    }
}

/// Field names that hold secrets, in every case style and separator, and the names added to the list.
const SECRET_NAMES: &[&str] = &[
    "api_key",
    "OPENAI_API_KEY",
    "x-api-key",
    "accessToken",
    "clientSecret",
    "openaiApiKey",
    "privateKey",
    "APIKey",
    "llm.api_key",
    "http.request.header.authorization",
    "$password",
    "Password",
    "secret_key",
    "aws_secret_access_key",
    "credentials",
    "passphrase",
    "pwd",
    "jwt",
    "refresh_token",
    "session-cookie",
    "数据库密码",
];

#[test]
fn fields_are_masked_by_name_in_any_case_style_at_any_depth() {
    for name in SECRET_NAMES {
        let secret = "Kd8Fj2Ls9Qp3Wm7X";
        let mut v = json!({"outer": {name.to_string(): secret, "list": [{name.to_string(): secret}]}});
        redactor().value(&mut v);
        assert_masked("name", name, &v.to_string(), secret);
        assert!(redactor().is_secret_key(name), "{name}");
        // A secret name masks whatever it holds: numbers, nested objects, arrays.
        let mut v = json!({name.to_string(): {"v": secret, "n": 12345678, "a": [secret]}});
        redactor().value(&mut v);
        assert_eq!(
            v,
            json!({name.to_string(): {"v": masked(secret), "n": "***", "a": [masked(secret)]}})
        );
    }
}

#[test]
fn a_secret_used_as_an_object_key_is_masked() {
    let mut v = json!({"sk-live0a1b2c3d4e5f6g7h": 3, "by_user": {"Bearer Ab1Cd2Ef3Gh4Ij5K": true}});
    redactor().value(&mut v);
    assert_eq!(v, json!({"***6g7h": 3, "by_user": {"Bearer ***Ij5K": true}}));
    // Two keys that mask alike are both kept.
    let mut v = json!({"sk-aaaaaaaaaaaaaaaa0001": 1, "sk-bbbbbbbbbbbbbbbb0001": 2});
    redactor().value(&mut v);
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    assert!(
        !v.to_string().contains("aaaaaaaa") && !v.to_string().contains("bbbbbbbb"),
        "{v}"
    );
}

#[test]
fn every_stored_string_field_is_scanned() {
    let secret = "sk-Fz9Gx8Hc7Jv6Kb5Nm4";
    let lines = [
        format!(r#"{{"message": "m", "module": "{secret}", "function": "{secret}", "logger": "{secret}"}}"#),
        format!(r#"{{"message": "m", "request_id": "{secret}", "extra": {{"{secret}": 1}}}}"#),
        format!(
            r#"{{"type": "cost", "model": "{secret}", "cost": 1, "provider": "{secret}", "request_id": "{secret}"}}"#
        ),
        format!(
            r#"{{"type": "perf", "response_time": 1, "ok": false, "error": "{secret}", "model": "{secret}", "provider": "{secret}", "request_id": "{secret}"}}"#
        ),
    ];
    for line in &lines {
        let doc = stored(line);
        assert!(!parse(line).is_reject(), "{doc}");
        assert_masked("field", line, &doc, secret);
    }
}

#[test]
fn rejected_raw_lines_are_redacted_by_structure_when_they_are_json() {
    // (category, rejected line, secret)
    let cases = [
        (
            "nested object",
            r#"{"type": "metric", "password": {"v": "Qz1Wx2Ec3Rv4Tb5Y"}}"#,
            "Qz1Wx2Ec3Rv4Tb5Y",
        ),
        (
            "array",
            r#"{"type": "metric", "api_key": ["Ny6Um7Ik8Ol9Pa0S", "x"]}"#,
            "Ny6Um7Ik8Ol9Pa0S",
        ),
        (
            "escaped name",
            r#"{"type": "metric", "\u0070assword": "Df4Gh5Jk6Lz7Xc8V"}"#,
            "Df4Gh5Jk6Lz7Xc8V",
        ),
        (
            "escaped value",
            r#"{"type": "metric", "note": "\u0073k-Bn9Mq8Wn7Er6Ty5U"}"#,
            "Bn9Mq8Wn7Er6Ty5U",
        ),
        (
            "camel case",
            r#"{"type": "metric", "ctx": {"accessToken": "Hj3Kl4Zx5Cv6Bn7M"}}"#,
            "Hj3Kl4Zx5Cv6Bn7M",
        ),
        (
            "repeated field",
            r#"{"type": "log", "message": "x", "api_key": "a", "api_key": "Lo9Ki8Ju7Hy6Gt5F"}"#,
            "Lo9Ki8Ju7Hy6Gt5F",
        ),
        (
            "big integer kept",
            r#"{"type": "metric", "n": 123456789012345678901234567890, "secret": "Rt5Yu6Io7Pa8Sd9F"}"#,
            "Rt5Yu6Io7Pa8Sd9F",
        ),
    ];
    for (category, line, secret) in cases {
        let Body::Reject(r) = parse(line).body else {
            panic!("{line} should be a reject")
        };
        assert_masked(category, line, &r.raw, secret);
        let reparsed: Result<Value, _> = serde_json::from_str(&r.raw);
        assert!(
            reparsed.is_ok(),
            "[{category}] the redacted raw line is still JSON: {}",
            r.raw
        );
    }
    // Numbers and booleans under a secret name are masked whole, as JSON strings.
    let Body::Reject(r) = parse(r#"{"type": "metric", "pin_password": 987654321012, "pwd": true}"#).body else {
        panic!()
    };
    assert_eq!(r.raw, r#"{"type": "metric", "pin_password": "***", "pwd": "***"}"#);
    // What is not secret is kept as sent: order, spacing, repeated names, digits.
    let Body::Reject(r) =
        parse(r#"{"type": "metric",  "n": 123456789012345678901234567890, "z": 1, "a": 2, "z": 3}"#).body
    else {
        panic!()
    };
    assert_eq!(
        r.raw,
        r#"{"type": "metric",  "n": 123456789012345678901234567890, "z": 1, "a": 2, "z": 3}"#
    );
}

#[test]
fn rejected_raw_lines_that_are_not_json_are_still_redacted() {
    let cases = [
        (
            "cut short",
            r#"{"type": "log", "api_key": ["Wq1Er2Ty3Ui4Op5A", "#,
            "Wq1Er2Ty3Ui4Op5A",
        ),
        (
            "unquoted",
            r#"{"type": "log", password: Zx6Cv7Bn8Ml9Kj0H}"#,
            "Zx6Cv7Bn8Ml9Kj0H",
        ),
        (
            "escaped name, cut",
            r#"{"\u0061pi_key": {"v": "Gf1Ds2Aq3Wz4Xs5E""#,
            "Gf1Ds2Aq3Wz4Xs5E",
        ),
        ("prose", "password=Ed3Cr4Vf5Tb6Gy7N and more", "Ed3Cr4Vf5Tb6Gy7N"),
    ];
    for (category, line, secret) in cases {
        let Body::Reject(r) = parse(line).body else {
            panic!("{line} should be a reject")
        };
        assert_masked(category, line, &r.raw, secret);
    }
}

#[test]
fn a_reason_quoting_a_value_never_quotes_a_secret() {
    let key = "sk-Aq1Sw2De3Fr4Gt5Hy6Ju7Ki8Lo9Pz0Xc1Vb2Nm3";
    // A reason quotes 40 characters: here the cut would fall 7 characters into the key.
    let pad = "a".repeat(32);
    for line in [
        format!(r#"{{"type": "log", "level": "{pad} {key}", "message": "x"}}"#),
        format!(r#"{{"type": "log", "level": "{key}", "message": "x"}}"#),
        format!(r#"{{"type": "{key}"}}"#),
        format!(r#"{{"type": "log", "message": "x", "timestamp": "{key}"}}"#),
        format!(r#"{{"type": "perf", "response_time": 1, "status": "password={key}"}}"#),
        format!(r#"{{"type": "log", "message": "x", "extra": "Bearer {key}"}}"#),
    ] {
        let Body::Reject(r) = parse(&line).body else {
            panic!("{line} should be a reject")
        };
        for window in key.as_bytes().windows(6).take(key.len() - 9) {
            let piece = std::str::from_utf8(window).unwrap();
            assert!(!r.reason.contains(piece), "{piece:?} of the key leaked: {}", r.reason);
        }
    }
}

/// Values and names that look a little like secrets and must stay exactly as sent.
#[test]
fn what_is_not_a_secret_stays_intact() {
    let texts = [
        "task-1234 finished",
        "sk",
        "sk-",
        "gpt-4o",
        "anthropic/claude-3.5-sonnet",
        "req-000123",
        "API调用成功: 2926 tokens",
        "开始生成第16章",
        "密码学导论 第3章",
        "https://api.openai.com/v1/chat/completions?model=gpt-4o&stream=true",
        "mongodb://db1:27017,db2:27017/lngpt?replicaSet=rs0",
        "https://example.com:8443/a/b@c",
        "see Basic information below",
        "region asia-east1, Asia/Shanghai",
        "disk-usage-monitor-service restarted",
        "max_tokens=4096 prompt_tokens: 1200",
        "token_count=15, total_tokens=20",
        "the password is incorrect",
        "password is required",
        "hey Jude, eyJ",
        "monkey=banana sort_key=time keyword: ai",
    ];
    for t in texts {
        assert_eq!(redactor().text(t), t, "changed");
    }
    let mut v = json!({"total_tokens": 10, "token_count": 3, "max_tokens": 4096, "prompt_tokens": 7,
                       "tokens": 2926, "tokenizer": "cl100k", "keyword": "ai", "monkey": "x", "key": "k1",
                       "password_hint": "first pet", "model": "gpt-4o", "request_id": "req-000123"});
    let before = v.clone();
    redactor().value(&mut v);
    assert_eq!(v, before);
    for name in [
        "total_tokens",
        "token_count",
        "max_tokens",
        "prompt_tokens",
        "tokens",
        "sk",
        "password_hint",
    ] {
        assert!(!redactor().is_secret_key(name), "{name}");
    }
}

/// The real daemon: secrets of every category through the socket, then searched for in every file
/// under its state directory (WAL included) and in everything it wrote to stderr.
#[test]
fn no_secret_reaches_the_database_files_or_the_daemons_log() {
    let mut d = Daemon::start("");
    let mut lines: Vec<String> = SHAPES
        .iter()
        .map(|(_, text, _)| json!({"message": text, "module": "m"}).to_string())
        .collect();
    let mut secrets: Vec<&str> = SHAPES.iter().map(|(_, _, s)| *s).collect();
    let named = "Vn2Bm3Qw4Er5Ty6U";
    lines
        .push(json!({"message": "m", "extra": {"openaiApiKey": named, "nested": {"passphrase": [named]}}}).to_string());
    let field = "sk-Oi8Uy7Tr6Ee5Ww4Qq3";
    lines.push(format!(
        r#"{{"type": "cost", "model": "{field}", "cost": 1, "request_id": "{field}"}}"#
    ));
    // Rejects: a nested secret, an escaped name, and a value the reason would quote (logged at WARN).
    let nested = "Pz1Lx2Kc3Jv4Hb5Gn";
    lines.push(format!(r#"{{"type": "metric", "password": {{"v": "{nested}"}}}}"#));
    let escaped = "Mf6Nd7Bs8Va9Cq0Wz";
    lines.push(format!(r#"{{"type": "metric", "\u0061pi_key": "{escaped}"}}"#));
    let quoted = "sk-Ut5Yr4Ee3Ww2Qq1Aa0Ss9Dd8";
    lines.push(format!(r#"{{"type": "log", "level": "{quoted}", "message": "x"}}"#));
    secrets.extend([named, field, nested, escaped, quoted]);
    // Kept as sent.
    let intact = [
        "task-1234",
        "gpt-4o",
        "req-000123",
        "API调用成功: 2926 tokens",
        "https://api.example.com/v1?model=x",
    ];
    for text in intact {
        lines.push(json!({"message": text, "extra": {"max_tokens": 4096, "token_count": 2}}).to_string());
    }
    let text = lines.join("\n") + "\n";
    let ack = d.send(text.as_bytes());
    assert_eq!(ack.rejected, 3);
    d.wait_for_count("api_rejects", 3);
    d.wait_for_count("api_logs", (SHAPES.len() + 1 + intact.len()) as u64);
    d.wait_for_log("rejected a line");
    let stored_messages: Vec<Value> = docs(&d.db(), "api_logs")
        .iter()
        .map(|doc| doc["message"].clone())
        .collect();
    for text in intact {
        assert!(stored_messages.contains(&json!(text)), "{text} kept as sent");
    }
    assert!(d.stop().success());
    let log = d.log();
    assert!(log.contains("rejected a line"), "{log}");
    let mut files = 0;
    for entry in std::fs::read_dir(&d.state).unwrap() {
        let path = entry.unwrap().path();
        let Ok(bytes) = std::fs::read(&path) else { continue };
        files += 1;
        for s in &secrets {
            let tail = if s.len() > 8 { &s[..s.len() - 4] } else { s };
            assert!(
                memchr::memmem::find(&bytes, tail.as_bytes()).is_none(),
                "{s} found in {}",
                path.display()
            );
        }
    }
    assert!(files >= 1);
    for s in &secrets {
        let head = &s[..s.len().min(7)];
        assert!(!log.contains(head), "{head} (of {s}) in the daemon's log:\n{log}");
    }
}
