"""The ``cancelnote`` command. Each sub-command imports what it needs only when run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _example(args: argparse.Namespace) -> int:
    from .example import render_example

    print(render_example(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cancelnote", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    example = commands.add_parser(
        "example", help="print the protocol's worked example (messages, digests, signatures)"
    )
    example.set_defaults(run=_example)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
