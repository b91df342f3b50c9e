#!/usr/bin/env python3
"""How fast one process sends 300-byte records through the client, until every one is confirmed.

    python3 clients/python/bench/throughput.py --daemon target/release/lngpt-collector
    python3 clients/python/bench/throughput.py --standin 0.2      # no daemon: see below
    python3 clients/python/bench/throughput.py --socket /run/lngpt-collector/collector.sock

One process calls ``Collector.send()`` with log events of about 300 bytes as JSON (the shape and size of
the project's acceptance load, ``shared/bench/mkdata.py``: Chinese text, four ``extra`` fields, a distinct
``extra.req``), as fast as it can, with the client's default settings (spool on, in a temporary
directory). The clock runs from the first ``send()`` until ``flush()`` says everything is confirmed
durable; the figure is records × their encoded size ÷ that time. Drops, the mode at the end (``spool``
means the collector could not keep up and records went through the disk) and the most bytes held in
memory are printed with it.

``--daemon BIN`` starts the collector with its defaults on a temporary directory (a config with
``state_dir``, ``[socket] path`` and ``[api] listen`` on a free loopback port) and checks the store's
count at the end. ``--standin DELAY`` measures the client alone: a second process reads everything and
answers each sync line DELAY seconds after it arrived, without ever stopping to read (a collector that
pipelines its answers; ``max_wait`` is 200 ms). A benchmark, not a test: it asserts nothing.
"""

import argparse
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import lngpt_collector  # noqa: E402
from lngpt_collector._collector import encode  # noqa: E402

MESSAGE = "开始API调用 model=gpt-4o tokens=1234"
HOST_PAD = "x" * 57  # the encoded event is 300 bytes


def event(i):
    return {"type": "log", "timestamp": 1795680000.123, "level": "INFO", "message": MESSAGE,
            "module": "lngpt.api", "function": "stream_chat", "line": 42,
            "extra": {"model": "gpt-4o", "tokens": 1234, "req": "r%09d" % i, "host": "app-01." + HOST_PAD}}


def standin(path, delay):
    """The stand-in collector (run in its own process): reads, counts lines, answers sync lines late."""
    try:
        os.unlink(path)
    except OSError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    marker = b'{"type":"sync","id":'

    def serve(conn):
        pending = []
        cond = threading.Condition()

        def answer():
            while True:
                with cond:
                    while not pending:
                        cond.wait()
                    due, sync_id, lines = pending.pop(0)
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    conn.sendall(b'{"sync":%s,"events":%d,"rejected":0}\n' % (sync_id, lines))
                except OSError:
                    return

        threading.Thread(target=answer, daemon=True).start()
        rest = b""
        lines = 0
        while True:
            data = conn.recv(1 << 20)
            if not data:
                return
            data = rest + data
            cut = data.rfind(b"\n") + 1
            data, rest = data[:cut], data[cut:]
            pos = 0
            while True:
                i = data.find(marker, pos)
                if i < 0:
                    lines += data.count(b"\n", pos)
                    break
                lines += data.count(b"\n", pos, i)
                end = data.index(b"\n", i)
                with cond:
                    pending.append((time.monotonic() + delay, data[i + len(marker):end - 1], lines))
                    cond.notify()
                pos = end + 1

    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(check, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            sys.exit("timed out waiting for " + what)
        time.sleep(0.05)


def connectable(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--daemon", metavar="BIN", help="start this lngpt-collector binary with its defaults")
    where.add_argument("--socket", metavar="PATH", help="a collector already listening here")
    where.add_argument("--standin", metavar="DELAY", type=float, help="a stand-in answering each sync DELAY s late")
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rate", type=float, default=25.0,
                        help="MB/s the app sends at (paced every 10 ms); 0: a tight loop, faster than any "
                             "client can encode, which only measures how much is dropped")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()

    if args.standin is not None and os.environ.get("LNGPT_BENCH_STANDIN"):
        standin(os.environ["LNGPT_BENCH_STANDIN"], args.standin)
        return

    work = tempfile.mkdtemp(prefix="lngpt-bench-")
    process = None
    try:
        path = args.socket
        if args.daemon:
            path = os.path.join(work, "collector.sock")
            config = os.path.join(work, "config.toml")
            with open(config, "w") as f:
                f.write('state_dir = %s\n[socket]\npath = %s\n[api]\nlisten = "127.0.0.1:%d"\n'
                        % (json.dumps(os.path.join(work, "state")), json.dumps(path), free_port()))
            env = {k: v for k, v in os.environ.items() if not k.startswith("LNGPT_")}
            process = subprocess.Popen([args.daemon, "run", "--config", config], env=env,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elif args.standin is not None:
            path = os.path.join(work, "standin.sock")
            process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--standin", str(args.standin)],
                                       env=dict(os.environ, LNGPT_BENCH_STANDIN=path))
        wait_for(lambda: connectable(path), "the collector's socket")

        size = len(encode(event(0)))
        sent = 0
        delivered_all = 0
        for run in range(args.runs):
            c = lngpt_collector.Collector(socket=path, spool_dir=os.path.join(work, "spool-%d" % run))
            c.send(event(sent))  # connect first: the figure is about sending, not connecting
            c.flush(30)
            first = sent + 1
            per_slice = max(1, int(args.rate * 1e6 / size / 100)) if args.rate else args.records
            start = time.perf_counter()
            for n, i in enumerate(range(first, first + args.records)):
                c.send(event(i))
                if n % per_slice == per_slice - 1:
                    # The app's pace: per_slice records every 10 ms.
                    delay = start + (n + 1) / per_slice * 0.01 - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
            queued = time.perf_counter() - start
            confirmed = c.flush(600)
            elapsed = time.perf_counter() - start
            sent = first + args.records
            stats = c.close(timeout=5)
            dropped = stats["dropped_queue"] + stats["dropped_spool"]
            delivered = args.records - dropped
            delivered_all += delivered + 1
            print("%d records of %d bytes sent at %s: %.1f MB/s, %.0f records/s delivered (sent in %.2f s, all "
                  "confirmed in %.2f s%s); dropped %d, mode at the end %s, most held in memory %.1f MiB" % (
                      args.records, size, "%.0f MB/s" % args.rate if args.rate else "full speed",
                      delivered * size / elapsed / 1e6, delivered / elapsed, queued,
                      elapsed, "" if confirmed else ": NOT ALL CONFIRMED", dropped, stats["mode"],
                      stats["held_bytes_peak"] / 1048576))
            sys.stdout.flush()
        if args.daemon:
            db = os.path.join(work, "state", "collector.db")
            count = lambda: sqlite3.connect(db).execute(  # noqa: E731
                "SELECT count(*) FROM api_logs WHERE json_extract(doc, '$.extra.req') IS NOT NULL").fetchone()[0]
            wait_for(lambda: count() >= delivered_all, "the store's count", timeout=120)
            print("stored: %d of the records (all that were not dropped)" % count())
    finally:
        if process is not None:
            process.terminate()
            process.wait(60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
