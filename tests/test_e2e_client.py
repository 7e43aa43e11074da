"""End to end across processes and real sockets: a served chain, an operator process and
client processes (the ``cancelnote client`` CLI), honest and cheating."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from eth_account import Account

from cancelnote import exits, keystore
from cancelnote.client.evidence import EvidenceStore
from cancelnote.crypto import Signer, to_checksum
from cancelnote.dispute.court import DEV_PARAMETERS, Court
from cancelnote.dispute.inprocess import dev_account
from cancelnote.dispute.jsonrpc import JsonRpcChain
from cancelnote.messages import Domain

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


def client_run(exchange: dict, who: str, *args: str, key: bool = True) -> CompletedProcess[str]:
    """Run ``cancelnote client ARGS --json`` as ``who`` (``--key`` too, unless ``key`` is
    false), with the exchange's operator, chain and court given by the environment."""
    command = [
        sys.executable, "-m", "cancelnote", "client", *args, "--json",
        "--db", str(exchange["dir"] / f"{who}.sqlite"),
        *(("--key", str(exchange["keys"][who])) if key else ()),
    ]  # fmt: skip
    environment = {
        **ENV,
        "CANCELNOTE_URL": exchange["url"],
        "CANCELNOTE_RPC": exchange["rpc"],
        "CANCELNOTE_COURT": to_checksum(exchange["court"].address),
    }
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)


def client(exchange: dict, who: str, *args: str) -> tuple[int, object]:
    """Run ``cancelnote client ARGS --json`` as ``who``; its exit code and parsed output."""
    done = client_run(exchange, who, *args)
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
def test_fill_after_note_is_detected_claimed_and_paid_out(exchange):
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
    assert withdrawn and withdrawn[0]["withdrawn_wei"] == OWNER_SHARE, outcomes
    code, findings = client(exchange, "alice", "evidence", "findings")
    # The log shows it too (matched after the cancel's leaf): one offence, paid once.
    assert sorted((f["kind"], f["status"]) for f in findings) == [
        ("FILL_AFTER_CANCEL", "resolved"),
        ("FILL_AFTER_NOTE", "paid"),
    ]
    assert code == 0


@pytest.mark.parametrize("exchange", ["ignore:1"], indirect=True)
def test_an_unanswered_cancel_is_overdue_exit_3_and_then_forced_on_chain(exchange):
    code, placed = client(exchange, "alice", "place", "sell", *ORDER, "1")
    assert code == exits.OK
    order = placed[0]["order"]
    started = time.monotonic()
    done = client_run(exchange, "alice", "cancel", order, "--deadline-s", "1")
    assert done.returncode == exits.DISPUTE and time.monotonic() - started < 30
    store = EvidenceStore.open(exchange["dir"] / "alice.sqlite")
    assert [c.request.digests for c in store.cancels()] == [(bytes.fromhex(order[2:]),)]
    store.close()
    assert done.stderr == (
        "cancelnote client cancel: no note within 1 s: the note is overdue. The signed cancel"
        f" is kept in {exchange['dir'] / 'alice.sqlite'}; client watch or client dispute will"
        " force it on-chain\n"
    )
    code, outcomes = client(exchange, "alice", "dispute", "--deadline-s", "1")
    forced = [o for o in outcomes if o["action"] == "ForceCancel"]
    assert forced and forced[0]["outcome"] == "forced" and forced[0]["order"] == order
    assert forced[0]["bond_wei"] == -COURT["dispute_bond_wei"]
    assert code == exits.DISPUTE  # the forced cancel is open until answered or finalized


@pytest.mark.parametrize("exchange", ["ignore:1"], indirect=True)
def test_ctrl_c_while_waiting_is_one_line_and_exit_130(exchange):
    _code, placed = client(exchange, "alice", "place", "sell", *ORDER, "1")
    environment = {**ENV, "CANCELNOTE_URL": exchange["url"]}
    waiting = subprocess.Popen(
        [sys.executable, "-m", "cancelnote", "client", "cancel", placed[0]["order"],
         "--db", str(exchange["dir"] / "alice.sqlite"), "--key", str(exchange["keys"]["alice"])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
    )  # fmt: skip
    store = EvidenceStore.open(exchange["dir"] / "alice.sqlite")
    deadline = time.monotonic() + 30
    while not store.cancels() and time.monotonic() < deadline:
        time.sleep(0.1)  # the cancel is kept before it is sent: then it waits for a note
    store.close()
    time.sleep(0.5)
    waiting.send_signal(signal.SIGINT)
    _, errors = waiting.communicate(timeout=20)
    assert waiting.returncode == exits.INTERRUPTED
    assert errors == "cancelnote client cancel: interrupted\n"


def test_an_operator_of_another_court_is_refused_before_anything_is_signed(exchange):
    db = exchange["dir"] / "elsewhere.sqlite"
    EvidenceStore.open(db, Domain(1337, b"\x42" * 20), dev_account(1).address).close()
    done = subprocess.run(
        [sys.executable, "-m", "cancelnote", "client", "place", "buy", *ORDER, "1",
         "--db", str(db), "--key", str(exchange["keys"]["alice"]), "--url", exchange["url"]],
        capture_output=True, text=True, env=ENV, timeout=60,
    )  # fmt: skip
    assert done.returncode == exits.USAGE
    court = to_checksum(exchange["court"].address)
    assert done.stderr.startswith(f"cancelnote client place: the operator at {exchange['url']}")
    assert f'"verifyingContract": "{court}"' in done.stderr
    assert "0x4242424242424242424242424242424242424242" in done.stderr
    assert EvidenceStore.open(db).orders() == []  # nothing was signed, nothing kept


@pytest.mark.parametrize("exchange", ["fill-after-note"], indirect=True)
def test_url_catches_up_first_for_findings_and_dispute(exchange):
    code, placed = client(exchange, "alice", "place", "sell", *ORDER, "1")
    client(exchange, "alice", "cancel", placed[0]["order"])
    client(exchange, "bob", "place", "buy", *ORDER, "1")  # fills alice's cancelled order
    code, findings = client(exchange, "alice", "evidence", "findings")
    kinds = [f["kind"] for f in findings]  # the fill at once; the log shows it after the heads
    assert code == exits.DISPUTE and kinds[0] == "FILL_AFTER_NOTE"
    assert set(kinds) <= {"FILL_AFTER_NOTE", "FILL_AFTER_CANCEL"}

    code, placed = client(exchange, "bob", "place", "sell", *ORDER, "1")
    client(exchange, "bob", "cancel", placed[0]["order"])
    client(exchange, "alice", "place", "buy", *ORDER, "1")  # fills bob's cancelled order
    code, outcomes = client(exchange, "bob", "dispute")  # no status run before
    assert [(o["action"], o["outcome"]) for o in outcomes][:1] == [("Prove", "claimed")], outcomes


@pytest.mark.parametrize("exchange", ["fill-after-note"], indirect=True)
def test_a_watchtower_without_gas_money_is_one_line_naming_its_account(exchange):
    _code, placed = client(exchange, "alice", "place", "sell", *ORDER, "1")
    client(exchange, "alice", "cancel", placed[0]["order"])
    client(exchange, "bob", "place", "buy", *ORDER, "1")
    bundle = exchange["dir"] / "bundle.json"
    done = client_run(exchange, "alice", "evidence", "export", "--out", str(bundle))
    assert done.returncode == exits.OK, done.stderr
    carol = Signer(b"\x0c" * 32)  # a third-party watchtower, never funded
    exchange["keys"]["carol"] = exchange["dir"] / "carol.json"
    keystore.import_key(exchange["keys"]["carol"], carol.secret, PASSWORD, iterations=2)
    done = client_run(exchange, "carol", "evidence", "import", str(bundle), key=False)
    assert done.returncode == exits.DISPUTE, done.stderr
    done = client_run(exchange, "carol", "dispute")
    assert done.returncode == exits.REFUSED
    assert done.stderr.startswith(
        f"cancelnote client dispute: {carol.checksum_address}, holding 0.000000 ETH, cannot send:"
    )
    assert done.stderr.count("\n") == 1


def test_an_order_signed_by_a_wallet_is_placed_from_its_typed_data(exchange):
    alice = dev_account(2)
    done = client_run(
        exchange, "alice", "place", "sell", *ORDER, "1", "--typed-data",
        "--address", alice.checksum_address, key=False,
    )  # fmt: skip
    assert done.returncode == exits.OK, done.stderr
    document = json.loads(done.stdout)
    assert document["domain"]["verifyingContract"] == to_checksum(exchange["court"].address)
    path = exchange["dir"] / "order.json"
    path.write_text(done.stdout)
    forged = Account.sign_typed_data(dev_account(3).secret, full_message=document)
    done = client_run(exchange, "alice", "submit", str(path), "--signature",
                      "0x" + forged.signature.hex(), key=False)  # fmt: skip
    assert done.returncode == exits.USAGE and "signed by" in done.stderr
    signed = Account.sign_typed_data(alice.secret, full_message=document)
    done = client_run(exchange, "alice", "submit", str(path), "--signature",
                      "0x" + signed.signature.hex(), key=False)  # fmt: skip
    assert done.returncode == exits.OK, done.stderr
    assert json.loads(done.stdout)[0]["order"] == "0x" + signed.message_hash.hex()
    _code, status = client(exchange, "alice", "status")
    assert [row["order"] for row in status] == ["0x" + signed.message_hash.hex()]
