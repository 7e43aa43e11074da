"""secp256k1 and keccak-256, on the fastest backends we ship (libsecp256k1, pysha3).

Signatures are 65 bytes ``r || s || v`` with ``v`` in {27, 28}, as Ethereum writes them.
Only low-s signatures are produced or accepted: the EVM's ``ecrecover`` accepts both
twins, so the court and this module reject ``s > n/2`` alike, and a signature never
works as an identifier.
"""

from __future__ import annotations

import coincurve
import sha3

from .errors import SignatureError

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2
ZERO_ADDRESS = bytes(20)


def keccak(data: bytes) -> bytes:
    """Keccak-256 (Ethereum's hash, not NIST SHA3-256)."""
    return sha3.keccak_256(data).digest()


def to_checksum(address: bytes) -> str:
    """EIP-55 mixed-case hex form of a 20-byte address."""
    hex_address = address.hex()
    hashed = keccak(hex_address.encode("ascii")).hex()
    return "0x" + "".join(
        c.upper() if int(h, 16) >= 8 else c for c, h in zip(hex_address, hashed[:40], strict=True)
    )


def parse_address(value: str | bytes) -> bytes:
    """A 20-byte address from bytes or 0x-hex (any case); anything else is an error."""
    if isinstance(value, bytes):
        if len(value) != 20:
            raise SignatureError(f"an address is 20 bytes, got {len(value)}")
        return value
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 42:
        raise SignatureError(f"an address is 0x and 40 hex digits, got {value!r}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise SignatureError(f"an address is 0x and 40 hex digits, got {value!r}") from None


def public_key_to_address(public_key: coincurve.PublicKey) -> bytes:
    return keccak(public_key.format(compressed=False)[1:])[12:]


class Signer:
    """A private key with its address, ready to sign 32-byte hashes."""

    __slots__ = ("_key", "address")

    def __init__(self, private_key: bytes) -> None:
        if len(private_key) != 32 or not 0 < int.from_bytes(private_key, "big") < SECP256K1_N:
            raise SignatureError("a private key is 32 bytes, between 1 and n-1")
        self._key = coincurve.PrivateKey(private_key)
        self.address: bytes = public_key_to_address(self._key.public_key)

    @classmethod
    def from_hex(cls, private_key: str) -> Signer:
        return cls(bytes.fromhex(private_key.removeprefix("0x")))

    @property
    def secret(self) -> bytes:
        return self._key.secret

    @property
    def checksum_address(self) -> str:
        return to_checksum(self.address)

    def sign_hash(self, message_hash: bytes) -> bytes:
        """Sign a 32-byte hash; libsecp256k1 always gives the low-s twin."""
        rsv = self._key.sign_recoverable(message_hash, hasher=None)
        return rsv[:64] + bytes((rsv[64] + 27,))

    def __repr__(self) -> str:
        return f"Signer({self.checksum_address})"


def check_signature(signature: bytes) -> None:
    """Reject anything but a canonical 65-byte, low-s signature with v in {27, 28}."""
    if not isinstance(signature, bytes) or len(signature) != 65:
        raise SignatureError("a signature is 65 bytes: r, s, v")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not 0 < r < SECP256K1_N:
        raise SignatureError("signature r is out of range")
    if not 0 < s <= SECP256K1_HALF_N:
        raise SignatureError("signature s is zero or high (only low-s signatures are valid)")
    if signature[64] not in (27, 28):
        raise SignatureError(f"signature v must be 27 or 28, got {signature[64]}")


def recover_address(message_hash: bytes, signature: bytes) -> bytes:
    """The 20-byte address that signed ``message_hash``; raises on any invalid signature."""
    check_signature(signature)
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes((signature[64] - 27,)), message_hash, hasher=None
        )
    except Exception as exc:  # libsecp256k1 says only "failed to recover"
        raise SignatureError(f"no public key recovers from this signature ({exc})") from None
    address = public_key_to_address(public_key)
    if address == ZERO_ADDRESS:
        raise SignatureError("the signature recovers to the zero address")
    return address
