"""Other nodes: the court checked at its address, builds picked by probe, the node's own
accounts, and a dev node's clock, through ``cancelnote chain|court`` and JSON-RPC."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from conftest import served
from eth_abi import encode

from cancelnote import exits, keystore
from cancelnote.cli import main
from cancelnote.contracts import load_builds
from cancelnote.crypto import Signer, to_checksum
from cancelnote.dispute.chain import ChainError, TransactionReverted
from cancelnote.dispute.court import DEV_PARAMETERS, Court
from cancelnote.dispute.inprocess import InProcessChain, dev_account
from cancelnote.dispute.jsonrpc import JsonRpcChain, NodeAccount
from cancelnote.dispute.nodes import NodeMismatch, court_artifact
from cancelnote.messages import DOMAIN_VERSION

OPERATOR = dev_account(1)


def _serve(chain: InProcessChain) -> Iterator[str]:
    with served(chain) as server:
        yield server.url


@pytest.fixture
def rpc_url() -> Iterator[str]:
    yield from _serve(InProcessChain(accounts=3))


@pytest.fixture
def shanghai_url() -> Iterator[str]:
    """A node without Cancun's opcodes (MCOPY, transient storage), as ganache is."""
    yield from _serve(InProcessChain(accounts=3, hardfork="shanghai"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def deploy(url: str, capsys: pytest.CaptureFixture[str], *payer: str) -> str:
    code, out, err = run(
        capsys, "court", "deploy", "--rpc", url, "--operator", OPERATOR.checksum_address,
        *(payer or ("--dev-account", "0")), "--json",
    )  # fmt: skip
    assert code == exits.OK, err
    return json.loads(out)["court"]


# --- the court at an address -------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["court", "status"],
        ["client", "status", "--db", "{tmp}/a.sqlite"],
        ["client", "place", "sell", "--product", "1", "--price", "1", "--amount", "1",
         "--db", "{tmp}/a.sqlite"],
        ["operator", "run", "--db", "{tmp}/j.sqlite", "--key", "{tmp}/k.json", "--port", "0"],
    ],
    ids=["court status", "client status", "client place", "operator run"],
)
def test_an_address_without_code_is_one_line_and_exit_2(
    rpc_url, tmp_path, capsys, monkeypatch, command
):
    keystore.import_key(tmp_path / "k.json", OPERATOR.secret, "pw", iterations=2)
    monkeypatch.setenv(keystore.PASSWORD_ENV, "pw")
    nobody = to_checksum(b"\x42" * 20)
    argv = [part.format(tmp=tmp_path) for part in command]
    code, _, err = run(capsys, *argv, "--rpc", rpc_url, "--court", nobody)
    assert code == exits.USAGE
    assert err == (
        f"cancelnote {' '.join(command[:2])}: no contract at {nobody} on chain 1337:"
        " check the court's address and the chain\n"
    )


def test_a_contract_that_is_not_this_court_is_refused(rpc_url, capsys):
    chain = JsonRpcChain(rpc_url)
    other = chain.deploy(dev_account(0), bytes.fromhex("600a600c600039600a6000f3" + "00" * 10))
    address = to_checksum(other.contract_address)
    code, _, err = run(capsys, "court", "status", "--rpc", rpc_url, "--court", address)
    assert code == exits.USAGE
    assert f"is not a cancelnote court of protocol version {DOMAIN_VERSION}" in err


def test_a_malformed_court_address_is_a_usage_error_naming_the_flag(rpc_url, capsys):
    code, _, err = run(capsys, "court", "status", "--rpc", rpc_url, "--court", "0x1234")
    assert code == exits.USAGE
    assert err == (
        "cancelnote court status: --court: an address is 0x and 40 hex digits, got '0x1234'\n"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["court", "status", "--court", "0x" + "42" * 20],
        ["chain", "fund", "--to", "0x" + "42" * 20],
        ["chain", "advance", "--seconds", "1"],
        ["client", "status", "--db", "{tmp}/a.sqlite", "--court", "0x" + "42" * 20],
    ],
    ids=["court", "chain fund", "chain advance", "client"],
)
def test_a_chain_that_is_not_running_is_exit_4_for_every_command(tmp_path, capsys, command):
    argv = [part.format(tmp=tmp_path) for part in command]
    code, _, err = run(capsys, *argv, "--rpc", "http://127.0.0.1:9")
    assert code == exits.UNREACHABLE
    assert err.count("\n") == 1 and "cannot reach the node at http://127.0.0.1:9" in err


def test_debug_adds_the_traceback_to_the_one_line(capsys):
    argv = ["court", "status", "--rpc", "http://127.0.0.1:9", "--court", "0x" + "42" * 20]
    assert main(["--debug", *argv]) == exits.UNREACHABLE
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ChainUnreachable" in err
    assert err.splitlines()[-1].startswith("cancelnote court status: cannot reach the node")


# --- Cancun and older nodes ---------------------------------------------------------------


def test_only_the_reference_build_ships_while_older_ones_do_not_fit_eip_170():
    (reference,) = load_builds("CancelCourt")  # the Shanghai build is 25,476 bytes: none
    assert reference.evm_version == "prague"


def test_a_shanghai_node_is_refused_at_deploy_naming_cancun(shanghai_url, capsys):
    code, out, err = run(
        capsys, "court", "deploy", "--rpc", shanghai_url, "--operator",
        OPERATOR.checksum_address, "--dev-account", "0",
    )  # fmt: skip
    assert code == exits.USAGE and out == ""
    assert err == (
        "cancelnote court deploy: the node of chain 1337 does not run MCOPY and transient"
        " storage: the court needs a Cancun node at least (Cancun for its reference build)\n"
    )


def test_a_cancun_court_on_a_shanghai_node_is_refused_naming_the_hardfork(shanghai_url, capsys):
    chain = JsonRpcChain(shanghai_url)
    reference = load_builds("CancelCourt")[0]  # deployed as ganache would: code, no checks
    constructor = next(item for item in reference.abi if item["type"] == "constructor")
    names = (
        "answer_window_s", "penalty_wei", "min_bond_wei", "dispute_bond_wei", "exit_delay_s",
        "halt_on_default", "max_pending_ms", "claim_delay_s", "burn_share_bps", "burn_address",
    )  # fmt: skip
    values = [OPERATOR.address, *(DEV_PARAMETERS[n] for n in names), b"\x42" * 20]
    types = [item["type"] for item in constructor["inputs"]]
    receipt = chain.deploy(dev_account(0), reference.bytecode + encode(types, values))
    address = to_checksum(receipt.contract_address)
    code, _, err = run(capsys, "court", "status", "--rpc", shanghai_url, "--court", address)
    assert code == exits.USAGE
    assert f"the court at {address} on chain 1337 needs a Cancun node" in err


def test_the_probe_picks_the_reference_build_on_cancun_and_later():
    assert court_artifact(InProcessChain(hardfork="cancun"), "CancelCourt").evm_version == "prague"
    assert court_artifact(InProcessChain(hardfork="prague"), "CancelCourt").evm_version == "prague"
    with pytest.raises(NodeMismatch, match="needs a Cancun node at least"):
        court_artifact(InProcessChain(hardfork="shanghai"), "CancelCourt")


# --- the node's accounts --------------------------------------------------------------------


def test_fund_pays_from_node_account_0_by_default(rpc_url, capsys):
    recipient = "0x" + "42" * 20
    code, out, _ = run(capsys, "chain", "fund", "--rpc", rpc_url, "--to", recipient, "--eth", "2")
    assert code == exits.OK and "holds 2.0000 ETH" in out


def test_deploy_from_a_node_account_signed_by_the_node(rpc_url, capsys):
    address = deploy(rpc_url, capsys, "--node-account", "2")
    chain = JsonRpcChain(rpc_url)
    assert Court.at(chain, bytes.fromhex(address[2:])).operator() == OPERATOR.address
    assert chain.nonce(dev_account(2).address) == 2  # the node signed both deployments


def test_a_payer_without_funds_is_named_in_the_error(rpc_url, tmp_path, capsys, monkeypatch):
    poor = Signer(b"\x09" * 32)
    keystore.import_key(tmp_path / "poor.json", poor.secret, "pw", iterations=2)
    monkeypatch.setenv(keystore.PASSWORD_ENV, "pw")
    code, _, err = run(
        capsys, "chain", "fund", "--rpc", rpc_url, "--to", "0x" + "42" * 20,
        "--key", str(tmp_path / "poor.json"),
    )  # fmt: skip
    assert code == exits.REFUSED
    assert err.startswith(
        f"cancelnote chain fund: {poor.checksum_address}, holding 0.000000 ETH, cannot send:"
    )
    assert err.count("\n") == 1


def test_a_node_account_the_node_does_not_hold_is_named(rpc_url, capsys):
    code, _, err = run(
        capsys, "chain", "fund", "--rpc", rpc_url, "--to", "0x" + "42" * 20,
        "--node-account", "7",
    )  # fmt: skip
    assert code == exits.REFUSED
    assert "holds 3 unlocked accounts: there is no node account 7" in err


def test_send_transaction_from_an_unknown_account_is_refused(rpc_url):
    chain = JsonRpcChain(rpc_url)
    stranger = NodeAccount(b"\x42" * 20, 0)
    with pytest.raises(ChainError, match="unknown account 0x4242"):
        chain.transact(stranger, b"\x43" * 20, b"")


def test_a_reverting_node_signed_transaction_is_mined_with_its_reason(rpc_url, capsys):
    address = bytes.fromhex(deploy(rpc_url, capsys)[2:])
    chain = JsonRpcChain(rpc_url)
    court = Court.at(chain, address)
    with pytest.raises(TransactionReverted) as reverted:
        court.withdraw_bond(chain.node_account(0))  # not the operator
    assert reverted.value.receipt is not None and reverted.value.receipt.status == 0
    assert reverted.value.reason.startswith("court: ")


# --- the clock ------------------------------------------------------------------------------


def test_advance_moves_the_clock_and_mines(rpc_url, capsys):
    chain = JsonRpcChain(rpc_url)
    before, block = chain.timestamp(), chain.block_number()
    code, out, _ = run(capsys, "chain", "advance", "--rpc", rpc_url, "--seconds", "3600")
    assert code == exits.OK
    assert chain.timestamp() == before + 3600 and chain.block_number() == block + 1
    assert out == f"block {block + 1} at {before + 3600} (+3,600 s)\n"

