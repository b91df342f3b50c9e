//! Splits a byte stream into lines, bounded in memory.
//!
//! A line ends at `\n`, `\r\n` or a lone `\r` (old Mac-style writers): every one of them, or a
//! line that never ends, would otherwise glue the lines behind it into one reject. `\r\n` needs no
//! look-ahead: its `\n` ends an empty line, and empty lines are never emitted, so a pair split
//! across reads is still one line end and offsets stay exact.
//!
//! Complete lines inside one read are handed out as slices of that read (no copy); only a line
//! that spans reads is gathered in `pending`. A line longer than `max_line` is not buffered: its
//! first [`MAX_RAW_BYTES`] are kept for the reject and the rest is skipped up to the next line end.
//! (A text log's record keeps up to `max_line` bytes of it instead: see
//! [`LineDecoder::keeping_long_line_heads`].)

use memchr::memchr2;

use crate::event::MAX_RAW_BYTES;

#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A line without its line end (`\n`, `\r\n` or `\r`). Never blank, unless the decoder
    /// keeps blank lines.
    Line(&'a [u8]),
    /// A line over the limit: its beginning and its full length in bytes.
    TooLong { head: &'a [u8], len: usize },
}

pub struct LineDecoder {
    max_line: usize,
    pending: Vec<u8>,
    /// Set while skipping the rest of an over-long line.
    overlong: Option<Overlong>,
    /// How much of an over-long line is handed out: [`MAX_RAW_BYTES`], or `max_line`.
    head_max: usize,
    /// Stream offset of the next byte fed.
    pos: u64,
    /// Stream offset where the held-back line (pending or over-long) began.
    held_start: u64,
    /// Skip NUL bytes where a line would start (see [`LineDecoder::skipping_nul_runs`]).
    skip_nul: bool,
    /// NUL bytes skipped so far.
    nul_skipped: u64,
    /// Emit blank lines too (see [`LineDecoder::keeping_blank_lines`]).
    keep_blank: bool,
    /// The last line ended in `\r`: an empty line ended by `\n` right after it is that `\r\n`.
    after_cr: bool,
    /// Set after [`LineDecoder::cut`]: the rest of the cut line is skipped up to its line end.
    skip_rest: bool,
}

struct Overlong {
    head: Vec<u8>,
    /// The most of the line `head` keeps.
    head_max: usize,
    len: usize,
}

impl Overlong {
    fn new(first: &[u8], second: &[u8], head_max: usize) -> Overlong {
        let mut o = Overlong {
            head: Vec::with_capacity(head_max.min(first.len() + second.len())),
            head_max,
            len: 0,
        };
        o.add(first);
        o.add(second);
        o
    }

    fn add(&mut self, part: &[u8]) {
        let room = self.head_max.saturating_sub(self.head.len());
        self.head.extend_from_slice(&part[..part.len().min(room)]);
        self.len += part.len();
    }
}

/// Capacity kept for `pending` after a long line has passed, so one big line does not pin memory.
const PENDING_KEEP: usize = 64 * 1024;

impl LineDecoder {
    pub fn new(max_line: usize) -> LineDecoder {
        Self::starting_at(max_line, 0)
    }

    /// A decoder whose first byte sits at `offset` in the stream (resuming a file).
    pub fn starting_at(max_line: usize, offset: u64) -> LineDecoder {
        LineDecoder {
            max_line,
            pending: Vec::new(),
            overlong: None,
            head_max: MAX_RAW_BYTES,
            pos: offset,
            held_start: offset,
            skip_nul: false,
            nul_skipped: 0,
            keep_blank: false,
            after_cr: false,
            skip_rest: false,
        }
    }

    /// Emits blank (empty or all-whitespace) lines as well, for text logs whose records span lines:
    /// a blank line inside a traceback or a message is part of it. A `\r\n` is still one line end,
    /// also when split across reads.
    pub fn keeping_blank_lines(mut self) -> LineDecoder {
        self.keep_blank = true;
        self
    }

    /// Hands out the first `max_line` bytes of an over-long line rather than the first
    /// [`MAX_RAW_BYTES`]: a text log's record keeps its lines up to `max_line` bytes in all, a
    /// record of one long line too, where a rejected line keeps what a reject may hold. Memory
    /// stays bounded by `max_line`, as for a line being gathered.
    pub fn keeping_long_line_heads(mut self) -> LineDecoder {
        self.head_max = self.max_line.max(MAX_RAW_BYTES);
        self
    }

    /// Skips runs of NUL bytes before the first byte of a line. A file truncated in place
    /// (copytruncate) under a writer that keeps its offset gets a hole of NULs up to that offset
    /// before the next line; without this the line would be glued to the hole and rejected. NULs
    /// inside a line are kept (UTF-16 text has them), so such a line is still rejected as it is.
    pub fn skipping_nul_runs(mut self) -> LineDecoder {
        self.skip_nul = true;
        self
    }

    /// Stream offset of the next byte to be fed.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// NUL bytes skipped so far (with `skipping_nul_runs`).
    pub fn nul_bytes_skipped(&self) -> u64 {
        self.nul_skipped
    }

    /// Bytes of an incomplete last line held back, waiting for their newline.
    pub fn pending_len(&self) -> usize {
        self.overlong.as_ref().map_or(self.pending.len(), |o| o.len)
    }

    /// Bytes of memory the held-back line takes: all of a pending line, the kept head of an
    /// over-long one (what the budget must be charged, not the line's length).
    pub fn held_bytes(&self) -> usize {
        self.overlong.as_ref().map_or(self.pending.len(), |o| o.head.len())
    }

    /// Whether a line is held back that still grows as bytes come (not an over-long one, whose
    /// kept head is full, nor one being skipped).
    pub fn line_growing(&self) -> bool {
        self.overlong.is_none() && !self.pending.is_empty()
    }

    /// Gives up the held-back line now: returns its beginning (at most [`MAX_RAW_BYTES`]) and its
    /// length so far, frees its memory, and skips the rest of it up to its line end. None when
    /// nothing is held.
    pub fn cut(&mut self) -> Option<(Vec<u8>, usize)> {
        let cut = if let Some(o) = self.overlong.take() {
            (o.head, o.len)
        } else if !self.pending.is_empty() {
            let len = self.pending.len();
            let head = self.pending[..len.min(MAX_RAW_BYTES)].to_vec();
            self.pending = Vec::new();
            (head, len)
        } else {
            return None;
        };
        self.skip_rest = true;
        Some(cut)
    }

    /// Stream offset just past the last newline seen: where reading would resume without losing or
    /// repeating a line.
    pub fn committed_offset(&self) -> u64 {
        self.pos - self.pending_len() as u64
    }

    fn at_line_start(&self) -> bool {
        self.pending.is_empty() && self.overlong.is_none()
    }

    /// Feeds bytes; `emit` is called once per complete, non-blank line.
    pub fn feed(&mut self, input: &[u8], emit: &mut impl FnMut(Frame<'_>)) {
        self.feed_at(input, &mut |frame, _| emit(frame));
    }

    /// Like `feed`, also giving each line's offset in the stream.
    pub fn feed_at(&mut self, mut input: &[u8], emit: &mut impl FnMut(Frame<'_>, u64)) {
        loop {
            if self.skip_nul && input.first() == Some(&0) && self.at_line_start() {
                let nuls = input.iter().position(|&b| b != 0).unwrap_or(input.len());
                input = &input[nuls..];
                self.pos += nuls as u64;
                self.nul_skipped += nuls as u64;
            }
            let Some(nl) = memchr2(b'\n', b'\r', input) else {
                break;
            };
            let part = &input[..nl];
            let ended_by_cr = input[nl] == b'\r';
            input = &input[nl + 1..];
            if std::mem::take(&mut self.skip_rest) {
                // The rest of a cut line: already reported.
                self.pos += nl as u64 + 1;
                self.after_cr = ended_by_cr;
                continue;
            }
            let at_start = self.at_line_start();
            let line_start = if at_start { self.pos } else { self.held_start };
            self.pos += nl as u64 + 1;
            let crlf_tail = std::mem::replace(&mut self.after_cr, ended_by_cr) && !ended_by_cr;
            if self.keep_blank && crlf_tail && at_start && part.is_empty() {
                // The `\n` of a `\r\n`, not an empty line.
                continue;
            }
            if let Some(mut o) = self.overlong.take() {
                o.add(part);
                emit(
                    Frame::TooLong {
                        head: &o.head,
                        len: o.len,
                    },
                    line_start,
                );
            } else if self.pending.is_empty() {
                if part.len() > self.max_line {
                    emit(
                        Frame::TooLong {
                            head: &part[..part.len().min(self.head_max)],
                            len: part.len(),
                        },
                        line_start,
                    );
                } else {
                    self.emit_line(part, line_start, emit);
                }
            } else if self.pending.len() + part.len() > self.max_line {
                let o = Overlong::new(&self.pending, part, self.head_max);
                self.clear_pending();
                emit(
                    Frame::TooLong {
                        head: &o.head,
                        len: o.len,
                    },
                    line_start,
                );
            } else {
                let mut pending = std::mem::take(&mut self.pending);
                pending.extend_from_slice(part);
                self.emit_line(&pending, line_start, emit);
                pending.clear();
                self.pending = pending;
                self.clear_pending();
            }
        }
        if input.is_empty() {
            return;
        }
        self.after_cr = false;
        if self.skip_rest {
            self.pos += input.len() as u64;
            return;
        }
        if self.at_line_start() {
            self.held_start = self.pos;
        }
        self.pos += input.len() as u64;
        if let Some(o) = self.overlong.as_mut() {
            o.add(input);
        } else if self.pending.len() + input.len() > self.max_line {
            self.overlong = Some(Overlong::new(&self.pending, input, self.head_max));
            self.clear_pending();
        } else {
            self.pending.extend_from_slice(input);
        }
    }

    /// End of stream: a last line without a newline still counts (a client wrote and closed).
    pub fn finish(&mut self, emit: &mut impl FnMut(Frame<'_>)) {
        self.skip_rest = false;
        let start = self.held_start;
        if let Some(o) = self.overlong.take() {
            emit(Frame::TooLong {
                head: &o.head,
                len: o.len,
            });
        } else if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.emit_line(&pending, start, &mut |frame, _| emit(frame));
        }
    }

    fn emit_line(&self, line: &[u8], start: u64, emit: &mut impl FnMut(Frame<'_>, u64)) {
        if self.keep_blank || !line.iter().all(u8::is_ascii_whitespace) {
            emit(Frame::Line(line), start);
        }
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
        if self.pending.capacity() > PENDING_KEEP {
            self.pending.shrink_to(PENDING_KEEP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut d = LineDecoder::new(max);
        let mut out = Vec::new();
        let mut emit = |f: Frame<'_>| {
            out.push(match f {
                Frame::Line(l) => String::from_utf8_lossy(l).into_owned(),
                Frame::TooLong { head, len } => format!("TOOLONG({len}, {})", head.len()),
            })
        };
        for c in chunks {
            d.feed(c, &mut emit);
        }
        d.finish(&mut emit);
        out
    }

    #[test]
    fn splits_lines_across_reads_and_strips_crlf() {
        assert_eq!(decode(100, &[b"ab", b"c\r\nde", b"f\n\n  \r\ng"]), ["abc", "def", "g"]);
    }

    #[test]
    fn over_long_lines_are_reported_once_and_reading_resumes() {
        assert_eq!(decode(4, &[b"ok\n0123456789\nok2\n"]), ["ok", "TOOLONG(10, 10)", "ok2"]);
        assert_eq!(decode(4, &[b"01", b"23", b"45", b"67\nok\n"]), ["TOOLONG(8, 8)", "ok"]);
        let big = vec![b'x'; MAX_RAW_BYTES * 3];
        assert_eq!(
            decode(1024, &[&big, b"\nok\n"]),
            [format!("TOOLONG({}, {MAX_RAW_BYTES})", big.len()), "ok".into()]
        );
    }

    #[test]
    fn line_offsets_and_the_committed_offset_follow_the_stream() {
        let mut d = LineDecoder::starting_at(100, 1000);
        let mut starts = Vec::new();
        d.feed_at(b"ab\n\ncd", &mut |_, at| starts.push(at));
        assert_eq!(
            d.committed_offset(),
            1004,
            "past the last newline, not the partial line"
        );
        d.feed_at(b"e\nfg\n", &mut |_, at| starts.push(at));
        assert_eq!(starts, [1000, 1004, 1008]);
        assert_eq!(d.committed_offset(), 1011);
    }

    #[test]
    fn a_lone_carriage_return_ends_a_line_and_crlf_split_across_reads_is_one_line_end() {
        assert_eq!(decode(100, &[b"a\rb\rc\r"]), ["a", "b", "c"]);
        assert_eq!(decode(100, &[b"a\r", b"\nb\r", b"\r\n", b"c\n"]), ["a", "b", "c"]);
        assert_eq!(
            decode(4, &[b"0123456789\rok\r"]),
            ["TOOLONG(10, 10)", "ok"],
            "an over-long line ends at its \\r"
        );
        // Offsets: each line's start, and the committed offset between the \r and \n of a pair.
        let mut d = LineDecoder::starting_at(100, 10);
        let mut starts = Vec::new();
        d.feed_at(b"ab\r", &mut |_, at| starts.push(at));
        assert_eq!(d.committed_offset(), 13);
        d.feed_at(b"\ncd\re", &mut |_, at| starts.push(at));
        assert_eq!(d.committed_offset(), 17);
        d.feed_at(b"f\r\n", &mut |_, at| starts.push(at));
        assert_eq!(starts, [10, 14, 17]);
        assert_eq!(d.committed_offset(), 21);
    }

    #[test]
    fn nul_runs_before_a_line_are_skipped_and_counted_but_nuls_inside_a_line_are_kept() {
        let mut d = LineDecoder::starting_at(8, 100).skipping_nul_runs();
        let mut got = Vec::new();
        let mut emit = |f: Frame<'_>, at: u64| {
            got.push((
                at,
                match f {
                    Frame::Line(l) => l.to_vec(),
                    Frame::TooLong { len, .. } => format!("TOOLONG({len})").into_bytes(),
                },
            ))
        };
        // A run longer than the line limit, across reads, then a line; NULs inside lines stay.
        d.feed_at(&[0; 5], &mut emit);
        assert_eq!(d.committed_offset(), 105, "skipped NULs are passed over");
        d.feed_at(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'a', 0, b'b', b'\n'], &mut emit);
        d.feed_at(b"c\n\0\0d\n", &mut emit);
        assert_eq!(
            got,
            [(115, b"a\0b".to_vec()), (119, b"c".to_vec()), (123, b"d".to_vec())]
        );
        assert_eq!(d.nul_bytes_skipped(), 17);
        // Without the option (the socket), NULs are bytes like any other.
        assert_eq!(decode(100, &[b"\0\0x\n"]), ["\0\0x"]);
    }

    #[test]
    fn blank_lines_are_kept_on_request_and_crlf_is_still_one_line_end_across_reads() {
        let keep = |chunks: &[&[u8]]| {
            let mut d = LineDecoder::starting_at(100, 0).keeping_blank_lines();
            let mut out = Vec::new();
            for c in chunks {
                d.feed_at(c, &mut |f, at| {
                    if let Frame::Line(l) = f {
                        out.push((at, String::from_utf8_lossy(l).into_owned()));
                    }
                });
            }
            (out, d.committed_offset())
        };
        let lines = |v: (Vec<(u64, String)>, u64)| v.0.into_iter().map(|(_, l)| l).collect::<Vec<_>>();
        assert_eq!(lines(keep(&[b"a\n\n  \nb\n"])), ["a", "", "  ", "b"]);
        assert_eq!(lines(keep(&[b"a\r\n\r\nb\r\n"])), ["a", "", "b"]);
        assert_eq!(lines(keep(&[b"a\r", b"\n", b"\r", b"\nb\r", b"\n"])), ["a", "", "b"]);
        assert_eq!(lines(keep(&[b"a\r\rb\r"])), ["a", "", "b"], "lone \\r line ends");
        assert_eq!(
            lines(keep(&[b"a\n\rb\n"])),
            ["a", "", "b"],
            "\\n then \\r: an empty line"
        );
        let (got, committed) = keep(&[b"x\r\n\r\ny\n"]);
        assert_eq!(got, [(0, "x".to_string()), (3, String::new()), (5, "y".to_string())]);
        assert_eq!(committed, 7);
        // Without the option, blank lines are skipped as always.
        assert_eq!(decode(100, &[b"a\r\n\r\n\nb\n"]), ["a", "b"]);
    }

    #[test]
    fn long_line_heads_are_kept_up_to_the_line_limit_on_request() {
        let heads = |d: LineDecoder, chunks: &[&[u8]]| {
            let mut d = d;
            let mut out = Vec::new();
            for c in chunks {
                d.feed_at(c, &mut |f, _| {
                    if let Frame::TooLong { head, len } = f {
                        out.push((head.len(), len));
                    }
                });
            }
            out
        };
        let max = 2 * MAX_RAW_BYTES;
        let big = vec![b'x'; 3 * MAX_RAW_BYTES];
        let (half, rest) = big.split_at(MAX_RAW_BYTES / 2);
        for chunks in [vec![&big[..], &b"\n"[..]], vec![half, rest, &b"\n"[..]]] {
            assert_eq!(
                heads(LineDecoder::new(max).keeping_long_line_heads(), &chunks),
                [(max, big.len())],
                "in one read or across reads"
            );
            assert_eq!(heads(LineDecoder::new(max), &chunks), [(MAX_RAW_BYTES, big.len())]);
        }
    }

    #[test]
    fn a_cut_line_frees_its_memory_and_its_rest_is_skipped_to_the_line_end() {
        let mut d = LineDecoder::new(100);
        let mut out = Vec::new();
        d.feed(b"ok\npart", &mut |f| out.push(format!("{f:?}")));
        assert_eq!((d.held_bytes(), d.line_growing()), (4, true));
        assert_eq!(d.cut(), Some((b"part".to_vec(), 4)));
        assert_eq!((d.held_bytes(), d.line_growing()), (0, false));
        assert_eq!(d.cut(), None, "nothing left to cut");
        d.feed(b"rest of it", &mut |f| out.push(format!("{f:?}")));
        d.feed(b" still\nnext\n", &mut |f| out.push(format!("{f:?}")));
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[1].contains("[110, 101, 120, 116]"), "{out:?}");
        assert_eq!(d.committed_offset(), 29);
        // An over-long line holds only its kept head.
        let mut d = LineDecoder::new(1024);
        d.feed(&vec![b'x'; MAX_RAW_BYTES * 2], &mut |_| {});
        assert_eq!((d.held_bytes(), d.pending_len()), (MAX_RAW_BYTES, MAX_RAW_BYTES * 2));
    }

    #[test]
    fn a_line_at_exactly_the_limit_is_fine() {
        assert_eq!(decode(4, &[b"ab", b"cd\n"]), ["abcd"]);
    }
}
