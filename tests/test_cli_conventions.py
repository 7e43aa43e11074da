"""What every command shares: the entry points, help, defaults from the environment and
profiles, and the packaging that makes ``pip install`` give the same bytes everywhere."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.resources
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import served

from cancelnote import __version__, exits, keystore
from cancelnote.cli import build_parser, main
from cancelnote.client.evidence import EvidenceStore
from cancelnote.crypto import to_checksum
from cancelnote.dispute.court import DEV_PARAMETERS, Court
from cancelnote.dispute.inprocess import InProcessChain, dev_account
from cancelnote.messages import Domain

ROOT = Path(__file__).resolve().parent.parent


def cancelnote(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cancelnote", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


# --- entry points ------------------------------------------------------------------------


def test_python_dash_m_and_version():
    done = cancelnote("--version")
    assert (done.returncode, done.stdout) == (0, f"cancelnote {__version__}\n")
    assert importlib.metadata.version("cancelnote") == __version__


def test_the_package_says_it_is_typed():
    assert importlib.resources.files("cancelnote").joinpath("py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in package_data["package-data"]["cancelnote"]


def test_a_usage_error_is_exit_2_from_argparse_too():
    done = cancelnote("court", "status", "--digest", "0x12")
    assert done.returncode == exits.USAGE
    assert done.stderr.splitlines()[-1].startswith("cancelnote court status: error: argument")


# --- help --------------------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_no_help_text_renders_rest_markup():
    for parser in _parsers(build_parser()):
        text = parser.format_help()
        assert "``" not in text and ":class:" not in text, parser.prog


def _help(*command: str) -> str:
    done = cancelnote(*command, "--help")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_evidence_sub_commands_have_their_own_help():
    for name in ("findings", "export", "import"):
        assert _help("client", "evidence", name).startswith(
            f"usage: cancelnote client evidence {name}"
        )
    assert "--since-ms" in _help("client", "evidence", "export")


def test_a_command_shows_only_the_flags_it_uses():
    withdraw = _help("client", "withdraw")
    assert "--rpc" in withdraw and "--url" not in withdraw and "--deadline-s" not in withdraw
    bundle_import = _help("client", "evidence", "import")
    assert "--rpc" not in bundle_import and "--key" not in bundle_import
    status = _help("court", "status")
    assert "$CANCELNOTE_RPC" in status and "--dev-account" not in status


# --- defaults from the environment and profiles -------------------------------------------


@pytest.fixture
def court() -> Iterator[tuple[str, str]]:
    """A served chain with a court: its URL and the court's address."""
    chain = InProcessChain(accounts=2)
    deployed = Court.deploy(chain, dev_account(0), operator=dev_account(1).address,
                            **DEV_PARAMETERS)  # fmt: skip
    with served(chain) as server:
        yield server.url, to_checksum(deployed.address)


def test_environment_variables_give_the_left_out_flags(court, monkeypatch, capsys):
    url, address = court
    monkeypatch.setenv("CANCELNOTE_RPC", url)
    monkeypatch.setenv("CANCELNOTE_COURT", address)
    assert main(["court", "status"]) == exits.OK
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["court", address] in rows


def test_a_flag_beats_a_profile_which_beats_the_environment(court, tmp_path, monkeypatch, capsys):
    url, address = court
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(f'[local]\nrpc = "{url}"\ncourt = "{address}"\n')
    monkeypatch.setenv("CANCELNOTE_PROFILES", str(profiles))
    monkeypatch.setenv("CANCELNOTE_RPC", "http://127.0.0.1:9")  # the profile wins
    assert main(["court", "status", "--profile", "local"]) == exits.OK
    capsys.readouterr()
    other = "0x" + "42" * 20
    assert main(["court", "status", "--profile", "local", "--court", other]) == exits.USAGE
    assert f"no contract at {to_checksum(bytes.fromhex('42' * 20))}" in capsys.readouterr().err


def test_profile_paths_are_the_profile_files_folders(tmp_path, monkeypatch):
    from cancelnote.cliargs import load_profile

    profiles = tmp_path / "conf" / "profiles.toml"
    profiles.parent.mkdir()
    profiles.write_text('[alice]\nkey = "alice.json"\ndb = "/abs/alice.sqlite"\n')
    monkeypatch.setenv("CANCELNOTE_PROFILES", str(profiles))
    assert load_profile("alice") == {
        "key": str(tmp_path / "conf" / "alice.json"),
        "db": "/abs/alice.sqlite",
    }


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('[local]\nrcp = "http://x"\n', "profile 'local' in {path}: 'rcp' is not a setting"),
        ('[other]\nrpc = "http://x"\n', "no profile 'local' in {path} (it has: other)"),
        ("[local\n", "--profile local: {path} is not TOML"),
    ],
    ids=["typo", "missing", "not toml"],
)
def test_a_profile_that_does_not_say_what_it_means_is_a_usage_error(
    text, complaint, tmp_path, monkeypatch, capsys
):
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(text)
    monkeypatch.setenv("CANCELNOTE_PROFILES", str(profiles))
    assert main(["court", "status", "--profile", "local"]) == exits.USAGE
    assert complaint.format(path=profiles) in capsys.readouterr().err


def test_a_missing_setting_says_every_way_to_give_it(monkeypatch, capsys):
    monkeypatch.delenv("CANCELNOTE_RPC", raising=False)
    assert main(["court", "status", "--court", "0x" + "42" * 20]) == exits.USAGE
    assert capsys.readouterr().err == (
        "cancelnote court status: give --rpc (or $CANCELNOTE_RPC, or a --profile)\n"
    )


# --- packaging ---------------------------------------------------------------------------


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _requirement_name(requirement: str) -> str:
    return _normal(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[_normal(name)] = version
    return pins


def test_metadata_declares_ranges_and_the_constraints_pin_them():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    pins = _pins()
    for requirement in requirements:
        name = _requirement_name(requirement)
        if name == "cancelnote":
            continue
        assert "==" not in requirement, f"{requirement}: a range, not a pin"
        assert name in pins, f"{name} has no exact pin in constraints.txt"
        assert importlib.metadata.version(name) == pins[name], name


def test_every_declared_dependency_is_imported_by_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    provides = importlib.metadata.packages_distributions()
    imported = set()
    for path in (ROOT / "cancelnote").rglob("*.py"):
        for module in re.findall(r"^\s*(?:from|import) (\w+)", path.read_text(), re.M):
            imported.update(_normal(name) for name in provides.get(module, ()))
    declared = {_requirement_name(r) for r in project["dependencies"]}
    assert declared <= imported, f"declared but never imported: {declared - imported}"


def test_ci_runs_the_readme_test_command_verbatim_with_the_constraints():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"\*\*Run the tests\*\*.*?```sh\n(.*?)\n```", readme, re.S).group(1)
    assert command in ci.splitlines()
    assert "-c constraints.txt" in command
    demo = re.search(r"\*\*Run the demo\*\*.*?```sh\n(.*?)\n```", readme, re.S).group(1)
    assert "-c constraints.txt" in demo


def test_the_walkthrough_writes_its_files_where_git_ignores_them():
    readme = (ROOT / "README.md").read_text()
    assert "mkdir -p walkthrough && cd walkthrough" in readme
    assert "walkthrough/" in (ROOT / ".gitignore").read_text().splitlines()


# --- one line for what a user hits ----------------------------------------------------------


def test_a_busy_operator_port_is_one_line_and_exit_2(tmp_path):
    keystore.import_key(tmp_path / "operator.json", b"\x05" * 32, "pw", iterations=2)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = cancelnote(
            "operator", "run", "--db", str(tmp_path / "j.sqlite"),
            "--key", str(tmp_path / "operator.json"), "--chain", "in-process",
            "--port", str(port), env={keystore.PASSWORD_ENV: "pw"},
        )  # fmt: skip
    assert done.returncode == exits.USAGE
    assert done.stderr == (
        f"cancelnote operator run: cannot listen on 127.0.0.1:{port}: Address already in use"
        " (choose another --port)\n"
    )


def test_an_operator_that_never_answers_is_exit_4_after_the_timeout(tmp_path):
    keystore.import_key(tmp_path / "key.json", b"\x05" * 32, "pw", iterations=2)
    db = tmp_path / "store.sqlite"
    EvidenceStore.open(db, Domain(1337, b"\x42" * 20), b"\x43" * 20).close()
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        done = cancelnote(
            "client", "place", "buy", "--product", "1", "--price", "1", "--amount", "1",
            "--db", str(db), "--key", str(tmp_path / "key.json"), "--url", url,
            "--timeout-s", "1", env={keystore.PASSWORD_ENV: "pw"},
        )  # fmt: skip
    assert done.returncode == exits.UNREACHABLE and time.monotonic() - started < 30
    assert done.stderr == (
        f"cancelnote client place: the operator at {url} did not answer within 1 s\n"
    )
