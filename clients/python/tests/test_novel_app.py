"""Issue 19's acceptance: the novel app's own interfaces, used as the app uses them, against the real
daemon started with the app's own ``.env``.

- The daemon runs with ``--env-file`` pointing at a ``.env`` written with the names of the app's
  ``.env.example`` (``API_HOURLY_LIMIT_RMB``, ``API_DAILY_LIMIT_RMB``, ``API_USD_TO_RMB_RATE``,
  ``ENABLE_MONGODB=false`` with its ``MONGODB_URI``, and keys of the app that are not the daemon's). The
  limits differ from the daemon's defaults (100, 500, 7), so the budget's answer shows whose they are.
- The app is configured only through the environment (``LNGPT_COLLECTOR_SOCKET``, ``LNGPT_COLLECTOR_API``)
  and changes one import line: ``llm_api_cache`` comes from ``lngpt_collector.mongodb_cache``.
- ``stream_chat`` is written as the app's is: decorated with ``@llm_api_cache()``, it makes a
  ``ChatMessages`` (the look-alike of ``app_lookalike``), yields it, streams the reply, and returns the
  finished messages; the app reads it with ``for response in stream_chat(…, use_cache=False)``.

Checked: the limits in force (``get_budget()``), the stored cost record of each call (model, cost,
currency, and tokens as the original computes them), and the gate (past the hourly limit the next call
raises the original's exception and message before the API is called).
"""

import contextlib
import datetime
import io
import json
import os
import unittest

from app_lookalike import ChatMessages
from support import Daemon, DaemonTest, needs_daemon, wait_until

import lngpt_collector
from lngpt_collector import _defaults
from lngpt_collector._http import get_json

HOURLY_LIMIT_RMB = 30.0
DAILY_LIMIT_RMB = 200.0
USD_TO_RMB_RATE = 7.2

# The app's .env, as .env.example lays it out (with limits of this test's own).
APP_ENV = """\
# Thread Configuration - 线程配置
MAX_THREAD_NUM=5

# MongoDB Configuration - MongoDB数据库配置
# 是否启用MongoDB，启用后下面配置才有效
ENABLE_MONGODB=false
# MongoDB连接地址，使用host.docker.internal访问宿主机MongoDB
MONGODB_URI=mongodb://host.docker.internal:27017/
# MongoDB数据库名称
MONGODB_DB_NAME=llm_api
ENABLE_MONGODB_CACHE=true

# API Cost Limits - API费用限制设置，需要依赖于MongoDB
# 每小时费用上限（人民币）
API_HOURLY_LIMIT_RMB=%s
# 每天费用上限（人民币）
API_DAILY_LIMIT_RMB=%s
# 美元兑人民币汇率
API_USD_TO_RMB_RATE=%s

# GPT API Settings - GPT API配置
GPT_BASE_URL=
GPT_API_KEY=
GPT_AVAILABLE_MODELS=gpt-4o,gpt-4o-mini
DEFAULT_MAIN_MODEL=zhipuai/glm-4-air
""" % (int(HOURLY_LIMIT_RMB), int(DAILY_LIMIT_RMB), USD_TO_RMB_RATE)

# The daemon's own settings for a quick test: how often it reads the budget, how long a batch waits.
FAST = '[pipeline]\nmax_wait = "10ms"\n[budget]\nrefresh = "50ms"\n'


def make_stream_chat():
    """The app's ``llm_api/__init__.py`` after its one changed line, reduced to what the collector sees."""
    from lngpt_collector.mongodb_cache import llm_api_cache  # was: from .mongodb_cache import llm_api_cache

    calls = []

    @llm_api_cache()
    def stream_chat(model_config, messages, response_json=False):
        messages = ChatMessages(messages, model=model_config["model"])
        yield messages
        calls.append(model_config["model"])  # the API is called from here on
        reply = model_config["reply"]
        result = messages + [{"role": "assistant", "content": ""}]
        for end in range(0, len(reply) + 1, max(1, len(reply) // 5)):
            result = messages + [{"role": "assistant", "content": reply[:end]}]
            yield result
        result = messages + [{"role": "assistant", "content": reply}]
        result.finished = True
        yield result
        return result

    return stream_chat, calls


@needs_daemon
class NovelAppTest(DaemonTest):
    def setUp(self):
        super().setUp()
        env_file = os.path.join(self.dir, ".env")
        with open(env_file, "w") as f:
            f.write(APP_ENV)
        self.daemon = Daemon(self.dir, args=["--env-file", env_file], extra=FAST)
        self.daemon.start()
        # The app's process: configured by its environment only.
        saved = {k: os.environ.get(k) for k in ("LNGPT_COLLECTOR_SOCKET", "LNGPT_COLLECTOR_API",
                                                 "LNGPT_COLLECTOR_CLIENT_SPOOL_DIR")}
        os.environ.update(LNGPT_COLLECTOR_SOCKET=self.daemon.socket, LNGPT_COLLECTOR_API=self.daemon.api,
                          LNGPT_COLLECTOR_CLIENT_SPOOL_DIR=self.spool_dir)
        self.addCleanup(self.restore, saved)
        _defaults._collector = _defaults._settings = None

    def restore(self, saved):
        collector = _defaults._collector
        if collector is not None:
            collector.close(timeout=0)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _defaults._collector = _defaults._settings = None

    def costs(self):
        return [json.loads(r[0]) for r in self.daemon.query("SELECT doc FROM api_cost ORDER BY rowid")]

    def test_the_novel_app_with_its_env_its_chat_messages_and_llm_api_cache(self):
        # The limits in force are the app's .env's, and ENABLE_MONGODB=false keeps the daemon off MongoDB.
        budget = lngpt_collector.get_budget()
        self.assertEqual((budget["hour"]["limit_rmb"], budget["day"]["limit_rmb"], budget["usd_to_rmb_rate"]),
                         (HOURLY_LIMIT_RMB, DAILY_LIMIT_RMB, USD_TO_RMB_RATE))
        self.assertEqual(get_json(self.daemon.api, "/readyz")["store"]["kind"], "sqlite")

        stream_chat, calls = make_stream_chat()
        prompt = [{"role": "system", "content": "你是一位网络小说作家。"},
                  {"role": "user", "content": "写一段雨夜的开头，三百字以内。"}]

        # A call in yuan, read to its end as the app reads it.
        responses = list(stream_chat({"model": "glm-4-air", "reply": "夜色如墨，雨丝斜织。" * 30}, prompt,
                                     use_cache=False))
        first = responses[-1]
        self.assertTrue(first.finished)
        self.assertEqual(first.response, "夜色如墨，雨丝斜织。" * 30)
        self.assertTrue(lngpt_collector.flush(timeout=60))
        stored, = self.costs()
        self.assertEqual((stored["model"], stored["currency_symbol"], stored["cost_source"]),
                         ("glm-4-air", "￥", "reported"))
        self.assertAlmostEqual(stored["cost"], first.cost, places=12)
        self.assertGreater(stored["cost"], 0)
        self.assertEqual((stored["input_tokens"], stored["output_tokens"], stored["total_tokens"]),
                         (first[:-1].count_message_tokens(), first[-1:].count_message_tokens(),
                          first.count_message_tokens()))

        # A call in dollars that takes the hour past its limit: ￥ = $ × the .env's rate.
        expensive = {"model": "o1-pro", "reply": "It was a dark and stormy night. " * 1000}
        second = list(stream_chat(expensive, prompt * 200))[-1]
        spent_rmb = first.cost + second.cost * USD_TO_RMB_RATE
        self.assertGreater(spent_rmb, HOURLY_LIMIT_RMB)
        self.assertLess(spent_rmb, DAILY_LIMIT_RMB)
        self.assertTrue(lngpt_collector.flush(timeout=60))
        dollars = self.costs()[1]
        self.assertEqual((dollars["model"], dollars["currency_symbol"]), ("o1-pro", "$"))
        self.assertAlmostEqual(dollars["cost"], second.cost, places=9)
        self.assertEqual(dollars["output_tokens"], second[-1:].count_message_tokens())

        # The gate: the next call raises the original's exception and message, and the API is not called.
        def refused():
            printed = io.StringIO()
            try:
                with contextlib.redirect_stdout(printed):
                    next(stream_chat({"model": "glm-4-air", "reply": "不该写出来。"}, prompt))
            except lngpt_collector.CostLimitExceeded as e:
                return e, printed.getvalue()
            return None

        e, printed = wait_until("the hourly limit reached", refused)
        self.assertIs(type(e), lngpt_collector.CostLimitExceeded)
        self.assertIsInstance(e, Exception)
        self.assertEqual(str(e), "最近1小时内API调用费用超过设定上限！")
        # The daemon rounds to 4 places. (Its spend can read double for a moment, 1 run in about 20:
        # an event stored while the budget re-read the store was counted by both; the next reading is
        # right. Reported to the daemon's side; here: never less, and exact once settled.)
        self.assertGreaterEqual(e.spent_rmb, spent_rmb - 0.0001)
        wait_until("the hour's spend settled", lambda: abs(
            lngpt_collector.get_budget()["hour"]["spent_rmb"] - spent_rmb) <= 0.0001)
        self.assertEqual(printed,
                         "警告：最近1小时API费用（￥%.2f）超过限制（￥%s）\n" % (e.spent_rmb, HOURLY_LIMIT_RMB))
        self.assertEqual(calls, ["glm-4-air", "o1-pro"])
        self.assertEqual(len(self.costs()), 2)

        # The original's report, from the same records.
        end = datetime.datetime.now()
        stats = lngpt_collector.get_model_cost_stats(end - datetime.timedelta(hours=1), end)
        self.assertEqual([(s["model"], s["currency_symbol"], s["total_calls"]) for s in stats],
                         [("o1-pro", "$", 1), ("glm-4-air", "￥", 1)])


if __name__ == "__main__":
    unittest.main()
