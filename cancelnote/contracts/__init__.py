"""Compiled contract artifacts (ABI, bytecode, source hash), shipped as package data.

The JSON files are written by ``contracts/build.py`` and checked against a fresh compile
by the tests, so the package never needs the Vyper compiler at run time. A contract may
ship several builds of one source, one per EVM version: ``<name>.json`` for the newest
(the reference) and ``<name>.<evm version>.json`` for older nodes; their ABIs are equal.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import attrs


@attrs.frozen
class Artifact:
    """One compiled contract: what deploying it and talking to it need."""

    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: bytes
    bytecode_runtime: bytes
    source_sha256: str
    compiler: str
    evm_version: str


@cache
def load_artifact(name: str, evm_version: str | None = None) -> Artifact:
    """The artifact of contract ``name`` (e.g. ``"CancelCourt"``) from package data: its
    reference build, or its build for ``evm_version``."""
    file = f"{name}.json" if evm_version is None else f"{name}.{evm_version}.json"
    raw = json.loads(resources.files(__name__).joinpath(file).read_text("utf-8"))
    return Artifact(
        name=raw["contract"],
        abi=tuple(raw["abi"]),
        bytecode=bytes.fromhex(raw["bytecode"].removeprefix("0x")),
        bytecode_runtime=bytes.fromhex(raw["bytecode_runtime"].removeprefix("0x")),
        source_sha256=raw["source_sha256"],
        compiler=raw["compiler"],
        evm_version=raw["evm_version"],
    )


@cache
def load_builds(name: str) -> tuple[Artifact, ...]:
    """Every shipped build of contract ``name``: the reference first, then the older EVM
    versions' (newest first, as ``contracts/build.py`` lists them)."""
    raw = json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text("utf-8"))
    older = raw.get("older_builds", [])
    return (load_artifact(name), *(load_artifact(name, version) for version in older))
