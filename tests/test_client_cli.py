"""``cancelnote client`` without a network: its exit codes and the evidence commands."""

from __future__ import annotations

import json

import pytest

from cancelnote import keystore
from cancelnote.cli import main
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
