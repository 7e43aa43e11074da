"""Compile the court's Vyper sources into the artifacts the package ships.

Run ``python contracts/build.py`` after changing a contract, and commit the JSON it
writes; ``--check`` recompiles and fails if a committed artifact differs, which is what
CI and ``tests/test_court_build.py`` run. The build is in-process (``vyper.compile_code``),
offline and byte-for-byte reproducible: the same source, compiler and EVM version give the
same JSON, written with sorted keys and a trailing newline.

Each contract is built once per EVM version of :data:`EVM_VERSIONS`: ``<name>.json`` for
the first (the reference, which py-evm runs and the gas figures measure) and
``<name>.<version>.json`` for each older one, for nodes without the newer opcodes (the
reference needs Cancun's MCOPY and transient storage; ganache runs Shanghai at most).
The reference lists the older builds (``older_builds``) so that the package finds them.
``--evm-version V`` (repeated, the reference first) builds another list, e.g. to add
``paris`` for a node without PUSH0.

Every build must deploy on a real chain, so its deployed code (the runtime and the
immutables Vyper appends to it) must fit EIP-170's 24,576 bytes: a build is optimised for
gas (Vyper's default) when that fits and for code size when only that does (the
artifact's ``optimize`` says which). A reference build that fits neither way is a build
error; an older build that does not fit is not shipped (the build says so, and removes a
stale file), and nodes that need it are refused in one line (``dispute/nodes.py``). The
v2 court is such a case: without Cancun's MCOPY its code is 25,476 bytes at the least.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import vyper
from vyper.compiler.input_bundle import FilesystemInputBundle
from vyper.compiler.settings import OptimizationLevel, Settings
from vyper.warnings import ContractSizeLimit

#: Where the sources live and where the artifacts go (package data).
CONTRACTS_DIR = Path(__file__).resolve().parent
ARTIFACTS_DIR = CONTRACTS_DIR.parent / "cancelnote" / "contracts"
#: The shipped contracts, by name (``<name>.vy`` → ``<name>.json``); the modules they
#: import (``eip712.vy``) are compiled into them.
CONTRACTS = ("CancelCourt", "HeadsCourt")
MODULES = ("eip712",)
#: py-evm's newest fork; pinned so that a compiler upgrade cannot move it silently.
EVM_VERSION = "prague"
#: The builds shipped, the reference first: Prague's (Vyper emits nothing newer than
#: Cancun's opcodes for it) and Shanghai's (PUSH0, no MCOPY or transient storage).
EVM_VERSIONS = (EVM_VERSION, "shanghai")
#: EIP-170: the most runtime bytecode a contract may have on any Ethereum chain.
MAX_RUNTIME_BYTES = 24_576


class BuildError(Exception):
    """Raised when a contract cannot be built into a deployable artifact."""


def deployed_size(out: dict) -> int:
    """Bytes a compiled contract's code takes on chain: its runtime and its immutables."""
    immutables = sum(item["length"] for item in out["layout"]["code_layout"].values())
    return (len(out["bytecode_runtime"]) - 2) // 2 + immutables


def compile_source(source: str, *, evm_version: str = EVM_VERSION) -> dict[str, object]:
    """Compile Vyper ``source`` (its imports from this folder), for gas if its code then
    fits EIP-170, else for size; the artifact fields that depend on the sources alone.

    Raises:
        BuildError: the deployed code exceeds EIP-170's limit however it is optimised.
    """
    for level in (OptimizationLevel.GAS, OptimizationLevel.CODESIZE):
        with warnings.catch_warnings():  # the size is checked here, with the immutables
            warnings.simplefilter("ignore", ContractSizeLimit)
            out = vyper.compile_code(
                source,
                input_bundle=FilesystemInputBundle([CONTRACTS_DIR]),
                output_formats=["abi", "bytecode", "bytecode_runtime", "layout"],
                settings=Settings(evm_version=evm_version, optimize=level),
            )
        size = deployed_size(out)
        if size <= MAX_RUNTIME_BYTES:
            break
    else:
        raise BuildError(
            f"the {evm_version} build's code is {size:,} bytes even optimised for size, over"
            f" EIP-170's {MAX_RUNTIME_BYTES:,}"
        )
    modules = {
        f"contracts/{name}.vy": hashlib.sha256(
            (CONTRACTS_DIR / f"{name}.vy").read_bytes()
        ).hexdigest()
        for name in MODULES
        if f"import {name}" in source
    }
    return {
        "abi": out["abi"],
        "bytecode": out["bytecode"],
        "bytecode_runtime": out["bytecode_runtime"],
        "compiler": f"vyper {vyper.__version__}",
        "evm_version": evm_version,
        "optimize": level.name.lower(),
        "modules_sha256": modules,
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
    }


def build_artifacts(evm_versions: Sequence[str]) -> dict[tuple[str, str], str | BuildError]:
    """The JSON text, exactly as committed, of every contract's build for each of
    ``evm_versions`` (the first is the reference, which lists the older builds shipped),
    keyed by (contract, EVM version), or why an older version is not built. An older
    version ships for every contract or for none: the contracts deploy together.

    Raises:
        BuildError: a reference build does not fit EIP-170.
    """
    builds: dict[tuple[str, str], dict[str, object] | BuildError] = {}
    for name in CONTRACTS:
        source = (CONTRACTS_DIR / f"{name}.vy").read_text(encoding="utf-8")
        for index, version in enumerate(evm_versions):
            try:
                builds[name, version] = compile_source(source, evm_version=version)
            except BuildError as exc:
                if index == 0:
                    raise
                builds[name, version] = BuildError(f"{name}: {exc}")
    for version in evm_versions[1:]:
        failure = next(
            (builds[n, version] for n in CONTRACTS if isinstance(builds[n, version], BuildError)),
            None,
        )
        if failure is not None:
            for name in CONTRACTS:
                builds[name, version] = failure
    shipped = [v for v in evm_versions[1:] if isinstance(builds[CONTRACTS[0], v], dict)]
    texts: dict[tuple[str, str], str | BuildError] = {}
    for (name, version), artifact in builds.items():
        if isinstance(artifact, BuildError):
            texts[name, version] = artifact
            continue
        if version == evm_versions[0]:
            artifact["older_builds"] = shipped
        artifact["contract"] = name
        artifact["source"] = f"contracts/{name}.vy"
        texts[name, version] = json.dumps(artifact, indent=2, sort_keys=True) + "\n"
    return texts


def artifact_path(name: str, evm_version: str, reference: str) -> Path:
    """``<name>.json`` for the reference build, ``<name>.<evm version>.json`` for another."""
    suffix = "" if evm_version == reference else f".{evm_version}"
    return ARTIFACTS_DIR / f"{name}{suffix}.json"


def main(argv: list[str] | None = None) -> int:
    """Write every artifact, or with ``--check`` report those that are stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if a committed artifact is out of date"
    )
    parser.add_argument(
        "--evm-version",
        action="append",
        default=[],
        help=f"build for these EVM versions, the reference first (default: {EVM_VERSIONS})",
    )
    args = parser.parse_args(argv)
    stale = []
    versions = tuple(dict.fromkeys(args.evm_version)) or EVM_VERSIONS
    for (name, version), text in build_artifacts(versions).items():
        path = artifact_path(name, version, versions[0])
        shown = path.relative_to(CONTRACTS_DIR.parent)
        if isinstance(text, BuildError):  # an older build that cannot ship
            print(f"not built: {shown}: {text}", file=sys.stderr)
            if path.exists():
                if args.check:
                    stale.append(path)
                else:
                    path.unlink()
                    print(f"removed {shown}")
        elif args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {shown}")
    for path in stale:
        print(f"stale: {path} (run python contracts/build.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
