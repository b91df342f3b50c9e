//! The Python text-log records the file tailer's model tests write, shared by the in-process model
//! (`tests.rs`) and the daemon-level cases in `tests/files.rs`. Not part of the daemon's interface.

/// Record `seq` of a Python text log (the original LOG_FORMAT): one line, or with more message
/// lines, or with a chained traceback (blank lines included), each line ending in `\n`.
pub fn text_record(seq: u64) -> String {
    let (level, message, traceback) = text_record_parts(seq);
    let (s, ms) = (seq / 1000, seq % 1000);
    let mut text = format!(
        "2026-11-26 {:02}:{:02}:{:02},{ms:03} - lngpt.model - {level} - {message}\n",
        8 + s / 3600 % 16,
        s / 60 % 60,
        s % 60
    );
    if let Some(tb) = traceback {
        text.push_str(&tb);
        text.push('\n');
    }
    text
}

/// What record `seq` must be stored as: level, message, traceback.
pub fn text_record_parts(seq: u64) -> (&'static str, String, Option<String>) {
    match seq % 6 {
        0 | 3 => (
            "ERROR",
            format!("record {seq} failed"),
            Some(format!(
                "Traceback (most recent call last):\n  File \"model.py\", line {seq}, in write\n    raise ValueError(seq)\nValueError: {seq}\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"model.py\", line 1, in <module>\nRuntimeError: {seq}"
            )),
        ),
        1 => ("WARNING", format!("record {seq}\n  a second line\n\nand a fourth"), None),
        _ => ("INFO", format!("record {seq} 开始API调用"), None),
    }
}
