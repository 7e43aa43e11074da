"""Scenario files: one TOML document describing a world, parsed strictly into frozen values.

A scenario has one table per part of the world (``[run]``, ``[market]``, ``[feed]``,
``[latency.entry]``, ``[latency.response]``, ``[makers]``, ``[takers]``, ``[operator]``
with its ``[operator.params]``, ``[client]``, ``[court]``, ``[chain]``, ``[metrics]``)
and an optional array ``[[agents]]`` of plug-in agents; ``simulations/*.toml`` are
commented examples. Rules:

* Every key is known: an unknown or misspelt key, a missing required one, a value of the
  wrong type or out of range raises :class:`~.config.ScenarioError` naming the table and
  the key. A typo must never silently run the default.
* ``[market]`` and the latency tables are the models' own sections
  (:func:`~.market.market_from_config`, :func:`~.latency.latency_from_config`).
* Sweeps change a scenario by dotted keys (``operator.delay_ms``) on the raw document,
  *before* parsing (:func:`apply_overrides`), so a swept value is validated like a
  written one.
* Money is in quote currency (the unit of prices); the court works in wei, converted at
  ``chain.eth_price`` (quote currency per ether).
* Plug-ins (``module:Class`` for the operator's policy, agents and metrics) are loaded
  and built once while parsing (:mod:`.plugins`), so a missing module or a bad
  parameter fails before anything runs.
"""

from __future__ import annotations

import copy
import hashlib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
from attrs import validators as v

from ..dispute.local import BACKENDS, GAS_LIMIT, MAX_GAS_LIMIT, fastest_backend
from .adversary import OPERATOR_POLICIES, build_adversary
from .config import ScenarioError
from .latency import LatencyModel, latency_from_config
from .market import MarketModel, market_from_config

Ordering = Literal["fifo", "cancel_first", "seeded_random", "adversarial"]
Backend = Literal["py-evm", "revm"]
ORDERINGS: tuple[str, ...] = Ordering.__args__  # type: ignore[attr-defined]

_pos_int = [v.instance_of(int), v.gt(0)]
#: The least block gas limit a scenario may set: the court's deployment must fit a block.
MIN_BLOCK_GAS = 6_000_000
_table_of = v.instance_of(dict)
_nonneg_int = [v.instance_of(int), v.ge(0)]
_bool = v.instance_of(bool)


def _float(default: float | None = None, **bounds: float) -> Any:
    """A float field (TOML ints accepted) with ``gt``/``ge``/``le`` bounds; no default
    makes the key required."""
    checks = [v.instance_of(float)]
    checks += [getattr(v, name)(value) for name, value in bounds.items()]
    if default is None:
        return attrs.field(converter=_to_float, validator=checks)
    return attrs.field(default=default, converter=_to_float, validator=checks)


def _to_float(value: object) -> object:
    """Ints become floats; anything else (a string, a bool) stays and fails validation."""
    return float(value) if type(value) is int else value


@attrs.frozen(kw_only=True)
class RunSpec:
    """How long, from which seed, how many replicates.

    The market trades for ``horizon_s``; the court's business it set in motion (answers,
    defaults, proofs, claims vesting) then runs on for ``cooldown_s`` with the market
    closed, so that what the run's trading caused is counted.
    """

    horizon_s: float = _float(gt=0.0)
    cooldown_s: float = _float(0.0, ge=0.0)
    seed: int = attrs.field(default=20261123, validator=_nonneg_int)
    replicates: int = attrs.field(default=4, validator=_pos_int)


@attrs.frozen(kw_only=True)
class FeedSpec:
    """The mid-price is drawn on a grid every ``tick_ms``: the same path in every arm."""

    tick_ms: int = attrs.field(default=10, validator=_pos_int)


@attrs.frozen(kw_only=True)
class MakerSpec:
    """Market makers quoting a bid and an ask around the mid, requoting when it moves.

    Maker ``i`` quotes at mid ± (``half_spread`` + i·``spread_step``), on the ``tick``
    grid, ``size`` a side; it cancels and requotes both sides when the mid is
    ``requote_threshold`` or more from the centre of its quotes. Every order of the world
    expires ``order_lifetime_s`` after it is placed (the engine accepts no longer one; the
    court forces the cancel of a live order only).
    """

    count: int = attrs.field(default=4, validator=_pos_int)
    half_spread: float = _float(0.02, gt=0.0)
    spread_step: float = _float(0.01, ge=0.0)
    size: float = _float(1.0, gt=0.0)
    requote_threshold: float = _float(0.01, gt=0.0)
    tick: float = _float(0.01, gt=0.0)
    order_lifetime_s: int = attrs.field(default=3_600, validator=_pos_int)


@attrs.frozen(kw_only=True)
class TakerSpec:
    """Noise takers: Poisson arrivals, a fair coin for the side, hitting the best quote."""

    rate_per_s: float = _float(5.0, ge=0.0)
    size: float = _float(0.5, gt=0.0)


@attrs.frozen(kw_only=True)
class OperatorSpec:
    """The operator's policy and its affiliated sniper.

    ``policy`` is an engine policy (``delay_ms`` is the hold of ``delay``,
    ``conditional_delay`` and ``backdate``: a backdating operator holds, snipes, then
    signs ``receivedAtMs`` ``backdate_ms`` earlier; ``ignore_p`` is the share of cancels
    ``ignore`` drops), a strategy of :mod:`.adversary` (``patience``, ``floor``,
    ``unwatched``, ``split``) whose parameters are the ``[operator.params]`` table, or a
    plug-in ``module:Class``. The sniper (the operator's own taker) fills a held or
    ignored order that is more than ``snipe_edge`` in the money, at the end of a hold,
    or every ``snipe_every_ms`` while a cancel is ignored. ``answer_on_chain = false``
    lets forced cancels default.
    """

    policy: str = attrs.field(default="honest", validator=v.instance_of(str))
    params: dict[str, Any] = attrs.field(factory=dict, validator=_table_of, hash=False)
    delay_ms: int = attrs.field(default=0, validator=_nonneg_int)
    ignore_p: float = _float(0.0, ge=0.0, le=1.0)
    backdate_ms: int = attrs.field(default=0, validator=_nonneg_int)
    settlement_delay_ms: int = attrs.field(default=0, validator=_nonneg_int)
    snipe: bool = attrs.field(default=True, validator=_bool)
    snipe_edge: float = _float(0.0, ge=0.0)
    snipe_every_ms: int = attrs.field(default=100, validator=_pos_int)
    answer_on_chain: bool = attrs.field(default=True, validator=_bool)
    rate_limit: int = attrs.field(default=1_000_000, validator=_pos_int)


@attrs.frozen(kw_only=True)
class ClientSpec:
    """What the clients run: the real verifier and watchtower, and their limits.

    ``verify`` runs the verifier on every fill and note; ``dispute`` lets the watchtower
    take findings to court, for the first ``watchtower_share`` of the makers (rounded;
    the others only verify); ``force_after_ms`` is the verifier's cancel deadline (no
    note that long after sending: force the cancel on-chain); ``detect_ms`` is the τ of
    the detection metric (docs/simulation.md §7).
    """

    verify: bool = attrs.field(default=True, validator=_bool)
    dispute: bool = attrs.field(default=True, validator=_bool)
    watchtower_share: float = _float(1.0, ge=0.0, le=1.0)
    force_after_ms: int = attrs.field(default=30_000, validator=_pos_int)
    detect_ms: int = attrs.field(default=100, validator=_pos_int)


@attrs.frozen(kw_only=True)
class CourtSpec:
    """The court's constructor arguments (protocol §13), in real units; money in quote
    currency.

    ``answer_window_s`` is W; ``max_pending_ms`` the longest a note may declare a fill
    in flight (at most W); ``claim_delay_s`` how long a claims window takes claims and
    then waits before it vests; ``burn_share_bps`` the share of every take sent to the
    burn address (so a claim the operator files against itself costs it that share).
    """

    answer_window_s: int = attrs.field(default=120, validator=_pos_int)
    penalty: float = _float(50.0, ge=0.0)
    operator_bond: float = _float(10_000.0, gt=0.0)
    dispute_bond: float = _float(1.0, ge=0.0)
    halt_on_default: bool = attrs.field(default=False, validator=_bool)
    max_pending_ms: int = attrs.field(default=90_000, validator=_pos_int)
    claim_delay_s: int = attrs.field(default=60, validator=_pos_int)
    burn_share_bps: int = attrs.field(default=2_500, validator=[*_nonneg_int, v.le(10_000)])

    @max_pending_ms.validator
    def _within_window(self, attribute: attrs.Attribute, value: int) -> None:
        if value > self.answer_window_s * 1_000:
            raise ValueError(
                f"'max_pending_ms' ({value}) must be at most the answer window"
                f" ({self.answer_window_s} s): the court refuses a longer one"
            )


def _whole_ms(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value * 1_000 != round(value * 1_000) or value * 1_000 < 1:
        raise ValueError(f"'{attribute.name}' must be a whole number of milliseconds, got {value}")


@attrs.frozen(kw_only=True)
class ChainSpec:
    """The chain the court runs on: its EVM, its blocks and the price of gas.

    ``backend`` is the EVM (``revm`` by default when installed, ``py-evm`` the
    reference; a run's outputs are the same on both). A block comes every
    ``block_time_s`` of simulated time (a whole number of milliseconds: sub-second L2
    slots are fine; the EVM's timestamp is whole seconds, so such blocks share one) and
    holds at most ``gas_limit`` gas (the rest spills into the next block); the
    transactions waiting for a block are ordered by ``ordering``.
    """

    backend: Backend = attrs.field(factory=fastest_backend, validator=v.in_(BACKENDS))
    block_time_s: float = _float(2.0, gt=0.0)
    gas_limit: int = attrs.field(default=GAS_LIMIT, validator=v.instance_of(int))
    ordering: Ordering = attrs.field(default="fifo", validator=v.in_(ORDERINGS))
    gas_price_gwei: float = _float(1.0, ge=0.0)
    eth_price: float = _float(3_000.0, gt=0.0)

    @block_time_s.validator
    def _check_block_time(self, attribute: attrs.Attribute, value: float) -> None:
        _whole_ms(self, attribute, value)

    @gas_limit.validator
    def _check_gas_limit(self, attribute: attrs.Attribute, value: int) -> None:
        if not MIN_BLOCK_GAS <= value <= MAX_GAS_LIMIT:
            raise ValueError(
                f"'gas_limit' must be in [{MIN_BLOCK_GAS:,}, {MAX_GAS_LIMIT:,}] (a block must"
                f" hold the court's deployment, about 5.2 million gas), got {value:,}"
            )

    @property
    def block_time_ms(self) -> int:
        return round(self.block_time_s * 1_000)


@attrs.frozen(kw_only=True)
class HeadsSpec:
    """Journal heads (protocol §21, docs/simulation.md §17): the operator signs a head of
    its journal's log every ``interval_ms`` (0: no heads, no log); each client verifies
    every head and alarms when its cancel is not in the log ``cancel_heads`` heads after
    it was sent (the watchtower then forces it on-chain)."""

    interval_ms: int = attrs.field(default=0, validator=_nonneg_int)
    cancel_heads: int = attrs.field(default=10, validator=_pos_int)


@attrs.frozen(kw_only=True)
class MetricSpec:
    """Parameters of the metrics of docs/simulation.md §7."""

    asymmetry_horizon_s: float = _float(1.0, gt=0.0)
    carry_rate_per_year: float = _float(0.05, ge=0.0)
    plugins: list[str] = attrs.field(
        factory=list, validator=v.deep_iterable(v.instance_of(str), v.instance_of(list)), hash=False
    )


@attrs.frozen
class AgentSpec:
    """One ``[[agents]]`` entry: a plug-in ``class``, its unique ``name``, its keys."""

    cls: str
    name: str
    params: dict[str, Any] = attrs.field(factory=dict, hash=False)


_TABLES: dict[str, type] = {
    "run": RunSpec,
    "feed": FeedSpec,
    "makers": MakerSpec,
    "takers": TakerSpec,
    "operator": OperatorSpec,
    "client": ClientSpec,
    "court": CourtSpec,
    "chain": ChainSpec,
    "heads": HeadsSpec,
    "metrics": MetricSpec,
}
_REQUIRED = ("run", "market", "latency")
_LATENCY_LINKS = ("entry", "response")


@attrs.frozen
class Scenario:
    """A parsed scenario: every table as a frozen value, plus the document it came from."""

    run: RunSpec
    market: MarketModel
    feed: FeedSpec
    entry_latency: LatencyModel
    response_latency: LatencyModel
    makers: MakerSpec
    takers: TakerSpec
    operator: OperatorSpec
    client: ClientSpec
    court: CourtSpec
    chain: ChainSpec
    heads: HeadsSpec
    metrics: MetricSpec
    document: Mapping[str, Any] = attrs.field(eq=False, repr=False)
    agents: tuple[AgentSpec, ...] = ()
    base_dir: Path | None = attrs.field(default=None, eq=False, repr=False)

    def sha256(self) -> str:
        """The hash of the canonical document (overrides included): names the scenario."""
        return hashlib.sha256(canonical(self.document).encode()).hexdigest()


def canonical(document: Mapping[str, Any]) -> str:
    """A stable text of a document: sorted keys, ``repr`` of leaves (hashing, manifests)."""
    if isinstance(document, Mapping):
        inner = ",".join(f"{key!r}:{canonical(document[key])}" for key in sorted(document))
        return "{" + inner + "}"
    if isinstance(document, list):
        return "[" + ",".join(canonical(item) for item in document) + "]"
    return repr(document)


def _table(name: str, cls: type, raw: object) -> Any:
    """``cls`` from TOML table ``name``: unknown, missing and bad keys named."""
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"[{name}] must be a table")
    fields = {f.name: f for f in attrs.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ScenarioError(f"[{name}] unknown key {key!r}; known: {', '.join(fields)}")
    values = dict(raw)
    for key, field in fields.items():
        if key not in values and field.default is attrs.NOTHING:
            raise ScenarioError(f"[{name}] missing key {key!r}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:  # attrs names the key in its message
        raise ScenarioError(f"[{name}] {_reason(error)}") from error


def _reason(error: Exception) -> str:
    """attrs' validator messages are long tuples; keep their first line."""
    return str(error.args[0] if error.args else error).splitlines()[0]


def parse_scenario(document: Mapping[str, Any], base_dir: Path | None = None) -> Scenario:
    """The scenario a TOML document (already loaded) describes.

    Args:
        document: the parsed TOML.
        base_dir: where relative paths (an empirical latency CSV) are resolved.

    Raises:
        ScenarioError: naming the table and key at fault.
    """
    known = set(_TABLES) | set(_REQUIRED) | {"agents"}
    for name in document:
        if name not in known:
            raise ScenarioError(f"unknown table [{name}]; known: {', '.join(sorted(known))}")
    for name in _REQUIRED:
        if name not in document:
            raise ScenarioError(f"missing table [{name}]")
    latency = document["latency"]
    if not isinstance(latency, Mapping) or set(latency) != set(_LATENCY_LINKS):
        raise ScenarioError(
            "[latency] needs exactly the tables [latency.entry] and [latency.response]"
        )
    links = {link: _latency(link, latency[link], base_dir) for link in _LATENCY_LINKS}
    tables = {name: _table(name, cls, document.get(name, {})) for name, cls in _TABLES.items()}
    scenario = Scenario(
        market=market_from_config(document["market"]),
        entry_latency=links["entry"],
        response_latency=links["response"],
        document=copy.deepcopy(dict(document)),
        agents=_agents(document.get("agents", [])),
        base_dir=base_dir,
        **tables,
    )
    _check_plugins(scenario)
    return scenario


def _agents(raw: object) -> tuple[AgentSpec, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, Mapping) for item in raw):
        raise ScenarioError("[[agents]] must be an array of tables")
    specs = []
    for index, item in enumerate(raw):
        params = dict(item)
        cls, name = params.pop("class", None), params.pop("name", None)
        if not isinstance(cls, str) or not isinstance(name, str) or not name:
            raise ScenarioError(f"[[agents]] entry {index}: needs a class and a name (strings)")
        specs.append(AgentSpec(cls, name, params))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ScenarioError(f"[[agents]] names must be unique; got {names}")
    return tuple(specs)


def _check_plugins(scenario: Scenario) -> None:
    """Build every plug-in once, so a bad one fails at parse time."""
    from .agents import Agent
    from .metrics import metric_plugins
    from .plugins import load_class

    spec = scenario.operator
    if spec.policy not in OPERATOR_POLICIES and ":" not in spec.policy:
        known = ", ".join(OPERATOR_POLICIES)
        raise ScenarioError(f"[operator] policy {spec.policy!r}: one of {known}, or module:Class")
    build_adversary(spec, scenario.base_dir)
    for agent in scenario.agents:
        cls = load_class(agent.cls, Agent, scenario.base_dir, "[[agents]] class")
        try:
            cls(**agent.params)
        except (TypeError, ValueError) as error:
            raise ScenarioError(f"[[agents]] {agent.name}: {error}") from error
    metric_plugins(scenario)


def _latency(link: str, raw: object, base_dir: Path | None) -> LatencyModel:
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"[latency.{link}] must be a table")
    section = dict(raw)
    if section.get("model") == "empirical" and base_dir is not None and "path" in section:
        section["path"] = str(base_dir / section["path"])
    try:
        return latency_from_config(section)
    except ScenarioError as error:
        raise ScenarioError(f"[latency.{link}] {error}") from error


def load_scenario(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Scenario:
    """Read, override (dotted keys) and parse a scenario file.

    Raises:
        ScenarioError: the file is not TOML, or a table or key is wrong.
    """
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{path}: not valid TOML: {error}") from error
    return parse_scenario(apply_overrides(document, overrides or {}), path.parent)


def apply_overrides(document: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``document`` with ``{"operator.delay_ms": 500, ...}`` set.

    Raises:
        ScenarioError: a key does not name a value inside a table.
    """
    result = copy.deepcopy(dict(document))
    for dotted, value in overrides.items():
        *tables, key = dotted.split(".")
        if not tables or not key:
            raise ScenarioError(f"override {dotted!r}: expected table.key")
        node = result
        for table in tables:
            node = node.setdefault(table, {})
            if not isinstance(node, dict):
                raise ScenarioError(f"override {dotted!r}: {table!r} is not a table")
        node[key] = value
    return result


def parse_value(text: str) -> Any:
    """A command-line value as TOML reads it (``500``, ``0.5``, ``true``, ``"fifo"``);
    a bare word that is not TOML is taken as a string (``fifo``)."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text
