"""Prometheus metrics at ``http://HOST:PORT/metrics`` (the ``metrics`` setting; off by default).

Imported only when metrics are on. The numbers are the daemon's published snapshot (the
single writer refreshes it about every second), read by a collector of a registry of our
own at each scrape: the HTTP thread never touches the sorting objects, and a scrape shows
at most a second-old state (``dcmsortd_status_updated_timestamp_seconds`` tells; it stops
moving when the main loop hangs).
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dcmsortd.model.errors import DaemonError
from dcmsortd.service.stats import FAILED, LATENCY_BUCKETS

log = logging.getLogger(__name__)

Snapshot = Callable[[], Mapping[str, Any]]
_GAUGES = (  # snapshot key, metric name, help
    ("spool_backlog", "dcmsortd_spool_backlog", "notifications waiting in the spool"),
    ("workers_alive", "dcmsortd_workers_alive", "worker processes alive (0: examined in the "
     "main process)"),
    ("workers", "dcmsortd_workers", "worker processes configured"),
    ("series_in_memory", "dcmsortd_series_in_memory", "series records held in memory"),
    ("started_at", "dcmsortd_start_time_seconds", "when the daemon started (Unix time)"),
    ("updated_at", "dcmsortd_status_updated_timestamp_seconds",
     "when the main loop last published its state (Unix time)"),
)


class _Collector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        outcomes: Mapping[str, int] = s.get("outcomes") or {}
        yield CounterMetricFamily("dcmsortd_files_sorted", "files linked into the trees",
                                  value=s.get("files_sorted", 0))
        failed = CounterMetricFamily("dcmsortd_files_failed", "files that could not be "
                                     "filed, by reason (bad: not readable DICOM; rejected: "
                                     "outside the input roots; failed: a write failed)",
                                     labels=["reason"])
        for reason in FAILED:
            failed.add_metric([reason], outcomes.get(reason, 0))
        yield failed
        other = CounterMetricFamily("dcmsortd_files_other_modality", "files of a modality "
                                    "not sorted here", labels=["action"])
        for action in ("ignored", "deleted"):
            other.add_metric([action], outcomes.get(action, 0))
        yield other
        yield CounterMetricFamily("dcmsortd_records_written", "series records and SR "
                                  "listings written", value=s.get("records_written", 0))
        yield _histogram(s)
        for key, name, text in _GAUGES:
            if isinstance(s.get(key), int | float):
                yield GaugeMetricFamily(name, text, value=s[key])
        error = s.get("last_error")
        if isinstance(error, dict):
            yield GaugeMetricFamily("dcmsortd_last_error_timestamp_seconds",
                                    "when the last error was logged (Unix time)",
                                    value=error.get("time", 0))
        yield from _provided(s)


def _histogram(s: Mapping[str, Any]) -> Metric:
    counts = list(s.get("latency_buckets") or [0] * (len(LATENCY_BUCKETS) + 1))
    buckets, total = [], 0
    for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), counts, strict=True):
        total += count
        buckets.append((bound, total))
    return HistogramMetricFamily(
        "dcmsortd_arrival_to_linked_seconds",
        "seconds from reading a file's notice (pipe or spool) to its file being linked",
        buckets=buckets, sum_value=s.get("latency_sum_s", 0.0))


def _provided(s: Mapping[str, Any]) -> Iterator[Metric]:
    """Numbers of the extra providers (e.g. completion): ``<key>_total`` as counters."""
    for provider in s.get("providers") or []:
        for key, value in sorted((s.get(provider) or {}).items()):
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            name = f"dcmsortd_{provider}_{key}"
            if key.endswith("_total"):
                yield CounterMetricFamily(name.removesuffix("_total"), f"{provider}: {key}",
                                          value=value)
            else:
                yield GaugeMetricFamily(name, f"{provider}: {key}", value=value)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class MetricsServer:
    """Serves ``snapshot()`` as Prometheus text on a daemon thread, until ``close``."""

    def __init__(self, host: str, port: int, snapshot: Snapshot) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(snapshot))
        server_class = type("_Server", (_Server,), {
            "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        try:
            self._server: WSGIServer = make_server(
                host, port, make_wsgi_app(registry), server_class, handler_class=_Quiet)
        except OSError as exc:
            raise DaemonError(f"metrics: cannot listen on {host}:{port}: "
                              f"{exc.strerror or exc}") from exc
        self.port: int = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="dcmsortd-metrics")
        self._thread.start()
        log.info("metrics at http://%s:%d/metrics", host if ":" not in host else f"[{host}]",
                 self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
