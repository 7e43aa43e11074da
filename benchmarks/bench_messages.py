"""Cancellation notes signed and verified per second, against raw secp256k1 in the same run.

The machines are noisy, so the figures that matter are the ratios: how much of the raw
elliptic-curve rate survives message hashing and encoding (target: at least 0.5 each).

    python benchmarks/bench_messages.py --out results/messages.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import coincurve
from common import write_report
from eth_account import Account
from eth_account.messages import encode_typed_data

from cancelnote.crypto import Signer, keccak
from cancelnote.messages import CancellationNote, Domain, make_sender


def rate(operation: Callable[[object], object], items: Sequence[object], repeats: int) -> float:
    """Median operations per second of ``operation`` over ``items``, ``repeats`` times."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            operation(item)
        rates.append(len(items) / (time.perf_counter() - start))
    return statistics.median(rates)


def make_notes(count: int, sender: bytes) -> list[CancellationNote]:
    return [
        CancellationNote(
            order_digest=keccak(i.to_bytes(8, "big")),
            sender=sender,
            request_hash=keccak(b"request" + i.to_bytes(8, "big")),
            filled_amount=i * 10**15,
            last_fill_seq=2 * i,
            last_fill_hash=keccak(b"fill" + i.to_bytes(8, "big")),
            pending_amount=0,
            pending_until_ms=0,
            received_at_ms=1_700_000_000_000 + i,
            seq=2 * i + 1,
        )
        for i in range(count)
    ]


def measure(count: int, repeats: int) -> dict[str, float]:
    domain = Domain(1337, b"\xc0" * 20)
    operator = Signer(keccak(b"bench operator"))
    raw_key = coincurve.PrivateKey(operator.secret)
    notes = make_notes(count, make_sender(operator.address))
    signatures = [note.sign(operator, domain) for note in notes]
    hashes = [keccak(i.to_bytes(8, "big")) for i in range(count)]
    raw_signatures = [raw_key.sign_recoverable(h, hasher=None) for h in hashes]
    pairs = list(zip(notes, signatures, strict=True))
    raw_pairs = list(zip(hashes, raw_signatures, strict=True))
    eth_account_notes = notes[: max(count // 10, 50)]

    def eth_account_sign(note: CancellationNote) -> bytes:
        message = {f.metadata["wire"]: getattr(note, f.name) for f in attrs.fields(type(note))}
        typed = encode_typed_data(
            domain.to_wire(), {"CancellationNote": CancellationNote.eip712_types()}, message
        )
        return Account.sign_message(typed, operator.secret).signature

    # Interleave the measurements so that machine noise hits baseline and subject alike.
    figures: dict[str, list[float]] = {k: [] for k in ("raw_sign", "raw_recover", "sign", "verify")}
    for _ in range(repeats):
        figures["raw_sign"].append(
            rate(lambda h: raw_key.sign_recoverable(h, hasher=None), hashes, 1)
        )
        figures["sign"].append(rate(lambda n: n.sign(operator, domain), notes, 1))
        figures["raw_recover"].append(
            rate(
                lambda p: coincurve.PublicKey.from_signature_and_message(p[1], p[0], hasher=None),
                raw_pairs,
                1,
            )
        )
        figures["verify"].append(
            rate(lambda p: p[0].verify(p[1], domain, operator.address), pairs, 1)
        )
    result = {
        "note_sign_per_s": statistics.median(figures["sign"]),
        "note_verify_per_s": statistics.median(figures["verify"]),
        "raw_sign_per_s": statistics.median(figures["raw_sign"]),
        "raw_recover_per_s": statistics.median(figures["raw_recover"]),
        "eth_account_encode_sign_per_s": rate(eth_account_sign, eth_account_notes, repeats),
    }
    result["sign_ratio"] = result["note_sign_per_s"] / result["raw_sign_per_s"]
    result["verify_ratio"] = result["note_verify_per_s"] / result["raw_recover_per_s"]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--count", type=int, default=5_000, help="notes per repetition")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions (median taken)")
    args = parser.parse_args(argv)

    figures = measure(args.count, args.repeats)
    report = {
        "benchmark": "messages",
        "figures": {k: round(v, 3) for k, v in figures.items()},
        "targets": {"sign_ratio": 0.5, "verify_ratio": 0.5},
        "met": figures["sign_ratio"] >= 0.5 and figures["verify_ratio"] >= 0.5,
        "parameters": {"count": args.count, "repeats": args.repeats},
    }
    write_report(args.out, report)
    print(json.dumps(report["figures"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
