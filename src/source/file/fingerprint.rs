//! File identity: what a file *is*, whatever it is called.
//!
//! A file is known by an FNV-1a fingerprint of its first line (up to `fingerprint_bytes`), not by
//! its name or inode. Names change under rotation (`app.log` → `app.log.1`) and inodes change
//! under a copy (logrotate's copytruncate, a `.gz` made of a rotated file), but the first line
//! travels with the content: a renamed, copied or compressed file keeps its fingerprint, so reading
//! resumes from its checkpoint, and a new or truncated file has a new first line and starts at 0.
//! Device and inode only tell which open handle is which (see the reader).
//!
//! A run of NULs before the first line is not part of it: it is the hole that a truncation leaves
//! under a writer that keeps its offset, and the same content after a hole of another length is
//! the same file. Reads go through `read_at`, so identifying a file being read never moves its
//! read position.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use super::python;

/// What identifies a file's content: the fingerprint of its first line, and where that line starts
/// (past a leading run of NULs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    pub fingerprint: u64,
    pub head_at: u64,
    /// The first line starts with `{`: a JSON-lines file, for `format = "auto"`.
    pub json_head: bool,
}

/// The identity of a plain file just opened. None while it has no complete first line.
pub(super) fn identify_plain(file: &File, max: usize) -> std::io::Result<Option<Identity>> {
    // SEEK_DATA hops over a hole left by a truncation, so it is not read byte by byte.
    let data = match nix::unistd::lseek(file.as_raw_fd(), 0, nix::unistd::Whence::SeekData) {
        Ok(at) => at as u64,
        Err(nix::errno::Errno::ENXIO) => return Ok(None), // nothing but a hole yet
        Err(_) => 0,
    };
    identify_at(file, data, max)
}

/// The identity of a plain file whose content starts at `at` (after a NUL run, if any, is skipped).
pub(super) fn identify_at(file: &File, at: u64, max: usize) -> std::io::Result<Option<Identity>> {
    let mut pos = at;
    let mut reader = ReadAt { file, pos: &mut pos };
    identify_stream(&mut reader, at, max)
}

/// Sequential reads through `read_at`, leaving the file's own position alone.
struct ReadAt<'a> {
    file: &'a File,
    pos: &'a mut u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, *self.pos)?;
        *self.pos += n as u64;
        Ok(n)
    }
}

/// Reads a stream that starts at offset `at`: skips a leading run of NULs, then fingerprints the
/// first line. None while there is no complete first line yet.
pub(super) fn identify_stream(r: &mut impl Read, at: u64, max: usize) -> std::io::Result<Option<Identity>> {
    let mut buf = vec![0u8; max.max(8192)];
    let mut head_at = at;
    let mut head: Vec<u8> = loop {
        let n = read_some(r, &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        match buf[..n].iter().position(|&b| b != 0) {
            Some(i) => {
                head_at += i as u64;
                break buf[i..n.min(i + max)].to_vec();
            }
            None => head_at += n as u64,
        }
    };
    while head.len() < max {
        let n = read_some(r, &mut buf[..max - head.len()])?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let json_head = python::looks_like_json(&head);
    Ok(line_fingerprint(&head, max).map(|fingerprint| Identity {
        fingerprint,
        head_at,
        json_head,
    }))
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// FNV-1a of the first line with its line end, or of the first `max` bytes if the line is longer.
/// A line ending in a lone `\r` is hashed as if it ended in `\r\n`, so its identity is settled as
/// soon as the `\r` is there, whether a `\n` follows later or not (and files that end their lines
/// with `\n` or `\r\n` keep the fingerprints they always had). None while there is neither.
fn line_fingerprint(head: &[u8], max: usize) -> Option<u64> {
    let (line, lone_cr) = match memchr::memchr2(b'\n', b'\r', head) {
        Some(i) if head[i] == b'\n' => (&head[..=i], false),
        Some(i) if head.get(i + 1) == Some(&b'\n') => (&head[..i + 2], false),
        Some(i) => (&head[..=i], true),
        None if head.len() >= max => (head, false),
        None => return None,
    };
    let fnv = |h: u64, b: &u8| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    let h = line.iter().fold(0xcbf2_9ce4_8422_2325u64, fnv);
    Some(if lone_cr { fnv(h, &b'\n') } else { h })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_covers_the_first_line_whatever_its_line_end_and_skips_a_leading_nul_run() {
        let id = |bytes: &[u8]| identify_stream(&mut &bytes[..], 0, 16).unwrap();
        let fp = |bytes: &[u8]| id(bytes).map(|i| i.fingerprint);
        assert_eq!(fp(b"abc\ndef\n"), fp(b"abc\nxyz"), "only the first line counts");
        assert_eq!(fp(b"abc\r\ndef"), fp(b"abc\r\nxyz"));
        assert_eq!(fp(b"abc\rdef"), fp(b"abc\rxyz"), "a lone \\r ends the first line");
        assert_eq!(fp(b"abc\r"), fp(b"abc\r\ndef"), "settled at the \\r, \\n or not");
        assert_eq!(fp(b"abc\rdef"), fp(b"abc\r\n"));
        assert_ne!(fp(b"abc\r"), fp(b"abc\n"));
        assert_eq!(fp(b"abc"), None);
        assert!(fp(b"0123456789abcdefXYZ").is_some(), "a first line over the limit");
        let holed = [&[0u8; 20000][..], b"abc\n"].concat();
        assert_eq!(
            id(&holed),
            Some(Identity {
                fingerprint: fp(b"abc\n").unwrap(),
                head_at: 20000,
                json_head: false,
            })
        );
        assert_eq!(id(&[0u8; 100]), None);
    }
}
