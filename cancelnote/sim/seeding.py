"""One root seed, one independent random stream per named component.

A stream is keyed by the component's *name*, never by the order in which components
ask for one: ``SeedSequence(root, spawn_key=(replicate, *name_key(name)))``. Adding,
removing or reordering agents therefore shifts no other agent's stream (ABIDES, which
draws each agent's seed from one global generator in creation order, does shift them),
and the baseline, attack and defence arms of an experiment see the same market and the
same clients for the same seed: common random numbers, compared pairwise.

``name_key`` hashes the name with SHA-256, not ``hash()``: ``hash`` of a string changes
from process to process (PYTHONHASHSEED), and streams must be the same in every worker
of a sweep.
"""

from __future__ import annotations

import hashlib

import attrs
import numpy as np

#: Words of the name's SHA-256 digest used in the spawn key (all of it: 8 x 32 bits).
_KEY_WORDS = 8


def name_key(name: str) -> tuple[int, ...]:
    """The SHA-256 of ``name`` (UTF-8) as eight 32-bit integers, the same in every process."""
    digest = hashlib.sha256(name.encode()).digest()
    return tuple(int.from_bytes(digest[4 * i : 4 * i + 4], "little") for i in range(_KEY_WORDS))


@attrs.frozen
class Seeds:
    """The random streams of one run: ``root`` picks the experiment, ``replicate`` the run.

    Replicates of one experiment are ``Seeds(root, 0)``, ``Seeds(root, 1)``, ...: the
    replicate index is part of every stream's key, so a sweep's results do not depend on
    which worker ran which replicate.
    """

    root: int = attrs.field(validator=[attrs.validators.instance_of(int), attrs.validators.ge(0)])
    replicate: int = attrs.field(
        default=0, validator=[attrs.validators.instance_of(int), attrs.validators.ge(0)]
    )

    def sequence(self, name: str) -> np.random.SeedSequence:
        """The seed sequence of component ``name`` (spawn children of it for sub-streams)."""
        return np.random.SeedSequence(self.root, spawn_key=(self.replicate, *name_key(name)))

    def generator(self, name: str) -> np.random.Generator:
        """A fresh generator for component ``name``: same name, same stream, every time."""
        return np.random.Generator(np.random.PCG64(self.sequence(name)))
