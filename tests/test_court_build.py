"""The shipped artifacts are the compiled sources, and the contracts hash messages exactly as
messages.py does: same type strings (character for character, in the shared module
``contracts/eip712.vy``), same domain separator, in both courts."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cancelnote.contracts import load_artifact
from cancelnote.messages import (
    DOMAIN_TYPE_STRING,
    MESSAGE_TYPES,
    Cancellation,
    CancellationNote,
    CancellationProducts,
    Domain,
    Fill,
    JournalHead,
    Match,
    Order,
)

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "contracts"
SOURCE = CONTRACTS / "CancelCourt.vy"
MODULE = CONTRACTS / "eip712.vy"
ARTIFACT = ROOT / "cancelnote" / "contracts" / "CancelCourt.json"
TYPEHASH_CONSTANT = re.compile(
    r'^(\w+)_TYPEHASH: constant\(bytes32\) = keccak256\(\n\s+"([^"]*)"\n\)', re.M
)
CONSTANTS = {
    "ORDER": Order,
    "CANCELLATION": Cancellation,
    "CANCELLATION_PRODUCTS": CancellationProducts,
    "FILL": Fill,
    "CANCELLATION_NOTE": CancellationNote,
    "JOURNAL_HEAD": JournalHead,
    "MATCH": Match,
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
    with pytest.raises(build.BuildError, match="25,476 bytes even optimised for size"):
        build.compile_source(SOURCE.read_text(encoding="utf-8"), evm_version="shanghai")


@pytest.mark.parametrize("name", ["CancelCourt", "HeadsCourt"])
def test_artifact_matches_its_sources_and_loads(name):
    artifact = load_artifact(name)
    source = CONTRACTS / f"{name}.vy"
    assert artifact.source_sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    raw = json.loads((ROOT / "cancelnote" / "contracts" / f"{name}.json").read_text())
    assert raw["modules_sha256"] == {
        "contracts/eip712.vy": hashlib.sha256(MODULE.read_bytes()).hexdigest()
    }
    assert (artifact.compiler, artifact.evm_version) == ("vyper 0.4.3", "prague")
    assert artifact.bytecode_runtime and artifact.bytecode.startswith(bytes.fromhex("61"))
    assert ARTIFACT.read_text(encoding="utf-8").endswith("}\n")


@pytest.mark.parametrize("name", ["CancelCourt", "HeadsCourt"])
def test_runtime_fits_eip_170(name):
    assert len(load_artifact(name).bytecode_runtime) <= 24_576


def test_module_type_strings_equal_messages_type_strings():
    found = dict(TYPEHASH_CONSTANT.findall(MODULE.read_text(encoding="utf-8")))
    assert found.pop("_DOMAIN") == DOMAIN_TYPE_STRING
    assert found == {name: cls.TYPE_STRING for name, cls in CONSTANTS.items()}
    assert set(CONSTANTS.values()) == set(MESSAGE_TYPES)


@pytest.mark.parametrize(
    "cls", [Order, Cancellation, Fill, CancellationNote], ids=lambda c: c.__name__
)
def test_contract_type_hashes_equal_messages(world, cls):
    assert world.court.type_hashes()[cls.__name__] == cls.TYPE_HASH


def test_heads_court_type_hashes_equal_messages(world):
    hashes = world.court.heads.type_hashes()
    assert hashes == {
        cls.__name__: cls.TYPE_HASH for cls in (JournalHead, Match, CancellationProducts)
    }


def test_domain_separator_equals_messages_domain(world):
    assert world.court.domain_separator() == Domain(1337, world.court.address).separator
    assert world.court.domain == Domain(world.chain.chain_id, world.court.address)


def test_the_heads_court_is_bound_to_its_court(world):
    heads = world.court.heads
    assert heads.court() == world.court.address and heads.operator() == world.operator.address
    assert world.court.heads_court() == heads.address
    runtime = load_artifact("HeadsCourt").bytecode_runtime  # its immutables come after it
    assert world.chain.code(heads.address)[: len(runtime)] == runtime


def test_abi_structs_list_the_message_fields_in_order():
    """The binding passes a message as the tuple of its fields: the orders must agree.

    Vyper's ABI names no struct types, so every tuple's field list must be one message's.
    """
    tuples = {
        tuple(component["name"] for component in item["components"])
        for name in ("CancelCourt", "HeadsCourt")
        for entry in load_artifact(name).abi
        for item in entry.get("inputs", ())
        if item["type"] == "tuple"
    }
    messages = {tuple(f["name"] for f in cls.eip712_types()) for cls in CONSTANTS.values()}
    leaf_proof = ("index", "kind", "timestampMs", "ref", "content", "path")
    assert tuples == messages | {leaf_proof}
