"""``operator run --metrics-port``: Prometheus figures scraped from the real process after
real WebSocket traffic, and ``--log-level``."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from test_operator_process import Operator, keyfile, start  # noqa: F401 (a fixture)
from test_server import PRICE, SIZE, connect

from cancelnote.crypto import Signer, keccak
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.testing import Trader

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_port(operator: Operator) -> int:
    for line in operator.log.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "metrics_listening":
            assert event["host"] == "127.0.0.1"  # the default: nobody else's business
            return int(event["port"])
    raise AssertionError(f"no metrics_listening line: {operator.log.read_text()}")


async def scrape(port: int) -> Samples:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
            return response.read().decode()

    text = await trio.to_thread.run_sync(get)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def refused_connection(port: int) -> bytes:
    """Open a TCP connection and read what the operator writes before it closes it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(4096):
            received += chunk
    await stream.aclose()
    return received


async def test_metrics_count_requests_outcomes_notes_commits_and_connections(tmp_path, keyfile):  # noqa: F811
    operator = await start(
        tmp_path, tmp_path / "j.sqlite", "--metrics-port", "0", "--max-connections-per-address", "1"
    )
    try:
        port = metrics_port(operator)
        alice = Trader(Signer(keccak(b"alice metrics")), operator.domain)
        codes: dict[str, str] = {}
        async with connect(operator.port) as client:
            now = wall_clock_ms()
            placed = [alice.order(1, PRICE - k * 10**15, SIZE, now) for k in range(3)]
            for request in placed:
                assert (await client.request(request))["status"] == "success"
            cancel = await client.request(alice.cancel(placed[:2], wall_clock_ms()))
            assert cancel["status"] == "success" and len(cancel["data"]["notes"]) == 2
            unknown = await client.request(alice.order(9, PRICE, SIZE, wall_clock_ms()))
            codes["execute_place_order"] = unknown["error_code"]
            assert (await client.request({"book": {"product_id": 1}}))["status"] == "success"
            subscribed = await client.request(
                {"subscribe": {"sender": "0x" + alice.sender.hex(), "after_seq": "0"}}
            )
            assert subscribed["status"] == "success"
            await client.ws.send_message("{not json")
            invalid = await client.answer()
            assert invalid["status"] == "failure" and invalid["request_type"] is None
            codes["invalid"] = invalid["error_code"]
            assert b" 503 " in (await refused_connection(operator.port))  # one per address

            samples = await scrape(port)
            assert value(samples, "cancelnote_connections") == 1
            assert value(samples, "cancelnote_connections_opened_total") == 1
        requests = "cancelnote_requests_total"
        assert value(samples, requests, type="execute_place_order", outcome="success") == 3
        assert (
            value(
                samples, requests, type="execute_place_order", outcome=codes["execute_place_order"]
            )
            == 1
        )
        assert codes["execute_place_order"] == "UNKNOWN_PRODUCT"
        assert value(samples, requests, type="execute_cancel_orders", outcome="success") == 1
        assert value(samples, requests, type="query_book", outcome="success") == 1
        assert value(samples, requests, type="subscribe", outcome="success") == 1
        assert value(samples, requests, type="invalid", outcome=codes["invalid"]) == 1
        assert sum(v for (name, _), v in samples.items() if name == requests) == 8
        # One cancel timed, receive to durable, on a loopback with an fsync: under 2.5 s.
        assert value(samples, "cancelnote_note_latency_seconds_count") == 1
        assert 0 < value(samples, "cancelnote_note_latency_seconds_sum") < 2.5
        assert value(samples, "cancelnote_note_latency_seconds_bucket", le="2.5") == 1
        # 3 orders accepted, a cancel accepted with its 2 notes: at least 6 entries, and
        # every commit timed.
        assert value(samples, "cancelnote_journal_entries_total") >= 6
        assert value(samples, "cancelnote_journal_commit_seconds_count") >= 1
        refused = "cancelnote_connections_refused_total"
        assert value(samples, refused, reason="ADDRESS_CONNECTION_LIMIT") == 1
        assert value(samples, "cancelnote_pipeline_requests") == 0
        assert value(samples, "cancelnote_engine_queue_batches") == 0
        assert value(samples, "cancelnote_commit_queue_batches") == 0

        assert "connection_open" in operator.events()  # (what --log-level warning drops)
        after: dict[str, Any] = await scrape(port)  # the client left
        assert value(after, "cancelnote_connections") == 0
        assert value(after, "cancelnote_buffered_bytes") == 0
    finally:
        assert await operator.stop() == 0


async def test_no_metrics_unless_asked_and_log_level_warning_drops_info_lines(tmp_path, keyfile):  # noqa: F811
    operator = await start(tmp_path, tmp_path / "j.sqlite", "--log-level", "warning")
    try:
        async with connect(operator.port) as client:
            assert (await client.request({"book": {"product_id": 1}}))["status"] == "success"
    finally:
        assert await operator.stop() == 0
    events = operator.events()
    assert "metrics_listening" not in events
    assert "connection_open" not in events and "listening" not in events
