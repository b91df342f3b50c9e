"""``check_cost_limits()``: the original's budget check, answered by the daemon's ``/api/budget``.

The daemon sums the spend from its store (so several app processes, or hosts sharing one MongoDB,
see one spend) and says whether a limit is reached. The app asks before each API call, as the
original did. When the daemon cannot be asked, the call is allowed (``fail_open=True``, the default:
a logging sidecar that is down should not stop the novel) or refused (``fail_open=False``: no API
call without a budget answer); either way it is logged once per outage on ``lngpt.collector``.
"""

import json
import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request

from . import _defaults

HOUR_MESSAGE = "最近1小时内API调用费用超过设定上限"
DAY_MESSAGE = "最近1天内API调用费用超过设定上限"

_log = logging.getLogger("lngpt.collector")
# No proxy: the daemon is on this host, and an http_proxy set for the LLM APIs must not catch it.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_outage_lock = threading.Lock()
_outage = None  # the message of the outage being logged, or None while the API answers


def _reset_after_fork():
    global _outage_lock
    _outage_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


class CostLimitExceeded(Exception):
    """An hourly or daily limit (overall, or the model's own) is reached: the original's exception,
    with its message. ``window`` is ``"hour"`` or ``"day"``, ``model`` the model whose own limit it
    is (None for the overall limit), ``spent_rmb``/``limit_rmb`` the figures, ``budget`` the whole answer."""

    def __init__(self, message, window=None, model=None, spent_rmb=None, limit_rmb=None, budget=None):
        super().__init__(message)
        self.window = window
        self.model = model
        self.spent_rmb = spent_rmb
        self.limit_rmb = limit_rmb
        self.budget = budget


class BudgetUnavailable(CostLimitExceeded):
    """The budget could not be asked and ``fail_open`` is False: the call is refused as if over budget."""


class _Unreachable(Exception):
    pass


def get_budget(model=None, api=None, token=None, timeout=None):
    """The daemon's budget answer as a dict (see the README); raises OSError or ValueError if it
    cannot be had."""
    s = _defaults.settings()
    api = (api or s.api).rstrip("/")
    token = token if token is not None else s.api_token
    timeout = s.api_timeout if timeout is None else timeout
    url = api + "/api/budget"
    if model:
        url += "?" + urllib.parse.urlencode({"model": model})
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with _opener.open(request, timeout=timeout) as response:
            body = response.read(4 << 20)
    except urllib.error.HTTPError as e:
        detail = ""
        try:
            detail = json.loads(e.read(65536) or b"{}").get("error") or ""
        except Exception:
            pass
        hint = " (is LNGPT_COLLECTOR_API_TOKEN right?)" if e.code in (401, 403) else ""
        raise OSError("%s answered HTTP %d%s%s" % (url, e.code, ": " + detail if detail else "", hint))
    except urllib.error.URLError as e:
        raise OSError("cannot reach %s: %s" % (url, e.reason))
    answer = json.loads(body)
    if not isinstance(answer, dict) or "allowed" not in answer:
        raise ValueError("%s did not answer a budget: %r" % (url, body[:200]))
    if answer.get("success") is False:
        raise ValueError("%s could not tell the budget: %s" % (url, answer.get("error") or answer.get("store_error")))
    return answer


def check_cost_limits(model=None, api=None, token=None, fail_open=None, timeout=None):
    """Raises ``CostLimitExceeded`` with the original's message when a limit is reached; returns True
    otherwise (as the original did). ``model`` also checks that model's own limits. Settings default to
    ``configure()``'s or the environment's (``LNGPT_COLLECTOR_API``, ``LNGPT_COLLECTOR_API_TOKEN``, ``LNGPT_COLLECTOR_CLIENT_FAIL_OPEN``)."""
    global _outage
    s = _defaults.settings()
    fail_open = s.fail_open if fail_open is None else fail_open
    try:
        budget = get_budget(model=model, api=api, token=token, timeout=timeout)
    except Exception as e:
        problem = str(e) or repr(e)
        with _outage_lock:
            first = _outage is None
            _outage = problem
        if first:
            _log.warning("无法获取API费用预算，%s: %s", "按配置放行API调用 (fail_open)" if fail_open
                         else "按配置拒绝API调用 (fail_open=False)", problem,
                         extra={"fail_open": fail_open, "budget_error": problem})
        if fail_open:
            return True
        raise BudgetUnavailable("无法获取API费用预算，已拒绝API调用: %s" % problem)
    if _outage is not None:
        with _outage_lock:
            was, _outage = _outage, None
        if was is not None:
            _log.info("API费用预算可以获取了 (budget API answers again)")
    if budget.get("allowed", True):
        return True
    raise _exceeded(budget, model)


def _reached(window):
    if not isinstance(window, dict):
        return False
    try:
        spent, limit = float(window.get("spent_rmb") or 0), float(window.get("limit_rmb") or 0)
        return limit > 0 and spent >= limit  # a limit of 0 is off
    except (TypeError, ValueError):
        return False


def _exceeded(budget, model):
    """The exception for a refusal, naming the first limit reached: hour before day, as the original."""
    candidates = [(None, budget)]
    for entry in budget.get("models") or ():
        if isinstance(entry, dict):
            candidates.append((entry.get("model"), entry))
    for window, message in (("hour", HOUR_MESSAGE), ("day", DAY_MESSAGE)):
        for name, scope in candidates:
            figures = scope.get(window)
            if _reached(figures):
                label = "（%s）" % _limit_text(figures)
                text = message if name is None else "模型 %s %s" % (name, message)
                _log.warning("警告：%s%s", text, label, extra={"window": window, "budget_model": name})
                return CostLimitExceeded(text, window=window, model=name, spent_rmb=figures.get("spent_rmb"),
                                         limit_rmb=figures.get("limit_rmb"), budget=budget)
    return CostLimitExceeded(DAY_MESSAGE, budget=budget)


def _limit_text(figures):
    try:
        return "￥%.2f，上限 ￥%.2f" % (float(figures.get("spent_rmb")), float(figures.get("limit_rmb")))
    except (TypeError, ValueError):
        return ""
