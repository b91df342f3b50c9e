"""``CollectorHandler``: the logging handler, a drop-in beside the app's console and file handlers."""

import logging

from . import _defaults

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is kept.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
# Dicts under these names are merged into ``extra`` rather than nested: ``extra={"data": {...}}`` is
# this client's earlier form, ``record.extra`` the original MongoDBHandler's.
_MERGED = ("data", "extra")
_LEVELS = ((logging.CRITICAL, "CRITICAL"), (logging.ERROR, "ERROR"), (logging.WARNING, "WARNING"),
           (logging.INFO, "INFO"), (logging.DEBUG, "DEBUG"))


def record_to_event(record, formatter=None):
    """The collector's log event for a LogRecord (see the README's wire format).

    The message is rendered now, on the app's thread, so that later changes to the arguments
    cannot change what is stored; encoding is left to the background thread (the ``extra`` values are
    shared, as ``logging.handlers.QueueHandler`` shares them)."""
    level = record.levelname
    if level not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
        # A custom level (TRACE, NOTICE, "Level 25") would be rejected: store the nearest standard one.
        level = next((name for number, name in _LEVELS if record.levelno >= number), "DEBUG")
    event = {
        "type": "log",
        "timestamp": record.created,
        "level": level,
        "message": record.getMessage(),
        "logger": record.name,
        "module": record.module,
        "function": record.funcName,
        "line": record.lineno,
    }
    extra = {}
    fields = record.__dict__
    own = fields.keys() - _STANDARD  # one C-level set difference, not a loop over every attribute
    if own:
        for key in own:
            value = fields[key]
            if key in _MERGED and isinstance(value, dict):
                for k, v in value.items():
                    extra.setdefault(str(k), v)
            else:
                extra[key] = value
    if level != record.levelname:
        extra["levelname"] = record.levelname
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = (formatter or _FORMATTER).formatException(record.exc_info)
        extra["exception"] = record.exc_text
    elif record.exc_text:
        extra["exception"] = record.exc_text
    if record.stack_info:
        extra["stack"] = record.stack_info
    if extra:
        event["extra"] = extra
    return event


_FORMATTER = logging.Formatter()


class CollectorHandler(logging.Handler):
    """A ``logging.Handler`` whose ``emit()`` only queues the record: it never blocks and never raises.

    ``CollectorHandler()`` uses the process's collector (configured from ``LNGPT_COLLECTOR_*``, the
    same one ``record_api_cost`` and the others use). Options given here (``socket``, ``spool_dir``,
    … see ``Settings``) configure that collector; ``collector=`` passes one explicitly.
    """

    def __init__(self, socket=None, level=logging.NOTSET, collector=None, **options):
        super().__init__(level)
        if collector is None:
            if socket is not None or options:
                collector = _defaults.configure(socket=socket, **options)
            else:
                collector = _defaults.get_collector()
        self.collector = collector

    def emit(self, record):
        try:
            self.collector.send(record_to_event(record, self.formatter))
        except Exception:
            # Never self.handleError(): it prints a traceback per record. Counted and reported once.
            self.collector._errors += 1
            from ._report import report

            report("emit", "a log record could not be queued and was dropped")

    def send(self, event):
        """Queues any event dict (``"type": "cost"`` or ``"performance"``, see the wire format)."""
        return self.collector.send(event)

    def flush(self, timeout=None):
        """Waits (up to ``timeout`` seconds; by default not at all) for the collector to confirm
        what was logged. ``logging.shutdown()`` calls this with no timeout: exit is handled by ``atexit``."""
        if timeout:
            return self.collector.flush(timeout)
        return True

    def close(self, timeout=None):
        """Waits up to ``timeout`` (default ``exit_timeout``) for what was logged to be confirmed, and
        returns the collector's counters. The collector itself stays open for other handlers and the API
        functions; it is closed at exit."""
        try:
            if timeout is None:
                timeout = self.collector.settings.exit_timeout
            self.collector.flush(timeout)
            return self.collector.stats()
        finally:
            super().close()
