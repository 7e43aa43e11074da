"""Journal heads over the real WebSocket server: pushed every H ms, durable before visible,
proofs that verify against them, clear errors, and a restart that signs heads of the same
tree. The real ``operator run`` process pushes heads too (the last test).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from test_operator_process import keyfile, start  # noqa: F401  (keyfile is a fixture)
from test_server import DOMAIN, OPERATOR, PRICE, SIZE, connect, trader

from cancelnote.crypto import parse_address
from cancelnote.messages import Domain, Match
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.engine import Engine
from cancelnote.operator.heads import HeadLog
from cancelnote.operator.journal import Journal
from cancelnote.operator.server import OperatorServer
from cancelnote.transparency import (
    LeafKind,
    LeafProof,
    SignedHead,
    path_from_wire,
    verify_consistency,
)

H_MS = 50


async def _serve(nursery, path: Path, *, heads_ms: int | None = H_MS, **engine) -> OperatorServer:
    journal = Journal.open(path, DOMAIN, OPERATOR.address)
    log = HeadLog.open(journal, OPERATOR, DOMAIN, heads_ms) if heads_ms else None
    replayed = Engine(OPERATOR, DOMAIN, {1, 2}, **engine)
    for entry in journal.entries():  # as the service replays it
        if log is not None:
            log.check(entry)
        replayed.restore([entry])
    if log is not None:
        log.finish()
    server = OperatorServer(replayed, journal, heads=log)
    await nursery.start(server.serve, "127.0.0.1", 0)
    return server


async def _stop(server: OperatorServer) -> None:
    with trio.fail_after(10):
        await server.shutdown()
    if server.heads is not None:
        server.heads.close()
    server.journal.close()


def _head(message: dict, domain: Domain = DOMAIN, operator: bytes = OPERATOR.address) -> SignedHead:
    head = SignedHead.from_wire(message)
    head.verify(domain, operator)
    return head


async def test_heads_are_pushed_every_h_ms_even_when_idle(nursery, tmp_path):
    server = await _serve(nursery, tmp_path / "j.sqlite")
    try:
        async with connect(server) as client:
            answer = await client.request({"subscribe_heads": {}})
            assert answer["status"] == "success" and answer["request_type"] == "subscribe_heads"
            started = trio.current_time()
            heads = [_head(await client.stream_item()) for _ in range(6)]
            elapsed = trio.current_time() - started
            assert 5 * H_MS / 1000 * 0.8 <= elapsed < 5 * H_MS / 1000 * 6
            times = [h.head.timestamp_ms for h in heads]
            assert times == sorted(times) and len(set(times)) == 6
            assert {h.head.size for h in heads} == {1}  # the genesis leaf alone
            again = await client.request({"subscribe_heads": {}})  # the latest, again
            assert _head(again["data"]["head"]).head.size == 1
            assert (await client.request({"unsubscribe_heads": {}}))["status"] == "success"
    finally:
        await _stop(server)


async def test_every_reply_fill_and_note_is_proven_in_the_next_head(nursery, tmp_path):
    server = await _serve(nursery, tmp_path / "j.sqlite", settlement_delay_ms=20)
    alice, bob = trader(1), trader(2)
    now = wall_clock_ms()
    try:
        async with connect(server) as client:
            await client.request({"subscribe_heads": {}})
            resting = alice.order(1, PRICE, SIZE, now)
            assert (await client.request(resting))["status"] == "success"
            assert (await client.request(bob.order(1, PRICE, -SIZE // 2, now)))[
                "status"
            ] == "success"
            cancel = alice.cancel([resting], now)
            data = (await client.request(cancel))["data"]
            (note,) = data["notes"]
            located = {}
            for name, content in (
                ("order", resting.order.struct_hash()),
                ("cancel", cancel.tx.struct_hash()),
            ):
                answer = await client.request({"locate": {"content": "0x" + content.hex()}})
                located[name] = int(answer["data"]["seq"])
            await trio.sleep(0.2)  # the fills settle
            head = _head((await client.request({"head": {}}))["data"])
            seqs = [0, located["order"], located["cancel"], int(note["note"]["seq"])]
            seqs += [s for s in range(1, head.head.size) if s not in seqs]
            answer = await client.request(
                {"inclusion": {"size": str(head.head.size), "seqs": [str(s) for s in seqs[:32]]}}
            )
            kinds = []
            for item in answer["data"]["proofs"]:
                proof = LeafProof.from_wire({k: item[k] for k in ("seq", "leaf", "path")})
                proof.verify(head.head.size, head.head.root)
                kinds.append(proof.leaf.kind)
                if proof.leaf.kind == LeafKind.MATCH:
                    assert Match.from_wire(item["match"]).struct_hash() == proof.leaf.content
            assert kinds[:4] == [LeafKind.GENESIS, LeafKind.ORDER, LeafKind.CANCEL, LeafKind.NOTE]
            assert {LeafKind.MATCH, LeafKind.FILL} <= set(kinds)
            # The pushed heads that followed are consistent with each other and this one.
            pushed = [_head(item) for item in client.stream]
            older = min(pushed, key=lambda h: h.head.size)
            proof = await client.request(
                {"consistency": {"first": str(older.head.size), "second": str(head.head.size)}}
            )
            path = path_from_wire("path", proof["data"]["path"])
            verify_consistency(
                older.head.size, head.head.size, older.head.root, head.head.root, path
            )
    finally:
        await _stop(server)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ({"inclusion": {"size": "9999", "seqs": ["0"]}}, "OUT_OF_RANGE"),
        ({"inclusion": {"size": "1", "seqs": ["1"]}}, "OUT_OF_RANGE"),
        ({"consistency": {"first": "2", "second": "1"}}, "OUT_OF_RANGE"),
        ({"locate": {"content": "0x" + "11" * 32}}, "NOT_FOUND"),
        ({"inclusion": {"size": "1", "seqs": ["0"] * 33}}, "INVALID_MESSAGE"),
        ({"inclusion": {"size": "-1", "seqs": []}}, "INVALID_MESSAGE"),
        ({"head": {"now": 1}}, "INVALID_MESSAGE"),
    ],
)
async def test_bad_heads_queries_get_clear_errors_and_change_nothing(
    nursery, tmp_path, request_, code
):
    server = await _serve(nursery, tmp_path / "j.sqlite")
    try:
        async with connect(server) as client:
            before = server.heads.durable_size
            answer = await client.request(request_)
            assert (answer["status"], answer["error_code"]) == ("failure", code), answer
            assert server.heads.durable_size == before and server.journal.last_seq() == 0
    finally:
        await _stop(server)


async def test_an_operator_without_heads_says_so(nursery, tmp_path):
    server = await _serve(nursery, tmp_path / "j.sqlite", heads_ms=None)
    try:
        async with connect(server) as client:
            for request in (
                {"subscribe_heads": {}},
                {"head": {}},
                {"locate": {"content": "0x" + "00" * 32}},
            ):
                answer = await client.request(request)
                assert answer["error_code"] == "HEADS_DISABLED", answer
            assert (await client.request({"book": {"product_id": 1}}))["status"] == "success"
    finally:
        await _stop(server)


async def test_a_restarted_server_signs_heads_of_the_same_tree(nursery, tmp_path):
    path = tmp_path / "j.sqlite"
    server = await _serve(nursery, path)
    alice = trader(1)
    now = wall_clock_ms()
    async with connect(server) as client:
        for n in range(5):
            await client.request(alice.order(1, PRICE - n, SIZE, now))
        before = _head((await client.request({"head": {}}))["data"]).head
    await _stop(server)
    server = await _serve(nursery, path)
    try:
        async with connect(server) as client:
            await client.request({"subscribe_heads": {}})
            after = _head(await client.stream_item()).head
            assert (after.size, after.root) == (before.size, before.root)
            assert after.timestamp_ms >= before.timestamp_ms
            await client.request(alice.order(1, PRICE - 9, SIZE, now))
            later = _head((await client.request({"head": {}}))["data"]).head
            proof = await client.request(
                {"consistency": {"first": str(before.size), "second": str(later.size)}}
            )
            verify_consistency(
                before.size,
                later.size,
                before.root,
                later.root,
                path_from_wire("p", proof["data"]["path"]),
            )
    finally:
        await _stop(server)


@pytest.mark.slow
async def test_the_real_operator_process_pushes_signed_heads(tmp_path, keyfile):  # noqa: F811
    operator = await start(tmp_path, tmp_path / "j.sqlite", "--heads-ms", "40")
    ready = next(
        line
        for line in map(json.loads, operator.log.read_text().splitlines())
        if line["event"] == "operator_ready"
    )
    assert ready["heads_ms"] == 40
    key = parse_address(ready["operator"])

    def signed(message: dict) -> SignedHead:
        return _head(message, operator.domain, key)

    try:
        async with connect(operator.port) as client:
            answer = await client.request({"subscribe_heads": {}})
            assert answer["status"] == "success"
            heads = [signed(await client.stream_item()) for _ in range(4)]
            assert [h.head.timestamp_ms for h in heads] == sorted(
                h.head.timestamp_ms for h in heads
            )
            me = trader(7)
            me.domain = operator.domain
            placed = me.order(1, PRICE, SIZE, wall_clock_ms())
            assert (await client.request(placed))["status"] == "success"
            content = "0x" + placed.order.struct_hash().hex()
            seq = int((await client.request({"locate": {"content": content}}))["data"]["seq"])
            while True:  # the first head that holds the order
                head = signed(await client.stream_item())
                if head.head.size > seq:
                    break
            answer = await client.request(
                {"inclusion": {"size": str(head.head.size), "seqs": [str(seq)]}}
            )
            (item,) = answer["data"]["proofs"]
            proof = LeafProof.from_wire(item)
            assert proof.leaf.content == placed.order.struct_hash()
            proof.verify(head.head.size, head.head.root)
        assert json.dumps("fault") not in operator.log.read_text()
    finally:
        assert await operator.stop() == 0
