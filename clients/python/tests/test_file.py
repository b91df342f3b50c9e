"""``socket = "file:PATH"``: the client appends JSON lines to a file that the daemon tails."""

import json
import os
import unittest

from support import Daemon, DaemonTest, make_logger, needs_daemon, wait_until

import lngpt_collector


@needs_daemon
class FileTargetTest(DaemonTest):
    def test_lines_appended_to_a_tailed_file_are_stored_once_even_across_a_rotation(self):
        path = os.path.join(self.dir, "events", "app.jsonl")
        self.daemon = Daemon(self.dir, extra='[[file]]\npath = %s\nstart_at = "beginning"\n' % json.dumps(path))
        self.daemon.start()
        c = self.collector(socket="file:" + path)
        log = make_logger("file.target", lngpt_collector.CollectorHandler(collector=c))
        for i in range(500):
            log.info("to the file %d", i, extra={"run": "file", "seq": i})
        self.assertTrue(c.flush(timeout=60), c.stats())
        with open(path, "rb") as f:
            self.assertEqual(len(f.read().splitlines()), 500)
        os.rename(path, path + ".1")  # rename rotation: the client opens a new file at the path
        seq = [500]

        def log_until_reopened():
            log.info("to the file %d", seq[0], extra={"run": "file", "seq": seq[0]})
            seq[0] += 1
            self.assertTrue(c.flush(timeout=60), c.stats())
            return os.path.exists(path)

        wait_until("a new file at the path", log_until_reopened, interval=0.05)
        self.assert_exactly_once("file", seq[0])
        self.assertFalse(self.spool_files())


if __name__ == "__main__":
    unittest.main()
