//! The SQLite file the daemon keeps in `state_dir`: the embedded store, and beside it (or alone,
//! with MongoDB) the outbox, the webhook queues and the silences. One way to open it for all of
//! them: never through a symlink, with a busy timeout, keeping the WAL's files, and with errors that
//! say what to do.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// SQLite's `synchronous`: what a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// A crash of the daemon.
    Normal,
    /// Also a power loss, at a cost in speed.
    Full,
}

impl Synchronous {
    pub fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Opens a connection that never follows a symlink and keeps the WAL's files when it closes.
pub(crate) fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    persist_wal(&conn);
    Ok(conn)
}

/// Turns SQLite's terse open errors into what happened and what to do.
pub(super) fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let file = path.display();
    let dir = path.parent().map_or_else(|| ".".into(), |d| d.display().to_string());
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => StoreError::permanent(format!(
            "{file} is not an SQLite database (or it is damaged): {e}; move it aside (the daemon then \
             creates a new one) or point embedded.file elsewhere"
        )),
        Some(rusqlite::ErrorCode::CannotOpen) => StoreError::permanent(format!(
            "cannot open {file}: {e}; check that {dir} exists and that this user (uid {}) may write in it",
            nix::unistd::geteuid()
        )),
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => StoreError::permanent(format!(
            "{file} is damaged: {e}; stop the daemon, move it aside (keep it for recovery with `sqlite3 .recover`), and start again"
        )),
        _ => StoreError::permanent(format!("cannot open the embedded store {file}: {e}")),
    }
}

/// Keeps `-wal` and `-shm` when the last connection closes (see the module documentation).
fn persist_wal(conn: &Connection) {
    let mut on: std::ffi::c_int = 1;
    // SAFETY: the handle is a live connection owned by `conn`; the file control reads and writes
    // one int, and "main" is a NUL-terminated name of the main database.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut on as *mut std::ffi::c_int).cast(),
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        tracing::debug!("cannot make the WAL persistent (SQLite code {rc})");
    }
}
