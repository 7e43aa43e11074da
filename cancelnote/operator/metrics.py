"""Prometheus metrics of the operator (``operator run --metrics-port P``; off by default).

The server holds a :class:`Metrics` only when asked to, and calls it from few places:
once per answer it releases (:meth:`Metrics.answered`), once per journal commit
(:meth:`Metrics.committed`) and once per connection accepted or refused. Everything
else (queue depths, open connections, buffered bytes) is read when Prometheus scrapes,
by the functions :meth:`Metrics.watch` is given, so it costs nothing between scrapes.
With metrics off the server pays one ``is None`` test per answer and per commit.

The endpoint is ``prometheus_client``'s own HTTP server on a daemon thread, bound to
127.0.0.1 unless told otherwise: the figures say how busy the operator is and who is
connected, which is nobody else's business.

Labels are bounded: ``type`` is an answer's ``request_type`` (protocol §15:
``execute_cancel_orders``, ``query_book``, ...; ``invalid`` for a message that never
became a request), ``outcome`` is ``success`` or a stable error code (protocol §15.5),
and ``reason`` one of the connection caps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from cancelnote.api import CancelAndPlace, CancelOrders, CancelProductOrders

#: Request types whose success is a cancellation note (what the latency histogram times).
NOTE_REQUESTS = frozenset(
    cls.REQUEST_TYPE for cls in (CancelOrders, CancelProductOrders, CancelAndPlace)
)
#: Seconds: a cancel's round trip on loopback is 5-20 ms under load (docs/operations.md §8).
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Seconds: one FULL commit is an fsync, 0.1-5 ms on the disks we met.
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class Metrics:
    """The operator's counters, histograms and gauges, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._requests = Counter(
            "cancelnote_requests",
            "Requests answered, by request type and outcome (success or the error code)",
            ["type", "outcome"],
            registry=registry,
        )
        self._by_label: dict[tuple[str, str], Any] = {}
        self._note_latency = Histogram(
            "cancelnote_note_latency_seconds",
            "A successful cancel: from the read of its last frame to its notes durable"
            " (committed; FULL: fsynced), just before its answer is written",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._commit_seconds = Histogram(
            "cancelnote_journal_commit_seconds",
            "One journal transaction (rows, log nodes, meta, commit and seal)",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self._committed_entries = Counter(
            "cancelnote_journal_entries", "Journal entries committed", registry=registry
        )
        self._opened = Counter(
            "cancelnote_connections_opened", "Connections accepted", registry=registry
        )
        self._refused = Counter(
            "cancelnote_connections_refused",
            "Connections refused at accept, by the cap that was reached",
            ["reason"],
            registry=registry,
        )
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # --- the server's hooks ----------------------------------------------------------------

    def watch(self, **gauges: tuple[str, Callable[[], float]]) -> None:
        """Gauges read at each scrape: ``name=(help, function)``, named ``cancelnote_<name>``."""
        for name, (help_text, function) in gauges.items():
            Gauge(f"cancelnote_{name}", help_text, registry=self.registry).set_function(function)

    def answered(self, wire: dict[str, Any], received: float | None, durable_at: float) -> None:
        """One answer released: counted by type and outcome; a cancel's timed from
        ``received`` (when its last frame was read) to ``durable_at`` (trio's clock)."""
        request_type = wire.get("request_type") or "invalid"
        success = wire.get("status") == "success"
        outcome = "success" if success else wire.get("error_code") or "failure"
        key = (request_type, outcome)
        child = self._by_label.get(key)
        if child is None:
            child = self._by_label[key] = self._requests.labels(request_type, outcome)
        child.inc()
        if success and received is not None and request_type in NOTE_REQUESTS:
            self._note_latency.observe(durable_at - received)

    def committed(self, seconds: float, entries: int) -> None:
        self._commit_seconds.observe(seconds)
        self._committed_entries.inc(entries)

    def connection_opened(self) -> None:
        self._opened.inc()

    def connection_refused(self, reason: str) -> None:
        self._refused.labels(reason).inc()

    # --- the endpoint ----------------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0: any) from a daemon thread; the port.

        Raises:
            OSError: the address cannot be bound.
        """
        self._http, self._thread = start_http_server(port, host, self.registry)
        return self._http.server_port

    def close(self) -> None:
        """Stop the endpoint (idempotent)."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
