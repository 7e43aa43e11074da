"""What the benchmarks share: the raw secp256k1 baselines, the machine, the JSON file.

Each benchmark reports its figures next to raw coincurve rates measured in the same run,
because the machines are noisy and only such ratios compare across runs.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import coincurve

from cancelnote.crypto import keccak

Clock = Callable[[], float]


def raw_sign_rate(count: int, clock: Clock = time.perf_counter) -> float:
    """coincurve ``sign_recoverable`` of 32-byte hashes per second of ``clock``."""
    key = coincurve.PrivateKey(keccak(b"raw"))
    hashes = [keccak(i.to_bytes(8, "big")) for i in range(count)]
    start = clock()
    for h in hashes:
        key.sign_recoverable(h, hasher=None)
    return count / (clock() - start)


def raw_recover_rate(count: int, clock: Clock = time.perf_counter) -> float:
    """coincurve public-key recoveries per second of ``clock``."""
    key = coincurve.PrivateKey(keccak(b"raw"))
    hashes = [keccak(i.to_bytes(8, "big")) for i in range(count)]
    pairs = [(h, key.sign_recoverable(h, hasher=None)) for h in hashes]
    start = clock()
    for h, signature in pairs:
        coincurve.PublicKey.from_signature_and_message(signature, h, hasher=None)
    return count / (clock() - start)


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "coincurve": version("coincurve"),
        "safe-pysha3": version("safe-pysha3"),
        "py-evm": version("py-evm"),
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` (with the machine added) as indented JSON, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**report, "machine": machine()}, indent=2) + "\n")
