"""The original system's API (``record_api_cost``, ``log_performance``, ``log_api_call``) as events.

Each function builds one event and queues it on the process's collector: it returns at once and
never raises, so it can sit on the app's hot path exactly where the original wrote to MongoDB.
Every event carries the time of the call, so a record that waits in the spool still counts in the
right hour of the budget.
"""

import functools
import inspect
import logging
import sys
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
        report("api", "an event could not be queued: %s" % (_describe(e),))
        return False


def _describe(e):
    try:
        return "%s: %s" % (type(e).__name__, e)
    except Exception:
        return type(e).__name__


def _put(event, **fields):
    for key, value in fields.items():
        if value is not None:
            event[key] = value


def _number(value):
    try:
        return float(value)
    except Exception:
        return value  # sent as it is: the collector stores it as a reject with the reason


def _integer(value):
    try:
        if isinstance(value, float) and not value.is_integer():
            return value  # 12.5 tokens: a reject that says so, rather than a silent 12
        return int(value)
    except Exception:
        return value


_NOT_READ = object()


def _read(obj, name, problems, call=False):
    """``obj.name`` (called, with ``call``), or _NOT_READ with the reason in ``problems``: a property
    that raises, or a look-alike without the attribute, must cost the record only that field."""
    try:
        value = getattr(obj, name)
        return value() if call else value
    except Exception as e:
        problems[name] = _describe(e)[:300]
        return _NOT_READ


def _tokens(messages, part, problems):
    """``messages[part].count_message_tokens()`` as the original computes input and output tokens."""
    try:
        subset = messages if part is None else messages[part]
    except Exception as e:
        problems["tokens"] = _describe(e)[:300]
        return None
    name = "count_message_tokens" if part is None else "count_message_tokens[%s:%s]" % (
        "" if part.start is None else part.start, "" if part.stop is None else part.stop)
    value = _read(subset, "count_message_tokens", problems, call=True)
    if value is _NOT_READ:
        problems[name] = problems.pop("count_message_tokens")
        return None
    return value


def _from_messages(messages):
    """The original's fields from the app's ``ChatMessages`` (or anything shaped like it)."""
    problems = {}
    fields = {}
    for name in ("model", "cost", "currency_symbol"):
        value = _read(messages, name, problems)
        if value is not _NOT_READ:
            fields[name] = value
    fields["input_tokens"] = _tokens(messages, slice(None, -1), problems)
    fields["output_tokens"] = _tokens(messages, slice(-1, None), problems)
    fields["total_tokens"] = _tokens(messages, None, problems)
    return fields, problems


def record_api_cost(model=None, cost=None, currency_symbol="$", input_tokens=None, output_tokens=None,
                    total_tokens=None, provider=None, request_id=None, **extra):
    """Records what one API call cost (the original's ``record_api_cost``, collection ``api_cost``).

    Called as the original is, with the app's ``ChatMessages`` (``record_api_cost(messages)``): the
    model, cost and currency come from ``messages.model``, ``.cost`` and ``.currency_symbol``, the
    tokens from ``messages[:-1]``, ``messages[-1:]`` and ``messages`` through ``count_message_tokens()``;
    whatever cannot be read is left out and named under ``extra.read_errors``. Or with the figures:
    ``currency_symbol`` is ``"$"`` or ``"￥"`` (the budget converts dollars at ``usd_to_rmb_rate``),
    ``total_tokens`` defaults to input + output, other keyword arguments are kept under ``extra``.

    Returns at once and never raises, whatever it is given: a record the collector cannot take is
    stored as a reject with the reason (``/api/rejects``)."""
    try:
        event = {"type": "cost", "created_at": time.time()}
        problems = None
        if cost is None and model is not None and not isinstance(model, (str, bytes, int, float)):
            fields, problems = _from_messages(model)
            model = fields.get("model")
            cost = fields.get("cost")
            currency_symbol = fields.get("currency_symbol", currency_symbol)
            input_tokens = fields["input_tokens"] if input_tokens is None else input_tokens
            output_tokens = fields["output_tokens"] if output_tokens is None else output_tokens
            total_tokens = fields["total_tokens"] if total_tokens is None else total_tokens
        event["model"] = model
        # No cost, but tokens: the collector prices the call from its [prices] table.
        _put(event, cost=None if cost is None else _number(cost), currency_symbol=currency_symbol,
             input_tokens=None if input_tokens is None else _integer(input_tokens),
             output_tokens=None if output_tokens is None else _integer(output_tokens),
             total_tokens=None if total_tokens is None else _integer(total_tokens),
             provider=provider, request_id=request_id)
        if problems:
            extra["read_errors"] = problems
        if extra:
            event["extra"] = extra
        return _send(event)
    except Exception as e:
        report("api", "record_api_cost() could not build its record: %s" % (_describe(e),))
        return False


def log_performance(response_time, status="success", error=None, model=None, provider=None,
                    request_id=None, first_chunk_time=None, chunk_count=None, **extra):
    """Records one API call's response time and outcome (the original's ``log_performance_data``).

    ``status`` is ``"success"`` or ``"error"`` (a bool works too); ``error`` is the exception or its
    text. Streaming calls add ``first_chunk_time`` (seconds) and ``chunk_count``. Never raises."""
    try:
        if isinstance(status, bool):
            status = "success" if status else "error"
        event = {"type": "performance", "timestamp": time.time(), "response_time": _number(response_time),
                 "status": status}
        if error is not None:
            try:
                error = str(error)[:2000]
            except Exception as e:
                error = "<%s whose str() failed: %s>" % (type(error).__name__, _describe(e))
        _put(event, error=error, model=model, provider=provider, request_id=request_id,
             first_chunk_time=None if first_chunk_time is None else _number(first_chunk_time),
             chunk_count=_integer(chunk_count) if chunk_count is not None else None)
        if extra:
            event["extra"] = extra
        return _send(event)
    except Exception as e:
        report("api", "log_performance() could not build its record: %s" % (_describe(e),))
        return False


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
    name = getattr(func, "__name__", None) or _text(func, 200)
    try:
        signature = inspect.signature(func)
        takes_model = "model" in signature.parameters
    except (TypeError, ValueError):
        signature, takes_model = None, False
    log_ = logging.getLogger(logger) if log else None
    where = _location(func)

    def call_info(args, kwargs):
        m = model
        if m is None and takes_model:
            try:
                bound = signature.bind_partial(*args, **kwargs)
                bound.apply_defaults()
                m = bound.arguments.get("model")
            except Exception:
                m = None
        return (None if m is None else _text(m)), uuid.uuid4().hex[:16]

    # Neither may raise into the call: an argument whose repr() fails costs only its text.
    def started(args, kwargs, request_id):
        if log_ is not None:
            _log_at(log_, where, logging.INFO, "API调用开始: %s" % name, {
                "function": name, "call_args": _text(args, 200), "call_kwargs": _text(kwargs, 200),
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
            _log_at(log_, where, logging.INFO, "API调用成功: %s" % name, {
                "function": name, "duration": duration, "status": "success", "request_id": request_id})
        else:
            try:
                trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            except Exception:
                trace = None
            _log_at(log_, where, logging.ERROR, "API调用失败: %s" % name, {
                "function": name, "duration": duration, "status": "error", "error": _text(error),
                "traceback": trace, "request_id": request_id})

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


def _text(value, limit=2000):
    try:
        return str(value)[:limit]
    except Exception as e:
        return "<%s whose str() failed: %s>" % (type(value).__name__, type(e).__name__)


def _location(func):
    """(pathname, line, function name) of the decorated function, for its log records: the records are
    about the app's call, so their ``module``, ``function`` and ``line`` are the app's, not this file's."""
    target = func
    try:
        target = inspect.unwrap(func)
    except Exception:
        pass
    code = getattr(target, "__code__", None)
    if code is not None:
        return code.co_filename, code.co_firstlineno, code.co_name
    name = getattr(target, "__name__", None) or type(target).__name__
    module = sys.modules.get(getattr(target, "__module__", None) or "")
    path = getattr(module, "__file__", None) or "(unknown file)"
    return path, 0, name


def _log_at(logger, where, level, message, extra):
    """Logs ``message`` as if from ``where``: the record is made with the function's file, line and name
    (``logger.log`` would take them from the caller's frame, which is this module)."""
    try:
        if not logger.isEnabledFor(level):
            return
        pathname, lineno, function = where
        record = logger.makeRecord(logger.name, level, pathname, lineno, message, None, None, function, extra)
        logger.handle(record)
    except Exception:
        pass
