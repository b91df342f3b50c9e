"""The original's cost report: ``get_model_cost_stats()`` and ``print_cost_report()``, answered by the
daemon's ``GET /api/stats/cost`` instead of an aggregation over MongoDB's ``api_cost``.

The app passes naive ``datetime.now()`` values, local times of its own process; they are converted
here, where that zone is known (``dt.astimezone()``), and sent as UTC, so the daemon's own
``naive_timezone`` never has to agree with the app's. Both ends are inclusive, as in the original.

The daemon sums per model *and currency*: a model billed in dollars and in yuan in the same range
gives two rows here, where the original would have added the two amounts under the first row's symbol.

Like everything else in this package, these never raise into the app: if the daemon cannot be asked,
the answer is an empty list and the reason goes to stderr (once a minute at most).
"""

import datetime
import math

from . import _defaults
from ._http import get_json
from ._report import report

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_LAST = datetime.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=datetime.timezone.utc)


def _utc(value):
    """An aware UTC datetime for what the app passed: a naive datetime is the process's local time, a
    date is its local midnight, a number is epoch seconds. Clamped to the daemon's range (1970–9999)."""
    if isinstance(value, datetime.datetime):
        try:
            aware = value.astimezone()  # naive: local time of this process, as datetime.now() gave it
        except (OverflowError, ValueError, OSError):
            return _EPOCH if value.year < 2000 else _LAST
        try:
            return aware.astimezone(datetime.timezone.utc)
        except (OverflowError, ValueError):
            return _EPOCH if value.year < 2000 else _LAST
    if isinstance(value, datetime.date):
        return _utc(datetime.datetime(value.year, value.month, value.day))
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        if value <= 0:
            return _EPOCH
        try:
            return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
        except (OverflowError, ValueError, OSError):
            return _LAST
    raise TypeError("expected a datetime, got %r" % (value,))


def _rfc3339(dt):
    """UTC with milliseconds, rounded to the nearest as the daemon rounds the times it stores (so a
    range of exactly one record's time finds it)."""
    delta = min(max(dt, _EPOCH), _LAST) - _EPOCH
    ms = ((delta.days * 86400 + delta.seconds) * 1000000 + delta.microseconds + 500) // 1000
    dt = _EPOCH + datetime.timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


def _number(value, kind=float):
    try:
        n = kind(value)
    except (TypeError, ValueError, OverflowError):
        return kind(0)
    if kind is float and not math.isfinite(n):
        return 0.0
    return n


def _row(stat):
    """One row of the daemon's answer in the original's shape."""
    cost = _number(stat.get("total_cost"))
    calls = _number(stat.get("call_count"), int)
    return {
        "model": stat.get("model"),
        "total_cost": round(cost, 4),
        "total_calls": calls,
        "total_input_tokens": _number(stat.get("input_tokens"), int),
        "total_output_tokens": _number(stat.get("output_tokens"), int),
        "total_tokens": _number(stat.get("total_tokens"), int),
        "avg_cost_per_call": round(cost / calls, 4) if calls else 0.0,
        "currency_symbol": stat.get("currency_symbol"),
    }


def get_model_cost_stats(start_date, end_date, api=None, token=None, timeout=None):
    """The original's ``get_model_cost_stats(start_date, end_date)``: one dict per model (and currency)
    with ``model``, ``total_cost`` and ``avg_cost_per_call`` (rounded to 4 places), ``total_calls``,
    ``total_input_tokens``, ``total_output_tokens``, ``total_tokens`` and ``currency_symbol``, highest
    ``total_cost`` first. ``start_date`` and ``end_date`` are naive local datetimes (or aware ones), both
    inclusive. Returns ``[]`` if the daemon cannot be asked; never raises."""
    try:
        start, end = _utc(start_date), _utc(end_date)
        if start > end or end < _EPOCH or start > _LAST:
            return []
        s = _defaults.settings()
        answer = get_json(api or s.api, "/api/stats/cost",
                          {"start_time": _rfc3339(start), "end_time": _rfc3339(end)},
                          token=token if token is not None else s.api_token,
                          timeout=s.api_timeout if timeout is None else float(timeout))
        if not isinstance(answer, dict) or not isinstance(answer.get("stats"), list):
            raise ValueError("the answer has no stats: %r" % (str(answer)[:200],))
        rows = [_row(stat) for stat in answer["stats"] if isinstance(stat, dict)]
        rows.sort(key=lambda r: (-r["total_cost"], str(r["model"]), str(r["currency_symbol"])))
        return rows
    except Exception as e:
        report("cost_stats", "get_model_cost_stats() could not ask the collector, answering []: %s" % (_describe(e),))
        return []


def print_cost_report(days=30, hours=0):
    """The original's ``print_cost_report()``: the last ``days`` and ``hours``, per model, on stdout, in
    the original's format. Never raises."""
    try:
        end_date = datetime.datetime.now()
        start_date = end_date - datetime.timedelta(days=days, hours=hours)
    except Exception as e:
        report("cost_report", "print_cost_report(days=%r, hours=%r): %s" % (days, hours, _describe(e)))
        return
    stats = get_model_cost_stats(start_date, end_date)
    try:
        print(f"\n=== API Cost Report ({start_date.date()} to {end_date.date()}) ===")
        for model_stat in stats:
            print(f"\nModel: {model_stat['model']}")
            print(f"Total Cost: {model_stat['currency_symbol']}{model_stat['total_cost']:.4f}")
            print(f"Total Calls: {model_stat['total_calls']}")
            print(f"Total Tokens: {model_stat['total_tokens']:,}")
            print(f"Avg Cost/Call: {model_stat['currency_symbol']}{model_stat['avg_cost_per_call']:.4f}")
    except Exception as e:
        report("cost_report", "print_cost_report() could not print: %s" % (_describe(e),))


def _describe(e):
    try:
        return str(e) or repr(e)
    except Exception:
        return type(e).__name__
