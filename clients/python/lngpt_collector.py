"""A stdlib-only client for lngpt-collector's Unix socket.

    import logging
    from lngpt_collector import CollectorHandler

    collector = CollectorHandler("/run/lngpt-collector/collector.sock")
    logging.getLogger("lngpt").addHandler(collector)
    logging.getLogger("lngpt.api").info("开始API调用", extra={"data": {"model": "glm-4-flash"}})
    collector.send({"type": "cost", "model": "gpt-4o", "cost": 0.0123, "currency_symbol": "$",
                    "input_tokens": 1200, "output_tokens": 300})

The socket blocks only when the collector's queue is full (it never drops). To keep request
threads from ever waiting, put a logging.handlers.QueueHandler in front of this handler.
"""

import json
import logging
import socket
import threading


class CollectorHandler(logging.Handler):
    """Sends every log record, and any event dict given to send(), as one JSON line."""

    def __init__(self, path="./data/collector.sock"):
        super().__init__()
        self.path = path
        self._sock = None
        self._lock_send = threading.Lock()

    def emit(self, record):
        line = {
            "created": record.created,
            "levelname": record.levelname,
            "msg": record.getMessage(),
            "name": record.name,
            "module": record.module,
            "funcName": record.funcName,
            "lineno": record.lineno,
            "extra": getattr(record, "data", {}),
        }
        try:
            self.send(line)
        except OSError:
            self.handleError(record)

    def send(self, event):
        """Sends one event (a dict); cost and performance records set "type"."""
        data = json.dumps(event, ensure_ascii=False, default=str).encode() + b"\n"
        with self._lock_send:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    self._sock.connect(self.path)
                self._sock.sendall(data)
            except OSError:
                # Reconnect on the next event (e.g. after the collector restarted).
                self._close_socket()
                raise

    def close(self):
        """Flushes and reads the collector's count of what it accepted ({"events": N, "rejected": M})."""
        answer = None
        with self._lock_send:
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_WR)
                    answer = json.loads(self._sock.makefile().readline() or "null")
                except (OSError, ValueError):
                    pass
                self._close_socket()
        super().close()
        return answer

    def _close_socket(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None
