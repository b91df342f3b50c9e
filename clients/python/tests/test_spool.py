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


@needs_daemon
class MemoryBoundTest(DaemonTest):
    """``max_queue_bytes``: with nowhere to put them, large records cost the app at most that much memory."""

    BIG = 100_000
    N = 10_000

    def check_bounded(self, run, **options):
        c = self.collector(**options)  # the collector is down: nothing is sent
        bound = c.settings.max_queue_bytes
        self.assertEqual(bound, 16 << 20)  # the default
        log = make_logger("memory." + run, lngpt_collector.CollectorHandler(collector=c))
        big = "x" * self.BIG
        for i in range(self.N):
            log.info(big, extra={"run": run, "seq": i})  # 1 GB in all, were it all held
        wait_until("the queue taken", lambda: c.stats()["queued"] == 0)
        stats = c.stats()
        self.assertLessEqual(stats["held_bytes_peak"], bound, stats)
        self.assertLessEqual(stats["held_bytes"], bound, stats)
        self.assertGreater(stats["held_bytes_peak"], bound // 2, stats)  # it did fill up to the bound
        self.assertGreater(stats["dropped_queue"], self.N // 2, stats)
        self.assertEqual(stats["spooled_bytes"], 0, stats)

        # Nothing dropped goes unsaid, nothing kept is lost: once the collector is there, what was held
        # arrives once, and the warning counts the rest.
        self.daemon.start()
        self.assertTrue(c.flush(timeout=60), c.stats())
        stats = c.stats()
        dropped = stats["dropped_queue"]
        self.assertLessEqual(stats["held_bytes_peak"], bound, stats)
        kept = self.N - dropped
        self.assertGreater(kept, 0)
        self.assertLessEqual(kept * self.BIG, bound)
        seqs = self.daemon.seqs(run)
        self.assertEqual((len(seqs), len(set(seqs))), (kept, kept))
        warning = wait_until("the drop warning", lambda: self.daemon.query(
            "SELECT json_extract(doc, '$.extra.dropped'), json_extract(doc, '$.message') FROM api_logs "
            "WHERE logger = 'lngpt_collector'"))
        self.assertEqual(warning[0][0], dropped)
        self.assertIn("max_queue_bytes=%d" % bound, warning[0][1])

    def test_large_records_with_the_spool_off_hold_at_most_max_queue_bytes(self):
        self.check_bounded("spool-off", spool_dir="off")

    def test_large_records_with_a_spool_that_cannot_be_written_hold_at_most_max_queue_bytes(self):
        blocker = os.path.join(self.dir, "a-file")
        with open(blocker, "w") as f:
            f.write("not a directory\n")
        self.check_bounded("spool-broken", spool_dir=os.path.join(blocker, "spool"))

    def test_the_estimate_of_a_record_is_never_much_below_its_encoded_size(self):
        from lngpt_collector._collector import encode, estimate

        samples = [
            {"type": "log", "message": "x" * 100_000},
            {"type": "log", "message": "长" * 50_000, "extra": {"data": ["雨夜" * 100] * 500}},
            {"type": "log", "message": "m", "extra": {"nested": {"a": {"b": {"c": {"d": {"e": {"f": "z" * 5000}}}}}}}},
            {"type": "cost", "model": "gpt-4o", "cost": 0.01, "extra": {"ids": list(range(100_000))}},
            b'{"type":"log","message":"a line as it is"}\n',
        ]
        for sample in samples:
            with self.subTest(kind=type(sample).__name__, size=len(encode(sample) if isinstance(sample, dict) else sample)):
                real = len(encode(sample)) if isinstance(sample, dict) else len(sample)
                self.assertGreaterEqual(estimate(sample), real * 0.75)


class PipelineTest(DaemonTest):
    """Against a stand-in that holds its answers: the client keeps writing while sync lines wait for
    their answers (up to its window), sends no sync line behind another unless its chunk is full, and
    has every chunk confirmed, in order, once the answers come."""

    def test_chunks_are_pipelined_and_a_sync_line_waits_for_the_one_before_it(self):
        import socket as socketlib

        path = os.path.join(self.dir, "standin.sock")
        server = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        self.addCleanup(server.close)
        c = self.collector(socket=path, spool_dir="off", max_queue_bytes=1 << 20, stall_timeout=600)
        window = lngpt_collector._collector.window_for(c.settings.max_queue_bytes)
        chunk_max = lngpt_collector._collector.chunk_max_for(window)
        self.assertEqual((window, chunk_max), (512 * 1024, 64 * 1024))
        state = {"lines": 0, "syncs": [], "bytes": 0, "answered": threading.Event(), "hold": threading.Event()}

        def serve():
            conn, _ = server.accept()
            with conn:
                answer(conn)

        def answer(conn):
            conn.settimeout(0.05)  # to answer once told to, even while the client has nothing to write
            rest = b""
            since = 0  # bytes since the last sync line
            owed = []
            while True:
                try:
                    data = conn.recv(1 << 16)
                except socketlib.timeout:
                    data = b"\n"  # nothing new: an empty line changes nothing below
                if not data:
                    return
                if data != b"\n":
                    state["bytes"] += len(data)
                lines = (rest + data).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if line.startswith(b'{"type":"sync"'):
                        state["syncs"].append((json.loads(line)["id"], since, state["answered"].is_set()))
                        owed.append(b'{"sync":%s,"events":%d,"rejected":0}\n'
                                    % (json.dumps(json.loads(line)["id"]).encode(), state["lines"]))
                        since = 0
                    elif line:
                        state["lines"] += 1
                        since += len(line) + 1
                if owed and state["hold"].is_set():
                    state["answered"].set()
                    conn.sendall(b"".join(owed))
                    owed.clear()

        threading.Thread(target=serve, daemon=True).start()
        n = 700  # 700 KB: more than the window, less than max_queue_bytes
        for i in range(n):
            c.send({"type": "log", "message": "p" * 1000, "extra": {"seq": i}})
        # Unanswered, the client writes a window's worth and stops there.
        wait_until("a window's worth written", lambda: state["bytes"] >= window)
        self.assertFalse(c.flush(timeout=0.3))
        held = list(state["syncs"])
        self.assertLess(state["bytes"], window + 2 * 1100, "past the window without an answer")
        self.assertGreaterEqual(len(held), 2, held)
        # The first chunk went out with its sync line at once; each one after it waited until full.
        for sync_id, size, _ in held[1:]:
            self.assertGreaterEqual(size, chunk_max, held)
            self.assertLess(size, chunk_max + 1100, held)
        state["hold"].set()
        c.send({"type": "log", "message": "after", "extra": {"seq": n}})
        self.assertTrue(c.flush(timeout=60), c.stats())
        self.assertEqual((state["lines"], c.stats()["confirmed"], c.stats()["dropped_queue"]), (n + 1, n + 1, 0))
        ids = [sync_id for sync_id, _, _ in state["syncs"]]
        self.assertEqual(ids, sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1])))

    def test_against_a_daemon_that_stops_reading_at_each_sync_line_chunks_grow(self):
        """Today's daemon reads nothing after a sync line until it can answer it: each sync line costs
        a wait, so the client sends fewer of them, with more lines each (up to half its window)."""
        import socket as socketlib

        path = os.path.join(self.dir, "blocking.sock")
        server = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        self.addCleanup(server.close)
        sizes = []

        def serve():
            conn, _ = server.accept()
            with conn:
                rest, since, lines = b"", 0, 0
                while True:
                    data = conn.recv(1 << 16)
                    if not data:
                        return
                    parts = (rest + data).split(b"\n")
                    rest = parts.pop()
                    for line in parts:
                        if line.startswith(b'{"type":"sync"'):
                            sizes.append(since)
                            since = 0
                            threading.Event().wait(0.05)  # "until its batch is written": reads nothing meanwhile
                            conn.sendall(b'{"sync":%s,"events":%d,"rejected":0}\n'
                                         % (json.dumps(json.loads(line)["id"]).encode(), lines))
                        else:
                            lines += 1
                            since += len(line) + 1

        threading.Thread(target=serve, daemon=True).start()
        c = self.collector(socket=path, spool_dir="off", stall_timeout=600)
        window = lngpt_collector._collector.window_for(c.settings.max_queue_bytes)
        first = lngpt_collector._collector.chunk_max_for(window)
        n = 12000  # 12 MB: the chunks have room to grow
        for i in range(n):
            c.send({"type": "log", "message": "b" * 1000, "extra": {"seq": i}})
            if i % 1000 == 999:
                # Paced, so that the queue never drops: this is about sync lines, not memory.
                wait_until("the queue taken", lambda: c.stats()["queued"] < 2000)
        self.assertTrue(c.flush(timeout=120), c.stats())
        self.assertEqual((c.stats()["confirmed"], c.stats()["dropped_queue"]), (n, 0))
        # The chunks already closed when the first answers came keep their size; the next grow, to at
        # most half the window.
        self.assertGreaterEqual(max(sizes), window // 2, sizes)
        self.assertLessEqual(max(sizes), window // 2 + 1100, sizes)
        self.assertLessEqual(len(sizes), window // first + n * 1030 // (window // 2) + 2, sizes)


if __name__ == "__main__":
    logging.raiseExceptions = True
    unittest.main()
