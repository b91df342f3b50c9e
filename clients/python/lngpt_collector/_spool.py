"""The spool: records waiting on disk for the collector, one JSON line each.

A spool file belongs to one process at a time, which holds an exclusive ``flock`` on it for as long
as it has it open. That is how processes sharing one spool directory (gunicorn or multiprocessing
workers, a restarted app) stay out of each other's way: a file whose lock can be taken was left by a
process that is gone, and is *adopted* — replayed and then deleted — by whichever process takes it.

The first line is a fixed-width header, rewritten in place, that says up to which byte the collector
has confirmed the lines durable::

    {"type":"sync","id":{"lngpt_spool":1,"confirmed":                 812}}

It is a valid sync line, so the collector never stores it, and the file stays a plain JSON-lines file
that ``lngpt-collector send`` can take. Lines are only ever appended after the header; the file is
deleted once everything in it is confirmed. The owner moves ``confirmed`` only after the collector
answered a sync line sent after those bytes, so a crash at any point replays unconfirmed lines (and,
at worst, the last confirmed chunk if the crash falls between the answer and the header's rewrite).
"""

import errno
import fcntl
import os
import re

SUFFIX = ".spool"
_HEADER_FORMAT = '{"type":"sync","id":{"lngpt_spool":1,"confirmed":%20d}}\n'
HEADER_LEN = len(_HEADER_FORMAT % 0)
_HEADER_RE = re.compile(rb'^\{"type":"sync","id":\{"lngpt_spool":1,"confirmed": *(\d+)\}\}\n$')


def _header(confirmed):
    return (_HEADER_FORMAT % confirmed).encode("ascii")


class SpoolError(Exception):
    """A spool file could not be created, written or read (the reason is the message)."""


class Spool:
    """One locked spool file: append at ``end``, read from any offset, confirm a prefix, delete."""

    def __init__(self, path, fd, confirmed, end):
        self.path = path
        self.fd = fd
        self.confirmed = confirmed
        self.end = end
        #: Records in the file that this process added, for ``Collector.flush``: (end offset, seq).
        self.marks = []

    # -- opening ----------------------------------------------------------------------------------

    @classmethod
    def create(cls, directory, name_hint):
        """A new, empty spool file in ``directory`` (created 0750 if missing), locked by this process."""
        try:
            os.makedirs(directory, mode=0o750, exist_ok=True)
            path = os.path.join(directory, "lngpt-collector-%s-%s%s" % (name_hint, os.urandom(4).hex(), SUFFIX))
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
        except OSError as e:
            raise SpoolError("cannot create a spool file in %s: %s" % (directory, e))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _write_all(fd, _header(HEADER_LEN), 0)
        except OSError as e:
            os.close(fd)
            _unlink(path)
            raise SpoolError("cannot write the spool file %s: %s" % (path, e))
        return cls(path, fd, HEADER_LEN, HEADER_LEN)

    @classmethod
    def adopt(cls, directory, on_problem):
        """The first spool file in ``directory`` that no live process holds and that still has
        unconfirmed lines, locked by this process; None if there is none. Fully confirmed leftovers
        are deleted on the way. ``on_problem(message, torn_records)`` hears of damaged files."""
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX))
        except OSError:
            return None
        for name in names:
            path = os.path.join(directory, name)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # its owner is alive
                continue
            try:
                spool = cls._take_over(path, fd, on_problem)
            except OSError as e:
                on_problem("cannot read the spool file %s: %s" % (path, e), 0)
                spool = None
            if spool is not None:
                return spool
            os.close(fd)
        return None

    @staticmethod
    def adoptable(directory):
        """Whether ``directory`` holds a spool file that no live process holds (a quick look, for
        starting the worker at configuration time: ``adopt`` decides for real)."""
        try:
            names = [n for n in os.listdir(directory) if n.endswith(SUFFIX)]
        except OSError:
            return False
        for name in names:
            try:
                fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError:
                continue  # its owner is alive
            finally:
                os.close(fd)  # closing lets go of the lock, if it was taken
        return False

    @classmethod
    def _take_over(cls, path, fd, on_problem):
        st = os.fstat(fd)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            return None  # its owner finished and deleted it while we waited for the lock
        if st.st_nlink == 0 or (current.st_dev, current.st_ino) != (st.st_dev, st.st_ino):
            return None
        head = os.pread(fd, HEADER_LEN, 0)
        match = _HEADER_RE.match(head)
        if not match:
            if st.st_size == 0:
                _unlink(path)  # created, never written: its creator died at once
            else:
                bad = path + ".bad"
                os.rename(path, bad)
                on_problem("%s is not a spool file this client wrote; renamed to %s" % (path, bad), 0)
            return None
        confirmed = max(HEADER_LEN, int(match.group(1)))
        end = st.st_size
        # A line torn by a crash mid-write is cut off: it would only be rejected.
        good = _last_line_end(fd, HEADER_LEN, end)
        if good < end:
            os.ftruncate(fd, good)
            on_problem("cut a torn last line (%d bytes) off %s" % (end - good, path), 1)
            end = good
        if confirmed >= end:
            _unlink(path)
            return None
        return cls(path, fd, confirmed, end)

    # -- use --------------------------------------------------------------------------------------

    def append(self, data):
        """Writes ``data`` (whole lines) at the end; on failure the file is cut back and SpoolError raised."""
        try:
            _write_all(self.fd, data, self.end)
        except OSError as e:
            try:
                os.ftruncate(self.fd, self.end)
            except OSError:
                pass
            raise SpoolError("cannot write to the spool file %s: %s" % (self.path, e))
        self.end += len(data)

    def read(self, offset, max_bytes):
        """Whole lines from ``offset``: at most ``max_bytes`` unless the first line alone is longer."""
        want = min(max_bytes, self.end - offset)
        if want <= 0:
            return b""
        data = os.pread(self.fd, want, offset)
        cut = data.rfind(b"\n") + 1
        if cut > 0:
            return data[:cut]
        # One line longer than max_bytes: read to its end.
        pos = offset + len(data)
        while pos < self.end:
            more = os.pread(self.fd, min(1 << 20, self.end - pos), pos)
            if not more:
                break
            nl = more.find(b"\n")
            if nl >= 0:
                return data + more[: nl + 1]
            data += more
            pos += len(more)
        return data

    def offset_after_lines(self, offset, count):
        """The offset just past ``count`` lines starting at ``offset``."""
        pos = offset
        while count > 0 and pos < self.end:
            data = os.pread(self.fd, min(1 << 16, self.end - pos), pos)
            if not data:
                break
            start = 0
            while count > 0:
                nl = data.find(b"\n", start)
                if nl < 0:
                    break
                start = nl + 1
                count -= 1
            pos += start if count == 0 else len(data)
        return pos

    def confirm(self, offset):
        """Records that the collector holds every line before ``offset``; returns the last seq of
        this process's records that are now confirmed, or None."""
        if offset <= self.confirmed:
            return None
        self.confirmed = offset
        try:
            _write_all(self.fd, _header(offset), 0)
        except OSError:
            pass  # at worst the lines are sent again after a crash
        seq = None
        while self.marks and self.marks[0][0] <= offset:
            mark = self.marks.pop(0)[1]
            if mark is not None:
                seq = mark
        return seq

    @property
    def unconfirmed(self):
        return self.end - self.confirmed

    @property
    def drained(self):
        return self.confirmed >= self.end

    def delete(self):
        """Removes the file (everything in it is confirmed) and lets go of it."""
        _unlink(self.path)
        self.close()

    def close(self, sync=False):
        """Lets go of the file, keeping it for the next process (or this one) to replay."""
        if self.fd is None:
            return
        try:
            if sync:
                os.fsync(self.fd)
        except OSError:
            pass
        try:
            os.close(self.fd)
        except OSError:
            pass
        self.fd = None

    def forget_in_child(self):
        """After fork(): close the child's copy without unlocking the parent's file."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


def _write_all(fd, data, offset):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[n:]
        offset += n


def _last_line_end(fd, start, end):
    """The offset just past the last newline in [start, end), or ``start``."""
    pos = end
    while pos > start:
        size = min(1 << 16, pos - start)
        data = os.pread(fd, size, pos - size)
        nl = data.rfind(b"\n")
        if nl >= 0:
            return pos - size + nl + 1
        pos -= size
    return start


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass
