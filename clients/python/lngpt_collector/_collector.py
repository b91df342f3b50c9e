"""The collector client: a bounded in-memory queue, one background thread, a spool on disk.

Why it is built this way:

- ``send()`` (and so ``CollectorHandler.emit()``) runs on the app's threads. It appends the event to a
  deque under a lock, nothing else: no system call except a one-byte write to a pipe that wakes the
  worker when it sleeps idle or the queue runs long. A full queue drops its oldest record and counts it.
  So the app never waits for the collector, whether it runs, is stopped or is stalled.
- Memory is bounded in bytes too (``max_queue_bytes``): ``send()`` estimates what a record will take as
  JSON (strings by their length, never much less than their UTF-8 size; a walk of at most a few hundred
  values) and drops it, counted, when it would take what the process holds for sending past the bound —
  records queued, encoded lines waiting, chunks sent and not confirmed. A count alone let 10,000 records
  of 100 KB hold a gigabyte while the collector was away and the spool could not be written.
- The worker, not ``send()``, encodes events as JSON: that halves what ``emit()`` costs the app's thread
  (measured: p99 from about 25 to 12 µs on a loaded two-core machine). The worker takes the queue every
  ``GATHER_INTERVAL``, so it takes the GIL from the app's threads a few times a second, not per record.
- One worker thread per process does every I/O: it writes records to the daemon's socket in chunks,
  each followed by a sync line (``{"type":"sync","id":…}``), and forgets a chunk only when the daemon
  has answered that sync line — which it does once everything before it is durable.
- Chunks are pipelined: lines are written as soon as the window has room (half of ``max_queue_bytes``,
  at most 8 MiB sent and not confirmed), and each chunk is confirmed by its own answer, in order. A
  chunk's sync line goes out when no earlier one waits for its answer, or when the chunk is full; until
  then the chunk stays open and takes the lines that come, so at a trickle each record is confirmed
  within a round trip. "Full" adapts to the daemon (``_adapt``): a 32nd of the window while it reads on
  past sync lines that wait for their answers (many small chunks in flight, memory released early),
  doubling up to half the window while it stops reading at each sync line until that line's batch is
  durable (up to its ``max_wait``, 200 ms): then every sync line costs a wait, and a fixed 64 KiB per
  sync line had capped one process at about 300 KB/s. The lines are written with ``sendmsg()`` straight
  from the encoded records: no joined copy is held beside them.
- When the daemon cannot be reached, or stops answering (``stall_timeout``), records go to a spool
  file (``_spool.py``) instead, and the chunks already sent but not confirmed are written there first.
  Once the daemon answers again, the spool is sent from its last confirmed byte, chunk by chunk, and
  deleted when the last chunk is confirmed; then records go straight to the socket again.
- While a connection is stalled it is kept open, and no second one is opened: the daemon may yet read
  what sits in the socket's buffer, and sending it again over another connection would store it twice.
- At exit (``atexit``, or ``multiprocessing``'s finalizers in a forked worker) the worker gets
  ``exit_timeout`` seconds to have everything confirmed; what is left is written to the spool, which the
  next process to start with the same spool directory adopts and replays.

Exactly once, and where it stops: a graceful daemon restart answers every sync line it read and then
``{"events":N,"rejected":M}``, which says how many lines of the connection it took, so nothing is lost or
sent twice. A line the daemon read but could not confirm — it was killed, or still stalled when the app
exited — is sent again: stored twice rather than lost.
"""

import atexit
import collections
import itertools
import json
import math
import os
import select
import socket
import sys
import threading
import time
import weakref

from ._report import report
from ._settings import Settings
from ._spool import Spool, SpoolError

#: Bytes of records a chunk takes at most before its sync line: a 32nd of the window to begin with (and
#: at least this), up to half of it against a daemon that stops reading at each sync line.
CHUNK_MIN = 64 * 1024
#: Bytes sent and not yet confirmed, at most, per connection: half of max_queue_bytes, within these.
WINDOW_MIN = 256 * 1024
WINDOW_MAX = 8 << 20
#: More than a Unix socket's buffers hold (about 200 KiB each way): a daemon that took this much past a
#: sync line before answering it was reading on.
SOCKET_SLACK = 1 << 20
#: Bytes of the spool read ahead of what the socket has taken.
SPOOL_READ_AHEAD = 256 * 1024
#: Buffers handed to one sendmsg() call (IOV_MAX is 1024 on Linux).
SENDMSG_PIECES = 512
#: Seconds the worker lets records gather before it takes them (unless the queue fills faster).
#: Waking it for every record would make it take the GIL from the app's threads hundreds of times a
#: second; this way it takes it ten times a second, for a batch.
GATHER_INTERVAL = 0.1
#: Seconds the worker sleeps when there is nothing to do; the next record wakes it (once).
IDLE_INTERVAL = 2.0
#: Seconds between looks for spool files left by processes that are gone.
ORPHAN_SCAN_INTERVAL = 10.0
#: Reconnection backoff, seconds.
RETRY_MIN = 0.05
RETRY_MAX = 2.0
#: Seconds between two attempts to create a spool file after one failed.
SPOOL_RETRY = 5.0
#: How often a file target's path is checked for a rotation (the file replaced under it).
FILE_RECHECK = 1.0

_DIRECT, _SPOOL = "direct", "spool"


# -- encoding --------------------------------------------------------------------------------------


def _default(value):
    """JSON for what the json module cannot encode: dates as ISO 8601, bytes as text, the rest as str()."""
    iso = getattr(value, "isoformat", None)
    if iso is not None:
        return iso()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _sanitize(value, depth=0):
    """A copy that encodes as strict JSON: keys as strings, NaN and infinities as strings, unknown objects as text."""
    if depth > 20:
        return repr(value)[:200]
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _sanitize(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_sanitize(v, depth + 1) for v in value]
    try:
        return _sanitize(_default(value), depth + 1)
    except Exception:
        return "<unprintable %s>" % type(value).__name__


try:
    # The C encoder, made once: json.dumps() builds a new one for every call, which is most of its cost.
    from _json import encode_basestring as _c_string
    from _json import make_encoder as _c_make_encoder

    _c_encoder = _c_make_encoder(None, _default, _c_string, None, ":", ",", False, False, False)
except ImportError:  # an interpreter without the json accelerator
    _c_encoder = None


def encode(event):
    """One event as a JSON line (UTF-8 bytes ending in a newline).

    Strict JSON only: the daemon rejects ``NaN``, so such values (and anything else the fast path
    chokes on, such as a structure that contains itself) take a slower path that turns them into
    strings instead of losing the record."""
    try:
        if _c_encoder is not None:
            text = "".join(_c_encoder(event, 0))
        else:
            text = json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=_default, allow_nan=False)
    except (ValueError, TypeError, RecursionError, RuntimeError):
        text = json.dumps(_sanitize(event), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", "replace") + b"\n"


def estimate(item):
    """Bytes ``item`` (an event dict, or a line) will take, for ``max_queue_bytes``: on the app's thread,
    so cheap rather than exact, and rather more than less.

    A string counts its length if it is ASCII (``isascii()`` reads a flag), else three bytes a character
    (what UTF-8 takes at most for the text an app logs); containers are walked to
    ``ESTIMATE_DEPTH`` and their first ``ESTIMATE_ITEMS`` values, the rest extrapolated; any other
    value counts ``ESTIMATE_OTHER`` bytes. The worker counts the encoded lines exactly once it has them."""
    if type(item) is bytes:
        return len(item)
    n = ESTIMATE_OTHER
    for v in item.values():
        t = type(v)
        if t is str:
            n += len(v) if v.isascii() else 3 * len(v)
        elif t is dict or t is list or t is tuple:
            n += _estimate(v, 1)
        else:
            n += ESTIMATE_OTHER
    return n


ESTIMATE_DEPTH = 16
ESTIMATE_ITEMS = 256
ESTIMATE_OTHER = 24


def _estimate(value, depth):
    """``estimate()`` of a value inside an event."""
    t = type(value)
    if t is str:
        return len(value) if value.isascii() else 3 * len(value)
    if depth >= ESTIMATE_DEPTH or not (t is dict or t is list or t is tuple):
        return len(value) + 2 if t is bytes or t is bytearray else ESTIMATE_OTHER
    n = ESTIMATE_OTHER
    for i, v in enumerate(value.values() if t is dict else value):
        if i >= ESTIMATE_ITEMS:
            return n * len(value) // ESTIMATE_ITEMS
        tv = type(v)
        if tv is str:
            n += len(v) if v.isascii() else 3 * len(v)
        elif tv is dict or tv is list or tv is tuple:
            n += _estimate(v, depth + 1)
        else:
            n += ESTIMATE_OTHER
    return n


# -- the client ------------------------------------------------------------------------------------


class Collector:
    """Sends events to lngpt-collector from a background thread; ``send()`` never blocks.

    One is created per process on first use (``get_collector()``); the logging handler and the API
    functions share it. Create your own only to talk to a second daemon."""

    def __init__(self, settings=None, **options):
        self.settings = settings if settings is not None else Settings(**options)
        self._init_process_state()
        _live.add(self)
        atexit.register(_close_at_exit, weakref.ref(self))
        # A spool left by a process that is gone is replayed now, not when this one first sends
        # something: a process that only configures the client (or logs rarely) must not leave
        # another's records waiting.
        try:
            if (self.settings.spool_dir is not None and self.settings.target_file() is None
                    and Spool.adoptable(self.settings.spool_dir)):
                self._start()
        except Exception as e:
            report("adopt", "cannot look for spool files to replay in %s: %r" % (self.settings.spool_dir, e))

    def _init_process_state(self):
        """Everything that belongs to one process (a forked child starts again from here)."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._queue = collections.deque()
        self._enqueued = 0  # records accepted by send(), ever: the seq of the newest
        self._dropped_queue = 0  # records the full queue dropped, ever (max_queue)
        self._dropped_bytes = 0  # records dropped at max_queue_bytes, ever
        self._queue_bytes = 0  # estimated bytes of the records in _queue
        self._worker_bytes = 0  # bytes the worker holds for sending (its own count, published)
        self._peak_bytes = 0  # the most held at once: _queue_bytes + _worker_bytes
        self._errors = 0  # errors swallowed on the app's threads, ever
        self._after_close = 0  # records sent after close()
        self._closing = None  # monotonic deadline once close() has begun
        self._closed = False
        self._thread = None
        self._start_lock = threading.Lock()
        self._wake_r = None
        self._wake_w = None
        self._signalled = False
        self._idle = False  # the worker sleeps IDLE_INTERVAL: the next record wakes it
        self._wake_at = max(1, min(1000, self.settings.max_queue // 2))
        self._wake_bytes = self.settings.max_queue_bytes // 8
        self._done = threading.Condition(threading.Lock())
        self._done_seq = 0  # every record up to this seq is confirmed, or dropped
        self._worker = None
        self._finished = threading.Event()

    # -- the app's side ------------------------------------------------------------------------

    def send(self, event):
        """Queues one event (a dict) for the collector; returns at once, never raises.

        The background thread encodes it, so later changes to objects inside the dict can still
        show (as with ``logging.handlers.QueueHandler``); pass copies of what you mean to change."""
        self._put(event)
        return True

    def send_line(self, line):
        """Queues one JSON line (bytes ending in a newline) as it is."""
        self._put(line)

    def _put(self, item):
        if self._closed:
            self._after_close += 1
            return
        try:
            nbytes = estimate(item)
        except Exception:
            nbytes = CHUNK_MIN  # a dict changed while it was read: any fair guess
        with self._lock:
            queued = self._queue_bytes + nbytes
            held = queued + self._worker_bytes
            if held > self.settings.max_queue_bytes:
                self._dropped_bytes += 1
                size = -1
            else:
                queue = self._queue
                size = len(queue)
                if size >= self.settings.max_queue:
                    dropped = queue.popleft()[0]
                    queued -= dropped
                    held -= dropped
                    self._dropped_queue += 1
                queue.append((nbytes, item))
                self._queue_bytes = queued
                if held > self._peak_bytes:
                    self._peak_bytes = held
                self._enqueued += 1
        if self._thread is None:
            self._start()
        elif (size >= self._wake_at or self._queue_bytes >= self._wake_bytes or self._idle) and not self._signalled:
            # Filling faster than GATHER_INTERVAL drains it: wake the worker now.
            self._signalled = True
            try:
                os.write(self._wake_w, b"\0")
            except (OSError, TypeError):
                pass  # the pipe is full (the worker is awake anyway) or not made yet

    def flush(self, timeout=None):
        """Waits until every event sent before this call is confirmed durable by the collector
        (or, for a file target, written). Returns False if ``timeout`` seconds passed first: the
        events then stay queued or spooled, nothing is lost. Call it from app code, never from a
        signal handler."""
        with self._lock:
            target = self._enqueued
        if target == 0 or self._thread is None:
            return self._done_seq >= target
        self._wake()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done:
            while self._done_seq < target:
                if self._finished.is_set():
                    return False
                if deadline is None:
                    self._done.wait(1.0)
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._done.wait(min(left, 1.0))
        return True

    def close(self, timeout=None):
        """Gives the collector ``timeout`` seconds (default ``exit_timeout``) to confirm what is queued,
        spools the rest for the next start and stops the thread. Returns ``stats()``. Idempotent."""
        if timeout is None:
            timeout = self.settings.exit_timeout
        if not self._closed:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._closing = time.monotonic() + timeout
                self._wake()
                # The worker spills to the spool at the deadline; the extra second covers that.
                self._finished.wait(timeout + 1.0)
        return self.stats()

    def stats(self):
        """Counters for this process: what was queued, confirmed, spooled and dropped."""
        w = self._worker
        spool = w.spool if w else None
        conn = w.conn if w else None
        out = {
            "queued": len(self._queue),
            "held_bytes": self._queue_bytes + self._worker_bytes,
            "held_bytes_peak": self._peak_bytes,
            "enqueued": self._enqueued,
            "confirmed": w.confirmed_lines if w else 0,
            "events": w.events if w else 0,
            "rejected": w.rejected if w else 0,
            "spooled_bytes": spool.unconfirmed if spool is not None else 0,
            "dropped_queue": self._dropped_queue + self._dropped_bytes + (w.dropped_memory if w else 0),
            "dropped_spool": w.dropped_spool if w else 0,
            "errors": self._errors + (w.errors if w else 0),
            "connected": conn is not None,
            "stalled": conn is not None and conn.stalled,
            "mode": w.mode if w else _DIRECT,
        }
        if self._after_close:
            out["dropped_after_close"] = self._after_close
        return out

    # -- the worker thread ---------------------------------------------------------------------

    def _start(self):
        with self._start_lock:
            if self._thread is not None:
                return
            try:
                self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                self._worker = _Worker(self)
                thread = threading.Thread(target=self._worker.run, name="lngpt-collector", daemon=True)
                thread.start()
            except Exception as e:
                # At interpreter shutdown threads cannot start; the records stay queued (and counted).
                self._errors += 1
                report("thread", "cannot start the background thread: %r" % (e,))
                return
            self._thread = thread
            if self._pid != _first_pid and "multiprocessing" in sys.modules:
                # A forked multiprocessing worker ends with os._exit(), which skips atexit; its
                # finalizers still run.
                try:
                    import multiprocessing.util

                    multiprocessing.util.Finalize(None, _close_at_exit, args=(weakref.ref(self),), exitpriority=10)
                except Exception:
                    pass

    def _wake(self):
        self._signalled = True
        try:
            os.write(self._wake_w, b"\0")
        except (OSError, TypeError):
            pass

    def _mark_done(self, seq):
        if seq is not None and seq > self._done_seq:
            with self._done:
                self._done_seq = seq
                self._done.notify_all()

    def _after_fork_in_child(self):
        worker = self._worker
        if worker is not None:
            worker.forget_in_child()
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        closed = self._closed
        self._init_process_state()
        self._closed = closed


class _Chunk:
    """Lines sent on a connection, up to and including one sync line (once it is closed)."""

    __slots__ = ("sync_id", "first_line", "nlines", "nbytes", "mem", "last_seq", "start", "end", "queued_at",
                 "closed", "sync_at")

    def __init__(self, sync_id, first_line, nlines, nbytes, queued_at):
        self.sync_id = sync_id
        self.first_line = first_line  # lines of the connection before this chunk
        self.nlines = nlines
        self.nbytes = nbytes
        self.mem = None  # [(seq, line)] for records sent from memory
        self.last_seq = None
        self.start = None  # the spool byte range, for records sent from the spool
        self.end = None
        self.queued_at = queued_at  # when its sync line was queued
        # Its sync line is queued: lines go into the last chunk, left open while an earlier sync line
        # waits for its answer, and closed when that answer comes or the chunk is full.
        self.closed = False
        self.sync_at = None  # bytes of the connection up to and including its sync line


class _Conn:
    """One connection to the daemon and what it has not confirmed yet."""

    def __init__(self, sock, path, token):
        self.sock = sock
        self.path = path
        self.token = token
        self.rbuf = b""
        # What is still to be written, in order: the lines of chunks (the very objects a memory
        # chunk holds), spool data and sync lines. Written with sendmsg(), consumed from the left.
        self.wbuf = collections.deque()
        self.wbuf_bytes = 0
        self.lines = 0
        self.syncs = 0
        self.inflight = collections.deque()
        self.inflight_bytes = 0
        self.events = 0  # the daemon's totals for this connection, as of its last answer
        self.rejected = 0
        self.spool_next = None
        self.stalled = False
        self.answered_at = 0.0  # monotonic time of the last sync answer
        self.written = 0  # bytes written to the socket

    def waiting_since(self):
        """Since when the daemon owes an answer: the oldest chunk's sending, or the last answer if
        later. A pipeline of many chunks is stalled only when nothing at all is confirmed for
        stall_timeout, not when its oldest chunk has waited that long behind the others."""
        return max(self.inflight[0].queued_at, self.answered_at)

    def next_sync_id(self):
        self.syncs += 1
        return "%s-%d" % (self.token, self.syncs)


class _Worker:
    """The background thread's state; only that thread touches it (``stats()`` only reads)."""

    def __init__(self, collector):
        self.c = collector
        self.settings = collector.settings
        self.mode = _DIRECT
        self.outq = collections.deque()  # (seq, line) taken from the queue, not yet sent (direct mode)
        self.outq_bytes = 0  # the bytes of the lines in outq
        self.window = window_for(self.settings.max_queue_bytes)
        # Where a chunk is closed by its size: small while the daemon reads on past sync lines that wait
        # for their answers, doubled each time it is seen to stop at one (see _adapt).
        self.chunk_min, self.chunk_top = chunk_max_for(self.window), max(CHUNK_MIN, self.window // 2)
        self.chunk_max = self.chunk_min
        # Past these the records go to the spool (the daemon is slower than the app), leaving the app's
        # queue a quarter of max_queue_bytes before anything is dropped.
        self.spill_bytes = self.settings.max_queue_bytes // 8
        self.spill_total = self.settings.max_queue_bytes * 3 // 4
        self.conn = None
        self.spool = None
        self.retry_at = 0.0
        self.backoff = RETRY_MIN
        self.spool_retry_at = 0.0
        self.scan_at = 0.0
        self.confirmed_lines = 0
        self.events = 0
        self.rejected = 0
        self.dropped_spool = 0
        self.dropped_memory = 0
        self.errors = 0
        self.reported_drops = 0  # drops already told to the collector
        self.file_fd = None
        self.file_id = None
        self.file_checked = 0.0
        self.target_file = self.settings.target_file()
        self.conn_serial = 0

    # -- the loop ------------------------------------------------------------------------------

    def run(self):
        try:
            if self.target_file is None:
                self._scan_orphans(time.monotonic())
            while True:
                try:
                    self._wait(self._timeout())
                    self._take()
                    if self.conn is not None:
                        self._io()
                    self._pump()
                    self._publish()
                    if self._closing_done():
                        break
                except Exception as e:
                    # A bug or an unexpected OS error must not end delivery: count, report, go on.
                    self.errors += 1
                    report("worker", "unexpected error in the background thread: %r" % (e,))
                    self._drop_conn(reason=None)
                    time.sleep(0.1)
        finally:
            try:
                self._finish()
            except Exception as e:
                self.errors += 1
                report("finish", "could not spool what was left at exit: %r" % (e,))
            self.c._finished.set()
            with self.c._done:
                self.c._done.notify_all()

    def _timeout(self):
        now = time.monotonic()
        t = GATHER_INTERVAL
        if self.c._closing is not None:
            t = 0.02
        elif self._idle_now():
            # Nothing queued, nothing in flight: sleep long, and let the next record wake us.
            self.c._idle = True
            if self.c._queue:
                self.c._idle = False
            else:
                t = IDLE_INTERVAL
        conn = self.conn
        if conn is not None and conn.inflight and not conn.stalled:
            t = min(t, max(0.01, conn.waiting_since() + self.settings.stall_timeout - now))
        if conn is None and (self.outq or (self.spool is not None and not self.spool.drained)):
            t = min(t, max(0.0, self.retry_at - now))
        return t

    def _idle_now(self):
        conn = self.conn
        return (not self.outq and not self.c._queue and (conn is None or (not conn.inflight and not conn.wbuf))
                and (self.spool is None or self.spool.drained))

    def _wait(self, timeout):
        poller = select.poll()
        poller.register(self.c._wake_r, select.POLLIN)
        if self.conn is not None:
            poller.register(self.conn.sock.fileno(), select.POLLIN | (select.POLLOUT if self.conn.wbuf else 0))
        poller.poll(int(timeout * 1000) + (1 if timeout > 0 else 0))
        self.c._idle = False
        self.c._signalled = False
        try:
            while os.read(self.c._wake_r, 4096):
                pass
        except OSError:
            pass

    def _take(self):
        c = self.c
        with c._lock:
            if not c._queue:
                return
            batch = c._queue
            c._queue = collections.deque()
            last = c._enqueued
            # Still held, now by the worker, until its encoded lines are counted instead.
            c._worker_bytes += c._queue_bytes
            c._queue_bytes = 0
        first = last - len(batch) + 1
        try:
            lines = [item if type(item) is bytes else encode(item) for _, item in batch]
        except Exception:
            lines = [self._line(item) for _, item in batch]  # one of them fails: each on its own
        del batch
        entries = list(zip(range(first, last + 1), lines))
        if self.mode == _SPOOL:
            self._spool_entries(entries)
        else:
            self.outq.extend(entries)
            self.outq_bytes += sum(map(len, lines))

    def _held(self):
        """Bytes this worker holds for sending: lines waiting, and lines of chunks not confirmed (the
        unsent part of wbuf is made of those same lines, or of spool data: whichever is more)."""
        conn = self.conn
        if conn is None:
            return self.outq_bytes
        sent = 0
        for chunk in conn.inflight:
            if chunk.mem is not None:
                sent += chunk.nbytes
        return self.outq_bytes + max(sent, conn.wbuf_bytes)

    def _publish(self):
        """Tells the app's threads (``_put``) what the worker holds, and notes the peak."""
        c = self.c
        held = self._held()
        with c._lock:
            c._worker_bytes = held
            if held + c._queue_bytes > c._peak_bytes:
                c._peak_bytes = held + c._queue_bytes

    def _line(self, item):
        """A queued item as a JSON line: events are encoded here, off the app's threads."""
        if type(item) is bytes:
            return item
        try:
            return encode(item)
        except Exception as e:
            self.errors += 1
            report("encode", "an event could not be encoded: %r" % (e,))
            return encode({"type": "log", "timestamp": time.time(), "level": "ERROR", "logger": "lngpt_collector",
                           "message": "lngpt-collector client: an event could not be encoded (%r)" % (e,)})

    def _closing_done(self):
        deadline = self.c._closing
        if deadline is None:
            return False
        if time.monotonic() >= deadline:
            return True
        with self.c._lock:
            queued = bool(self.c._queue)
        idle = not queued and not self.outq and (self.conn is None or not self.conn.inflight)
        return idle and (self.spool is None or self.spool.drained)

    # -- socket I/O ----------------------------------------------------------------------------

    def _io(self):
        conn = self.conn
        if self._write(conn):
            self._read_answers(conn)

    def _write(self, conn):
        """Writes what the socket takes now; False if the connection broke (and was dropped)."""
        wbuf = conn.wbuf
        while wbuf:
            pieces = list(itertools.islice(wbuf, SENDMSG_PIECES))
            try:
                n = conn.sock.sendmsg(pieces)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                # The daemon closed: read what it answered before deciding what is confirmed.
                self._read_answers(conn)
                if self.conn is conn:
                    self._drop_conn("the connection to %s broke: %s" % (conn.path, e))
                return False
            conn.wbuf_bytes -= n
            conn.written += n
            full = True
            for piece in pieces:
                size = len(piece)
                if n >= size:
                    wbuf.popleft()
                    n -= size
                else:
                    wbuf[0] = memoryview(piece)[n:]
                    full = False
                    break
            if not full:
                break  # the socket's buffer is full: poll() says when it takes more
        return True

    def _read_answers(self, conn):
        for _ in range(64):
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._drop_conn("the connection to %s broke: %s" % (conn.path, e))
                return
            if not data:
                self._drop_conn("%s closed the connection" % conn.path if conn.inflight else None)
                return
            conn.rbuf += data
            while self.conn is conn:
                nl = conn.rbuf.find(b"\n")
                if nl < 0:
                    break
                line, conn.rbuf = conn.rbuf[:nl], conn.rbuf[nl + 1:]
                self._answer(conn, line)
            if self.conn is not conn:
                return

    def _answer(self, conn, line):
        try:
            msg = json.loads(line)
        except ValueError:
            self.errors += 1
            report("answer", "the collector answered something unexpected: %r" % line[:200])
            return
        if not isinstance(msg, dict):
            return
        if "sync" in msg:
            self._on_sync(conn, msg)
        elif "error" in msg:
            # Turned away (too many connections): nothing was read; everything is sent again.
            report("refused", "the collector at %s refused the connection: %s" % (conn.path, msg.get("error")))
            self._drop_conn(None)
        elif "events" in msg:
            self._on_final(conn, msg)

    def _count_answer(self, conn, msg):
        events = int(msg.get("events") or 0)
        rejected = int(msg.get("rejected") or 0)
        self.events += max(0, events - conn.events)
        self.rejected += max(0, rejected - conn.rejected)
        conn.events, conn.rejected = events, rejected

    def _on_sync(self, conn, msg):
        sync_id = msg.get("sync")
        if not any(ch.sync_id == sync_id and ch.closed for ch in conn.inflight):
            return
        self._count_answer(conn, msg)
        conn.answered_at = time.monotonic()
        while conn.inflight:
            chunk = conn.inflight.popleft()
            conn.inflight_bytes -= chunk.nbytes
            self._confirmed(chunk)
            if chunk.sync_id == sync_id:
                self._adapt(conn, chunk)
                break
        if conn.inflight and not conn.inflight[0].closed:
            self._close_chunk(conn, conn.inflight[0], conn.answered_at)  # the open one: nothing else is owed
        self.backoff = RETRY_MIN
        if conn.stalled and not conn.inflight:
            conn.stalled = False
            report("recovered", "the collector at %s answers again" % conn.path)
        self._report_drops()

    def _on_final(self, conn, msg):
        """The daemon's last word before it closes (shutdown or idle): how many lines it took."""
        rejected_before = conn.rejected
        self._count_answer(conn, msg)
        taken = conn.events + conn.rejected
        if conn.rejected > rejected_before and taken > 0:
            # A line cut by the daemon's stop is stored as a reject: send the last one again.
            taken -= 1
        while conn.inflight:
            chunk = conn.inflight[0]
            if chunk.first_line + chunk.nlines <= taken:
                conn.inflight.popleft()
                conn.inflight_bytes -= chunk.nbytes
                self._confirmed(chunk)
                continue
            k = taken - chunk.first_line
            if k > 0:
                self.confirmed_lines += k
                if chunk.mem is not None:
                    self.c._mark_done(_last_seq(chunk.mem[:k]))
                    chunk.nbytes -= sum(len(line) for _, line in chunk.mem[:k])
                    chunk.mem = chunk.mem[k:]
                else:
                    offset = self.spool.offset_after_lines(chunk.start, k)
                    self.c._mark_done(self.spool.confirm(offset))
                    chunk.start = offset
                chunk.first_line += k
                chunk.nlines -= k
            break
        self._drop_conn(None)

    def _confirmed(self, chunk):
        self.confirmed_lines += chunk.nlines
        if chunk.mem is not None:
            self.c._mark_done(chunk.last_seq)
        elif self.spool is not None:
            self.c._mark_done(self.spool.confirm(chunk.end))

    def _drop_conn(self, reason):
        """Closes the connection; what it did not confirm goes back to be sent again."""
        conn = self.conn
        if conn is None:
            return
        self.conn = None
        try:
            conn.sock.close()
        except OSError:
            pass
        if reason:
            report("lost", reason)
        back = []
        for chunk in conn.inflight:
            if chunk.mem is not None:
                back.extend(chunk.mem)
        if back:
            self.outq.extendleft(reversed(back))
            self.outq_bytes += sum(len(line) for _, line in back)
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(RETRY_MAX, self.backoff * 2)

    def _connect(self, now):
        problems = []
        for path in self.settings.sockets():
            if not os.path.exists(path):
                problems.append("%s does not exist" % path)
                continue
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(1.0)
                sock.connect(path)
                sock.setblocking(False)
            except OSError as e:
                sock.close()
                problems.append("%s: %s" % (path, e))
                continue
            self.conn_serial += 1
            token = "%d-%s-%d" % (os.getpid(), os.urandom(3).hex(), self.conn_serial)
            self.conn = _Conn(sock, path, token)
            if self.spool is not None:
                self.conn.spool_next = self.spool.confirmed
            return True
        report("connect", "cannot reach the collector (%s); records wait %s" % (
            "; ".join(problems), "in the spool" if self.settings.spool_dir else "in memory"))
        self.retry_at = now + self.backoff
        self.backoff = min(RETRY_MAX, self.backoff * 2)
        return False

    # -- deciding what goes where --------------------------------------------------------------

    def _pump(self):
        now = time.monotonic()
        if self.target_file is not None:
            self._write_file(now)
            return
        conn = self.conn
        if conn is not None and conn.inflight and not conn.stalled:
            if now - conn.waiting_since() > self.settings.stall_timeout:
                conn.stalled = True
                report("stalled", "the collector at %s has not confirmed anything for %.1f s; records go to the spool"
                       % (conn.path, self.settings.stall_timeout))
                if self.mode == _DIRECT:
                    self._to_spool(now)
        if self.conn is None and (self.outq or (self.spool is not None and not self.spool.drained)):
            if now >= self.retry_at:
                self._connect(now)
            if self.conn is None and self.mode == _DIRECT and self.outq:
                self._to_spool(now)
        if self.mode == _DIRECT and (self.outq_bytes > self.spill_bytes
                                     or self._held() + self.c._queue_bytes > self.spill_total):
            # The daemon answers, but more slowly than the app logs: the spool takes them.
            self._to_spool(now)
        if self.mode == _DIRECT:
            self._trim()
        conn = self.conn
        if conn is not None and not conn.stalled:
            if self.mode == _DIRECT:
                self._send_memory(conn, now)
            else:
                self._send_spool(conn, now)
        if (self.mode == _SPOOL and self.spool.drained and not self.outq
                and (self.conn is None or not self.conn.inflight) and self.conn is not None and not self.conn.stalled):
            self.spool.delete()
            self.spool = None
            self.mode = _DIRECT
            self.scan_at = now
        if (self.mode == _DIRECT and not self.outq and now >= self.scan_at
                and (self.conn is None or (not self.conn.inflight and not self.conn.stalled))):
            self._scan_orphans(now)

    def _trim(self):
        """Without a spool to take them, the oldest records waiting go (counted) past max_queue_bytes."""
        outq = self.outq
        over = self._held() + self.c._queue_bytes - self.settings.max_queue_bytes
        while outq and over > 0:
            size = len(outq.popleft()[1])
            self.outq_bytes -= size
            over -= size
            self.dropped_memory += 1

    def _open_chunk(self, conn, now, kind):
        """The connection's open chunk of this kind (``"mem"`` or ``"spool"``), made if there is none."""
        chunk = conn.inflight[-1] if conn.inflight else None
        if chunk is not None and not chunk.closed:
            if (chunk.mem is not None) == (kind == "mem") and (kind == "mem" or chunk.end == conn.spool_next):
                return chunk
            self._close_chunk(conn, chunk, now)
        chunk = _Chunk(conn.next_sync_id(), conn.lines, 0, 0, now)
        if kind == "mem":
            chunk.mem = []
        else:
            chunk.start = chunk.end = conn.spool_next
        conn.inflight.append(chunk)
        return chunk

    def _close_chunk(self, conn, chunk, now):
        """Ends the chunk with its sync line: from now on the daemon owes its answer."""
        sync = b'{"type":"sync","id":"%s"}\n' % chunk.sync_id.encode("ascii")
        conn.wbuf.append(sync)
        conn.wbuf_bytes += len(sync)
        chunk.closed = True
        chunk.queued_at = now
        chunk.sync_at = conn.written + conn.wbuf_bytes  # where the sync line ends in the stream

    def _adapt(self, conn, chunk):
        """Sizes the next chunks from how the daemon took this one's sync line.

        A daemon that reads on while a sync line waits for its answer took more than the socket's
        buffer past it: small chunks keep many in flight and memory is released early. One that
        stops reading at each sync line until it can answer (until its batch is written, up to its
        max_wait) took no more than what the kernel buffers, though more was waiting to be written:
        each sync line then costs a wait, so chunks double, up to half the window."""
        past = conn.written - chunk.sync_at
        if past >= SOCKET_SLACK:
            self.chunk_max = max(self.chunk_min, self.chunk_max // 2)
        elif conn.wbuf_bytes > 0 and past >= 0:
            self.chunk_max = min(self.chunk_top, self.chunk_max * 2)

    def _added(self, conn, chunk, now, nlines, nbytes):
        """Counts lines just added to the open chunk, and closes it when it is full or when no answer
        is owed: a sync line while another waits would only make the daemon wait twice."""
        chunk.nlines += nlines
        chunk.nbytes += nbytes
        conn.lines += nlines
        conn.inflight_bytes += nbytes
        if chunk.nbytes >= self.chunk_max or conn.inflight[0] is chunk:
            self._close_chunk(conn, chunk, now)

    def _send_memory(self, conn, now):
        outq = self.outq
        wbuf = conn.wbuf
        while outq and conn.inflight_bytes < self.window:
            chunk = self._open_chunk(conn, now, "mem")
            room = min(self.chunk_max - chunk.nbytes, self.window - conn.inflight_bytes)
            lines = chunk.mem
            before = len(lines)
            size = 0
            while outq:
                n = len(outq[0][1])
                if size and size + n > room:
                    break
                entry = outq.popleft()
                lines.append(entry)
                wbuf.append(entry[1])
                size += n
            self.outq_bytes -= size
            conn.wbuf_bytes += size
            last = _last_seq(lines[before:])
            if last is not None:
                chunk.last_seq = last
            self._added(conn, chunk, now, len(lines) - before, size)

    def _send_spool(self, conn, now):
        spool = self.spool
        if conn.spool_next is None:
            conn.spool_next = spool.confirmed
        # The spool's lines are on disk: read only what the socket is about to take, not a window's worth.
        while (conn.spool_next < spool.end and conn.inflight_bytes < self.window
               and conn.wbuf_bytes < SPOOL_READ_AHEAD):
            chunk = self._open_chunk(conn, now, "spool")
            try:
                data = spool.read(conn.spool_next, min(SPOOL_READ_AHEAD, self.chunk_max - chunk.nbytes,
                                                       self.window - conn.inflight_bytes))
            except OSError as e:
                self.errors += 1
                report("spool_read", "cannot read the spool file %s: %s" % (spool.path, e))
                return
            if not data:
                return
            chunk.end += len(data)
            conn.spool_next = chunk.end
            conn.wbuf.append(data)
            conn.wbuf_bytes += len(data)
            self._added(conn, chunk, now, data.count(b"\n"), len(data))
            # Write it now and read on while the socket takes it: a read-ahead per wake-up would
            # drain the spool more slowly than a busy app fills it.
            if not self._write(conn) or self.conn is not conn:
                return

    def _to_spool(self, now):
        """Switches to the spool: chunks sent and not confirmed first, then everything waiting."""
        if self.mode == _SPOOL or self.settings.spool_dir is None or now < self.spool_retry_at:
            return
        try:
            spool = Spool.create(self.settings.spool_dir, str(os.getpid()))
        except SpoolError as e:
            self.errors += 1
            self.spool_retry_at = now + SPOOL_RETRY
            report("spool_create", "%s; records wait in memory (at most max_queue_bytes=%d)"
                   % (e, self.settings.max_queue_bytes))
            return
        conn = self.conn
        sent = [chunk for chunk in conn.inflight if chunk.mem is not None] if conn is not None else []
        try:
            spool.append(b"".join(line for chunk in sent for _, line in chunk.mem))
        except SpoolError as e:
            # Cannot even hold what is in flight: stay on memory.
            self.errors += 1
            report("spool_write", str(e))
            spool.delete()
            self.spool_retry_at = now + SPOOL_RETRY
            return
        # The file now holds the chunks in flight, in order, from its first line: they are
        # confirmed by the same answers as before, as byte ranges of the spool.
        offset = spool.confirmed
        for chunk in sent:
            chunk.start = offset
            offset += chunk.nbytes
            chunk.end = offset
            chunk.mem = None
            spool.marks.append((chunk.end, chunk.last_seq))
        if conn is not None:
            conn.spool_next = spool.end
        self.spool = spool
        self.mode = _SPOOL
        entries = list(self.outq)
        self.outq.clear()
        self.outq_bytes = 0
        self._spool_entries(entries)

    def _spool_entries(self, entries):
        """Appends records to the spool, dropping (and counting) what goes past max_spool_bytes."""
        if not entries:
            return
        spool = self.spool
        cap = self.settings.max_spool_bytes
        size = spool.end
        parts = []
        dropped = 0
        for _, line in entries:
            if size + len(line) > cap:
                dropped += 1
                continue
            parts.append(line)
            size += len(line)
        if dropped:
            self.dropped_spool += dropped
            report("spool_full", "the spool %s is full (max_spool_bytes=%d); records are dropped"
                   % (spool.path, cap))
        try:
            if parts:
                spool.append(b"".join(parts))
        except SpoolError as e:
            self.errors += 1
            self.dropped_spool += len(parts)
            report("spool_write", "%s; records are dropped" % e)
        last = _last_seq(entries)
        if spool.drained:
            self.c._mark_done(last)
        else:
            spool.marks.append((spool.end, last))

    def _report_drops(self):
        """Once the collector answers, tells it (as a WARNING record) how many records were dropped."""
        dropped_queue = self.c._dropped_queue + self.c._dropped_bytes + self.dropped_memory
        total = dropped_queue + self.dropped_spool
        if total <= self.reported_drops:
            return
        line = self._drop_warning(total - self.reported_drops, dropped_queue, self.dropped_spool)
        self.reported_drops = total
        if self.mode == _SPOOL:
            try:
                self.spool.append(line)  # past the cap if need be: it is one line
            except SpoolError:
                pass
        else:
            self.outq.append((None, line))
            self.outq_bytes += len(line)

    def _drop_warning(self, new, dropped_queue, dropped_spool):
        s = self.settings
        return encode({
            "type": "log",
            "timestamp": time.time(),
            "level": "WARNING",
            "logger": "lngpt_collector",
            "message": "lngpt-collector client dropped %d records (in all since start: %d because the spool %s was "
                       "full at max_spool_bytes=%d, %d because the memory queue was full at max_queue=%d or "
                       "max_queue_bytes=%d)"
                       % (new, dropped_spool, s.spool_dir, s.max_spool_bytes, dropped_queue, s.max_queue,
                          s.max_queue_bytes),
            "extra": {"dropped": new, "dropped_spool_total": dropped_spool, "dropped_queue_total": dropped_queue,
                      "pid": os.getpid()},
        })

    def _scan_orphans(self, now):
        self.scan_at = now + ORPHAN_SCAN_INTERVAL
        if self.settings.spool_dir is None or self.spool is not None:
            return

        def problem(message, torn):
            self.dropped_spool += torn
            report("orphan", message)

        spool = Spool.adopt(self.settings.spool_dir, problem)
        if spool is not None:
            self.spool = spool
            self.mode = _SPOOL
            if self.conn is not None:
                self.conn.spool_next = spool.confirmed

    # -- a file target -------------------------------------------------------------------------

    def _write_file(self, now):
        if not self.outq:
            return
        if self.file_fd is not None and now - self.file_checked >= FILE_RECHECK:
            self.file_checked = now
            try:
                st = os.stat(self.target_file)
                if (st.st_dev, st.st_ino) != self.file_id:
                    raise FileNotFoundError
            except OSError:
                # Rotated away (renamed or deleted): write to a new file at the path.
                os.close(self.file_fd)
                self.file_fd = None
        try:
            if self.file_fd is None:
                if now < self.retry_at:
                    return
                directory = os.path.dirname(self.target_file)
                if directory:
                    os.makedirs(directory, mode=0o750, exist_ok=True)
                self.file_fd = os.open(self.target_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
                st = os.fstat(self.file_fd)
                self.file_id = (st.st_dev, st.st_ino)
                self.file_checked = now
            entries = list(self.outq)
            data = memoryview(b"".join(line for _, line in entries))
            while data:
                n = os.write(self.file_fd, data)
                data = data[n:]
        except OSError as e:
            self.errors += 1
            report("file", "cannot write to %s: %s" % (self.target_file, e))
            self.retry_at = now + self.backoff
            self.backoff = min(RETRY_MAX, self.backoff * 2)
            self._trim()
            return
        self.backoff = RETRY_MIN
        self.outq.clear()
        self.outq_bytes = 0
        self.confirmed_lines += len(entries)
        self.c._mark_done(_last_seq(entries))

    # -- the end -------------------------------------------------------------------------------

    def _finish(self):
        """At close: whatever is not confirmed goes to the spool for the next start."""
        self._take()
        conn = self.conn
        left = []
        if conn is not None:
            for chunk in conn.inflight:
                if chunk.mem is not None:
                    left.extend(chunk.mem)
        left.extend(self.outq)
        self.outq.clear()
        self.outq_bytes = 0
        if self.target_file is not None:
            if left:
                self.outq.extend(left)
                self.outq_bytes = sum(len(line) for _, line in left)
                self._write_file(time.monotonic())
            if self.file_fd is not None:
                os.close(self.file_fd)
                self.file_fd = None
            return
        dropped_queue = self.c._dropped_queue + self.c._dropped_bytes + self.dropped_memory
        total = dropped_queue + self.dropped_spool
        if left or total > self.reported_drops:
            if self.mode == _DIRECT:
                self.mode = _SPOOL  # nothing is sent any more: records only need a place on disk
                if self.settings.spool_dir is not None:
                    try:
                        self.spool = Spool.create(self.settings.spool_dir, str(os.getpid()))
                    except SpoolError as e:
                        report("spool_create", "%s; %d records are lost" % (e, len(left)))
                        self.dropped_spool += len(left)
                        self.spool = None
                else:
                    self.dropped_memory += len(left)
            if self.spool is not None:
                self._spool_entries(left)
                if total > self.reported_drops:
                    self.spool.append(self._drop_warning(total - self.reported_drops, dropped_queue, self.dropped_spool))
                    self.reported_drops = total
        if conn is not None:
            self.conn = None
            try:
                conn.sock.close()
            except OSError:
                pass
        if self.spool is not None:
            if self.spool.drained:
                self.spool.delete()
            else:
                self.spool.close(sync=True)

    def forget_in_child(self):
        """After fork(): the parent's connection and spool stay the parent's."""
        if self.conn is not None:
            try:
                self.conn.sock.close()
            except OSError:
                pass
            self.conn = None
        if self.spool is not None:
            self.spool.forget_in_child()
            self.spool = None
        if self.file_fd is not None:
            try:
                os.close(self.file_fd)
            except OSError:
                pass
            self.file_fd = None


def window_for(max_queue_bytes):
    """Bytes sent and not confirmed, at most, for a client bounded at ``max_queue_bytes``."""
    return min(WINDOW_MAX, max(WINDOW_MIN, max_queue_bytes // 2))


def chunk_max_for(window):
    """Bytes of lines a chunk takes at most before its sync line, to begin with."""
    return max(CHUNK_MIN, window // 32)


def _last_seq(entries):
    """The newest record's seq among (seq, line) entries; None for lines the client made itself."""
    for seq, _ in reversed(entries):
        if seq is not None:
            return seq
    return None


# -- process-wide ----------------------------------------------------------------------------------

_first_pid = os.getpid()
_live = weakref.WeakSet()


def _close_at_exit(ref):
    collector = ref()
    if collector is not None and collector._pid == os.getpid():
        try:
            collector.close()
        except Exception:
            pass


def _after_fork_in_child():
    for collector in list(_live):
        try:
            collector._after_fork_in_child()
        except Exception:
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)
