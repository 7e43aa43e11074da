"""The shipped artifact is the compiled source, and the contract hashes messages exactly as
messages.py does: same type strings (character for character), same domain separator."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cancelnote.contracts import load_artifact
from cancelnote.messages import Cancellation, CancellationNote, Domain, Fill, Order

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "contracts" / "CancelCourt.vy"
ARTIFACT = ROOT / "cancelnote" / "contracts" / "CancelCourt.json"
TYPEHASH_CONSTANT = re.compile(
    r'^(\w+)_TYPEHASH: public\(constant\(bytes32\)\) = keccak256\(\n\s+"([^"]*)"\n\)', re.M
)
CONSTANTS = {
    "ORDER": Order,
    "CANCELLATION": Cancellation,
    "FILL": Fill,
    "CANCELLATION_NOTE": CancellationNote,
}


def test_build_reproduces_the_committed_artifact_byte_for_byte():
    build = subprocess.run(
        [sys.executable, str(ROOT / "contracts" / "build.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr


def test_the_shipped_build_fits_eip_170_and_deploys():
    """Code over 24,576 bytes (runtime and immutables) would "deploy" nowhere."""
    from cancelnote.dispute.court import DEV_PARAMETERS, Court
    from cancelnote.dispute.inprocess import InProcessChain

    artifact = load_artifact("CancelCourt")
    chain = InProcessChain()
    operator, deployer = chain.dev_accounts[:2]
    court = Court.deploy(chain, deployer, operator=operator.address, **DEV_PARAMETERS)
    code = chain.code(court.address)
    assert code.startswith(artifact.bytecode_runtime) and len(code) <= 24_576  # + immutables


def test_a_build_that_does_not_fit_eip_170_is_refused_even_optimised_for_size():
    sys.path.insert(0, str(ROOT / "contracts"))
    try:
        import build
    finally:
        sys.path.pop(0)
    with pytest.raises(build.BuildError, match="24,960 bytes even optimised for size"):
        build.compile_source(SOURCE.read_text(encoding="utf-8"), evm_version="shanghai")


def test_artifact_matches_its_source_and_loads():
    artifact = load_artifact("CancelCourt")
    assert artifact.source_sha256 == hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    assert (artifact.compiler, artifact.evm_version) == ("vyper 0.4.3", "prague")
    assert artifact.bytecode_runtime and artifact.bytecode.startswith(bytes.fromhex("61"))
    assert ARTIFACT.read_text(encoding="utf-8").endswith("}\n")


def test_source_type_strings_equal_messages_type_strings():
    found = dict(TYPEHASH_CONSTANT.findall(SOURCE.read_text(encoding="utf-8")))
    assert found == {name: cls.TYPE_STRING for name, cls in CONSTANTS.items()}


@pytest.mark.parametrize(
    "cls", [Order, Cancellation, Fill, CancellationNote], ids=lambda c: c.__name__
)
def test_contract_type_hashes_equal_messages(world, cls):
    assert world.court.type_hashes()[cls.__name__] == cls.TYPE_HASH


def test_domain_separator_equals_messages_domain(world):
    assert world.court.domain_separator() == Domain(1337, world.court.address).separator
    assert world.court.domain == Domain(world.chain.chain_id, world.court.address)


def test_abi_structs_list_the_message_fields_in_order():
    """The binding passes a message as the tuple of its fields: the orders must agree.

    Vyper's ABI names no struct types, so every tuple's field list must be one message's.
    """
    tuples = {
        tuple(component["name"] for component in item["components"])
        for entry in load_artifact("CancelCourt").abi
        for item in entry.get("inputs", ())
        if item["type"] == "tuple"
    }
    messages = {tuple(f["name"] for f in cls.eip712_types()) for cls in CONSTANTS.values()}
    assert tuples == messages
