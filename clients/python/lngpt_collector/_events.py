"""The original system's API (``record_api_cost``, ``log_performance``, ``log_api_call``) as events.

Each function builds one event and queues it on the process's collector: it returns at once and
never raises, so it can sit on the app's hot path exactly where the original wrote to MongoDB.
Every event carries the time of the call, so a record that waits in the spool still counts in the
right hour of the budget.
"""

import functools
import inspect
import logging
import time
import traceback
import types
import uuid

from . import _defaults
from ._report import report


def _send(event):
    try:
        return _defaults.get_collector().send(event)
    except Exception as e:
        report("api", "an event could not be queued: %r" % (e,))
        return False


def _put(event, **fields):
    for key, value in fields.items():
        if value is not None:
            event[key] = value


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value  # sent as it is: the collector stores it as a reject with the reason


def _integer(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def record_api_cost(model, cost, currency_symbol="$", input_tokens=None, output_tokens=None,
                    total_tokens=None, provider=None, request_id=None, **extra):
    """Records what one API call cost (the original's ``record_api_cost``, collection ``api_cost``).

    ``currency_symbol`` is ``"$"`` or ``"￥"``; the budget converts dollars at ``usd_to_rmb_rate``.
    ``total_tokens`` defaults to input + output. Other keyword arguments are kept under ``extra``."""
    event = {"type": "cost", "created_at": time.time(), "model": model, "cost": _number(cost),
             "currency_symbol": currency_symbol}
    _put(event, input_tokens=_integer(input_tokens) if input_tokens is not None else None,
         output_tokens=_integer(output_tokens) if output_tokens is not None else None,
         total_tokens=_integer(total_tokens) if total_tokens is not None else None,
         provider=provider, request_id=request_id)
    if extra:
        event["extra"] = extra
    return _send(event)


def log_performance(response_time, status="success", error=None, model=None, provider=None,
                    request_id=None, first_chunk_time=None, chunk_count=None, **extra):
    """Records one API call's response time and outcome (the original's ``log_performance_data``).

    ``status`` is ``"success"`` or ``"error"`` (a bool works too); ``error`` is the exception or its
    text. Streaming calls add ``first_chunk_time`` (seconds) and ``chunk_count``."""
    if isinstance(status, bool):
        status = "success" if status else "error"
    event = {"type": "performance", "timestamp": time.time(), "response_time": _number(response_time),
             "status": status}
    _put(event, error=None if error is None else str(error)[:2000], model=model, provider=provider,
         request_id=request_id, first_chunk_time=first_chunk_time,
         chunk_count=_integer(chunk_count) if chunk_count is not None else None)
    if extra:
        event["extra"] = extra
    return _send(event)


def log_api_call(func=None, *, model=None, logger="lngpt.api", log=True):
    """Decorator: logs the call like the original ``log_api_call`` and records its performance.

    Usable bare (``@log_api_call``) or with options (``@log_api_call(model="glm-4-flash")``).
    ``model`` defaults to the call's ``model`` argument, if the function has one. For a generator
    function, or a function returning a generator (a streaming call), the time runs from the first
    ``next()`` to the end of the stream and the record adds ``first_chunk_time`` and ``chunk_count``;
    a stream consumed halfway, closed early or garbage-collected is still recorded, with the chunks
    seen (``completed: false``). The log lines go to the ``logger`` (the app's handlers, the collector's
    among them); pass ``log=False`` to record performance only. Exceptions pass through unchanged.
    """
    if func is None:
        return lambda f: log_api_call(f, model=model, logger=logger, log=log)
    name = getattr(func, "__name__", repr(func))
    try:
        signature = inspect.signature(func)
        takes_model = "model" in signature.parameters
    except (TypeError, ValueError):
        signature, takes_model = None, False
    log_ = logging.getLogger(logger) if log else None

    def call_info(args, kwargs):
        m = model
        if m is None and takes_model:
            try:
                bound = signature.bind_partial(*args, **kwargs)
                bound.apply_defaults()
                m = bound.arguments.get("model")
            except Exception:
                m = None
        return (None if m is None else str(m)), uuid.uuid4().hex[:16]

    def started(args, kwargs, request_id):
        if log_ is not None:
            _safe_log(log_, logging.INFO, "API调用开始: %s" % name, {
                "function": name, "call_args": str(args)[:200], "call_kwargs": str(kwargs)[:200],
                "request_id": request_id})

    def ended(request_id, m, duration, error, stream=None):
        extra = {"function": name}
        if stream is not None:
            extra["completed"] = stream["completed"]
        log_performance(duration, "error" if error is not None else "success", error=error, model=m,
                        request_id=request_id, first_chunk_time=stream and stream["first"],
                        chunk_count=stream and stream["chunks"], **extra)
        if log_ is None:
            return
        if error is None:
            _safe_log(log_, logging.INFO, "API调用成功: %s" % name, {
                "function": name, "duration": duration, "status": "success", "request_id": request_id})
        else:
            _safe_log(log_, logging.ERROR, "API调用失败: %s" % name, {
                "function": name, "duration": duration, "status": "error", "error": str(error),
                "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
                "request_id": request_id})

    def stream(gen, args, kwargs):
        m, request_id = call_info(args, kwargs)
        started(args, kwargs, request_id)
        state = {"first": None, "chunks": 0, "completed": False}
        counting = _Counting(gen, state)
        error = None
        counting.start = time.perf_counter()
        try:
            result = yield from counting
            state["completed"] = True
            return result
        except GeneratorExit:
            raise  # closed early (or collected): a success with the chunks seen
        except BaseException as e:
            error = e
            raise
        finally:
            ended(request_id, m, time.perf_counter() - counting.start, error, state)

    if inspect.isgeneratorfunction(func):
        @functools.wraps(func)
        def generator_wrapper(*args, **kwargs):
            return (yield from stream(func(*args, **kwargs), args, kwargs))

        return generator_wrapper

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        m, request_id = call_info(args, kwargs)
        started(args, kwargs, request_id)
        start = time.perf_counter()
        try:
            result = func(*args, **kwargs)
        except BaseException as e:
            ended(request_id, m, time.perf_counter() - start, e)
            raise
        if isinstance(result, types.GeneratorType):
            # A streaming call behind a plain function: time the stream itself, not its creation.
            return _stream_only(result, m, request_id, ended)
        ended(request_id, m, time.perf_counter() - start, None)
        return result

    return wrapper


def _stream_only(gen, m, request_id, ended):
    state = {"first": None, "chunks": 0, "completed": False}
    counting = _Counting(gen, state)
    counting.start = time.perf_counter()
    error = None
    try:
        result = yield from counting
        state["completed"] = True
        return result
    except GeneratorExit:
        raise
    except BaseException as e:
        error = e
        raise
    finally:
        ended(request_id, m, time.perf_counter() - counting.start, error, state)


class _Counting:
    """Wraps a generator for ``yield from``: counts chunks and times the first; send, throw and close
    go through unchanged, so the wrapped generator behaves exactly as the original."""

    __slots__ = ("gen", "state", "start")

    def __init__(self, gen, state):
        self.gen = gen
        self.state = state
        self.start = None

    def __iter__(self):
        return self

    def _seen(self, item):
        state = self.state
        if state["chunks"] == 0:
            state["first"] = time.perf_counter() - self.start
        state["chunks"] += 1
        return item

    def __next__(self):
        return self._seen(next(self.gen))

    def send(self, value):
        return self._seen(self.gen.send(value))

    def throw(self, *args):
        return self._seen(self.gen.throw(*args))

    def close(self):
        return self.gen.close()


def _safe_log(logger, level, message, extra):
    try:
        logger.log(level, message, extra=extra)
    except Exception:
        pass
