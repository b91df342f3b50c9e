"""Reporting the client's own problems without ever raising into the app.

Every error inside the client is swallowed and counted; the first of each kind, and then at most one
a minute, is written to stderr through ``logging.lastResort`` (the handler Python itself uses when
logging is not configured). Never through the app's loggers: a handler that logs its own delivery
failures into itself would loop, and the app's handlers may be the very thing that is failing.
"""

import logging
import os
import sys
import threading
import time

#: Seconds between two reports of the same kind.
REPORT_INTERVAL = 60.0

_lock = threading.Lock()
# kind -> [time of the last report, reports suppressed since]
_last = {}


def report(kind, message):
    """Writes ``message`` to stderr unless ``kind`` was reported in the last minute."""
    try:
        now = time.monotonic()
        with _lock:
            entry = _last.get(kind)
            if entry is not None and now - entry[0] < REPORT_INTERVAL:
                entry[1] += 1
                return
            suppressed = entry[1] if entry is not None else 0
            _last[kind] = [now, 0]
        if suppressed:
            message = "%s (%d more like this in the last minute)" % (message, suppressed)
        text = "lngpt-collector client: " + message
        handler = logging.lastResort
        if handler is not None:
            record = logging.LogRecord("lngpt_collector", logging.WARNING, __file__, 0, text, None, None)
            handler.handle(record)
        else:
            sys.stderr.write(text + "\n")
    except Exception:
        # stderr closed or broken: there is nowhere left to say it.
        pass


def _reset_after_fork():
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
