"""check_cost_limits() against a stand-in for the daemon's GET /api/budget (same answer shape), against
nothing at all (fail open or closed), with arguments of every wrong type, and against the real daemon
whose API listens on a Unix socket."""

import contextlib
import http.server
import io
import json
import logging
import socket
import threading
import unittest

from support import DaemonTest, Daemon, needs_daemon, wait_until

import lngpt_collector
from lngpt_collector import BudgetUnavailable, CostLimitExceeded, check_cost_limits

TOKEN = "test-token-0123456789"


def window(spent, limit):
    return {"spent_rmb": spent, "limit_rmb": limit, "remaining_rmb": max(0.0, limit - spent),
            "fraction": spent / limit, "window_start": "2026-11-26T08:00:00Z", "window_end": "2026-11-26T09:00:00Z"}


def budget(hour=(10.0, 100.0), day=(50.0, 1000.0), models=()):
    allowed = hour[0] < hour[1] and day[0] < day[1] and all(
        m["hour"]["spent_rmb"] < m["hour"]["limit_rmb"] and m["day"]["spent_rmb"] < m["day"]["limit_rmb"] for m in models)
    return {"success": True, "allowed": allowed, "window": "sliding", "timezone": "Asia/Shanghai",
            "usd_to_rmb_rate": 7.0, "hour": window(*hour), "day": window(*day),
            "projection": {"rate_rmb_per_hour": 12.5, "daily_limit_at": None, "daily_limit_at_local": None},
            "models": list(models), "as_of": "2026-11-26T08:59:58Z", "store_error": None}


class StandIn(http.server.ThreadingHTTPServer):
    """Answers GET /api/budget with ``self.answer`` to requests bearing the token."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.answer = budget()
        self.requests = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            self.reply(401, {"success": False, "error": "a bearer token is required"})
        elif not self.path.startswith("/api/budget"):
            self.reply(404, {"success": False, "error": "not found"})
        else:
            self.reply(200, self.server.answer)

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def unused_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class BudgetTest(unittest.TestCase):
    def setUp(self):
        self.server = StandIn()
        lngpt_collector._budget._outage = None  # "once per outage" is process-wide state
        lngpt_collector.configure(api=self.server.url, api_token=TOKEN, spool_dir="off", socket="/nonexistent.sock")
        self.captured = Capture()
        logger = logging.getLogger("lngpt.collector")
        logger.addHandler(self.captured)
        logger.setLevel(logging.INFO)  # as the app sets "lngpt"
        self.addCleanup(logger.removeHandler, self.captured)

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()

    def test_under_the_limits_the_call_is_allowed(self):
        self.assertIs(check_cost_limits(), True)
        self.assertEqual(self.server.requests, ["/api/budget"])

    def test_over_the_hourly_limit_raises_and_prints_the_originals_messages(self):
        self.server.answer = budget(hour=(100.0, 100.0), day=(120.0, 1000.0))
        printed = io.StringIO()
        with self.assertRaises(CostLimitExceeded) as raised, contextlib.redirect_stdout(printed):
            check_cost_limits()
        self.assertEqual(str(raised.exception), "最近1小时内API调用费用超过设定上限！")
        self.assertEqual((raised.exception.window, raised.exception.spent_rmb), ("hour", 100.0))
        self.assertIsInstance(raised.exception, Exception)
        self.assertEqual(printed.getvalue(), "警告：最近1小时API费用（￥100.00）超过限制（￥100.0）\n")
        # And the same line as a WARNING on lngpt.collector, which the app's handlers send to the collector.
        self.assertEqual([r.getMessage() for r in self.captured.records if r.levelno == logging.WARNING],
                         ["警告：最近1小时API费用（￥100.00）超过限制（￥100.0）"])

    def test_over_the_daily_limit_raises_and_prints_the_originals_messages(self):
        self.server.answer = budget(hour=(20.0, 100.0), day=(1000.5, 1000.0))
        printed = io.StringIO()
        with self.assertRaises(CostLimitExceeded) as raised, contextlib.redirect_stdout(printed):
            check_cost_limits()
        self.assertEqual(str(raised.exception), "最近1天内API调用费用超过设定上限！")
        self.assertEqual(raised.exception.window, "day")
        self.assertEqual(printed.getvalue(), "警告：最近24小时API费用（￥1000.50）超过限制（￥1000.0）\n")

    def test_a_models_own_limit_is_asked_for_and_named(self):
        over = {"model": "gpt-4o", "hour": window(30.0, 30.0), "day": window(40.0, 300.0)}
        self.server.answer = budget(models=[over])
        with self.assertRaises(CostLimitExceeded) as raised, contextlib.redirect_stdout(io.StringIO()):
            check_cost_limits(model="gpt-4o")
        self.assertEqual(self.server.requests, ["/api/budget?model=gpt-4o"])
        self.assertEqual(str(raised.exception), "模型 gpt-4o 最近1小时内API调用费用超过设定上限！")
        self.assertEqual(raised.exception.model, "gpt-4o")

    def test_unreachable_fails_open_by_default_and_says_so_once_per_outage(self):
        dead = "http://127.0.0.1:%d" % unused_port()
        for _ in range(3):
            self.assertIs(check_cost_limits(api=dead), True)
        warnings = [r for r in self.captured.records if r.levelno == logging.WARNING]
        self.assertEqual(len(warnings), 1, [r.getMessage() for r in warnings])
        self.assertIn("fail_open", warnings[0].getMessage())
        # It answers again: said once; the next outage is said again.
        self.assertIs(check_cost_limits(), True)
        self.assertTrue(any("answers again" in r.getMessage() for r in self.captured.records))
        check_cost_limits(api=dead)
        self.assertEqual(len([r for r in self.captured.records if r.levelno == logging.WARNING]), 2)

    def test_unreachable_fails_closed_when_configured(self):
        dead = "http://127.0.0.1:%d" % unused_port()
        with self.assertRaises(BudgetUnavailable) as raised:
            check_cost_limits(api=dead, fail_open=False)
        self.assertIsInstance(raised.exception, CostLimitExceeded)
        lngpt_collector.configure(api=dead, api_token=TOKEN, fail_open=False, spool_dir="off", socket="/nonexistent.sock")
        with self.assertRaises(CostLimitExceeded):
            check_cost_limits()

    def test_a_wrong_token_counts_as_unreachable_and_names_the_variable(self):
        with self.assertRaises(BudgetUnavailable) as raised:
            check_cost_limits(token="wrong", fail_open=False)
        self.assertIn("LNGPT_COLLECTOR_API_TOKEN", str(raised.exception))
        self.assertIn("401", str(raised.exception))

    def test_a_hanging_api_is_given_up_after_the_timeout(self):
        hanging = socket.socket()
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(1)  # accepts into the backlog, never answers
        self.addCleanup(hanging.close)
        url = "http://127.0.0.1:%d" % hanging.getsockname()[1]
        with self.assertRaises(BudgetUnavailable):
            check_cost_limits(api=url, timeout=0.3, fail_open=False)
        self.assertIs(check_cost_limits(api=url, timeout=0.3), True)

    def test_arguments_of_every_wrong_type_raise_nothing_but_the_budgets_own_exceptions(self):
        class Unprintable:
            def __str__(self):
                raise RuntimeError("no str")

            __repr__ = __str__

        class Untrue:
            def __bool__(self):
                raise RuntimeError("no bool")

        dead = "http://127.0.0.1:%d" % unused_port()
        wrong = [dict(model=Unprintable()), dict(model=3.5), dict(model=["a"]), dict(api=5), dict(api=""),
                 dict(api="ftp://x"), dict(api="unix:"), dict(api="http://127.0.0.1:99999"),
                 dict(api=Unprintable()), dict(token=7), dict(timeout="soon"), dict(timeout=float("nan")),
                 dict(timeout=-1), dict(fail_open=Untrue()), dict(fail_open="no"), dict(api=dead, timeout=None)]
        for kwargs in wrong:
            with self.subTest(kwargs=sorted(kwargs)):
                try:
                    answer = check_cost_limits(**kwargs)
                except CostLimitExceeded:
                    pass  # BudgetUnavailable, by design, when the call is refused
                else:
                    self.assertIs(answer, True)
        # The same answers the stand-in's budget when the arguments are merely odd but usable.
        self.assertIs(check_cost_limits(model=3.5), True)
        self.assertEqual(self.server.requests[-1], "/api/budget?model=3.5")

    def test_an_answer_that_is_not_a_budget_counts_as_unreachable(self):
        for answer in ([1, 2], {"success": False, "error": "store", "allowed": True}, "text", {"hour": 1}):
            with self.subTest(answer=answer):
                self.server.answer = answer
                with self.assertRaises(BudgetUnavailable):
                    check_cost_limits(fail_open=False)
                self.assertIs(check_cost_limits(), True)

    def test_a_refusal_whose_figures_cannot_be_read_still_refuses(self):
        self.server.answer = {"success": True, "allowed": False, "hour": "x", "day": None, "models": [7, None]}
        with self.assertRaises(CostLimitExceeded) as raised:
            check_cost_limits()
        self.assertNotIsInstance(raised.exception, BudgetUnavailable)
        self.assertEqual(str(raised.exception), "最近1天内API调用费用超过设定上限！")


@needs_daemon
class BudgetOverUnixSocketTest(DaemonTest):
    """The real daemon with ``[api] listen = "unix:…"`` (the compose setup): budget, check and cost stats."""

    def test_check_cost_limits_get_budget_and_cost_stats_over_a_unix_socket(self):
        import datetime

        self.daemon = Daemon(self.dir, api="unix", extra=(
            '[pipeline]\nmax_wait = "10ms"\n[budget]\nhourly_limit_rmb = 10\ndaily_limit_rmb = 100\n'
            'usd_to_rmb_rate = 7.0\nrefresh = "50ms"\n'))
        self.daemon.start()
        self.assertTrue(self.daemon.api.startswith("unix:/"))
        lngpt_collector.configure(socket=self.daemon.socket, spool_dir="off", api=self.daemon.api, fail_open=False)
        answer = lngpt_collector.get_budget()
        self.assertEqual((answer["hour"]["limit_rmb"], answer["day"]["limit_rmb"]), (10.0, 100.0))
        self.assertIs(check_cost_limits(), True)
        lngpt_collector.record_api_cost("gpt-4o", 1.5, "$", 1000, 200)  # ￥10.50: over the hourly ￥10
        self.assertTrue(lngpt_collector.flush(timeout=60))

        def refused():
            try:
                check_cost_limits()
            except BudgetUnavailable:
                raise
            except CostLimitExceeded as e:
                return e
            return None

        with contextlib.redirect_stdout(io.StringIO()):
            e = wait_until("the hourly limit reached", refused)
        self.assertEqual((str(e), e.window), ("最近1小时内API调用费用超过设定上限！", "hour"))
        # At least the spend; exactly once settled (the daemon's spend can read double for a moment).
        self.assertGreaterEqual(e.spent_rmb, 10.5)
        wait_until("the hour's spend settled", lambda: lngpt_collector.get_budget()["hour"]["spent_rmb"] == 10.5)
        now = datetime.datetime.now()
        stats = lngpt_collector.get_model_cost_stats(now - datetime.timedelta(hours=1), now)
        self.assertEqual(stats, [{"model": "gpt-4o", "total_cost": 1.5, "total_calls": 1, "total_input_tokens": 1000,
                                  "total_output_tokens": 200, "total_tokens": 1200, "avg_cost_per_call": 1.5,
                                  "currency_symbol": "$"}])


if __name__ == "__main__":
    unittest.main()
