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
