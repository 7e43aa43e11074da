"""``cancelnote court deploy|status`` against a chain served over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from conftest import served

from cancelnote import exits
from cancelnote.cli import main
from cancelnote.crypto import to_checksum
from cancelnote.dispute.court import Court
from cancelnote.dispute.inprocess import InProcessChain, dev_account
from cancelnote.dispute.jsonrpc import JsonRpcChain


@pytest.fixture
def rpc_url() -> Iterator[str]:
    with served(InProcessChain(accounts=3)) as server:
        yield server.url


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_deployed_court_names_the_operator_and_its_parameters(rpc_url, capsys):
    operator = dev_account(1).checksum_address
    deployed = run_json(
        capsys, "court", "deploy", "--rpc", rpc_url, "--operator", operator,
        "--dev-account", "0", "--penalty-wei", "7", "--no-halt",
    )  # fmt: skip
    assert int(deployed["gas_used"]) > 1_000_000
    court = Court.at(JsonRpcChain(rpc_url), bytes.fromhex(str(deployed["court"])[2:]))
    assert court.operator() == dev_account(1).address
    assert court.penalty() == 7 and court.halt_on_default() is False

    status = run_json(capsys, "court", "status", "--rpc", rpc_url, "--court", deployed["court"])
    assert status["operator"] == operator
    assert status["penalty_wei"] == 7 and status["bond_wei"] == 0 and status["halted"] is False


def test_deploy_takes_every_v2_parameter_and_status_reports_them(rpc_url, capsys):
    deployed = run_json(
        capsys, "court", "deploy", "--rpc", rpc_url, "--operator", dev_account(1).checksum_address,
        "--dev-account", "0", "--claim-delay-s", "7", "--max-pending-ms", "5000",
        "--burn-share-bps", "1000", "--burn-address", "0x" + "99" * 20,
    )  # fmt: skip
    status = run_json(capsys, "court", "status", "--rpc", rpc_url, "--court", deployed["court"])
    assert (status["claim_delay_s"], status["max_pending_ms"], status["burn_share_bps"]) == (
        7,
        5000,
        1000,
    )
    assert status["burn_address"] == to_checksum(bytes.fromhex("99" * 20))
    assert status["claims_outstanding_wei"] == 0 and status["burn_unsent_wei"] == 0


def test_status_reports_the_forced_cancel_state_of_an_order(rpc_url, capsys):
    deployed = run_json(
        capsys, "court", "deploy", "--rpc", rpc_url,
        "--operator", to_checksum(dev_account(1).address), "--dev-account", "0",
    )  # fmt: skip
    status = run_json(
        capsys, "court", "status", "--rpc", rpc_url, "--court", deployed["court"],
        "--digest", "0x" + "ab" * 32,
    )  # fmt: skip
    assert status["cancel"]["state"] == "NONE" and status["cancel"]["cap"] == 0
    assert status["claims"] == {}


def test_deploy_without_a_key_is_a_one_line_usage_error(rpc_url, capsys):
    code = main(["court", "deploy", "--rpc", rpc_url, "--operator", "0x" + "11" * 20])
    assert code == exits.USAGE
    assert capsys.readouterr().err == (
        "cancelnote court deploy: give --key KEYSTORE, --node-account N or --dev-account N\n"
    )


def test_deploy_to_an_unreachable_chain_is_a_one_line_error_and_exit_4(capsys):
    code = main(
        ["court", "deploy", "--rpc", "http://127.0.0.1:9", "--operator", "0x" + "11" * 20,
         "--dev-account", "0"]
    )  # fmt: skip
    assert code == exits.UNREACHABLE
    err = capsys.readouterr().err
    assert err.startswith("cancelnote court deploy: cannot reach the node at http://127.0.0.1:9")
    assert err.count("\n") == 1


def test_fund_sends_ether_from_dev_account_zero(rpc_url, capsys):
    recipient = "0x" + "42" * 20
    assert main(["chain", "fund", "--rpc", rpc_url, "--to", recipient, "--eth", "2.5"]) == 0
    assert "holds 2.5000 ETH" in capsys.readouterr().out
    assert JsonRpcChain(rpc_url).balance(bytes.fromhex("42" * 20)) == 25 * 10**17
