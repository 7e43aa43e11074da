"""Encrypted key files: written by eth-account, read by cancelnote, never in the clear."""

from __future__ import annotations

import json
import os
import stat

import pytest
from eth_account import Account

from cancelnote import keystore
from cancelnote.cli import main
from cancelnote.crypto import Signer

FAST = 2**10  # scrypt cost for tests; real keystores use eth-account's 2**18


def test_created_key_loads_back_with_its_password_and_is_private_to_its_owner(tmp_path):
    path = tmp_path / "k.json"
    signer = keystore.create(path, "correct horse", iterations=FAST)
    assert keystore.load(path, "correct horse").address == signer.address
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert signer.secret.hex() not in path.read_text()


def test_wrong_password_is_refused(tmp_path):
    path = tmp_path / "k.json"
    keystore.create(path, "right", iterations=FAST)
    with pytest.raises(keystore.KeystoreError, match="wrong password"):
        keystore.load(path, "wrong")


@pytest.mark.parametrize("kdf", ["scrypt", "pbkdf2"])
def test_load_reads_what_eth_account_writes_with_either_kdf(tmp_path, kdf):
    signer = Signer(bytes.fromhex("42" * 32))
    path = tmp_path / "k.json"
    path.write_text(
        json.dumps(Account.encrypt(signer.secret, "pässwörd", kdf=kdf, iterations=FAST))
    )
    assert keystore.load(path, "pässwörd").secret == signer.secret


def test_import_never_overwrites_an_existing_keystore(tmp_path):
    path = tmp_path / "k.json"
    keystore.create(path, "pw", iterations=FAST)
    before = path.read_text()
    with pytest.raises(keystore.KeystoreError, match="cannot write"):
        keystore.import_key(path, bytes.fromhex("11" * 32), "pw", iterations=FAST)
    assert path.read_text() == before


def test_malformed_keystore_is_a_keystore_error(tmp_path):
    path = tmp_path / "k.json"
    path.write_text('{"crypto": {"kdf": "scrypt"}}')
    with pytest.raises(keystore.KeystoreError):
        keystore.load(path, "pw")


def test_password_comes_from_the_file_then_the_environment(tmp_path, monkeypatch):
    (tmp_path / "pw").write_text("from file\nsecond line\n")
    monkeypatch.setenv(keystore.PASSWORD_ENV, "from env")
    assert keystore.read_password(tmp_path / "pw") == "from file"
    assert keystore.read_password(None) == "from env"


def test_keys_command_imports_a_key_at_the_default_cost_and_it_loads(tmp_path, monkeypatch, capsys):
    (tmp_path / "key.hex").write_text("0x" + "09" * 32 + "\n")
    monkeypatch.setenv(keystore.PASSWORD_ENV, "pw")
    status = main(
        [
            "keys",
            "import",
            "--out",
            str(tmp_path / "k.json"),
            "--private-key-file",
            str(tmp_path / "key.hex"),
        ]
    )
    assert status == 0
    signer = Signer(bytes.fromhex("09" * 32))
    assert capsys.readouterr().out.split()[0] == signer.checksum_address
    assert keystore.load(tmp_path / "k.json", "pw").secret == signer.secret
