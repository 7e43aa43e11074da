"""``cancelnote client`` without a network: its exit codes and the evidence commands."""

from __future__ import annotations

import json

import pytest

from cancelnote import keystore
from cancelnote.cli import main
from cancelnote.client.evidence import EvidenceStore
from cancelnote.client.testing import Market
from cancelnote.exits import DISPUTE as EXIT_FINDINGS
from cancelnote.exits import OK as EXIT_OK
from cancelnote.exits import REFUSED as EXIT_REJECTED
from cancelnote.exits import UNREACHABLE as EXIT_UNREACHABLE
from cancelnote.exits import USAGE as EXIT_USAGE
from cancelnote.operator.policies import FillAfterNote

PRICE = 100 * 10**18
SIZE = 10**18


@pytest.fixture
def cheated(tmp_path):
    """Alice's store holding a fill after a note, and the order's id."""
    market = Market.open(tmp_path, policy=FillAfterNote())
    alice, bob = market.desk(2), market.desk(3)
    sell = market.place(alice, 1, PRICE, -SIZE)
    market.cancel(alice, [sell])
    market.place(bob, 1, PRICE, SIZE)
    alice.store.close()
    return tmp_path / "evidence-2-default.sqlite", "0x" + sell.order.digest(
        market.court.domain
    ).hex()


def test_a_new_store_without_the_court_is_a_usage_error(tmp_path, capsys):
    assert main(["client", "status", "--db", str(tmp_path / "new.sqlite")]) == EXIT_USAGE
    assert "give the court and operator" in capsys.readouterr().err


def test_trading_without_the_operator_url_is_a_usage_error(cheated, capsys):
    db, _ = cheated
    args = ["client", "place", "buy", "--product", "1", "--price", "1", "--amount", "1"]
    assert main([*args, "--db", str(db), "--key", "k.json"]) == EXIT_USAGE


def test_status_and_findings_show_the_evidence_and_exit_3_for_an_open_finding(cheated, capsys):
    db, order = cheated
    assert main(["client", "status", "--db", str(db), "--json"]) == EXIT_FINDINGS
    (row,) = json.loads(capsys.readouterr().out)
    assert row["order"] == order and row["fills"] == 1 and row["notes"] == 1
    assert main(["client", "evidence", "findings", "--db", str(db)]) == EXIT_FINDINGS
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["ID", "KIND", "ORDER"]
    assert "FILL_AFTER_NOTE" in table and "open" in table


def test_exported_bundle_imports_elsewhere_and_a_tampered_one_is_refused(cheated, tmp_path, capsys):
    db, order = cheated
    bundle = tmp_path / "bundle.json"
    export = ["client", "evidence", "export", "--db", str(db), "--order", order]
    assert main([*export, "--out", str(bundle)]) == EXIT_OK
    carol = tmp_path / "carol.sqlite"
    assert main(["client", "evidence", "import", str(bundle), "--db", str(carol)]) == (
        EXIT_FINDINGS
    )
    assert "FILL_AFTER_NOTE" in capsys.readouterr().out
    document = json.loads(bundle.read_text())
    document["notes"][0]["note"]["filledAmount"] = "7"
    bundle.write_text(json.dumps(document))
    other = ["client", "evidence", "import", str(bundle), "--db", str(tmp_path / "d.sqlite")]
    assert main(other) == EXIT_REJECTED
    assert "bundle refused" in capsys.readouterr().err


def test_an_unreachable_operator_exits_4(cheated, tmp_path, monkeypatch, capsys):
    db, _ = cheated
    key = tmp_path / "key.json"
    keystore.import_key(key, b"\x05" * 32, "pw", iterations=2)
    monkeypatch.setenv(keystore.PASSWORD_ENV, "pw")
    args = ["client", "place", "buy", "--product", "1", "--price", "1", "--amount", "1"]
    url = "ws://127.0.0.1:1/"  # nothing listens on port 1
    argv = [*args, "--db", str(db), "--key", str(key), "--url", url, "--timeout-s", "0.3"]
    assert main(argv) == EXIT_UNREACHABLE
    assert "did not answer within 0.3 s" in capsys.readouterr().err


def _heads_file(tmp_path, store, signer, root: bytes) -> str:
    """A heads file (as ``heads export`` writes) with one head of 5 leaves, signed by
    ``signer`` in the store's domain."""
    from cancelnote.messages import JournalHead
    from cancelnote.transparency import SignedHead

    head = JournalHead(5, root, 1_000)
    bundle = store.export_heads()
    bundle["heads"] = [SignedHead(head, head.sign(signer, store.domain)).to_wire()]
    path = tmp_path / f"heads-{root.hex()[:8]}-{signer.address.hex()[:8]}.json"
    path.write_text(json.dumps(bundle))
    return str(path)


def test_a_peers_head_of_our_size_with_another_root_is_a_split_view_and_forged_ones_refused(
    tmp_path, capsys
):
    from cancelnote.client.heads import HeadsVerifier
    from cancelnote.crypto import keccak
    from cancelnote.messages import JournalHead
    from cancelnote.transparency import SignedHead

    market = Market.open(tmp_path)
    alice, bob = market.desk(2), market.desk(3)
    market.place(alice, 1, PRICE, -SIZE)
    ours = JournalHead(5, keccak(b"our view"), 1_000)
    signed = SignedHead(ours, ours.sign(market.operator, market.court.domain))
    assert HeadsVerifier(alice.verifier).receive_head(signed, 1_000) == []
    db = str(tmp_path / "evidence-2-default.sqlite")
    forged = _heads_file(tmp_path, alice.store, bob.trader.signer, keccak(b"their view"))
    alice.store.close()
    assert main(["client", "heads", "import", forged, "--db", db]) == EXIT_REJECTED
    assert capsys.readouterr().err.startswith("cancelnote client heads import: bundle refused:")
    assert main(["client", "evidence", "findings", "--db", db]) == EXIT_OK  # nothing kept
    capsys.readouterr()
    reopened = EvidenceStore.open(db)
    split = _heads_file(tmp_path, reopened, market.operator, keccak(b"their view"))
    reopened.close()
    assert main(["client", "heads", "import", split, "--db", db, "--json"]) == EXIT_FINDINGS
    (found,) = json.loads(capsys.readouterr().out)
    assert found["kind"] == "INCONSISTENT_HEADS"
    assert main(["client", "heads", "show", "--db", db, "--json"]) == EXIT_FINDINGS
    assert {row["source"] for row in json.loads(capsys.readouterr().out)} == {
        "operator",
        "bundle",
    }


def test_heads_from_an_unreachable_operator_exit_4_in_one_line(cheated, capsys):
    db, _ = cheated
    argv = ["client", "heads", "show", "--db", str(db), "--url", "ws://127.0.0.1:1/"]
    assert main([*argv, "--timeout-s", "0.3"]) == EXIT_UNREACHABLE
    assert capsys.readouterr().err == (
        "cancelnote client heads show: no head from the operator at ws://127.0.0.1:1/"
        " within 0.3 s\n"
    )
