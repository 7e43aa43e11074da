"""The example scenarios shipped in the package (``cancelnote/sim/scenarios/``).

They are package data, so an installed wheel has them: ``cancelnote sim scenarios`` lists
them and ``--copy DIR`` writes them out (with the plug-in module one of them imports), so
that every ``cancelnote sim ... simulations/NAME.toml`` of the README and the docs works
after ``cancelnote sim scenarios --copy simulations``. In a clone, ``simulations/`` is a
link to the same folder.
"""

from __future__ import annotations

import shutil
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

#: The folder of the bundled scenarios, inside the installed package.
SCENARIOS: Traversable = resources.files("cancelnote.sim") / "scenarios"
#: What ``--copy`` writes: the scenarios and the plug-in modules beside them.
SUFFIXES = (".toml", ".py")


def bundled_files() -> list[Traversable]:
    """Every shipped file, by name."""
    return sorted(
        (item for item in SCENARIOS.iterdir() if item.name.endswith(SUFFIXES)),
        key=lambda item: item.name,
    )


def summary(text: str) -> str:
    """A scenario's one-line summary: the first sentence of its leading comment."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    words = " ".join(lines) + " "
    ends = [at for at in (words.find(". "), words.find("? ")) if at >= 0]
    return words[: min(ends, default=len(words)) + 1].strip()


def listing() -> list[tuple[str, str]]:
    """(name, summary) of every bundled scenario."""
    return [
        (item.name.removesuffix(".toml"), summary(item.read_text(encoding="utf-8")))
        for item in bundled_files()
        if item.name.endswith(".toml")
    ]


def copy_to(folder: Path) -> list[Path]:
    """Write every bundled file into ``folder`` (created if needed); returns the paths.

    Raises:
        FileExistsError: one of the files is already there (then nothing is written).
    """
    items = bundled_files()
    clashes = [folder / item.name for item in items if (folder / item.name).exists()]
    if clashes:
        raise FileExistsError(
            f"{clashes[0]} exists: nothing copied (choose an empty or new folder)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for item in items:
        target = folder / item.name
        with item.open("rb") as source, target.open("xb") as sink:
            shutil.copyfileobj(source, sink)
        written.append(target)
    return written
