"""Test helpers: the real daemon on a private directory, its SQLite file, and waiting on conditions.

The daemon binary comes from ``LNGPT_TEST_DAEMON_BIN`` (``tests/python_client.rs`` sets it to the one
``cargo test`` built). Tests wait on conditions with a generous deadline, never on sleeps.
"""

import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(HERE)
if PACKAGE_ROOT not in sys.path:
    sys.path.insert(0, PACKAGE_ROOT)

BIN = os.environ.get("LNGPT_TEST_DAEMON_BIN")
PATIENCE = 60.0


def wait_until(what, check, timeout=PATIENCE, interval=0.01):
    """Polls ``check()`` until it returns something truthy, which is returned; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def needs_daemon(test):
    return unittest.skipUnless(BIN, "LNGPT_TEST_DAEMON_BIN is not set (run through cargo test)")(test)


def free_port():
    """A loopback TCP port nobody listens on right now."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class Daemon:
    """lngpt-collector on ``directory``: ``start()``, ``stop()`` (SIGTERM), and reads of its store."""

    def __init__(self, directory, extra="", socket_extra="", api="tcp", args=(), env=None):
        """``extra``: TOML sections to add; ``socket_extra``: keys for the ``[socket]`` section;
        ``api``: where the HTTP API listens, ``"tcp"`` (a free loopback port) or ``"unix"`` (a socket
        in ``directory``), then in ``self.api`` as the client's ``api`` setting; ``args``: more
        arguments of ``run``; ``env``: more environment variables for the daemon."""
        self.dir = directory
        self.state = os.path.join(directory, "state")
        self.socket = os.path.join(directory, "collector.sock")
        self.config = os.path.join(directory, "config.toml")
        self.log_path = os.path.join(directory, "daemon.log")
        self.args = list(args)
        self.env = dict(env or {})
        if api == "unix":
            self.api = "unix:" + os.path.join(directory, "api.sock")
            listen = self.api
        else:
            listen = "127.0.0.1:%d" % free_port()
            self.api = "http://" + listen
        with open(self.config, "w") as f:
            f.write('state_dir = %s\n[socket]\npath = %s\n%s[log]\nsummary_interval = "0"\n[api]\nlisten = %s\n%s\n'
                    % (json.dumps(self.state), json.dumps(self.socket), socket_extra, json.dumps(listen), extra))
        self.process = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("LNGPT_") and k != "LOG_LEVEL"}
        env.update(self.env)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([BIN, "run", "--config", self.config] + self.args, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=log, env=env)
        log.close()
        wait_until("the daemon's socket", self._answers)
        wait_until("the daemon's API", self._api_answers)
        return self

    def _api_answers(self):
        from lngpt_collector._http import get_json

        try:
            return get_json(self.api, "/healthz", timeout=5)
        except (OSError, ValueError):
            if self.process.poll() is not None:
                raise AssertionError("the daemon exited with %s:\n%s" % (self.process.returncode, self.log()))
            return False

    def _answers(self):
        if self.process.poll() is not None:
            raise AssertionError("the daemon exited with %s:\n%s" % (self.process.returncode, self.log()))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(PATIENCE)
        self.process = None

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(PATIENCE)
        self.process = None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def query(self, sql, *args):
        path = os.path.join(self.state, "collector.db")
        if not os.path.exists(path):
            return []
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def count(self, table):
        try:
            return self.query("SELECT count(*) FROM %s" % table)[0][0]
        except (sqlite3.OperationalError, IndexError):
            return 0

    def seqs(self, run):
        """The ``extra.seq`` of every stored log of test run ``run``, with repeats."""
        rows = self.query("SELECT json_extract(doc, '$.extra.seq') FROM api_logs "
                          "WHERE json_extract(doc, '$.extra.run') = ?", run)
        return [r[0] for r in rows]


class DaemonTest(unittest.TestCase):
    """A test with a private directory; ``self.daemon`` is made (not started) for it."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lngpt-pyclient-")
        self.daemon = Daemon(self.dir)
        self.spool_dir = os.path.join(self.dir, "spool")
        self.collectors = []

    def tearDown(self):
        for c in self.collectors:
            c.close(timeout=0)
        self.daemon.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def collector(self, **options):
        import lngpt_collector

        options.setdefault("socket", self.daemon.socket)
        options.setdefault("spool_dir", self.spool_dir)
        c = lngpt_collector.Collector(**options)
        self.collectors.append(c)
        return c

    def spool_files(self):
        try:
            return sorted(n for n in os.listdir(self.spool_dir) if n.endswith(".spool"))
        except FileNotFoundError:
            return []

    def assert_exactly_once(self, run, n):
        """Waits until ``n`` logs of ``run`` are stored, then checks each seq 0..n-1 is there once."""
        wait_until("%d logs of run %s" % (n, run), lambda: len(self.daemon.seqs(run)) >= n)
        seqs = self.daemon.seqs(run)
        missing = sorted(set(range(n)) - set(seqs))
        duplicated = sorted({s for s in seqs if seqs.count(s) > 1}) if len(seqs) != len(set(seqs)) else []
        self.assertEqual((missing[:20], duplicated[:20], len(seqs)), ([], [], n),
                         "missing / duplicated / stored; daemon log:\n" + self.daemon.log())


def make_logger(name, handler):
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger
