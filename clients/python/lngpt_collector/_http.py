"""GET requests to the daemon's HTTP API, over TCP or a Unix socket.

``api`` is ``http://host:port`` (``https://`` works too) or ``unix:/path/to/api.sock``: the daemon can
listen on a Unix socket (``[api] listen = "unix:…"``), which is what a compose setup needs when the
API's TCP port is on another container's loopback but a shared volume holds the socket. ``http.client``
speaks HTTP/1.1 over any connected socket, so the Unix case is a connection whose ``connect()`` opens
an ``AF_UNIX`` socket; everything else is the same request.

No proxy is ever used (``urllib`` would honour ``http_proxy``, which an app sets for the LLM APIs): the
daemon is on this host.
"""

import http.client
import json
import socket
import urllib.parse

#: The largest answer read (a budget or a cost table is a few KiB).
MAX_ANSWER = 4 << 20


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix stream socket; the Host header says ``localhost``."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _connection(api, timeout):
    """(connection, path prefix, what to call it in messages) for ``api``."""
    if not isinstance(api, str) or not api.strip():
        raise OSError("the API address %r is not a string such as http://127.0.0.1:8787 or unix:/path/api.sock"
                      % (api,))
    api = api.strip()
    if api.startswith("unix:"):
        path = api[len("unix:"):]
        if not path:
            raise OSError("the API address %r has no path after unix:" % api)
        return _UnixConnection(path, timeout), "", api
    parts = urllib.parse.urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OSError("the API address %r is not http://host:port, https://host:port or unix:/path" % api)
    try:
        port = parts.port
    except ValueError:
        raise OSError("the API address %r has an invalid port" % api)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return kind(parts.hostname, port, timeout=timeout), parts.path.rstrip("/"), api.rstrip("/")


def get_json(api, path, params=None, token=None, timeout=2.0):
    """GETs ``path`` (with the query ``params``) from the API at ``api`` and returns the JSON answer.

    Raises OSError when it cannot be had (unreachable, a timeout, an HTTP error: the message names the
    URL and, for 401/403, the token variable) and ValueError when the answer is not JSON."""
    if timeout is not None:
        timeout = float(timeout)
        if not 0 < timeout < 1e9:  # NaN too
            raise ValueError("the API timeout %r is not a number of seconds above 0" % (timeout,))
    conn, prefix, name = _connection(api, timeout)
    target = prefix + path
    if params:
        target += "?" + urllib.parse.urlencode(params)
    url = name + path
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    try:
        try:
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            body = response.read(MAX_ANSWER)
        except Exception as e:  # OSError, HTTPException, and OverflowError for a port past 65535
            raise OSError("cannot reach %s: %s" % (url, str(e) or type(e).__name__))
    finally:
        conn.close()
    if response.status != 200:
        detail = ""
        try:
            detail = json.loads(body or b"{}").get("error") or ""
        except Exception:
            pass
        hint = " (is LNGPT_COLLECTOR_API_TOKEN right?)" if response.status in (401, 403) else ""
        raise OSError("%s answered HTTP %d%s%s" % (url, response.status, ": " + detail if detail else "", hint))
    try:
        return json.loads(body)
    except ValueError:
        raise ValueError("%s did not answer JSON: %r" % (url, body[:200]))
