"""What the commands' arguments share: argparse types, and where a left-out flag comes from.

A connection flag left out takes its value from, in this order:

1. the profile ``--profile NAME`` names: a table of a TOML file, ``$CANCELNOTE_PROFILES``
   or else ``$XDG_CONFIG_HOME/cancelnote/profiles.toml`` (``~/.config/...``)::

       [local]
       rpc = "http://127.0.0.1:8545"
       court = "0x1FD4A6947d5d1A0E44481E67F5a68aa883c8c8dA"
       url = "ws://127.0.0.1:8765"
       key = "alice.json"          # relative paths are the profile file's folder's
       db = "alice.sqlite"

2. the environment: ``CANCELNOTE_RPC``, ``CANCELNOTE_COURT``, ``CANCELNOTE_URL``,
   ``CANCELNOTE_CLIENT_DB`` (the password has its own: ``CANCELNOTE_PASSWORD``);
3. the built-in default, if the flag has one.

A profile key that names no setting, or a profile that does not exist, is a usage error:
a typo must not silently leave a flag unset.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path

import attrs

from .exits import USAGE, CommandError

PROFILES_ENV = "CANCELNOTE_PROFILES"


@attrs.frozen
class Setting:
    """A flag that a profile or an environment variable may give."""

    flag: str
    env: str | None
    is_path: bool = False
    default: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


SETTINGS = (
    Setting("--rpc", "CANCELNOTE_RPC"),
    Setting("--court", "CANCELNOTE_COURT"),
    Setting("--url", "CANCELNOTE_URL"),
    Setting("--db", "CANCELNOTE_CLIENT_DB", is_path=True, default="cancelnote-client.sqlite"),
    Setting("--key", None, is_path=True),
    Setting("--password-file", None, is_path=True),
)
BY_DEST = {setting.dest: setting for setting in SETTINGS}


def profiles_path() -> Path:
    """The profile file: ``$CANCELNOTE_PROFILES``, else the XDG config folder's."""
    if os.environ.get(PROFILES_ENV):
        return Path(os.environ[PROFILES_ENV])
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "cancelnote" / "profiles.toml"


def load_profile(name: str) -> dict[str, str]:
    """The settings of profile ``name``, by flag destination, paths made absolute.

    Raises:
        CommandError: no profile file, no such profile, or a key that is no setting.
    """
    path = profiles_path()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CommandError(USAGE, f"--profile {name}: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CommandError(USAGE, f"--profile {name}: {path} is not TOML: {exc}") from None
    table = document.get(name)
    if not isinstance(table, dict):
        known = ", ".join(sorted(k for k, v in document.items() if isinstance(v, dict)))
        raise CommandError(USAGE, f"no profile {name!r} in {path} (it has: {known or 'none'})")
    values = {}
    for key, value in table.items():
        setting = BY_DEST.get(key.replace("-", "_"))
        if setting is None or not isinstance(value, str):
            raise CommandError(
                USAGE,
                f"profile {name!r} in {path}: {key!r} is not a setting"
                f" ({', '.join(BY_DEST)}; each a string)",
            )
        values[setting.dest] = str(path.parent / value) if setting.is_path else value
    return values


def add_profile_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile", metavar="NAME", help=f"take left-out flags from this profile (${PROFILES_ENV})"
    )


def env_help(dest: str, text: str) -> str:
    """``text`` and where a left-out flag comes from."""
    setting = BY_DEST[dest]
    sources = ["--profile"] + ([f"${setting.env}"] if setting.env else [])
    default = f", else {setting.default}" if setting.default else ""
    return f"{text} (default: {', '.join(sources)}{default})"


def fill_defaults(args: argparse.Namespace) -> None:
    """Give every setting ``args`` has but left out its profile, environment or built-in
    value (``None`` if none has one)."""
    profile = load_profile(args.profile) if getattr(args, "profile", None) else {}
    for setting in SETTINGS:
        if getattr(args, setting.dest, "absent") is not None:
            continue  # given on the command line, or not a flag of this command
        value = profile.get(setting.dest)
        if value is None and setting.env is not None:
            value = os.environ.get(setting.env) or None
        setattr(args, setting.dest, value if value is not None else setting.default)


def need(args: argparse.Namespace, dest: str, why: str = "") -> str:
    """The value of a setting this command cannot do without.

    Raises:
        CommandError: it was given nowhere (a usage error saying how to give it).
    """
    value = getattr(args, dest)
    if value is None:
        setting = BY_DEST[dest]
        where = setting.flag + (f" (or ${setting.env}, or a --profile)" if setting.env else "")
        raise CommandError(USAGE, f"give {where}{why}")
    return value


def need_address(args: argparse.Namespace, dest: str) -> bytes:
    """:func:`need`, parsed as an address.

    Raises:
        CommandError: not given, or not 0x and 40 hex digits (a usage error naming the flag).
    """
    from .crypto import parse_address
    from .errors import MessageError

    value = need(args, dest)
    try:
        return parse_address(value)
    except MessageError as exc:
        raise CommandError(USAGE, f"{BY_DEST[dest].flag}: {exc}") from None


def address_type(text: str) -> bytes:
    """An argparse type: an address (0x and 40 hex digits)."""
    from .crypto import parse_address
    from .errors import MessageError

    try:
        return parse_address(text)
    except MessageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def digest_type(text: str) -> bytes:
    """An argparse type: an order id (0x and 64 hex digits)."""
    from .errors import MessageError
    from .messages import bytes32_from_wire

    try:
        return bytes32_from_wire("order id", text)
    except MessageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
