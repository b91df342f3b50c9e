//! What a MongoDB error means for the daemon: wait and retry (an outage), or stop trying this
//! collection until someone acts (permanent), so one collection's "not authorized" never turns
//! into a retry storm that holds up the others.

use mongodb::error::{Error, ErrorKind as DriverKind, WriteFailure};

use crate::store::ErrorKind;

/// Server codes that pass with time: elections and step-downs, shutdowns, timeouts, lock and
/// network trouble on the server's side.
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    24,    // LockTimeout
    46,    // LockBusy
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed (wtimeout)
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    133,   // FailedToSatisfyReadPreference
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10058, // LegacyNotPrimary
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Transient or permanent. Unknown errors count as transient: retrying loses nothing.
pub fn classify(e: &Error) -> ErrorKind {
    if e.contains_label("RetryableWriteError") || e.contains_label("TransientTransactionError") {
        return ErrorKind::Transient;
    }
    match &*e.kind {
        DriverKind::Command(c) => by_code(c.code),
        DriverKind::Write(WriteFailure::WriteConcernError(wc)) => by_code(wc.code),
        DriverKind::Write(WriteFailure::WriteError(we)) => by_code(we.code),
        DriverKind::InsertMany(im) => im
            .write_concern_error
            .as_ref()
            .map_or(ErrorKind::Transient, |wc| by_code(wc.code)),
        DriverKind::Authentication { .. } | DriverKind::InvalidArgument { .. } => ErrorKind::Permanent,
        _ => ErrorKind::Transient,
    }
}

fn by_code(code: i32) -> ErrorKind {
    if TRANSIENT_CODES.contains(&code) {
        ErrorKind::Transient
    } else {
        ErrorKind::Permanent
    }
}

/// The server's error code, if it gave one.
pub fn code(e: &Error) -> Option<i32> {
    match &*e.kind {
        DriverKind::Command(c) => Some(c.code),
        DriverKind::Write(WriteFailure::WriteConcernError(wc)) => Some(wc.code),
        DriverKind::Write(WriteFailure::WriteError(we)) => Some(we.code),
        _ => None,
    }
}

/// What went wrong, for people: the server's message and code name. The driver's own `Display`
/// appends the raw server reply as a hex dump (`server response: Some(RawDocumentBuf { data:
/// "1c01…" })`), which is what `/readyz` and the log showed for a refused collection.
pub fn describe(e: &Error) -> String {
    let named = |message: &str, name: Option<&str>| match name.filter(|n| !n.is_empty()) {
        Some(name) => format!("{message} ({name})"),
        None => message.to_string(),
    };
    let text = match &*e.kind {
        DriverKind::Command(c) => named(&c.message, Some(&c.code_name)),
        DriverKind::Write(WriteFailure::WriteError(we)) => named(&we.message, we.code_name.as_deref()),
        DriverKind::Write(WriteFailure::WriteConcernError(wc)) => named(&wc.message, Some(&wc.code_name)),
        DriverKind::InsertMany(im) => match (&im.write_errors, &im.write_concern_error) {
            (Some(errors), _) if !errors.is_empty() => {
                let first = &errors[0];
                let more = match errors.len() {
                    1 => String::new(),
                    n => format!(" (and {} more documents)", n - 1),
                };
                format!("{}{more}", named(&first.message, first.code_name.as_deref()))
            }
            (_, Some(wc)) => named(&wc.message, Some(&wc.code_name)),
            _ => "the insert failed".to_string(),
        },
        other => other.to_string(),
    };
    // Whatever the kind's own text holds, keep it to a line people can read.
    let mut text: String = text.chars().filter(|c| !c.is_control()).take(500).collect();
    if text.is_empty() {
        text = "no reason given".into();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elections_and_timeouts_pass_authorization_does_not() {
        for code in [10107, 91, 189, 64, 11602] {
            assert_eq!(by_code(code), ErrorKind::Transient, "{code}");
        }
        for code in [13, 18, 121, 8000] {
            assert_eq!(by_code(code), ErrorKind::Permanent, "{code}");
        }
    }
}
