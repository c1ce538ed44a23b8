"""Prometheus metrics of the relayed streams, with ``prometheus_client`` (opt-in: ``BUPPLE_METRICS``).

Every stream's figures are recorded once, when it ends, by a
:class:`~bupple_flask.relay.StreamListener` the engine attaches to each relay: nothing
here runs per chunk (the relay keeps the time to the first chunk and the largest gap
between chunks as it goes). Under several gunicorn workers, prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set up by ``gunicorn.conf.py``) adds up
the workers' files, and ``/metrics`` answers for all of them from any worker.
"""

from __future__ import annotations

import hmac
import threading
from typing import TYPE_CHECKING, Any

from flask import Response, request

from .config import prometheus_multiproc_dir

if TYPE_CHECKING:
    from .engine import EngineState
    from .relay import Relay, StreamOutcome

MAX_MODEL_LABELS = 100
"""Distinct model names a process labels; more (a request may name any model) are counted as ``other``."""

TTFT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
GAP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class StreamMetrics:
    """The metric families, registered once per process in prometheus_client's default registry."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        pm = ("provider", "model")
        self.open = Gauge("bupple_streams_open", "Streams open now", ["provider"], multiprocess_mode="livesum")
        self.started = Counter("bupple_streams_started", "Streams whose upstream request started", pm)
        self.finished = Counter("bupple_streams_finished", "Streams ended, by ending", [*pm, "ending"])
        self.ttft = Histogram("bupple_time_to_first_token_seconds", "From the request to the first chunk", pm,
                              buckets=TTFT_BUCKETS)  # fmt: skip
        self.duration = Histogram("bupple_stream_duration_seconds", "Whole stream, by ending", [*pm, "ending"],
                                  buckets=DURATION_BUCKETS)  # fmt: skip
        self.gap = Histogram("bupple_stream_max_chunk_gap_seconds", "Largest gap between two chunks of a stream",
                             pm, buckets=GAP_BUCKETS)  # fmt: skip
        self.input_tokens = Counter("bupple_input_tokens", "Input tokens the providers reported", pm)
        self.output_tokens = Counter("bupple_output_tokens", "Output tokens the providers reported", pm)
        self.errors = Counter("bupple_stream_errors", "Streams that ended with an error, by code", ["provider", "code"])
        self.retries = Counter("bupple_upstream_retries", "Upstream requests retried before the first token",
                               ["provider"])  # fmt: skip
        self.disconnects = Counter("bupple_client_disconnects", "Streams the browser left before the end",
                                   ["provider"])  # fmt: skip
        self._models: set[str] = set()
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], Series] = {}

    def series(self, provider: str, model: str) -> Series:
        """The labelled children for one provider and model, looked up once (``labels()`` costs ~3 us a call)."""
        model = self.model_label(model)
        found = self._series.get((provider, model))
        if found is None:
            found = self._series.setdefault((provider, model), Series(self, provider, model))
        return found

    def model_label(self, model: str) -> str:
        """``model``, or ``other`` once :data:`MAX_MODEL_LABELS` names were seen: bounded series."""
        if model in self._models:
            return model
        with self._lock:
            if len(self._models) < MAX_MODEL_LABELS:
                self._models.add(model)
                return model
        return "other"


class Series:
    """One provider and model's children of every metric; by ``ending`` and error ``code`` as they come."""

    __slots__ = ("_by_ending", "disconnects", "gap", "input_tokens", "metrics", "model", "open", "output_tokens",
                 "provider", "retries", "started", "ttft")  # fmt: skip

    def __init__(self, metrics: StreamMetrics, provider: str, model: str) -> None:
        self.metrics, self.provider, self.model = metrics, provider, model
        self.open = metrics.open.labels(provider)
        self.started = metrics.started.labels(provider, model)
        self.ttft = metrics.ttft.labels(provider, model)
        self.gap = metrics.gap.labels(provider, model)
        self.input_tokens = metrics.input_tokens.labels(provider, model)
        self.output_tokens = metrics.output_tokens.labels(provider, model)
        self.retries = metrics.retries.labels(provider)
        self.disconnects = metrics.disconnects.labels(provider)
        self._by_ending: dict[str, tuple[Any, Any]] = {}

    def by_ending(self, ending: str) -> tuple[Any, Any]:
        """``(finished, duration)`` children for ``ending``."""
        found = self._by_ending.get(ending)
        if found is None:
            m = self.metrics
            found = (m.finished.labels(self.provider, self.model, ending),
                     m.duration.labels(self.provider, self.model, ending))  # fmt: skip
            self._by_ending[ending] = found
        return found


_metrics: StreamMetrics | None = None
_metrics_lock = threading.Lock()


def stream_metrics() -> StreamMetrics:
    """The process's metrics (made on first use: one set per process, whatever number of apps)."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = StreamMetrics()
        return _metrics


class MetricsListener:
    """Records one stream: the open gauge and started counter when it starts, the rest when it ends."""

    __slots__ = ("_open", "series")

    def __init__(self, metrics: StreamMetrics, provider: str, model: str) -> None:
        self.series = metrics.series(provider, model)
        self._open = False

    def started(self) -> None:
        """The upstream request is in flight."""
        self.series.open.inc()
        self.series.started.inc()
        self._open = True

    def ended(self, outcome: StreamOutcome) -> None:
        """Count how it ended, what it cost and how it flowed (the finished counter last: in one process, a
        scrape that counts the stream finished sees all of its figures; across gunicorn workers a scrape
        reads each kind's files in turn, so it may see them a moment apart)."""
        series = self.series
        finished, duration = series.by_ending(outcome.ending)
        duration.observe(outcome.duration)
        if outcome.ttft is not None:
            series.ttft.observe(outcome.ttft)
        if outcome.max_chunk_gap is not None:
            series.gap.observe(outcome.max_chunk_gap)
        usage: Any = outcome.usage or {}
        if usage.get("input_tokens"):
            series.input_tokens.inc(usage["input_tokens"])
        if usage.get("output_tokens"):
            series.output_tokens.inc(usage["output_tokens"])
        if outcome.error is not None:
            series.metrics.errors.labels(series.provider, outcome.error.code).inc()
        if outcome.retries:
            series.retries.inc(outcome.retries)
        if outcome.ending == "interrupted" and outcome.error is None:  # not a shutdown's server_shutdown
            series.disconnects.inc()
        if self._open:
            series.open.dec()
        finished.inc()


def metrics_listener(relay: Relay) -> MetricsListener:
    """The listener the engine attaches to every relay when metrics are on."""
    builder = relay.builder
    return MetricsListener(stream_metrics(), builder.provider, builder.model or builder.get_provider().model)


def enable_metrics(state: EngineState) -> None:
    """Attach the metrics listener to every stream of this app; ``RuntimeError`` without prometheus_client."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "BUPPLE_METRICS needs prometheus_client: pip install 'bupple-flask[metrics]'"
        ) from exc
    stream_metrics()
    state.stream_listeners.append(metrics_listener)


def metrics_view() -> Response:
    """``/metrics``: the text exposition of every worker (multiprocess mode) or this process.

    With ``BUPPLE_METRICS_TOKEN`` set, only ``Authorization: Bearer <token>`` gets them (else 401).
    """
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    from .engine import get_state

    token = get_state().settings.metrics_token
    if token is not None and not _bearer_matches(token):
        return Response("metrics need a bearer token\n", status=401, mimetype="text/plain",
                        headers={"WWW-Authenticate": 'Bearer realm="metrics"'})  # fmt: skip
    registry: Any = REGISTRY
    if prometheus_multiproc_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    response = Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response


def _bearer_matches(token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
