"""A drop-in for the novel app's ``llm_api/mongodb_cost.py``: the same four functions, the same
signatures, answered by the collector instead of MongoDB.

The app changes one import line, in ``llm_api/mongodb_cache.py``::

    from .mongodb_cost import record_api_cost, check_cost_limits               # before
    from lngpt_collector.mongodb_cost import record_api_cost, check_cost_limits  # after

- ``record_api_cost(messages)`` takes the app's ``ChatMessages`` and sends the original's fields (model,
  cost, currency, tokens as ``messages[:-1]``, ``messages[-1:]`` and ``messages`` count them).
- ``check_cost_limits()`` asks the daemon's budget (``/api/budget``) and raises ``CostLimitExceeded``, an
  ``Exception``, with the original's message.
- ``get_model_cost_stats(start_date, end_date)`` and ``print_cost_report(days=30, hours=0)`` read
  ``/api/stats/cost``.

None of them imports anything of the app, and none raises into it except ``check_cost_limits()``, by
design. Settings (the socket, the API address) come from ``LNGPT_COLLECTOR_*`` or ``configure()``.
"""

from ._budget import check_cost_limits
from ._costs import get_model_cost_stats, print_cost_report
from ._events import record_api_cost as _record_api_cost


def record_api_cost(messages):
    """记录API调用费用 — the original's ``record_api_cost(messages: ChatMessages)``. Never raises."""
    _record_api_cost(messages)


__all__ = ["check_cost_limits", "get_model_cost_stats", "print_cost_report", "record_api_cost"]
