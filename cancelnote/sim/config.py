"""Building models from scenario sections (TOML tables), with errors that name the section.

Every model class is a frozen attrs value whose fields are exactly the keys of its
section, apart from ``model``, which names the class. Building goes through the class's
own constructor, so the validators that guard direct construction guard scenarios too,
and an unknown or misspelt key is an error instead of a silently ignored setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, Self, TypeVar

from ..errors import Rejected


class ScenarioError(Rejected, ValueError):
    """Raised when a scenario section names an unknown model, lacks a key or has a bad value."""

    code = "INVALID_SCENARIO"


class Configurable(Protocol):
    """A model that can be built from its scenario section."""

    MODEL: ClassVar[str]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self: ...


T = TypeVar("T")
C = TypeVar("C", bound=Configurable)


def build(cls: type[T], config: Mapping[str, Any], section: str) -> T:
    """``cls(**config)`` without the ``model`` key, any failure raised as a ScenarioError."""
    fields = {key: value for key, value in config.items() if key != "model"}
    try:
        return cls(**fields)
    except (TypeError, ValueError) as error:
        raise ScenarioError(f"[{section}] model {config.get('model')!r}: {error}") from error


def choose(registry: Mapping[str, type[C]], config: Mapping[str, Any], section: str) -> C:
    """The model named by ``config["model"]``, built from the rest of the section."""
    name = config.get("model")
    if not isinstance(name, str) or name not in registry:
        known = ", ".join(sorted(registry))
        raise ScenarioError(f"[{section}] model must be one of {known}; got {name!r}")
    return registry[name].from_config(config)
