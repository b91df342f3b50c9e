"""Configuration: keyword arguments first, then environment variables, then defaults.

The variables are ``LNGPT_COLLECTOR_SOCKET``, ``LNGPT_COLLECTOR_API`` and ``LNGPT_COLLECTOR_API_TOKEN``
(shared with the daemon's budget API) and ``LNGPT_COLLECTOR_CLIENT_*`` for the client's own knobs. The
daemon reads every other ``LNGPT_COLLECTOR_*`` variable as one of its configuration keys and refuses
unknown ones, so the client's own are kept under a prefix it skips (an app and its daemon often share
a shell or an ``EnvironmentFile``).

The defaults match the daemon's: its socket is ``/run/lngpt-collector/collector.sock`` under systemd and
``./data/collector.sock`` when run from the repository (``config.example.toml``); its budget API listens on
``127.0.0.1:8787``. A bad value in the environment never stops the app: it is reported on stderr and
the default is used.
"""

import os

from ._report import report

#: Where the daemon's socket is looked for when none is configured, in this order (the first that
#: exists at connect time): the systemd unit's, then the development default.
DEFAULT_SOCKETS = ("/run/lngpt-collector/collector.sock", "./data/collector.sock")
DEFAULT_API = "http://127.0.0.1:8787"
DEFAULT_SPOOL_DIR = "./collector-spool"
#: The smallest max_queue_bytes taken (a smaller one is raised to it): room for a few records.
MIN_QUEUE_BYTES = 64 * 1024

# name: (environment variable, parser, default)
_OPTIONS = {
    "socket": ("LNGPT_COLLECTOR_SOCKET", str, None),
    "spool_dir": ("LNGPT_COLLECTOR_CLIENT_SPOOL_DIR", str, DEFAULT_SPOOL_DIR),
    "max_queue": ("LNGPT_COLLECTOR_CLIENT_MAX_QUEUE", int, 10000),
    "max_queue_bytes": ("LNGPT_COLLECTOR_CLIENT_MAX_QUEUE_BYTES", int, 16 << 20),
    "max_spool_bytes": ("LNGPT_COLLECTOR_CLIENT_MAX_SPOOL_BYTES", int, 64 << 20),
    "exit_timeout": ("LNGPT_COLLECTOR_CLIENT_EXIT_TIMEOUT", float, 2.0),
    "stall_timeout": ("LNGPT_COLLECTOR_CLIENT_STALL_TIMEOUT", float, 5.0),
    "api": ("LNGPT_COLLECTOR_API", str, DEFAULT_API),
    "api_token": ("LNGPT_COLLECTOR_API_TOKEN", str, None),
    "api_timeout": ("LNGPT_COLLECTOR_CLIENT_API_TIMEOUT", float, 2.0),
    "fail_open": ("LNGPT_COLLECTOR_CLIENT_FAIL_OPEN", "bool", True),
}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse(name, variable, kind, raw):
    raw = raw.strip()
    if kind == "bool":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError("expected 1/0, true/false, yes/no or on/off")
    value = kind(raw)
    if kind in (int, float) and value < 0:
        raise ValueError("must not be negative")
    return value


class Settings:
    """The client's settings; every attribute is named as the keyword argument that sets it.

    - ``socket``: the daemon's Unix socket; ``file:/path/events.jsonl`` appends to a file the daemon
      tails instead (see the README); None looks for ``DEFAULT_SOCKETS``.
    - ``spool_dir``: where records wait on disk while the collector is unreachable or stalled;
      ``""`` or ``"off"`` turns spooling off (records are then kept in memory only, up to ``max_queue``).
    - ``max_queue``: records held in memory; past it the oldest is dropped (and counted).
    - ``max_queue_bytes``: bytes held in memory for sending — records queued, encoded lines waiting,
      chunks sent and not yet confirmed; a record that would take it past this is dropped (and
      counted). Half of it, at most 8 MiB, may be in flight unconfirmed on the connection.
    - ``max_spool_bytes``: the spool file's size cap; past it new records are dropped (and counted).
    - ``exit_timeout``: seconds ``atexit`` waits for the collector to confirm what is queued; the
      rest stays in the spool for the next start.
    - ``stall_timeout``: seconds without a confirmation after which the collector counts as stalled
      and records go to the spool.
    - ``api``, ``api_token``, ``api_timeout``, ``fail_open``: the daemon's HTTP API, for
      ``check_cost_limits()`` and ``get_model_cost_stats()``: ``http://host:port`` or
      ``unix:/path/api.sock`` (the daemon's ``[api] listen = "unix:…"``).
    """

    __slots__ = tuple(_OPTIONS)

    def __init__(self, **options):
        unknown = set(options) - set(_OPTIONS)
        if unknown:
            raise TypeError("unknown lngpt_collector option(s): %s" % ", ".join(sorted(unknown)))
        for name, (variable, kind, default) in _OPTIONS.items():
            value = options.get(name)
            if value is None:
                raw = os.environ.get(variable)
                if raw is not None and raw.strip() != "":
                    try:
                        value = _parse(name, variable, kind, raw)
                    except ValueError as e:
                        report("settings", "%s=%r is not valid (%s); using %r" % (variable, raw, e, default))
            setattr(self, name, default if value is None else value)
        if self.spool_dir is not None and self.spool_dir.strip().lower() in ("", "off", "none"):
            self.spool_dir = None
        elif self.spool_dir is not None:
            # Absolute now: a later chdir() of the app must not move the spool.
            self.spool_dir = os.path.abspath(self.spool_dir)
        if self.socket and not self.socket.startswith("file:"):
            self.socket = os.path.abspath(self.socket)
        if isinstance(self.api, str) and self.api.startswith("unix:") and len(self.api) > len("unix:"):
            self.api = "unix:" + os.path.abspath(self.api[len("unix:"):])
        self.max_queue = max(1, int(self.max_queue))
        self.max_queue_bytes = max(MIN_QUEUE_BYTES, int(self.max_queue_bytes))

    def sockets(self):
        """The socket paths to try, in order."""
        if self.socket:
            return (self.socket,)
        return DEFAULT_SOCKETS

    def target_file(self):
        """The file to append to, when ``socket`` is ``file:PATH``; else None."""
        if self.socket and self.socket.startswith("file:"):
            return os.path.abspath(self.socket[len("file:"):])
        return None

    def as_dict(self):
        return {name: getattr(self, name) for name in _OPTIONS}

    def __eq__(self, other):
        return isinstance(other, Settings) and self.as_dict() == other.as_dict()

    def __repr__(self):
        shown = self.as_dict()
        if shown.get("api_token"):
            shown["api_token"] = "***"
        return "Settings(%s)" % ", ".join("%s=%r" % kv for kv in shown.items())
