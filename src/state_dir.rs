//! The state directory: the embedded store, the outbox, checkpoints and the installation's identity.
//!
//! It holds every message the app logged, so it is private to the daemon (0750, files 0640), taken
//! by one daemon at a time (an `flock` on `lock`), and nothing in it is opened through a symlink that
//! someone else could have planted.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The open state directory; holds its lock until dropped.
pub struct StateDir {
    path: PathBuf,
    installation: u64,
    _lock: Flock<File>,
}

impl StateDir {
    /// Creates the directory if needed, locks it, and reads (or creates) the installation id.
    pub fn open(path: &Path) -> Result<StateDir, String> {
        create_private_dir(path)?;
        let lock_path = path.join("lock");
        let file = open_private(&lock_path, OpenOptions::new().read(true).write(true).create(true))
            .map_err(|e| format!("cannot open the lock file {}: {e}", lock_path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                };
                return Err(format!(
                    "another lngpt-collector{who} is using the state directory {}; stop it, or give this one its own state_dir",
                    path.display()
                ));
            }
        };
        // Who holds the lock, for the message above; advisory only.
        let _ = lock.set_len(0);
        let _ = write!(*lock, "{}", std::process::id());
        let installation = installation_id(path)?;
        Ok(StateDir {
            path: path.to_path_buf(),
            installation,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A random number made once per state directory and kept: what tells this installation's
    /// derived event ids apart from another host's, when several collectors share one MongoDB.
    pub fn installation(&self) -> u64 {
        self.installation
    }
}

/// Creates `path` (0750), or warns when an existing one lets every user in.
fn create_private_dir(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            // A symlinked state_dir set up by the administrator is fine; check what it points to.
            let target = std::fs::metadata(path).map_err(|e| {
                format!("state_dir {} is a symlink that cannot be followed: {e}", path.display())
            })?;
            check_dir(path, &target)
        }
        Ok(meta) => check_dir(path, &meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(path)
            .map_err(|e| {
                format!(
                    "cannot create state_dir {}: {e}; create it (owned by the daemon's user) or point state_dir elsewhere",
                    path.display()
                )
            }),
        Err(e) => Err(format!("cannot inspect state_dir {}: {e}", path.display())),
    }
}

fn check_dir(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    if !meta.is_dir() {
        return Err(format!(
            "state_dir {} exists and is not a directory; point state_dir at a directory",
            path.display()
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        tracing::warn!(
            "state_dir {} is open to every user (mode {mode:04o}) and holds every stored message; run chmod 750 on it",
            path.display()
        );
    }
    Ok(())
}

/// Opens a state file without following a symlink at its name, created 0640.
pub fn open_private(path: &Path, options: &mut OpenOptions) -> std::io::Result<File> {
    options
        .mode(0o640)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// Refuses a state file that is a symlink (the store's files are opened by SQLite, which would
/// follow it).
pub fn refuse_symlink(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(format!(
            "{} is a symlink; the daemon does not follow symlinks in its state directory (remove it)",
            path.display()
        )),
        _ => Ok(()),
    }
}

fn installation_id(dir: &Path) -> Result<u64, String> {
    let path = dir.join("installation-id");
    let parse = |text: &str| u64::from_str_radix(text.trim(), 16).ok();
    match open_private(&path, OpenOptions::new().read(true)) {
        Ok(mut f) => {
            let mut text = String::new();
            f.read_to_string(&mut text)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if let Some(id) = parse(&text) {
                return Ok(id);
            }
            Err(format!(
                "{} is corrupt ({text:?}); it identifies this installation's file lines, so it is not replaced \
                 silently: restore it from a backup, or delete it if this state directory is new",
                path.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for the installation id: {e}"))?;
            let id = u64::from_le_bytes(bytes);
            let tmp = dir.join(format!("installation-id.{}.tmp", std::process::id()));
            let mut f = open_private(&tmp, OpenOptions::new().write(true).create_new(true))
                .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
            writeln!(f, "{id:016x}")
                .and_then(|_| f.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(format!("cannot open {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_daemon_per_directory_and_the_id_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateDir::open(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750);
        let e = StateDir::open(&state).err().unwrap();
        assert!(
            e.contains("another lngpt-collector") && e.contains(&std::process::id().to_string()),
            "{e}"
        );
        let id = first.installation();
        drop(first);
        assert_eq!(
            StateDir::open(&state).unwrap().installation(),
            id,
            "kept across restarts"
        );
        let other = StateDir::open(&dir.path().join("other")).unwrap();
        assert_ne!(other.installation(), id);
    }

    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "precious").unwrap();
        let link = dir.path().join("state-file");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_private(&link, OpenOptions::new().write(true).truncate(true)).is_err());
        assert!(refuse_symlink(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    }
}
