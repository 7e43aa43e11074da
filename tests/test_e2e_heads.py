"""Journal heads end to end, through the real CLI against real operator processes: clients
follow the operator's heads while they trade, prove every fill and note in its log, keep
the heads, and gossip them (``client heads export|import``). An honest operator leaves
nothing to find; an operator that shows one log to some clients and another log to
others (two processes signing with its one key) is caught by the first import of a
peer's heads and halted by ``client dispute`` in the HeadsCourt."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from test_e2e_client import COURT, ENV, ORDER, PASSWORD, _start

from cancelnote import exits, keystore
from cancelnote.client.cli import CANCEL_HEADS, HEADS_MS
from cancelnote.client.evidence import EvidenceStore
from cancelnote.client.verifier import CANCEL_HEADS as VERIFIER_CANCEL_HEADS
from cancelnote.client.verifier import HEADS_MS as VERIFIER_HEADS_MS
from cancelnote.crypto import to_checksum
from cancelnote.dispute.court import Court, Offence
from cancelnote.dispute.inprocess import dev_account
from cancelnote.dispute.jsonrpc import JsonRpcChain

pytestmark = pytest.mark.slow

H_MS = "50"


def test_the_clients_defaults_are_the_verifiers():
    assert (HEADS_MS, CANCEL_HEADS) == (VERIFIER_HEADS_MS, VERIFIER_CANCEL_HEADS)


def _operator(tmp_path: Path, name: str, key: Path, rpc: str, court: Court, *extra: str) -> tuple:
    return _start(
        [
            "operator", "run", "--db", str(tmp_path / f"{name}.sqlite"), "--key", str(key),
            "--rpc", rpc, "--court", to_checksum(court.address), "--port", "0",
            "--poll-s", "0.2", "--heads-ms", H_MS, *extra,
        ],
        "listening on",
    )  # fmt: skip


@pytest.fixture
def split(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    """A served chain and court, and two operator processes signing with the court's one
    operator key over two journals: ``honest`` (bonded, watching the court; its policy
    ``request.param``, honest by default) and ``other``. Whoever talks to each sees a
    well-formed log; the two logs are not one."""
    chain_process, line = _start(["chain", "serve", "--port", "0"], "Listening on")
    processes = [chain_process]
    try:
        rpc = line.split()[-1]
        court = Court.deploy(
            JsonRpcChain(rpc), dev_account(0), operator=dev_account(1).address, **COURT
        )
        keys = {}
        for name, index in (("operator", 1), ("alice", 2), ("bob", 3)):
            keys[name] = tmp_path / f"{name}.json"
            keystore.import_key(keys[name], dev_account(index).secret, PASSWORD, iterations=2)
        urls = {}
        policy = getattr(request, "param", "honest")
        roles = {
            "honest": ("--post-bond", str(5 * 10**18), "--policy", policy),
            "other": ("--no-watch",),
        }
        for name, extra in roles.items():
            process, line = _operator(tmp_path, name, keys["operator"], rpc, court, *extra)
            processes.append(process)
            urls[name] = next(word for word in line.split() if word.startswith("ws://"))
        yield {"rpc": rpc, "court": court, "urls": urls, "keys": keys, "dir": tmp_path}
    finally:
        for process in reversed(processes):
            process.terminate()
            process.communicate(timeout=10)


def heads_run(where: dict, who: str, url: str, *args: str) -> CompletedProcess[str]:
    """``cancelnote client ARGS --json`` as ``who`` against the operator at ``url``."""
    command = [
        sys.executable, "-m", "cancelnote", "client", *args, "--json",
        "--db", str(where["dir"] / f"{who}.sqlite"), "--heads-ms", H_MS,
    ]  # fmt: skip
    environment = {
        **ENV,
        "CANCELNOTE_URL": url,
        "CANCELNOTE_RPC": where["rpc"],
        "CANCELNOTE_COURT": to_checksum(where["court"].address),
    }
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)


def _findings(path: Path) -> list:
    store = EvidenceStore.open(path)
    try:
        return store.findings()
    finally:
        store.close()


def test_an_honest_operators_heads_prove_every_fill_and_note_and_gossip_finds_nothing(split):
    url = split["urls"]["honest"]

    def run(who: str, *args: str, key: bool = False) -> CompletedProcess[str]:
        keyed = ("--key", str(split["keys"][who])) if key else ()
        done = heads_run(split, who, url, *args, *keyed)
        assert done.returncode == exits.OK, done.stderr
        return done

    (placed,) = json.loads(run("alice", "place", "buy", *ORDER, "1", key=True).stdout)
    run("bob", "place", "sell", *ORDER, "0.4", key=True)
    run("alice", "cancel", placed["order"], key=True)
    done = run("alice", "heads", "show")
    assert "; 2 of 2 fills and notes proven in the log" in done.stderr  # the fill, the note
    shown = json.loads(done.stdout)
    assert shown and {row["source"] for row in shown} == {"operator"}
    assert [row["size"] for row in shown] == sorted((row["size"] for row in shown), reverse=True)

    alice_heads = split["dir"] / "alice-heads.json"
    run("alice", "heads", "export", "--out", str(alice_heads))
    exported = json.loads(alice_heads.read_text())
    kept = EvidenceStore.open(split["dir"] / "alice.sqlite").heads()
    assert [h["head"]["size"] for h in exported["heads"]] == [str(h.head.size) for h in kept]
    assert exported["orders"] == exported["fills"] == exported["notes"] == []
    done = run("bob", "heads", "import", str(alice_heads))
    assert f"imported {len(kept)} heads; 0 new findings" in done.stderr
    for who in ("alice", "bob"):
        assert _findings(split["dir"] / f"{who}.sqlite") == []


def test_a_split_view_is_found_by_importing_a_peers_heads_and_halts_the_operator(split):
    honest, other = split["urls"]["honest"], split["urls"]["other"]
    for n in range(2):  # Alice's log grows past Bob's: at least one size in common
        done = heads_run(split, "alice", honest, "place", "buy", *ORDER, "1",
                         "--price", str(100 - n), "--key", str(split["keys"]["alice"]))  # fmt: skip
        assert done.returncode == exits.OK, done.stderr
    done = heads_run(split, "bob", other, "place", "sell", *ORDER, "1",
                     "--key", str(split["keys"]["bob"]))  # fmt: skip
    assert done.returncode == exits.OK, done.stderr
    bob_heads = split["dir"] / "bob-heads.json"
    done = heads_run(split, "bob", other, "heads", "export", "--out", str(bob_heads))
    assert done.returncode == exits.OK, done.stderr
    assert _findings(split["dir"] / "bob.sqlite") == []  # each view alone is a fine log

    done = heads_run(split, "alice", honest, "heads", "import", str(bob_heads))
    assert done.returncode == exits.DISPUTE, done.stderr
    found = json.loads(done.stdout)
    assert "INCONSISTENT_HEADS" in [f["kind"] for f in found]

    done = heads_run(split, "alice", honest, "dispute", "--key", str(split["keys"]["alice"]))
    outcomes = json.loads(done.stdout)
    assert [o["outcome"] for o in outcomes if o["action"] == "Prove"] == ["claimed"], done.stderr
    court = Court.at(JsonRpcChain(split["rpc"]), split["court"].address)
    assert court.heads.fork_proven() and court.halted()
    (claimed,) = [f for f in _findings(split["dir"] / "alice.sqlite") if f.status == "claimed"]
    assert claimed.kind == "INCONSISTENT_HEADS" and claimed.offence is Offence.INCONSISTENT_HEADS


@pytest.mark.parametrize("split", ["ignore:1"], indirect=True)
def test_a_cancel_not_in_the_log_within_its_heads_is_the_first_alarm_and_forced(split):
    url, alice = split["urls"]["honest"], ("--key", str(split["keys"]["alice"]))
    done = heads_run(split, "alice", url, "place", "sell", *ORDER, "1", *alice)
    (placed,) = json.loads(done.stdout)
    # The operator drops the cancel: no leaf, no note. 10 heads of 50 ms go by first.
    done = heads_run(split, "alice", url, "cancel", placed["order"], "--deadline-s", "2", *alice)
    assert done.returncode == exits.DISPUTE, done.stderr
    store = EvidenceStore.open(split["dir"] / "alice.sqlite")
    (cancel,) = store.cancels()
    (alarm,) = [f for f in store.findings() if f.kind == "UNLOGGED_CANCEL"]
    assert CANCEL_HEADS * int(H_MS) <= alarm.found_at_ms - cancel.sent_at_ms < 2_000
    assert [f.kind for f in store.findings()] == ["UNLOGGED_CANCEL"]  # before any deadline
    done = heads_run(split, "alice", url, "watch", "--duration-s", "1", "--poll-s", "0.3", *alice)
    outcomes = json.loads(done.stdout)
    assert [o["outcome"] for o in outcomes if o["action"] == "ForceCancel"] == ["forced"]
