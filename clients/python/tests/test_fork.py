"""fork(): a child starts its own connection, queue and spool; the parent's stay the parent's."""

import logging
import multiprocessing
import os
import unittest

from support import DaemonTest, make_logger, needs_daemon, wait_until

import lngpt_collector


def _mp_worker(name, run, n):
    # A multiprocessing worker: ends with os._exit() and never calls flush(); the client's
    # multiprocessing finalizer still delivers what it logged.
    log = logging.getLogger(name)
    for i in range(n):
        log.info("from the multiprocessing worker %d", i, extra={"run": run, "seq": i})


@needs_daemon
class ForkTest(DaemonTest):
    def test_a_forked_worker_logs_over_its_own_connection(self):
        self.daemon.start()
        c = self.collector()
        log = make_logger("fork.os", lngpt_collector.CollectorHandler(collector=c))
        log.info("parent before fork", extra={"run": "parent", "seq": 0})
        self.assertTrue(c.flush(timeout=60))
        parent_thread = c._thread

        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                assert c._thread is None, "the child must not think the parent's thread is its own"
                for i in range(500):
                    log.info("child %d", i, extra={"run": "child", "seq": i})
                code = 0 if c.flush(timeout=60) and c._thread is not parent_thread else 2
            finally:
                os._exit(code)
        for i in range(1, 500):
            log.info("parent %d", i, extra={"run": "parent", "seq": i})
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.WEXITSTATUS(status), 0)
        self.assertTrue(c.flush(timeout=60), c.stats())
        self.assert_exactly_once("child", 500)
        self.assert_exactly_once("parent", 500)

    def test_a_forked_child_while_the_collector_is_down_keeps_its_own_spool(self):
        c = self.collector()
        log = make_logger("fork.down", lngpt_collector.CollectorHandler(collector=c))
        log.info("parent", extra={"run": "p-down", "seq": 0})
        wait_until("the parent spooling", lambda: len(self.spool_files()) == 1)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for i in range(300):
                    log.info("child %d", i, extra={"run": "c-down", "seq": i})
                c.close(timeout=0.2)  # what atexit does: the rest stays in the child's spool
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.WEXITSTATUS(status), 0)
        self.assertEqual(len(self.spool_files()), 2, "the child must write a spool file of its own")

        self.daemon.start()
        self.assertTrue(c.flush(timeout=60), c.stats())
        self.assert_exactly_once("p-down", 1)
        # The parent adopts the child's spool (its process is gone) once its own is drained.
        wait_until("the child's spool adopted", lambda: not self.spool_files(), timeout=60)
        self.assert_exactly_once("c-down", 300)

    def test_multiprocessing_fork_workers_deliver_without_flushing(self):
        self.daemon.start()
        lngpt_collector.configure(socket=self.daemon.socket, spool_dir=self.spool_dir)
        log = logging.getLogger("fork.mp")
        log.handlers[:] = [lngpt_collector.CollectorHandler()]
        log.setLevel(logging.INFO)
        log.propagate = False
        log.info("parent", extra={"run": "mp-parent", "seq": 0})
        ctx = multiprocessing.get_context("fork")
        workers = [ctx.Process(target=_mp_worker, args=("fork.mp", "mp-%d" % w, 200)) for w in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
            self.assertEqual(w.exitcode, 0)
        for w in range(3):
            self.assert_exactly_once("mp-%d" % w, 200)
        self.assertTrue(lngpt_collector.flush(timeout=60))
        self.assert_exactly_once("mp-parent", 1)


if __name__ == "__main__":
    unittest.main()
