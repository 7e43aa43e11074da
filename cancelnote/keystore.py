"""Encrypted key files (Ethereum's v3 keystore JSON, via eth-account), for operator and client.

A key never lives on disk in the clear: :func:`create` and :func:`import_key` write a
keystore (scrypt by default, the geth format, readable by any Ethereum wallet) and
:func:`load` decrypts one into a :class:`~cancelnote.crypto.Signer`. The password comes
from, in this order: a file named on the command line, the ``CANCELNOTE_PASSWORD``
environment variable, or a prompt on the terminal (:func:`read_password`); a password on
the command line itself would be visible to every user of the machine (``ps``).
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import secrets
import sys
import unicodedata
from pathlib import Path
from typing import Any

from Crypto.Cipher import AES

from .crypto import SECP256K1_N, Signer, keccak
from .errors import Rejected

#: Environment variable holding a keystore password (for services and scripts).
PASSWORD_ENV = "CANCELNOTE_PASSWORD"


class KeystoreError(Rejected):
    """Raised when a keystore cannot be read or decrypted, or no password is available."""

    code = "KEYSTORE"


def read_password(password_file: str | Path | None = None, *, confirm: bool = False) -> str:
    """The password: ``password_file``'s first line, else ``$CANCELNOTE_PASSWORD``, else a prompt.

    Args:
        password_file: a file whose first line is the password (its newline stripped).
        confirm: prompt twice and insist the answers agree (when creating a keystore).

    Raises:
        KeystoreError: the file cannot be read, or there is no terminal to prompt on.
    """
    if password_file is not None:
        try:
            text = Path(password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise KeystoreError(f"cannot read password file {password_file}: {exc}") from None
        return text.splitlines()[0] if text else ""
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise KeystoreError(f"no password: give --password-file, set {PASSWORD_ENV}, or use a tty")
    password = getpass.getpass("Keystore password: ")
    if confirm and getpass.getpass("Repeat password: ") != password:
        raise KeystoreError("the passwords differ")
    return password


def import_key(
    path: str | Path, private_key: bytes, password: str, *, iterations: int | None = None
) -> Signer:
    """Encrypt ``private_key`` into a new keystore at ``path`` (never overwriting one).

    Args:
        iterations: the scrypt cost ``n`` (eth-account's default, 2**18, when ``None``);
            tests lower it, nothing else should.

    Raises:
        KeystoreError: ``path`` exists or cannot be written.
        SignatureError: ``private_key`` is not a valid secp256k1 key.
    """
    from eth_account import Account  # slow to import: only when a key is written

    signer = Signer(private_key)
    keystore = Account.encrypt(private_key, password, kdf="scrypt", iterations=iterations)
    try:
        with open(path, "x", encoding="utf-8") as file:  # "x": never replace a key
            os.chmod(path, 0o600)
            json.dump(keystore, file)
    except OSError as exc:
        raise KeystoreError(f"cannot write keystore {path}: {exc}") from None
    return signer


def create(path: str | Path, password: str, *, iterations: int | None = None) -> Signer:
    """A fresh random key, saved as a keystore at ``path`` (see :func:`import_key`)."""
    key = (secrets.randbelow(SECP256K1_N - 1) + 1).to_bytes(32, "big")
    return import_key(path, key, password, iterations=iterations)


def load(path: str | Path, password: str) -> Signer:
    """Decrypt the keystore at ``path`` (scrypt or pbkdf2, aes-128-ctr, as geth writes it).

    Decrypting here rather than with eth-account spares every start of the operator and
    the client the 0.8 s eth-account takes to import (it loads BLS pairing code for its
    own keystores); ``tests/test_keystore.py`` checks both agree.

    Raises:
        KeystoreError: the file is missing or malformed, or the password is wrong.
    """
    try:
        keystore = json.loads(Path(path).read_text(encoding="utf-8"))
        crypto = keystore.get("crypto") or keystore["Crypto"]
        key = _derive(crypto["kdf"], crypto["kdfparams"], password)
        ciphertext = bytes.fromhex(crypto["ciphertext"])
        if not hmac.compare_digest(keccak(key[16:32] + ciphertext).hex(), crypto["mac"].lower()):
            raise KeystoreError(f"cannot decrypt keystore {path}: wrong password")
        if crypto["cipher"] != "aes-128-ctr":
            raise KeystoreError(f"keystore {path}: unsupported cipher {crypto['cipher']!r}")
        iv = int(crypto["cipherparams"]["iv"], 16)
        cipher = AES.new(key[:16], AES.MODE_CTR, nonce=b"", initial_value=iv)
        return Signer(cipher.decrypt(ciphertext))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeystoreError(f"cannot read keystore {path}: {type(exc).__name__}: {exc}") from None


def _derive(kdf: str, params: dict[str, Any], password: str) -> bytes:
    """The key the password derives (passwords are NFKC-normalised, as eth-keyfile does)."""
    secret = unicodedata.normalize("NFKC", password).encode("utf-8")
    salt = bytes.fromhex(params["salt"])
    if kdf == "scrypt":
        n, r = params["n"], params["r"]
        return hashlib.scrypt(
            secret,
            salt=salt,
            n=n,
            r=r,
            p=params["p"],
            dklen=params["dklen"],
            maxmem=256 * n * r + 2**20,
        )
    if kdf == "pbkdf2" and params.get("prf") == "hmac-sha256":
        return hashlib.pbkdf2_hmac("sha256", secret, salt, params["c"], params["dklen"])
    raise KeystoreError(f"unsupported key derivation {kdf!r}")
