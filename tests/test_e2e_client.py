"""End to end across processes and real sockets: a served chain, an operator process and
client processes (the ``cancelnote client`` CLI), honest and cheating."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cancelnote import keystore
from cancelnote.crypto import to_checksum
from cancelnote.dispute.court import DEV_PARAMETERS, Court
from cancelnote.dispute.inprocess import dev_account
from cancelnote.dispute.jsonrpc import JsonRpcChain

pytestmark = pytest.mark.slow

PASSWORD = "e2e password"
ORDER = ("--product", "1", "--price", "100", "--amount")
PENALTY = 10**18
#: A claim delay of 2 s: claims vest 4 blocks after they are filed (a block is a second).
COURT = {**DEV_PARAMETERS, "penalty_wei": PENALTY, "halt_on_default": False, "claim_delay_s": 2}
OWNER_SHARE = PENALTY - PENALTY * COURT["burn_share_bps"] // 10_000


ENV = {**os.environ, keystore.PASSWORD_ENV: PASSWORD}


def _start(args: list[str], ready: str) -> tuple[subprocess.Popen[str], str]:
    """A background ``cancelnote`` process and the first stdout line containing ``ready``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cancelnote.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert process.stdout is not None and process.stderr is not None
    for line in process.stdout:
        if ready in line:
            return process, line.strip()
    process.kill()
    _, errors = process.communicate()
    raise AssertionError(f"{args[0]} never printed {ready!r}: {errors[-2000:]}")


@pytest.fixture
def exchange(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    """A served chain, a court on it, and an operator process running ``request.param``."""
    chain_process, line = _start(["chain", "serve", "--port", "0"], "Listening on")
    processes = [chain_process]
    try:
        rpc = line.split()[-1]
        chain = JsonRpcChain(rpc)
        operator = dev_account(1)
        court = Court.deploy(chain, dev_account(0), operator=operator.address, **COURT)
        keys = {}
        for name, index in (("operator", 1), ("alice", 2), ("bob", 3)):
            keys[name] = tmp_path / f"{name}.json"
            keystore.import_key(keys[name], dev_account(index).secret, PASSWORD, iterations=2)
        policy = getattr(request, "param", "honest")
        operator_process, line = _start(
            [
                "operator", "run", "--db", str(tmp_path / "journal.sqlite"),
                "--key", str(keys["operator"]), "--rpc", rpc,
                "--court", to_checksum(court.address), "--port", "0",
                "--post-bond", str(5 * 10**18), "--policy", policy, "--poll-s", "0.2",
            ],
            "listening on",
        )  # fmt: skip
        processes.append(operator_process)
        url = next(word for word in line.split() if word.startswith("ws://"))
        yield {"rpc": rpc, "court": court, "url": url, "keys": keys, "dir": tmp_path}
    finally:
        for process in reversed(processes):
            process.terminate()
            process.communicate(timeout=10)


def client(exchange: dict, who: str, *args: str) -> tuple[int, object]:
    """Run ``cancelnote client ARGS --json`` as ``who``; its exit code and parsed output."""
    command = [
        sys.executable, "-m", "cancelnote.cli", "client", *args, "--json",
        "--db", str(exchange["dir"] / f"{who}.sqlite"), "--key", str(exchange["keys"][who]),
        "--url", exchange["url"], "--rpc", exchange["rpc"],
        "--court", to_checksum(exchange["court"].address),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=60)
    output = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, output


def test_honest_operator_trades_cancels_and_is_never_disputed(exchange):
    code, placed = client(exchange, "alice", "place", "sell", *ORDER, "2")
    assert code == 0, placed
    order = placed[0]["order"]
    code, _ = client(exchange, "bob", "place", "buy", *ORDER, "1")
    assert code == 0
    code, cancelled = client(exchange, "alice", "cancel", order)
    assert code == 0 and cancelled[0]["outcome"] == "cancelled" and cancelled[0]["filled"] == "1"
    code, status = client(exchange, "alice", "status")
    assert code == 0 and status[0]["fills"] == 1 and status[0]["notes"] == 1
    code, findings = client(exchange, "alice", "evidence", "findings")
    assert code == 0 and findings == []
    code, disputes = client(exchange, "alice", "dispute")
    assert code == 0 and disputes == []
    code, findings = client(exchange, "bob", "evidence", "findings")
    assert code == 0 and findings == []
    unknown_product = ("--product", "9", "--price", "1", "--amount", "1")
    code, _ = client(exchange, "bob", "place", "buy", *unknown_product)
    assert code == 1  # UNKNOWN_PRODUCT: the operator refused


@pytest.mark.parametrize("exchange", ["fill-after-note"], indirect=True)
def test_fill_after_note_is_detected_won_and_paid_out(exchange):
    code, placed = client(exchange, "alice", "place", "sell", *ORDER, "1")
    order = placed[0]["order"]
    code, cancelled = client(exchange, "alice", "cancel", order)
    assert code == 0 and cancelled[0]["outcome"] == "cancelled"
    client(exchange, "bob", "place", "buy", *ORDER, "1")
    code, outcomes = client(exchange, "alice", "watch", "--duration-s", "2", "--poll-s", "0.3")
    claimed = [o for o in outcomes if o["outcome"] == "claimed"]
    assert claimed and claimed[0]["owed_wei"] == PENALTY, outcomes
    chain = JsonRpcChain(exchange["rpc"])
    for _ in range(4):  # blocks go by: the claim vests
        chain.transact(dev_account(5), dev_account(6).address, b"", value=1)
    code, outcomes = client(exchange, "alice", "watch", "--duration-s", "2", "--poll-s", "0.3")
    paid = [o for o in outcomes if o["outcome"] == "paid"]
    withdrawn = [o for o in outcomes if o["outcome"] == "withdrawn"]
    assert paid and paid[0]["paid_wei"] == OWNER_SHARE, outcomes
    assert withdrawn, outcomes
    code, findings = client(exchange, "alice", "evidence", "findings")
    assert [(f["kind"], f["status"]) for f in findings] == [("FILL_AFTER_NOTE", "paid")]
    assert code == 0
