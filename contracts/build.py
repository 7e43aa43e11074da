"""Compile the court's Vyper sources into the artifacts the package ships.

Run ``python contracts/build.py`` after changing a contract, and commit the JSON it
writes; ``--check`` recompiles and fails if a committed artifact differs, which is what
CI and ``tests/test_court_build.py`` run. The build is in-process (``vyper.compile_code``),
offline and byte-for-byte reproducible: the same source, compiler and EVM version give the
same JSON, written with sorted keys and a trailing newline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import vyper
from vyper.compiler.input_bundle import FilesystemInputBundle
from vyper.compiler.settings import Settings

#: Where the sources live and where the artifacts go (package data).
CONTRACTS_DIR = Path(__file__).resolve().parent
ARTIFACTS_DIR = CONTRACTS_DIR.parent / "cancelnote" / "contracts"
#: The shipped contracts, by name (``<name>.vy`` → ``<name>.json``); the modules they
#: import (``eip712.vy``) are compiled into them.
CONTRACTS = ("CancelCourt", "HeadsCourt")
MODULES = ("eip712",)
#: py-evm's newest fork; pinned so that a compiler upgrade cannot move it silently.
EVM_VERSION = "prague"


def compile_source(source: str, *, evm_version: str = EVM_VERSION) -> dict[str, object]:
    """Compile Vyper ``source`` (its imports from this folder); the artifact fields that
    depend on the sources alone."""
    out = vyper.compile_code(
        source,
        input_bundle=FilesystemInputBundle([CONTRACTS_DIR]),
        output_formats=["abi", "bytecode", "bytecode_runtime"],
        settings=Settings(evm_version=evm_version),
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
        "modules_sha256": modules,
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
    }


def build_artifact(name: str) -> str:
    """The JSON text of contract ``name``'s artifact, exactly as it is committed."""
    source_path = CONTRACTS_DIR / f"{name}.vy"
    artifact = compile_source(source_path.read_text(encoding="utf-8"))
    artifact["contract"] = name
    artifact["source"] = f"contracts/{source_path.name}"
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write every artifact, or with ``--check`` report those that are stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if a committed artifact is out of date"
    )
    args = parser.parse_args(argv)
    stale = []
    for name in CONTRACTS:
        path = ARTIFACTS_DIR / f"{name}.json"
        text = build_artifact(name)
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
