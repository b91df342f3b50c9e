//! Record assembly from the lines of a text log, as the tailer feeds it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::event::{Body, Event, EventId, Level, Log, NaiveZone, Parser, Source, Timestamp};
use crate::pipeline::PipelineSender;
use crate::redact::{RedactConfig, Redactor};
use crate::source::lines::LineDecoder;
use crate::source::Ingest;
use crate::units::HumanDuration;

const FP: u64 = 0xfeed;

struct Harness {
    ingest: Ingest,
    decoder: LineDecoder,
    records: Records,
    events: Vec<Event>,
}

impl Harness {
    fn new(cfg: &FileConfig) -> Harness {
        Harness::in_zone(cfg, "UTC")
    }

    /// With `naive_timezone = zone`.
    fn in_zone(cfg: &FileConfig, zone: &str) -> Harness {
        let redactor = Arc::new(Redactor::new(&RedactConfig::default()).unwrap());
        let zone = Arc::new(NaiveZone::named(zone).unwrap());
        let ingest = Ingest::new(
            Parser::new(redactor).with_naive_timezone(zone.clone()),
            Arc::default(),
            PipelineSender::unconnected(),
            Arc::default(),
            Source::from("app.log"),
            cfg.max_line_bytes,
        );
        let format = Arc::new(TextFormat::new(cfg, zone).unwrap());
        Harness {
            ingest,
            decoder: LineDecoder::new(cfg.max_line_bytes)
                .keeping_blank_lines()
                .keeping_long_line_heads(),
            records: Records::new(format, true),
            events: Vec::new(),
        }
    }

    fn python() -> Harness {
        Harness::new(&config(|_| {}))
    }

    fn out(&mut self) -> (Out<'_>, &mut LineDecoder, &mut Records) {
        (
            Out {
                ingest: &self.ingest,
                events: &mut self.events,
                received: Timestamp::now(),
                fingerprint: FP,
            },
            &mut self.decoder,
            &mut self.records,
        )
    }

    fn feed(&mut self, bytes: &[u8]) -> &mut Harness {
        let (mut out, decoder, records) = self.out();
        records.data_arrived(Instant::now());
        decoder.feed_at(bytes, &mut |frame, at| records.line(frame, at, &mut out));
        self
    }

    /// What the tailer checkpoints now.
    fn committed(&self) -> u64 {
        self.records.committed(self.decoder.committed_offset())
    }

    fn finish(&mut self) -> &[Event] {
        let (mut out, _, records) = self.out();
        records.complete(&mut out);
        &self.events
    }
}

fn config(edit: impl FnOnce(&mut FileConfig)) -> FileConfig {
    let mut cfg = FileConfig {
        path: "app.log".into(),
        format: super::super::Format::Python,
        ..FileConfig::default()
    };
    edit(&mut cfg);
    cfg
}

fn log(e: &Event) -> &Log {
    match &e.body {
        Body::Log(l) => l,
        other => panic!("expected a log, got {other:?}"),
    }
}

fn reject(e: &Event) -> (&str, &str) {
    match &e.body {
        Body::Reject(r) => (&r.reason, &r.raw),
        other => panic!("expected a reject, got {other:?}"),
    }
}

const TRACEBACK: &str = "Traceback (most recent call last):\n  File \"/srv/app/llm_api.py\", line 225, in stream_chat\n    raise KeyError(key)\nKeyError: 'glm-4'\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"/srv/app/llm_api.py\", line 230, in stream_chat\n    raise RuntimeError(\"no model\")\nRuntimeError: no model";

#[test]
fn records_take_their_traceback_and_message_lines_with_ids_of_their_first_line() {
    let first = "2026-11-26 12:00:00,123 - lngpt.api - ERROR - 调用失败 glm-4\n";
    let second = "2026-11-26 12:00:01,005 - lngpt - INFO - line one\n  indented\n\nline four\n";
    let third = "2026-11-26 12:00:02,999 - lngpt.writer - WARNING - last\n";
    let text = format!("{first}{TRACEBACK}\n{second}{third}");
    let mut h = Harness::python();
    h.feed(text.as_bytes());
    assert_eq!(h.events.len(), 2, "the last record waits for what follows it");
    assert_eq!(
        h.committed(),
        (text.len() - third.len()) as u64,
        "the checkpoint stops at the open record's first line"
    );
    let events = h.finish().to_vec();
    let offsets = [0, first.len() + TRACEBACK.len() + 1, text.len() - third.len()];
    for (e, at) in events.iter().zip(offsets) {
        assert_eq!(e.id, EventId::derived(FP, at as u64));
    }
    let (a, b, c) = (log(&events[0]), log(&events[1]), log(&events[2]));
    assert_eq!(events[0].time, Timestamp(1_795_694_400_123));
    assert_eq!((a.level, a.logger.as_deref()), (Level::Error, Some("lngpt.api")));
    assert_eq!(a.message, "调用失败 glm-4");
    assert_eq!(a.traceback.as_deref(), Some(TRACEBACK), "whole, blank lines included");
    assert_eq!(b.message, "line one\n  indented\n\nline four");
    assert_eq!(b.traceback, None);
    assert_eq!((c.level, c.message.as_str()), (Level::Warning, "last"));
    assert_eq!(events[2].time, Timestamp(1_795_694_402_999));
}

#[test]
fn a_record_read_in_pieces_is_the_same_record_whatever_the_cuts() {
    let text = format!(
        "2026-11-26 12:00:00,123 - lngpt - ERROR - boom\r\n{}\r\n2026-11-26 12:00:01,000 - lngpt - INFO - next\r\n",
        TRACEBACK.replace('\n', "\r\n")
    );
    let whole = {
        let mut h = Harness::python();
        h.feed(text.as_bytes());
        h.finish().to_vec()
    };
    assert_eq!(log(&whole[0]).traceback.as_deref(), Some(TRACEBACK), "\\r\\n line ends");
    for cut in 1..text.len() {
        let mut h = Harness::python();
        h.feed(&text.as_bytes()[..cut]);
        assert!(
            h.committed() == 0 || cut >= text.len() - 1,
            "never inside the first record"
        );
        h.feed(&text.as_bytes()[cut..]);
        assert_eq!(h.finish(), &whole[..], "cut at {cut}");
    }
}

#[test]
fn lines_that_continue_nothing_are_one_reject_naming_the_pattern() {
    let mut h = Harness::python();
    h.feed(b"  File \"x.py\", line 1, in f\nValueError: sk-abcdefghijklmnopqrstuv\n2026-11-26 12:00:00,000 - lngpt - INFO - ok\n");
    let events = h.finish();
    assert_eq!(events.len(), 2);
    let (reason, raw) = reject(&events[0]);
    assert!(
        reason.starts_with("2 lines do not match the pattern `%(asctime)s - %(name)s - %(levelname)s - %(message)s` (format = \"python\"), and they begin the file"),
        "{reason}"
    );
    assert!(reason.contains("rotation"), "{reason}");
    assert_eq!(
        raw, "  File \"x.py\", line 1, in f\nValueError: ***stuv",
        "kept, secrets masked"
    );
    assert_eq!(events[0].id, EventId::derived(FP, 0));
    assert_eq!(log(&events[1]).message, "ok");
}

#[test]
fn a_header_with_a_wrong_value_is_a_reject_with_its_lines() {
    let mut h = Harness::python();
    h.feed(b"2026-11-26 12:00:00,000 - lngpt - TRACE - x\nTraceback (most recent call last):\nValueError: 1\n2026-02-30 12:00:00,000 - lngpt - INFO - y\n");
    let events = h.finish();
    let (reason, raw) = reject(&events[0]);
    assert!(reason.contains("`levelname` \"TRACE\" is not a log level"), "{reason}");
    assert_eq!(raw.lines().count(), 3);
    let (reason, _) = reject(&events[1]);
    assert!(
        reason.contains("`asctime` \"2026-02-30 12:00:00,000\" has no such date"),
        "{reason}"
    );
}

#[test]
fn an_open_record_completes_after_the_timeout_and_a_late_line_continues_nothing() {
    let cfg = config(|c| c.multiline_timeout = HumanDuration(Duration::from_millis(50)));
    let mut h = Harness::new(&cfg);
    h.feed(b"2026-11-26 12:00:00,000 - lngpt - ERROR - x\nTraceback (most recent call last):\n");
    let deadline = h.records.deadline().unwrap();
    let (mut out, _, records) = h.out();
    assert!(!records.complete_if_due(deadline - Duration::from_millis(1), &mut out));
    assert!(records.complete_if_due(deadline, &mut out));
    assert_eq!(h.records.deadline(), None);
    assert_eq!(h.committed(), 79, "past the record once it is complete");
    h.feed(b"ValueError: late\n");
    let events = h.finish();
    assert_eq!(
        log(&events[0]).traceback.as_deref(),
        Some("Traceback (most recent call last):")
    );
    let (reason, _) = reject(&events[1]);
    assert!(
        reason.contains("follow no record") && reason.contains("multiline_timeout"),
        "{reason}"
    );
}

#[test]
fn a_record_over_max_line_bytes_keeps_its_beginning_and_says_how_much_was_cut() {
    let cfg = config(|c| c.max_line_bytes = 1024);
    let mut h = Harness::new(&cfg);
    let mut text = String::from("2026-11-26 12:00:00,000 - lngpt - ERROR - big\nTraceback (most recent call last):\n");
    for i in 0..100 {
        text.push_str(&format!("  File \"f{i:03}.py\", line 1, in g\n"));
    }
    text.push_str(&format!("{}\n", "x".repeat(3000)));
    h.feed(text.as_bytes());
    let events = h.finish();
    let l = log(&events[0]);
    let header = text.find('\n').unwrap();
    let kept = header + 1 + l.traceback.as_ref().unwrap().len();
    assert!(kept <= 1024, "{kept}");
    let cut = l.extra["cut_bytes"].as_u64().unwrap() as usize;
    assert_eq!(kept + cut, text.len() - 1, "every byte is kept or counted");
}

#[test]
fn fields_after_the_message_are_read_from_the_last_message_line() {
    let cfg = config(|c| c.pattern = Some("%(asctime)s %(levelname)s %(message)s [%(filename)s:%(lineno)d]".into()));
    let mut h = Harness::new(&cfg);
    h.feed(b"2026-11-26 12:00:00,000 INFO one [app.py:3]\n2026-11-26 12:00:00,000 INFO two\nlines [x] [app.py:4]\nTraceback (most recent call last):\nValueError: v [y.py:1]\n");
    let events = h.finish();
    let (a, b) = (log(&events[0]), log(&events[1]));
    assert_eq!((a.message.as_str(), a.line), ("one", Some(3)));
    assert_eq!((b.message.as_str(), b.line), ("two\nlines [x]", Some(4)));
    assert_eq!(b.extra["filename"], "app.py");
    assert_eq!(
        b.traceback.as_deref(),
        Some("Traceback (most recent call last):\nValueError: v [y.py:1]")
    );
}

#[test]
fn process_thread_and_unknown_attributes_go_to_extra_and_times_follow_the_zone() {
    let cfg = config(|c| {
        c.pattern = Some(
            "%(asctime)s.%(msecs)03d %(process)d %(thread)d %(threadName)s %(request_id)s %(levelname)-8s %(name)s %(module)s.%(funcName)s:%(lineno)d %(message)s"
                .into(),
        );
        c.datefmt = Some("%Y-%m-%d %H:%M:%S".into());
    });
    let mut h = Harness::in_zone(&cfg, "Asia/Shanghai");
    h.feed(b"2026-11-26 16:00:00.536 4242 139990 MainThread req-7 DEBUG    lngpt.api llm_api.stream_chat:225 token=abcdefgh12345678\n");
    let events = h.finish();
    assert_eq!(
        events[0].time,
        Timestamp(1_795_680_000_536),
        "16:00 in Shanghai is 08:00 UTC"
    );
    let l = log(&events[0]);
    assert_eq!(
        (l.level, l.module.as_deref(), l.function.as_deref(), l.line),
        (Level::Debug, Some("llm_api"), Some("stream_chat"), Some(225))
    );
    assert_eq!(l.message, "token=***5678");
    assert_eq!(
        serde_json::Value::Object(l.extra.clone()),
        serde_json::json!({"process": 4242, "thread": 139990, "threadName": "MainThread", "request_id": "req-7"})
    );
}

#[test]
fn auto_tells_json_lines_from_text_by_the_first_line() {
    assert!(looks_like_json(b"{\"message\": \"x\"}"));
    assert!(looks_like_json(b"\xEF\xBB\xBF  {\"message\": \"x\"}"));
    assert!(!looks_like_json(
        b"2026-11-26 12:00:00,000 - lngpt - INFO - {json} in a message"
    ));
}

#[test]
fn a_record_of_one_line_over_max_line_bytes_keeps_its_first_max_line_bytes_in_whole_characters() {
    let cfg = config(|c| c.max_line_bytes = 100_000);
    let mut h = Harness::new(&cfg);
    let header = "2026-11-26 12:00:00,000 - lngpt - ERROR - ";
    // 3-byte characters, so that the limit falls inside one.
    let text = format!("{header}{}\n", "调".repeat(60_000));
    h.feed(text.as_bytes());
    let events = h.finish();
    let l = log(&events[0]);
    let kept = header.len() + l.message.len();
    assert!(kept <= 100_000 && kept > 100_000 - 3, "{kept}");
    assert!(!l.message.contains('\u{FFFD}'), "no character cut in two");
    assert_eq!(
        kept as u64 + l.extra["cut_bytes"].as_u64().unwrap(),
        text.len() as u64 - 1
    );
}
