"""``check_cost_limits()``: the original's budget check, answered by the daemon's ``/api/budget``.

The daemon sums the spend from its store (so several app processes, or hosts sharing one MongoDB,
see one spend) and says whether a limit is reached. The app asks before each API call, as the
original did. When the daemon cannot be asked, the call is allowed (``fail_open=True``, the default:
a logging sidecar that is down should not stop the novel) or refused (``fail_open=False``: no API
call without a budget answer); either way it is logged once per outage on ``lngpt.collector``.

The only exceptions that leave ``check_cost_limits()`` are ``CostLimitExceeded`` and its subclass
``BudgetUnavailable``: the app's ``llm_api_cache()`` calls it before every API call, and anything else
raised there (a bad argument, a strange answer) would stop the novel for a reason that is not the budget.
"""

import logging
import os
import threading

from . import _defaults
from ._http import get_json

# The original's messages, full-width exclamation mark included (the app may match on them).
HOUR_MESSAGE = "最近1小时内API调用费用超过设定上限！"
DAY_MESSAGE = "最近1天内API调用费用超过设定上限！"
# The line the original printed before raising, per window.
_WARNING_LINES = {"hour": "警告：%s最近1小时API费用（￥%.2f）超过限制（￥%s）",
                  "day": "警告：%s最近24小时API费用（￥%.2f）超过限制（￥%s）"}

_log = logging.getLogger("lngpt.collector")
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


def get_budget(model=None, api=None, token=None, timeout=None):
    """The daemon's budget answer as a dict (see the README); raises OSError or ValueError if it
    cannot be had. ``api`` is ``http://host:port`` or ``unix:/path/api.sock`` (default: ``configure()``'s
    or ``LNGPT_COLLECTOR_API``)."""
    s = _defaults.settings()
    api = api or s.api
    token = token if token is not None else s.api_token
    timeout = s.api_timeout if timeout is None else float(timeout)
    params = {"model": str(model)} if model else None
    answer = get_json(api, "/api/budget", params, token=token, timeout=timeout)
    if not isinstance(answer, dict) or "allowed" not in answer:
        raise ValueError("%s did not answer a budget: %r" % (api, str(answer)[:200]))
    if answer.get("success") is False:
        raise ValueError("%s could not tell the budget: %s" % (api, answer.get("error") or answer.get("store_error")))
    return answer


def check_cost_limits(model=None, api=None, token=None, fail_open=None, timeout=None):
    """Raises ``CostLimitExceeded`` with the original's message when a limit is reached; returns True
    otherwise (as the original did). ``model`` also checks that model's own limits. Settings default to
    ``configure()``'s or the environment's (``LNGPT_COLLECTOR_API``, ``LNGPT_COLLECTOR_API_TOKEN``,
    ``LNGPT_COLLECTOR_CLIENT_FAIL_OPEN``). Raises nothing else, whatever the arguments."""
    global _outage
    try:
        if fail_open is None:
            fail_open = _defaults.settings().fail_open
        fail_open = bool(fail_open)
    except Exception:
        fail_open = True
    try:
        budget = get_budget(model=model, api=api, token=token, timeout=timeout)
    except Exception as e:
        problem = _describe(e)
        try:
            with _outage_lock:
                first = _outage is None
                _outage = problem
            if first:
                _log.warning("无法获取API费用预算，%s: %s", "按配置放行API调用 (fail_open)" if fail_open
                             else "按配置拒绝API调用 (fail_open=False)", problem,
                             extra={"fail_open": fail_open, "budget_error": problem})
        except Exception:
            pass  # the app's logging failed: the answer below still holds
        if fail_open:
            return True
        raise BudgetUnavailable("无法获取API费用预算，已拒绝API调用: %s" % problem)
    try:
        if _outage is not None:
            with _outage_lock:
                was, _outage = _outage, None
            if was is not None:
                _log.info("API费用预算可以获取了 (budget API answers again)")
    except Exception:
        pass
    if budget.get("allowed", True):
        return True
    try:
        exceeded = _exceeded(budget, model)
    except Exception as e:
        exceeded = CostLimitExceeded(DAY_MESSAGE, budget=budget)
        _warn("the budget's answer could not be read (%r); refused as over the daily limit" % (e,))
    raise exceeded


def _warn(line, **extra):
    """The original's printed line, and the same as a WARNING on ``lngpt.collector`` when the app has
    handlers for it (the collector's among them); neither may fail the check."""
    try:
        print(line)
    except Exception:
        pass
    try:
        if _log.hasHandlers():  # else logging's last resort would print it a second time
            _log.warning(line, extra=extra)
    except Exception:
        pass


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
                prefix = "" if name is None else "模型 %s " % name
                _warn(_WARNING_LINES[window] % (prefix, _float(figures.get("spent_rmb")),
                                                _limit(figures.get("limit_rmb"))),
                      window=window, budget_model=name)
                return CostLimitExceeded(prefix + message, window=window, model=name,
                                         spent_rmb=figures.get("spent_rmb"), limit_rmb=figures.get("limit_rmb"),
                                         budget=budget)
    return CostLimitExceeded(DAY_MESSAGE, budget=budget)


def _describe(e):
    try:
        return str(e) or repr(e)
    except Exception:
        return type(e).__name__


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _limit(value):
    """The limit as the original printed it: a float from the environment, so ``100.0``."""
    try:
        return str(float(value))
    except (TypeError, ValueError):
        return str(value)
