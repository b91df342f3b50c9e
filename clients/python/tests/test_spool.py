"""Durability: the spool takes records while the collector is down, and replays them exactly once."""

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import unittest

from support import PACKAGE_ROOT, Daemon, DaemonTest, make_logger, needs_daemon, wait_until

import lngpt_collector


@needs_daemon
class SpoolTest(DaemonTest):
    def test_records_logged_while_the_collector_is_down_are_stored_once_it_starts(self):
        c = self.collector()
        log = make_logger("spool.down", lngpt_collector.CollectorHandler(collector=c))
        for i in range(3000):
            log.info("while down %d", i, extra={"run": "down", "seq": i})
        wait_until("the records in the spool", lambda: c.stats()["spooled_bytes"] > 0 and c.stats()["queued"] == 0)
        self.assertFalse(c.flush(timeout=0.2))
        self.assertEqual(len(self.spool_files()), 1)

        self.daemon.start()
        self.assertTrue(c.flush(timeout=60), c.stats())
        self.assert_exactly_once("down", 3000)
        wait_until("the spool file deleted once confirmed", lambda: not self.spool_files())
        self.assertEqual(c.stats()["mode"], "direct")

    def test_a_collector_restart_while_the_app_logs_loses_and_duplicates_nothing(self):
        self.daemon.start()
        c = self.collector()
        log = make_logger("spool.restart", lngpt_collector.CollectorHandler(collector=c))
        n = 20000
        logged = threading.Event()
        half = threading.Event()

        def app():
            for i in range(n):
                log.info("during restart %d", i, extra={"run": "restart", "seq": i})
                if i == n // 4:
                    half.set()
                if i % 200 == 0:
                    # An app that logs steadily, not one tight loop: the restart falls in the middle.
                    threading.Event().wait(0.002)
            logged.set()

        t = threading.Thread(target=app)
        t.start()
        half.wait(60)
        self.daemon.stop()
        self.daemon.start()
        t.join(120)
        self.assertTrue(logged.is_set())
        self.assertTrue(c.flush(timeout=60), c.stats())
        self.assert_exactly_once("restart", n)

    def test_a_spool_left_by_an_app_that_exited_is_replayed_by_the_next_start(self):
        script = textwrap.dedent("""
            import logging, sys
            sys.path.insert(0, %r)
            import lngpt_collector
            handler = lngpt_collector.CollectorHandler(socket=%r, spool_dir=%r, exit_timeout=0.5)
            log = logging.getLogger("lngpt")
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            for i in range(1500):
                log.info("before exit %%d", i, extra={"run": "exit", "seq": i})
        """ % (PACKAGE_ROOT, self.daemon.socket, self.spool_dir))
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(len(self.spool_files()), 1, out.stderr)

        self.daemon.start()
        # The next run of the app adopts the spool even before it logs anything new.
        c = self.collector()
        c.send({"type": "log", "message": "next start", "extra": {"run": "exit-next", "seq": 0}})
        self.assertTrue(c.flush(timeout=60), c.stats())
        self.assert_exactly_once("exit", 1500)
        wait_until("the adopted spool deleted", lambda: not self.spool_files())

    def test_a_spool_left_by_a_dead_process_is_replayed_by_a_process_that_only_configures(self):
        """Process A spools with the collector down and exits; the collector starts; process B configures
        the client (``configure()``, then ``CollectorHandler(...)``) and sends nothing: A's records arrive."""
        spool_and_exit = textwrap.dedent("""
            import logging, sys
            sys.path.insert(0, %r)
            import lngpt_collector
            lngpt_collector.configure(socket=%r, spool_dir=%r, exit_timeout=0.2)
            for i in range(700):
                lngpt_collector.get_collector().send({"type": "log", "message": "A %%d" %% i,
                                                      "extra": {"run": sys.argv[1], "seq": i}})
        """ % (PACKAGE_ROOT, self.daemon.socket, self.spool_dir))
        only_configure = textwrap.dedent("""
            import json, sys
            sys.path.insert(0, %r)
            import lngpt_collector
            if sys.argv[1] == "configure":
                lngpt_collector.configure(socket=%r, spool_dir=%r)
            else:
                lngpt_collector.CollectorHandler(socket=%r, spool_dir=%r)
            sys.stdin.read()  # until the test has seen the records stored
            print(json.dumps(lngpt_collector.stats()))
        """ % ((PACKAGE_ROOT,) + (self.daemon.socket, self.spool_dir) * 2))
        for how in ("configure", "handler"):
            with self.subTest(how=how):
                out = subprocess.run([sys.executable, "-c", spool_and_exit, "A-" + how], capture_output=True,
                                     text=True, timeout=60)
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertEqual(len(self.spool_files()), 1, out.stderr)
                self.daemon.start()
                b = subprocess.Popen([sys.executable, "-c", only_configure, how], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                try:
                    self.assert_exactly_once("A-" + how, 700)
                    wait_until("the adopted spool deleted", lambda: not self.spool_files())
                finally:
                    stdout, stderr = b.communicate("", timeout=60)
                self.assertEqual(b.returncode, 0, stderr)
                stats = json.loads(stdout)
                self.assertEqual((stats["enqueued"], stats["confirmed"]), (0, 700), stats)
                self.daemon.stop()

    def test_past_the_spool_cap_records_are_dropped_counted_and_reported_once_the_collector_is_back(self):
        c = self.collector(max_spool_bytes=64 * 1024)
        log = make_logger("spool.cap", lngpt_collector.CollectorHandler(collector=c))
        for i in range(2000):
            log.info("x" * 100, extra={"run": "cap", "seq": i})

        def in_spool():
            files = self.spool_files()
            if not files:
                return 0
            with open(os.path.join(self.spool_dir, files[0]), "rb") as f:
                return f.read().count(b'"run":"cap"')

        # Every record spooled or dropped (the worker counts a chunk's drops after taking it from
        # the queue, so an empty queue alone does not say the count is final).
        wait_until("records dropped at the cap",
                   lambda: c.stats()["dropped_spool"] > 0 and c.stats()["dropped_spool"] + in_spool() == 2000)
        dropped = c.stats()["dropped_spool"]
        spooled = 2000 - dropped
        self.assertEqual(in_spool(), spooled)
        self.assertLess(os.path.getsize(os.path.join(self.spool_dir, self.spool_files()[0])), 64 * 1024 + 1)

        self.daemon.start()
        c.send({"type": "log", "message": "back", "extra": {"run": "cap-back"}})
        self.assertTrue(c.flush(timeout=60), c.stats())
        self.assert_exactly_once("cap", spooled)  # the first ones, which fitted
        warning = wait_until("the drop warning", lambda: self.daemon.query(
            "SELECT level, json_extract(doc, '$.message'), json_extract(doc, '$.extra.dropped') FROM api_logs "
            "WHERE logger = 'lngpt_collector'"))
        self.assertEqual(warning[0][0], "WARNING")
        self.assertEqual(warning[0][2], dropped)
        self.assertIn("max_spool_bytes=65536", warning[0][1])


    def test_a_spool_with_a_torn_last_line_is_replayed_without_it(self):
        """A crash in the middle of a write leaves half a line: it is cut off, not sent as a reject."""
        from lngpt_collector._spool import HEADER_LEN, _header

        os.makedirs(self.spool_dir)
        lines = b"".join(lngpt_collector._collector.encode(
            {"type": "log", "message": "spooled %d" % i, "extra": {"run": "torn", "seq": i}}) for i in range(3))
        with open(os.path.join(self.spool_dir, "lngpt-collector-99999-00000000.spool"), "wb") as f:
            f.write(_header(HEADER_LEN) + lines + b'{"type":"log","mess')
        with open(os.path.join(self.spool_dir, "lngpt-collector-99998-00000000.spool"), "wb") as f:
            f.write(b"not a spool file\n")
        self.daemon.start()
        c = self.collector()
        c.send({"type": "log", "message": "new", "extra": {"run": "torn-new", "seq": 0}})
        self.assertTrue(c.flush(timeout=60), c.stats())
        self.assert_exactly_once("torn", 3)
        wait_until("the spool replayed and deleted", lambda: not self.spool_files())
        self.assertEqual(self.daemon.count("api_rejects"), 0)
        self.assertEqual(sorted(os.listdir(self.spool_dir)), ["lngpt-collector-99998-00000000.spool.bad"])


@needs_daemon
class RefusedTest(DaemonTest):
    def test_a_client_over_the_connection_cap_spools_and_delivers_once_a_slot_frees(self):
        self.daemon = Daemon(self.dir, socket_extra="max_connections = 1\n")
        self.daemon.start()
        import socket as socketlib

        def take_the_only_slot():
            # The start-up probe's connection may still hold it for a moment.
            s = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
            s.connect(self.daemon.socket)
            s.sendall(b'{"type":"sync","id":"holder"}\n')
            if b'"sync":"holder"' in s.recv(4096):
                return s
            s.close()
            return None

        holder = wait_until("the only connection slot", take_the_only_slot)
        c = self.collector()
        for i in range(200):
            c.send({"type": "log", "message": "refused %d" % i, "extra": {"run": "refused", "seq": i}})
        wait_until("the refusal spooled", lambda: c.stats()["spooled_bytes"] > 0)
        holder.close()
        self.assertTrue(c.flush(timeout=60), c.stats())
        self.assert_exactly_once("refused", 200)


@needs_daemon
class StalledTest(DaemonTest):
    def test_a_stalled_collector_sends_records_to_the_spool_and_they_arrive_once_it_reads_again(self):
        """The daemon stopped with SIGSTOP: it accepted the connection and reads nothing."""
        self.daemon.start()
        c = self.collector(stall_timeout=0.5)
        log = make_logger("spool.stall", lngpt_collector.CollectorHandler(collector=c))
        log.info("first", extra={"run": "stall", "seq": 0})
        self.assertTrue(c.flush(timeout=60))
        self.daemon.process.send_signal(__import__("signal").SIGSTOP)
        try:
            for i in range(1, 5000):
                log.info("y" * 200, extra={"run": "stall", "seq": i})
            wait_until("the stall noticed", lambda: c.stats()["stalled"] and c.stats()["spooled_bytes"] > 0)
        finally:
            self.daemon.process.send_signal(__import__("signal").SIGCONT)
        self.assertTrue(c.flush(timeout=60), c.stats())
        self.assert_exactly_once("stall", 5000)
        wait_until("back to direct delivery", lambda: c.stats()["mode"] == "direct" and not self.spool_files())


if __name__ == "__main__":
    logging.raiseExceptions = True
    unittest.main()
