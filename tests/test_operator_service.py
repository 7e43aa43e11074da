"""The operator service's start-up checks: the lifetime cap against the court, and
refusing orders at once when the court says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from cancelnote import keystore
from cancelnote.cli import main
from cancelnote.crypto import Signer
from cancelnote.dispute.court import DEV_PARAMETERS
from cancelnote.operator import service
from cancelnote.operator.engine import MAX_ORDER_LIFETIME_S
from cancelnote.operator.journal import OrdersStopped
from cancelnote.operator.service import OperatorConfig, ServiceError, check_lifetime, prepare

OPERATOR = Signer(bytes.fromhex("ab" * 32))
LONGEST_S = DEV_PARAMETERS["exit_delay_s"] - DEV_PARAMETERS["answer_window_s"] - 1


def test_lifetime_below_exit_delay_minus_answer_window_is_allowed():
    check_lifetime(99, 200, 100)


@pytest.mark.parametrize("lifetime_s", [100, 101])
def test_lifetime_reaching_exit_delay_minus_answer_window_is_refused(lifetime_s):
    with pytest.raises(ServiceError, match="exit delay"):
        check_lifetime(lifetime_s, 200, 100)


def test_operator_starts_with_the_longest_lifetime_the_court_allows(tmp_path):
    prepared = prepare(
        OperatorConfig(tmp_path / "j.sqlite", OPERATOR, max_order_lifetime_s=LONGEST_S)
    )
    try:
        assert prepared.server.engine.max_order_lifetime_s == LONGEST_S
        assert prepared.server.engine.accepting_orders
    finally:
        prepared.journal.close()


def test_operator_refuses_to_start_when_the_courts_exit_delay_is_too_short(tmp_path):
    config = OperatorConfig(tmp_path / "j.sqlite", OPERATOR, max_order_lifetime_s=LONGEST_S + 1)
    with pytest.raises(ServiceError, match="--max-order-lifetime-s"):
        prepare(config)


def test_operator_takes_the_courts_pending_bound_and_refuses_a_longer_settlement(tmp_path):
    prepared = prepare(OperatorConfig(tmp_path / "a.sqlite", OPERATOR))
    try:
        assert prepared.server.engine.max_pending_ms == DEV_PARAMETERS["max_pending_ms"]
    finally:
        prepared.journal.close()
    too_slow = DEV_PARAMETERS["max_pending_ms"] + 1
    config = OperatorConfig(tmp_path / "b.sqlite", OPERATOR, settlement_delay_ms=too_slow)
    with pytest.raises(ServiceError, match="--settlement-delay-ms"):
        prepare(config)


def test_default_lifetime_fits_the_dev_court():
    assert OperatorConfig(Path("x"), OPERATOR).max_order_lifetime_s == MAX_ORDER_LIFETIME_S
    check_lifetime(
        MAX_ORDER_LIFETIME_S, DEV_PARAMETERS["exit_delay_s"], DEV_PARAMETERS["answer_window_s"]
    )


def test_operator_journals_the_stop_at_start_if_the_court_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(service, "court_stop_reason", lambda court: "the court halted the operator")
    config = OperatorConfig(tmp_path / "j.sqlite", OPERATOR)
    prepared = prepare(config)
    prepared.journal.close()
    assert not prepared.server.engine.accepting_orders
    again = prepare(config)  # replayed from the journal; no second entry
    try:
        entries = list(again.journal.entries())
        assert [type(e) for e in entries] == [OrdersStopped]
        assert not again.server.engine.accepting_orders
    finally:
        again.journal.close()


def test_cli_operator_run_refuses_a_lifetime_the_court_cannot_cover(tmp_path, capsys):
    (tmp_path / "password").write_text("pw\n")
    keystore.create(tmp_path / "key.json", "pw")
    status = main(
        [
            "operator",
            "run",
            "--db",
            str(tmp_path / "j.sqlite"),
            "--key",
            str(tmp_path / "key.json"),
            "--password-file",
            str(tmp_path / "password"),
            "--chain",
            "in-process",
            "--max-order-lifetime-s",
            str(DEV_PARAMETERS["exit_delay_s"]),
        ]
    )
    assert status == 2
    assert "--max-order-lifetime-s" in capsys.readouterr().err
