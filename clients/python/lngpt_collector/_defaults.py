"""The process's collector and settings, made on first use, so that importing the package does nothing."""

import os
import threading

from ._collector import Collector
from ._settings import Settings

_lock = threading.Lock()
_collector = None
_settings = None


def settings():
    """The settings in force: those given to ``configure()``, or the environment's."""
    global _settings
    if _settings is None:
        with _lock:
            if _settings is None:
                _settings = Settings()
    return _settings


def configure(**options):
    """Sets the options (see ``Settings``) of the process's collector and returns it.

    Options left out (or None) come from the environment. Called again with the same options, it
    returns the same collector; with others, later events go to a new one (the old one still delivers
    what it holds, and is closed at exit)."""
    global _collector, _settings
    new = Settings(**options)
    with _lock:
        if _collector is not None and _collector.settings == new:
            return _collector
        _settings = new
        _collector = Collector(new)
        return _collector


def get_collector():
    """The process's collector, configured from the environment if ``configure()`` was not called."""
    global _collector
    if _collector is None:
        s = settings()
        with _lock:
            if _collector is None:
                _collector = Collector(s)
    return _collector


def _reset_after_fork():
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
