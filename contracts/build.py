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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import vyper
from vyper.compiler.settings import Settings

#: Where the sources live and where the artifacts go (package data).
CONTRACTS_DIR = Path(__file__).resolve().parent
ARTIFACTS_DIR = CONTRACTS_DIR.parent / "cancelnote" / "contracts"
#: The shipped contracts, by name (``<name>.vy`` → ``<name>.json``).
CONTRACTS = ("CancelCourt",)
#: py-evm's newest fork; pinned so that a compiler upgrade cannot move it silently.
EVM_VERSION = "prague"
#: The builds shipped, the reference first: Prague's (Vyper emits nothing newer than
#: Cancun's opcodes for it) and Shanghai's (PUSH0, no MCOPY or transient storage).
EVM_VERSIONS = (EVM_VERSION, "shanghai")


def compile_source(source: str, *, evm_version: str = EVM_VERSION) -> dict[str, object]:
    """Compile Vyper ``source``; the artifact fields that depend on the source alone."""
    out = vyper.compile_code(
        source,
        output_formats=["abi", "bytecode", "bytecode_runtime"],
        settings=Settings(evm_version=evm_version),
    )
    return {
        "abi": out["abi"],
        "bytecode": out["bytecode"],
        "bytecode_runtime": out["bytecode_runtime"],
        "compiler": f"vyper {vyper.__version__}",
        "evm_version": evm_version,
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
    }


def build_artifact(name: str, evm_versions: Sequence[str], index: int) -> str:
    """The JSON text of contract ``name``'s build for ``evm_versions[index]`` (the first is
    the reference, which lists the others), exactly as committed."""
    source_path = CONTRACTS_DIR / f"{name}.vy"
    source = source_path.read_text(encoding="utf-8")
    artifact = compile_source(source, evm_version=evm_versions[index])
    artifact["contract"] = name
    artifact["source"] = f"contracts/{source_path.name}"
    if index == 0:
        artifact["older_builds"] = list(evm_versions[1:])
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def artifact_path(name: str, evm_versions: Sequence[str], index: int) -> Path:
    """``<name>.json`` for the reference build, ``<name>.<evm version>.json`` for another."""
    suffix = "" if index == 0 else f".{evm_versions[index]}"
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
    for name in CONTRACTS:
        for index in range(len(versions)):
            path = artifact_path(name, versions, index)
            text = build_artifact(name, versions, index)
            if args.check:
                if not path.exists() or path.read_text(encoding="utf-8") != text:
                    stale.append(path)
            else:
                path.write_text(text, encoding="utf-8")
                print(f"wrote {path.relative_to(CONTRACTS_DIR.parent)}")
    for path in stale:
        print(f"stale: {path} (run python contracts/build.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
