"""Message latency models: how long a message takes from sender to recipient, in integer ns.

Each model is a frozen value with ``sample(rng) -> int`` and ``from_config(section)``;
``latency_from_config`` picks the model named by the section's ``model`` key. A model
draws only from the generator it is given, so each link's latency comes from that link's
own named stream (see ``seeding``).

The vocabulary follows ABIDES (``min_latency``, the cubic jitter) and hftbacktest (a
link is one direction: order entry and response are two models).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import attrs
import numpy as np
from attrs import validators as v

from .config import ScenarioError, build, choose

_SECTION = "latency"
_nonnegative_int = [v.instance_of(int), v.ge(0)]


class _FromSection:
    """``from_config`` for models whose section keys are exactly their fields."""

    __slots__ = ()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """The model described by a ``[latency]`` section."""
        return build(cls, config, _SECTION)


@attrs.frozen
class FixedLatency(_FromSection):
    """Every message takes exactly ``ns`` (ABIDES's ``deterministic`` model)."""

    MODEL: ClassVar[str] = "fixed"
    ns: int = attrs.field(validator=_nonnegative_int)

    def sample(self, rng: np.random.Generator) -> int:
        """``ns``; draws nothing, so switching a link to fixed shifts no other draw."""
        return self.ns


@attrs.frozen
class LognormalLatency(_FromSection):
    """A floor plus a lognormal delay: ``min_ns + median_ns * exp(sigma * Z)``, Z ~ N(0, 1).

    The floor is the light-time of the route; the lognormal part, with median
    ``median_ns`` and log-scale ``sigma``, is queueing and processing.
    """

    MODEL: ClassVar[str] = "lognormal"
    median_ns: float = attrs.field(converter=float, validator=v.gt(0.0))
    sigma: float = attrs.field(converter=float, validator=v.ge(0.0))
    min_ns: int = attrs.field(default=0, validator=_nonnegative_int)

    def sample(self, rng: np.random.Generator) -> int:
        """One latency, rounded to the nearest nanosecond."""
        return self.min_ns + round(self.median_ns * math.exp(self.sigma * rng.standard_normal()))


@attrs.frozen
class CubicLatency(_FromSection):
    """ABIDES's cubic jitter: ``min_ns + (jitter / x**3) * (min_ns / unit)``, x ~ U[clip, 1).

    One-sided and heavy-tailed: the extra delay lies between ``jitter * min_ns / unit``
    (x = 1) and ``jitter * min_ns / (unit * clip**3)`` (x = clip), most of its mass near
    the low end. ABIDES's defaults are ``jitter=0.5, clip=0.1, unit=10``. The result is
    truncated to an integer, as ABIDES does.
    """

    MODEL: ClassVar[str] = "cubic"
    min_ns: int = attrs.field(validator=_nonnegative_int)
    jitter: float = attrs.field(default=0.5, converter=float, validator=v.ge(0.0))
    clip: float = attrs.field(default=0.1, converter=float, validator=[v.gt(0.0), v.le(1.0)])
    unit: float = attrs.field(default=10.0, converter=float, validator=v.gt(0.0))

    def sample(self, rng: np.random.Generator) -> int:
        """One latency; one uniform draw, as in ABIDES."""
        x = rng.uniform(self.clip, 1.0)
        return int(self.min_ns + (self.jitter / x**3) * (self.min_ns / self.unit))


def _int_tuple(samples: Iterable[int]) -> tuple[int, ...]:
    return tuple(samples)


@attrs.frozen
class EmpiricalLatency:
    """Latencies resampled uniformly, with replacement, from measured ``samples`` (ns)."""

    MODEL: ClassVar[str] = "empirical"
    samples: tuple[int, ...] = attrs.field(converter=_int_tuple)

    @samples.validator
    def _check_samples(self, _: attrs.Attribute[tuple[int, ...]], value: tuple[int, ...]) -> None:
        if not value:
            raise ValueError("samples: need at least one latency")
        if not all(type(x) is int and x >= 0 for x in value):
            raise ValueError("samples: latencies must be integers >= 0 (ns)")

    def sample(self, rng: np.random.Generator) -> int:
        """One of the samples, each with probability 1/len(samples)."""
        return self.samples[int(rng.integers(len(self.samples)))]

    @classmethod
    def from_csv(cls, path: Path, column: str = "latency_ns") -> Self:
        """Samples from column ``column`` of a CSV file with a header row.

        Raises:
            ScenarioError: the file lacks the column or holds a value that is not an
                integer number of nanoseconds.
        """
        with open(path, newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise ScenarioError(f"[{_SECTION}] {path}: no column {column!r}")
            try:
                samples = [int(row[column]) for row in reader]
                return cls(samples)
            except ValueError as error:
                raise ScenarioError(f"[{_SECTION}] {path}: {error}") from error

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """From ``path`` (a CSV file; relative paths are relative to the working
        directory, so scenario loaders should make them absolute) and ``column``."""
        unknown = set(config) - {"model", "path", "column"}
        if unknown or "path" not in config:
            raise ScenarioError(
                f"[{_SECTION}] model 'empirical' takes path and column; got {sorted(config)}"
            )
        return cls.from_csv(Path(config["path"]), config.get("column", "latency_ns"))


LatencyModel = FixedLatency | LognormalLatency | CubicLatency | EmpiricalLatency

#: The models a ``[latency]`` section can name, by their ``model`` key.
LATENCY_MODELS: dict[str, type[LatencyModel]] = {
    model.MODEL: model for model in (FixedLatency, LognormalLatency, CubicLatency, EmpiricalLatency)
}


def latency_from_config(config: Mapping[str, Any]) -> LatencyModel:
    """The latency model a ``[latency]`` section describes."""
    return choose(LATENCY_MODELS, config, _SECTION)
