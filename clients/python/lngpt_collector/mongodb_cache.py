"""A drop-in for the novel app's ``llm_api_cache()`` (``llm_api/mongodb_cache.py``) for an app without
MongoDB: the budget check and the cost record, without the response cache.

The original decorator does that work only when the app's ``ENABLE_MONGODB`` is true (otherwise it
only drops ``use_cache``), and its cache needs MongoDB. This one always does it, and never caches, so an
app that runs without MongoDB gets its budget and its cost records from the collector by changing one
import line, in ``llm_api/__init__.py``::

    from .mongodb_cache import llm_api_cache                 # before
    from lngpt_collector.mongodb_cache import llm_api_cache  # after

Order as in the original wrapper: ``check_cost_limits()`` at the stream's first ``next()`` (it raises
``CostLimitExceeded`` with the original's message over budget), then the wrapped stream, passed through
unchanged (``send()``, ``throw()``, ``close()`` and the return value too), then, once the stream has
returned, ``record_api_cost(return_value)``. A stream that fails or is closed early records no cost,
as in the original.
"""

import functools

from ._budget import check_cost_limits
from .mongodb_cost import record_api_cost


def llm_api_cache():
    """Decorator factory with the original's signature: ``@llm_api_cache()`` over a generator function."""

    def decorator(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            check_cost_limits()
            kwargs.pop("use_cache", None)  # the original's keyword: there is no cache to use here
            return_value = yield from func(*args, **kwargs)
            record_api_cost(return_value)
            return return_value

        return wrapper

    return decorator


__all__ = ["llm_api_cache"]
