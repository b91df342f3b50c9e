"""The original's API against the real daemon: the handler, record_api_cost (with the app's
ChatMessages too), log_performance, log_api_call, the cost report and the drop-in modules; none of
them raises into the app whatever it is given."""

import contextlib
import datetime
import gc
import inspect
import io
import json
import logging
import os
import time
import unittest

from app_lookalike import ChatMessages, conversation
from support import DaemonTest, needs_daemon, wait_until

import lngpt_collector
from lngpt_collector import log_api_call, log_performance, record_api_cost


@needs_daemon
class ApiTest(DaemonTest):
    def setUp(self):
        super().setUp()
        self.daemon.start()
        self.c = lngpt_collector.configure(socket=self.daemon.socket, spool_dir=self.spool_dir, api=self.daemon.api)
        self.log = logging.getLogger("lngpt")
        self.log.handlers[:] = [lngpt_collector.CollectorHandler()]
        self.log.setLevel(1)  # custom levels below DEBUG too
        self.log.propagate = False

    def perf(self, function):
        rows = self.daemon.query("SELECT doc FROM api_performance WHERE json_extract(doc, '$.extra.function') = ?",
                                 function)
        return [json.loads(r[0]) for r in rows]

    def test_the_handler_keeps_message_level_logger_and_extra_fields(self):
        api = logging.getLogger("lngpt.api")
        api.warning("API调用失败 %d", 7, extra={"data": {"attempt": 7, "api_key": "sk-abcdefghijklmnopqrstuv0007"},
                                                "model": "glm-4-flash", "request_id": "r-7"})
        api.log(5, "a custom level")
        try:
            raise ValueError("boom")
        except ValueError:
            api.exception("调用异常")
        self.assertTrue(lngpt_collector.flush(timeout=60))
        docs = [json.loads(r[0]) for r in self.daemon.query("SELECT doc FROM api_logs ORDER BY rowid")]
        self.assertEqual(len(docs), 3, docs)
        first = docs[0]
        self.assertEqual((first["message"], first["level"], first["logger"]), ("API调用失败 7", "WARNING", "lngpt.api"))
        self.assertEqual(first["extra"]["attempt"], 7)
        self.assertEqual(first["extra"]["model"], "glm-4-flash")
        self.assertEqual(first["extra"]["api_key"], "***0007")  # masked by the daemon
        self.assertEqual(self.daemon.query("SELECT request_id FROM api_logs ORDER BY rowid LIMIT 1")[0][0], "r-7")
        self.assertEqual((docs[1]["level"], docs[1]["extra"]["levelname"]), ("DEBUG", "Level 5"))
        self.assertIn("ValueError: boom", docs[2]["extra"]["exception"])
        self.assertEqual(self.daemon.count("api_rejects"), 0)

    def test_many_threads_logging_at_once_are_all_stored_once(self):
        import threading

        api = logging.getLogger("lngpt.threads")

        def worker(t):
            for i in range(1000):
                api.info("thread %d line %d", t, i, extra={"run": "threads", "seq": t * 1000 + i})

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertTrue(lngpt_collector.flush(timeout=60), lngpt_collector.stats())
        self.assert_exactly_once("threads", 8000)

    def test_record_api_cost_and_log_performance_store_the_originals_fields(self):
        record_api_cost("gpt-4o", 0.0123, "$", 1200, 300)
        record_api_cost("glm-4-flash", 0.5, "￥", 10, 20, request_id="r-1")
        log_performance(3.81, "error", error=TimeoutError("timeout"), model="gpt-4o")
        log_performance(1.2, True, model="glm-4-flash", first_chunk_time=0.3, chunk_count=12)
        self.assertTrue(lngpt_collector.flush(timeout=60))
        costs = self.daemon.query("SELECT model, currency, cost, input_tokens, output_tokens, total_tokens "
                                  "FROM api_cost ORDER BY rowid")
        self.assertEqual([(c[0], c[2], c[3], c[4], c[5]) for c in costs],
                         [("gpt-4o", 0.0123, 1200, 300, 1500), ("glm-4-flash", 0.5, 10, 20, 30)])
        perf = self.daemon.query("SELECT status, response_time, model, json_extract(doc, '$.error'), "
                                 "json_extract(doc, '$.chunk_count') FROM api_performance ORDER BY rowid")
        self.assertEqual(perf, [("error", 3.81, "gpt-4o", "timeout", None), ("success", 1.2, "glm-4-flash", None, 12)])
        self.assertEqual(self.daemon.count("api_rejects"), 0)

    def test_log_api_call_records_calls_errors_and_the_model_argument(self):
        @log_api_call
        def chat(messages, model="glm-4-flash"):
            return "reply to %s" % messages

        @log_api_call(model="doubao-lite-32k")
        def failing():
            raise RuntimeError("quota")

        self.assertEqual(chat("hi"), "reply to hi")
        with self.assertRaises(RuntimeError):
            failing()
        self.assertTrue(lngpt_collector.flush(timeout=60))
        ok, = self.perf("chat")
        self.assertEqual((ok["status"], ok["model"]), ("success", "glm-4-flash"))
        bad, = self.perf("failing")
        self.assertEqual((bad["status"], bad["model"], bad["error"]), ("error", "doubao-lite-32k", "quota"))
        messages = [r[0] for r in self.daemon.query("SELECT json_extract(doc, '$.message') FROM api_logs ORDER BY rowid")]
        self.assertEqual(messages, ["API调用开始: chat", "API调用成功: chat", "API调用开始: failing", "API调用失败: failing"])
        # The records say where the call is: the decorated function, not the client's internals.
        located = self.daemon.query("SELECT module, json_extract(doc, '$.function'), json_extract(doc, '$.line') "
                                    "FROM api_logs ORDER BY rowid")
        chat_at = inspect.unwrap(chat).__code__.co_firstlineno
        failing_at = inspect.unwrap(failing).__code__.co_firstlineno
        self.assertEqual(located, [("test_api", "chat", chat_at)] * 2 + [("test_api", "failing", failing_at)] * 2)
        self.assertEqual(inspect.getsourcelines(inspect.unwrap(chat))[0][0].strip(), "@log_api_call")
        # The log lines and the performance record share a request id.
        ids = {r[0] for r in self.daemon.query("SELECT request_id FROM api_logs WHERE json_extract(doc, '$.extra.function') = 'chat'")}
        self.assertEqual(ids, {ok["request_id"]})

    def test_a_streaming_generator_consumed_halfway_still_records_the_chunks_seen(self):
        @log_api_call
        def stream_chat(messages, model="gpt-4o"):
            for i in range(10):
                yield "chunk %d" % i
            return "the whole reply"

        gen = stream_chat("hi")
        self.assertEqual([next(gen) for _ in range(4)], ["chunk 0", "chunk 1", "chunk 2", "chunk 3"])
        del gen  # consumed halfway and dropped: CPython closes it at once
        gc.collect()

        closed = stream_chat("closed early")
        next(closed)
        closed.close()

        full = stream_chat("all")
        chunks = []
        while True:
            try:
                chunks.append(next(full))
            except StopIteration as stop:
                self.assertEqual(stop.value, "the whole reply")  # the return value passes through
                break
        self.assertEqual(len(chunks), 10)

        self.assertTrue(lngpt_collector.flush(timeout=60))
        records = wait_until("three stream records", lambda: len(self.perf("stream_chat")) == 3 and self.perf("stream_chat"))
        summary = sorted((r["chunk_count"], r["extra"]["completed"], r["status"], r["model"]) for r in records)
        self.assertEqual(summary, [(1, False, "success", "gpt-4o"), (4, False, "success", "gpt-4o"),
                                   (10, True, "success", "gpt-4o")])
        for r in records:
            self.assertGreaterEqual(r["response_time"], r["first_chunk_time"])

    def test_a_function_returning_a_generator_and_a_stream_that_fails_are_recorded(self):
        def source():
            yield "a"
            yield "b"
            raise ConnectionError("stream cut")

        @log_api_call(model="glm-4-flash")
        def stream_via_function():
            return source()

        got = []
        with self.assertRaises(ConnectionError):
            for chunk in stream_via_function():
                got.append(chunk)
        self.assertEqual(got, ["a", "b"])
        self.assertTrue(lngpt_collector.flush(timeout=60))
        rec, = self.perf("stream_via_function")
        self.assertEqual((rec["status"], rec["error"], rec["chunk_count"], rec["extra"]["completed"]),
                         ("error", "stream cut", 2, False))


    # -- record_api_cost with the app's ChatMessages -------------------------------------------------

    def costs(self):
        return [json.loads(r[0]) for r in self.daemon.query("SELECT doc FROM api_cost ORDER BY rowid")]

    def rejects(self):
        return [json.loads(r[0]) for r in self.daemon.query("SELECT doc FROM api_rejects ORDER BY rowid")]

    def test_record_api_cost_takes_the_apps_chat_messages_as_the_original_did(self):
        from lngpt_collector import mongodb_cost

        yuan = conversation("ERNIE-Novel-8K", "写一段开头：" + "雨夜" * 40, "夜色如墨，" * 60)
        dollars = conversation("gpt-4o-mini", "Write the opening line. " * 10, "It was a dark and stormy night. " * 20)
        record_api_cost(yuan)
        mongodb_cost.record_api_cost(dollars)  # the drop-in's signature: record_api_cost(messages)
        self.assertTrue(lngpt_collector.flush(timeout=60))
        stored = self.costs()
        self.assertEqual(len(stored), 2, self.rejects())
        for doc, messages in zip(stored, (yuan, dollars)):
            with self.subTest(model=messages.model):
                self.assertEqual((doc["model"], doc["currency_symbol"]), (messages.model, messages.currency_symbol))
                self.assertAlmostEqual(doc["cost"], messages.cost, places=12)
                self.assertGreater(doc["cost"], 0)
                self.assertEqual((doc["input_tokens"], doc["output_tokens"], doc["total_tokens"]),
                                 (messages[:-1].count_message_tokens(), messages[-1:].count_message_tokens(),
                                  messages.count_message_tokens()))
                self.assertEqual(doc["cost_source"], "reported")
                self.assertNotIn("extra", doc)

    def test_a_look_alike_missing_an_attribute_still_records_what_it_can(self):
        class NoCost(ChatMessages):
            @property
            def cost(self):
                raise ZeroDivisionError("no price")

        class NoSymbol(list):
            model = "glm-4-air"
            cost = 0.25

        broken = NoCost([{"role": "user", "content": "一二三四"}, {"role": "assistant", "content": "五六"}], model="glm-4-air")
        record_api_cost(broken)
        record_api_cost(NoSymbol([{"role": "user", "content": "x"}]))
        self.assertTrue(lngpt_collector.flush(timeout=60))
        first, second = self.costs()
        # No cost, but tokens: the daemon prices it (no price here: cost 0, flagged unpriced).
        self.assertEqual((first["model"], first["cost_source"], first["input_tokens"], first["output_tokens"]),
                         ("glm-4-air", "unpriced", broken[:-1].count_message_tokens(), broken[-1:].count_message_tokens()))
        self.assertEqual(first["extra"]["read_errors"], {"cost": "ZeroDivisionError: no price"})
        # No currency_symbol: the original's default, dollars; no count_message_tokens: no tokens.
        self.assertEqual((second["model"], second["cost"], second["currency_symbol"]), ("glm-4-air", 0.25, "$"))
        self.assertNotIn("input_tokens", second)
        self.assertEqual(sorted(second["extra"]["read_errors"]),
                         ["count_message_tokens", "count_message_tokens[-1:]", "count_message_tokens[:-1]",
                          "currency_symbol"])
        self.assertEqual(self.rejects(), [])

    def test_record_api_cost_and_log_performance_never_raise_whatever_they_are_given(self):
        class Raising:
            @property
            def model(self):
                raise RuntimeError("model")

            def __str__(self):
                raise RuntimeError("str")

            __repr__ = __str__

        class BadTokens(ChatMessages):
            def count_message_tokens(self):
                return float("nan")

        recursive = {}
        recursive["self"] = recursive
        none_content = ChatMessages([{"role": "user", "content": None}], model="glm-4-air")
        cost_calls = [
            (None,), ([],), ([{"role": "user", "content": "x"}],), ({},), ({"model": "x", "cost": 1},), (Raising(),),
            (3.5,), (b"model",), ({1, 2},), (iter([1]),), (none_content,),
            (BadTokens([{"role": "user", "content": "x"}], model="glm-4-air"),),
            (ChatMessages([], model=None),),
            ("m", 10 ** 400), ("m", float("nan")), ("m", float("inf")), ("m", "abc"), ("m", -1.0), ("m", Raising()),
            ("m", 0.1, "$", 10 ** 30, 1), ("m", 0.1, "$", float("nan"), 1), ("m", 0.1, "$", 1.5, 2),
            ("m", 0.1, "$", -3, 2), ("m", 0.1, 5), ("m", 0.1, None), ("m", 0.1, Raising()), (Raising(), 0.1),
        ]
        cost_kwargs = [dict(model="m", cost=0.1, extra_obj=Raising(), loop=recursive, when=datetime.datetime.now())]
        perf_calls = [
            (None,), ("fast",), (float("nan"),), (-1,), (10 ** 400,), (Raising(),), (1.0, 5), (1.0, None),
            (1.0, "error", Raising()), (1.0, "error", ValueError(Raising())), (1.0, "success", None, Raising()),
        ]
        perf_kwargs = [dict(response_time=1.0, chunk_count=float("nan"), first_chunk_time="x"),
                       dict(response_time=1.0, chunk_count=10 ** 30, loop=recursive)]
        for args in cost_calls:
            with self.subTest(record_api_cost=len(args)):
                record_api_cost(*args)
        for kwargs in cost_kwargs:
            record_api_cost(**kwargs)
        for args in perf_calls:
            with self.subTest(log_performance=len(args)):
                log_performance(*args)
        for kwargs in perf_kwargs:
            log_performance(**kwargs)
        sent = len(cost_calls) + len(cost_kwargs) + len(perf_calls) + len(perf_kwargs)
        self.assertTrue(lngpt_collector.flush(timeout=60), lngpt_collector.stats())
        # Each call became one record: stored, or a reject with its reason; none was lost to an exception.
        stats = lngpt_collector.stats()
        self.assertEqual((stats["confirmed"], stats["events"] + stats["rejected"], stats["errors"]), (sent, sent, 0))
        tables = ("api_cost", "api_performance", "api_rejects")
        wait_until("every record stored or rejected", lambda: sum(self.daemon.count(t) for t in tables) == sent)
        self.assertGreater(self.daemon.count("api_rejects"), 10)
        reasons = " | ".join(r["reason"] for r in self.rejects())
        self.assertIn("model", reasons)

    # -- the cost report ----------------------------------------------------------------------------

    def send_cost(self, model, cost, currency, inputs, outputs, created_at):
        self.c.send({"type": "cost", "created_at": created_at, "model": model, "cost": cost,
                     "currency_symbol": currency, "input_tokens": inputs, "output_tokens": outputs})

    def test_get_model_cost_stats_answers_the_originals_rows_for_naive_local_times(self):
        # The app's local zone is not the daemon's (UTC here): naive times must be read as the app's.
        old_tz = os.environ.get("TZ")
        os.environ["TZ"] = "Asia/Shanghai"
        time.tzset()
        self.addCleanup(time.tzset)
        self.addCleanup(lambda: os.environ.__setitem__("TZ", old_tz) if old_tz else os.environ.pop("TZ", None))
        now = time.time()
        self.send_cost("gpt-4o", 0.123456, "$", 1000, 100, now - 600)
        self.send_cost("gpt-4o", 0.1, "$", 500, 50, now - 300)
        self.send_cost("gpt-4o", 2.0, "￥", 10, 20, now - 200)  # the same model in yuan: a row of its own
        self.send_cost("glm-4-air", 1.0, "￥", 30, 40, now - 100)
        self.send_cost("glm-4-air", 9.0, "￥", 30, 40, now - 7200)  # two hours ago: outside the last hour
        self.assertTrue(lngpt_collector.flush(timeout=60))
        end = datetime.datetime.now()  # naive, Shanghai time
        stats = lngpt_collector.get_model_cost_stats(end - datetime.timedelta(hours=1), end)
        self.assertEqual(stats, [
            {"model": "gpt-4o", "total_cost": 2.0, "total_calls": 1, "total_input_tokens": 10,
             "total_output_tokens": 20, "total_tokens": 30, "avg_cost_per_call": 2.0, "currency_symbol": "￥"},
            {"model": "glm-4-air", "total_cost": 1.0, "total_calls": 1, "total_input_tokens": 30,
             "total_output_tokens": 40, "total_tokens": 70, "avg_cost_per_call": 1.0, "currency_symbol": "￥"},
            {"model": "gpt-4o", "total_cost": 0.2235, "total_calls": 2, "total_input_tokens": 1500,
             "total_output_tokens": 150, "total_tokens": 1650, "avg_cost_per_call": 0.1117, "currency_symbol": "$"},
        ])
        # Inclusive bounds, as in the original: a range of exactly one record's time finds it.
        one = datetime.datetime.fromtimestamp(now - 7200)
        self.assertEqual([(r["model"], r["total_cost"]) for r in lngpt_collector.get_model_cost_stats(one, one)],
                         [("glm-4-air", 9.0)])
        # Aware datetimes mean what they say.
        utc_end = datetime.datetime.now(datetime.timezone.utc)
        three_hours = lngpt_collector.get_model_cost_stats(utc_end - datetime.timedelta(hours=3), utc_end)
        self.assertEqual(three_hours[0]["total_cost"], 10.0)
        self.assertEqual(lngpt_collector.get_model_cost_stats(end, end - datetime.timedelta(hours=1)), [])

    def test_print_cost_report_prints_the_originals_format(self):
        now = time.time()
        self.send_cost("ERNIE-Novel-8K", 12345.678901, "￥", 1234567, 1000, now - 60)
        self.send_cost("gpt-4o-mini", 0.5, "$", 10, 20, now - 60)
        self.send_cost("gpt-4o-mini", 0.25, "$", 10, 20, now - 60)
        self.send_cost("old", 1.0, "$", 1, 1, now - 3 * 86400)
        self.assertTrue(lngpt_collector.flush(timeout=60))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            lngpt_collector.print_cost_report(days=1)
        end = datetime.datetime.now()
        start = end - datetime.timedelta(days=1)
        self.assertEqual(printed.getvalue(), (
            "\n=== API Cost Report (%s to %s) ===\n"
            "\nModel: ERNIE-Novel-8K\nTotal Cost: ￥12345.6789\nTotal Calls: 1\nTotal Tokens: 1,235,567\n"
            "Avg Cost/Call: ￥12345.6789\n"
            "\nModel: gpt-4o-mini\nTotal Cost: $0.7500\nTotal Calls: 2\nTotal Tokens: 60\nAvg Cost/Call: $0.3750\n"
        ) % (start.date(), end.date()))
        from lngpt_collector import mongodb_cost

        with contextlib.redirect_stdout(io.StringIO()) as hours:
            mongodb_cost.print_cost_report(days=0, hours=96)
        self.assertIn("Model: old", hours.getvalue())

    def test_the_cost_report_never_raises_and_says_once_when_it_cannot_ask(self):
        from lngpt_collector import _report

        now = datetime.datetime.now()
        for args in [(None, None), ("x", 5), (now, "soon"), (datetime.date.today(), now), (datetime.datetime.min, now),
                     (now, datetime.datetime.max), (float("nan"), now), (-1, 10 ** 30)]:
            with self.subTest(args=args):
                self.assertIsInstance(lngpt_collector.get_model_cost_stats(*args), list)
        for kwargs in [dict(days="x"), dict(days=10 ** 12), dict(days=-1), dict(hours=None), dict(days=1.5)]:
            with self.subTest(kwargs=kwargs), contextlib.redirect_stdout(io.StringIO()):
                self.assertIsNone(lngpt_collector.print_cost_report(**kwargs))
        _report._last.clear()
        self.daemon.stop()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(lngpt_collector.get_model_cost_stats(now - datetime.timedelta(days=1), now), [])
            self.assertEqual(lngpt_collector.get_model_cost_stats(now - datetime.timedelta(days=1), now), [])
        self.assertEqual(err.getvalue().count("get_model_cost_stats() could not ask the collector"), 1, err.getvalue())


    # -- the drop-in llm_api_cache --------------------------------------------------------------------

    def test_llm_api_cache_checks_first_passes_the_stream_through_and_records_its_return_value(self):
        from lngpt_collector import mongodb_cache

        calls = []
        real_check, real_record = mongodb_cache.check_cost_limits, mongodb_cache.record_api_cost
        self.addCleanup(setattr, mongodb_cache, "check_cost_limits", real_check)
        self.addCleanup(setattr, mongodb_cache, "record_api_cost", real_record)
        mongodb_cache.check_cost_limits = lambda: calls.append("check") or True
        mongodb_cache.record_api_cost = lambda value: calls.append(("record", value))

        @mongodb_cache.llm_api_cache()
        def stream_chat(model_config, messages, response_json=False):
            """The app's stream_chat."""
            calls.append(("called", model_config, messages, response_json))
            got = yield "partial"
            calls.append(("sent", got))
            yield "more"
            return "the whole reply"

        self.assertEqual((stream_chat.__name__, stream_chat.__doc__), ("stream_chat", "The app's stream_chat."))
        gen = stream_chat({"model": "glm-4-air"}, ["hi"], use_cache=False)
        self.assertEqual(calls, [])  # nothing runs before the stream is read, as in the original
        self.assertEqual(next(gen), "partial")
        self.assertEqual(gen.send("ack"), "more")
        with self.assertRaises(StopIteration) as stop:
            next(gen)
        self.assertEqual(stop.exception.value, "the whole reply")
        self.assertEqual(calls, ["check", ("called", {"model": "glm-4-air"}, ["hi"], False), ("sent", "ack"),
                                 ("record", "the whole reply")])

        # A stream that fails, or that the app stops reading, records no cost (as in the original).
        @mongodb_cache.llm_api_cache()
        def failing():
            yield 1
            raise ConnectionError("cut")

        calls.clear()
        with self.assertRaises(ConnectionError):
            list(failing())
        closed = stream_chat({}, [])
        next(closed)
        closed.close()
        self.assertEqual([c for c in calls if c[0] == "record"], [])

        # Over budget: the check raises at the first next(), and the API is never called.
        def over():
            raise lngpt_collector.CostLimitExceeded("最近1小时内API调用费用超过设定上限！")

        mongodb_cache.check_cost_limits = over
        calls.clear()
        with self.assertRaises(lngpt_collector.CostLimitExceeded):
            next(stream_chat({}, []))
        self.assertEqual(calls, [])


if __name__ == "__main__":
    unittest.main()
