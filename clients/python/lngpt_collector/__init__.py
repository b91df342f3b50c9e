"""A stdlib-only client for lngpt-collector that never blocks or crashes the app.

    import logging
    from lngpt_collector import CollectorHandler, record_api_cost, log_api_call, check_cost_limits

    logging.getLogger("lngpt").addHandler(CollectorHandler())   # socket and spool from LNGPT_COLLECTOR_*
    check_cost_limits()                                          # raises CostLimitExceeded over budget
    record_api_cost("gpt-4o", 0.0123, "$", 1200, 300)                 # or record_api_cost(messages)

Records are queued in memory and sent by a background thread; while the collector is down or stalled
they wait in a spool file on disk, and are replayed once it answers. ``lngpt_collector.mongodb_cost``
and ``lngpt_collector.mongodb_cache`` are drop-ins for the app's modules of those names. See the
README's section "From the novel app".
"""

__version__ = "0.1.0"

from ._budget import BudgetUnavailable, CostLimitExceeded, check_cost_limits, get_budget
from ._collector import Collector
from ._costs import get_model_cost_stats, print_cost_report
from ._defaults import configure, get_collector
from ._events import log_api_call, log_performance, record_api_cost
from ._handler import CollectorHandler, record_to_event
from ._settings import Settings


def flush(timeout=None):
    """Waits up to ``timeout`` seconds for everything sent so far to be confirmed; False if it was not."""
    return get_collector().flush(timeout)


def stats():
    """The process's collector counters (queued, confirmed, spooled, dropped, errors, …)."""
    return get_collector().stats()


__all__ = [
    "BudgetUnavailable",
    "Collector",
    "CollectorHandler",
    "CostLimitExceeded",
    "Settings",
    "check_cost_limits",
    "configure",
    "flush",
    "get_budget",
    "get_collector",
    "get_model_cost_stats",
    "log_api_call",
    "log_performance",
    "print_cost_report",
    "record_api_cost",
    "record_to_event",
    "stats",
]
