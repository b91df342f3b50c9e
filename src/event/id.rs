//! Event ids: 12 bytes, given once at ingest, so a retried write can be recognised as a duplicate.
//!
//! Live events (socket, HTTP) get a MongoDB ObjectId: 4 bytes of seconds, 5 random bytes chosen
//! once per process, a 3-byte counter. Ids from a tailed file are instead derived from where the
//! line sits (file fingerprint and byte offset), so reading the same line again after a crash
//! produces the same id and the store ignores it.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// This installation's id, part of every derived id (process-wide, like an ObjectId's random part).
static INSTALLATION: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub [u8; 12]);

struct ObjectIdState {
    process_unique: [u8; 5],
    counter: AtomicU32,
}

fn state() -> &'static ObjectIdState {
    static STATE: OnceLock<ObjectIdState> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut seed = [0u8; 8];
        // Without the OS's randomness, fall back to the clock and pid: still unique per process.
        if getrandom::fill(&mut seed).is_err() {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            seed = ((nanos as u64) ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
        }
        ObjectIdState {
            process_unique: [seed[0], seed[1], seed[2], seed[3], seed[4]],
            counter: AtomicU32::new(u32::from_le_bytes([seed[5], seed[6], seed[7], 0])),
        }
    })
}

impl EventId {
    /// A fresh ObjectId.
    pub fn new() -> EventId {
        let s = state();
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as u32;
        let count = s.counter.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&secs.to_be_bytes());
        b[4..9].copy_from_slice(&s.process_unique);
        b[9..].copy_from_slice(&count.to_be_bytes()[1..]);
        EventId(b)
    }

    /// A deterministic id for the line at `offset` in the file whose fingerprint is `fingerprint`:
    /// 6 bytes of the fingerprint's hash, then the offset as 6 big-endian bytes (files up to 256 TiB).
    /// Stable across restarts and releases, and increasing along a file, so the stores' id indexes
    /// grow at their end instead of at random places (measured: a hash here made catch-up 3x slower).
    ///
    /// The hash covers this installation's id too (see [`EventId::set_installation`]): two hosts
    /// tailing files that begin alike (a start-up banner) into one MongoDB must not produce each
    /// other's ids, or one host's lines would be dropped as duplicates of the other's.
    pub fn derived(fingerprint: u64, offset: u64) -> EventId {
        let installation = INSTALLATION.load(Ordering::Relaxed);
        let seed = fnv1a(0xcbf2_9ce4_8422_2325, &installation.to_le_bytes());
        let file = fnv1a(seed, &fingerprint.to_le_bytes());
        let mut b = [0u8; 12];
        b[..6].copy_from_slice(&file.to_be_bytes()[..6]);
        b[6..].copy_from_slice(&offset.to_be_bytes()[2..]);
        EventId(b)
    }

    /// The id of a document the daemon makes for a time window (the monitor's `api_metrics`): the
    /// same window and `what` always give the same id on this installation, so writing a window
    /// again after a restart stores it once.
    pub fn for_window(start_ms: i64, what: &str) -> EventId {
        let installation = INSTALLATION.load(Ordering::Relaxed);
        let mut h = fnv1a(0xcbf2_9ce4_8422_2325, &installation.to_le_bytes());
        h = fnv1a(h, &start_ms.to_le_bytes());
        h = fnv1a(h, what.as_bytes());
        let secs = u32::try_from(start_ms.max(0) / 1000).unwrap_or(u32::MAX);
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&secs.to_be_bytes());
        b[4..].copy_from_slice(&h.to_be_bytes());
        EventId(b)
    }

    /// Sets the installation id that derived ids include; once, at start-up, from the state directory.
    pub fn set_installation(id: u64) {
        INSTALLATION.store(id, Ordering::Relaxed);
    }

    pub fn bytes(&self) -> &[u8; 12] {
        &self.0
    }

    /// The id from its 24 hex digits (either case), as `_id` appears in documents.
    pub fn from_hex(hex: &str) -> Option<EventId> {
        let hex = hex.as_bytes();
        if hex.len() != 24 {
            return None;
        }
        let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        let mut id = [0u8; 12];
        for (byte, pair) in id.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(EventId(id))
    }

    pub fn write_hex(&self, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for byte in self.0 {
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        }
    }
}

impl Default for EventId {
    fn default() -> Self {
        EventId::new()
    }
}

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(seed, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = Vec::with_capacity(24);
        self.write_hex(&mut v);
        f.write_str(std::str::from_utf8(&v).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn object_ids_are_distinct_and_ordered_within_a_second() {
        let ids: Vec<EventId> = (0..10_000).map(|_| EventId::new()).collect();
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        assert_eq!(ids[0].to_string().len(), 24);
    }

    #[test]
    fn ids_round_trip_through_hex() {
        let id = EventId::new();
        assert_eq!(EventId::from_hex(&id.to_string()), Some(id));
        assert_eq!(EventId::from_hex(&id.to_string().to_uppercase()), Some(id));
        for junk in [
            "",
            "65a1b2c3d4e5f60718293a4",
            "65a1b2c3d4e5f60718293a4bb",
            "zz a1b2c3d4e5f60718293a4b",
        ] {
            assert_eq!(EventId::from_hex(junk), None, "{junk}");
        }
    }

    #[test]
    fn derived_ids_increase_along_a_file() {
        assert!(EventId::derived(7, 100) < EventId::derived(7, 101));
        assert!(EventId::derived(7, 1 << 40) < EventId::derived(7, (1 << 40) + 1));
    }

    #[test]
    fn derived_ids_are_stable_and_spread() {
        assert_eq!(EventId::derived(7, 100), EventId::derived(7, 100));
        assert_ne!(EventId::derived(7, 100), EventId::derived(7, 101));
        assert_ne!(EventId::derived(7, 100), EventId::derived(8, 100));
        let ids: HashSet<_> = (0..100_000u64).map(|o| EventId::derived(42, o)).collect();
        assert_eq!(ids.len(), 100_000);
    }
}
