"""What a node must run for the court, and whether an address holds this court.

The court ships one build per EVM version (``contracts/build.py``): the reference needs
Cancun's opcodes (MCOPY, transient storage), an older build runs on Shanghai nodes (PUSH0)
such as ganache. A node that lacks an opcode still deploys the court and answers its views,
and fails at the first write with "invalid opcode"; so nothing here trusts a node's name
or version string. A **probe** asks the node itself: an ``eth_call`` without ``to`` runs
a few bytes of initcode that use the fork's opcodes and return the word 1; any other
answer means the node does not run them.

* :func:`court_artifact` picks, for a deployment, the newest build the node runs.
* :func:`check_court` refuses an address that is not this version's court (no code, code
  of no shipped build, another domain separator) or that the node cannot run, each in one
  line naming what is wrong.
"""

from __future__ import annotations

import attrs

from ..contracts import Artifact, load_builds
from ..crypto import keccak, to_checksum
from ..errors import CancelnoteError
from ..messages import DOMAIN_VERSION, Domain
from .chain import Chain, ChainError, TransactionReverted
from .jsonrpc import ChainUnreachable


class NodeMismatch(CancelnoteError):
    """Raised when a node cannot run the court, or an address does not hold this court."""

    code = "NODE_MISMATCH"


@attrs.frozen
class Requirement:
    """The fork a build's opcodes come from, and the initcode that checks a node runs them."""

    hardfork: str
    opcodes: str
    probe: bytes


#: Returns the word 1 if TSTORE, TLOAD and MCOPY work: tstore(0, 1); mstore(0, tload(0));
#: mcopy(32, 0, 32); return(32, 32).
CANCUN_PROBE = bytes.fromhex("600160005d60005c6000526020600060205e60206020f3")
#: Returns the word 1 if PUSH0 works: mstore(push0, 1); return(push0, 32).
SHANGHAI_PROBE = bytes.fromhex("60015f5260205ff3")
CANCUN = Requirement("Cancun", "MCOPY and transient storage", CANCUN_PROBE)
#: By the EVM version a build was compiled for. Vyper emits no opcode newer than Cancun's
#: for Prague; versions before Shanghai need nothing a node could lack.
REQUIREMENTS = {
    "prague": CANCUN,
    "cancun": CANCUN,
    "shanghai": Requirement("Shanghai", "PUSH0", SHANGHAI_PROBE),
}
ONE = (1).to_bytes(32, "big")
DOMAIN_SEPARATOR_CALL = keccak(b"DOMAIN_SEPARATOR()")[:4]


def runs(chain: Chain, build: Artifact) -> bool:
    """Whether the node runs every opcode ``build`` may execute (a probe call).

    Raises:
        ChainUnreachable: the node cannot be asked (an unreachable node is not an old one).
    """
    requirement = REQUIREMENTS.get(build.evm_version)
    if requirement is None:
        return True
    try:
        return chain.call(None, requirement.probe) == ONE  # type: ignore[arg-type]
    except ChainUnreachable:
        raise
    except (ChainError, TransactionReverted):  # "invalid opcode", in each node's words
        return False


def court_artifact(chain: Chain, name: str) -> Artifact:
    """The newest shipped build of contract ``name`` that the node runs.

    Raises:
        NodeMismatch: the node runs none of them, naming the fork the oldest needs.
    """
    builds = load_builds(name)
    for build in builds:
        if runs(chain, build):
            return build
    needed = REQUIREMENTS[builds[-1].evm_version]
    raise NodeMismatch(
        f"the node of chain {chain.chain_id} does not run {needed.opcodes}: the court needs a"
        f" {needed.hardfork} node at least ({CANCUN.hardfork} for its reference build)"
    )


def check_court(chain: Chain, address: bytes, name: str) -> Artifact:
    """The build of contract ``name`` deployed at ``address``, checked to be this version's
    court in the domain ``(chain id, address)`` and to run on this node.

    Raises:
        NodeMismatch: in one line, what is wrong.
        ChainError: the node cannot be asked.
    """
    where = f"{to_checksum(address)} on chain {chain.chain_id}"
    code = chain.code(address)
    if not code:
        raise NodeMismatch(f"no contract at {where}: check the court's address and the chain")
    build = next((b for b in load_builds(name) if code.startswith(b.bytecode_runtime)), None)
    if build is None:
        raise NodeMismatch(
            f"the contract at {where} is not a cancelnote court of protocol version"
            f" {DOMAIN_VERSION} (its code is none of this release's builds)"
        )
    if chain.call(address, DOMAIN_SEPARATOR_CALL) != Domain(chain.chain_id, address).separator:
        raise NodeMismatch(
            f"the court at {where} does not sign in this release's EIP-712 domain"
            f" (cancelnote version {DOMAIN_VERSION}, chain {chain.chain_id}, its own address)"
        )
    if not runs(chain, build):
        needed = REQUIREMENTS[build.evm_version]
        raise NodeMismatch(
            f"the court at {where} needs a {needed.hardfork} node ({needed.opcodes}); this"
            f" node does not run them, so every write would fail with 'invalid opcode'"
        )
    return build
