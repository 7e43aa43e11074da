"""The operator's limits: every resource a client can make it spend has one (DESIGN §8).

Kept apart from the server so that the command line can show the defaults without
importing the server. docs/operations.md §9 explains each; protocol.md §15.5 lists the
error and close codes a client sees when it reaches one.
"""

from __future__ import annotations

import attrs

#: Open orders one subaccount may rest in one product (Vertex's limit), and in total over
#: every sender: each resting order costs memory and time in every book operation.
MAX_OPEN_ORDERS_PER_PRODUCT = 500
MAX_OPEN_ORDERS = 20_000


@attrs.frozen
class ServerConfig:
    """Limits of one server; the defaults suit a single operator process (operations §9)."""

    #: Largest request parsed, in characters (a 1,024-digest cancel is ~75,000).
    max_message_chars: int = 256 * 1024
    #: Characters queued for one client before it counts as not reading and is closed.
    max_send_bytes: int = 4 * 1024 * 1024
    #: Characters buffered over all connections, in and out, before back-pressure.
    max_buffered_bytes: int = 256 * 1024 * 1024
    handshake_timeout_s: float = 5.0
    #: Nothing received for this long closes the connection (pinged at half of it).
    idle_timeout_s: float = 60.0
    #: A message begun must be complete within this.
    message_timeout_s: float = 10.0
    #: One socket write blocked this long closes the connection.
    write_timeout_s: float = 10.0
    max_connections: int = 512
    max_connections_per_address: int = 64
    max_subscriptions: int = 64
    #: Subscriptions of one connection whose replay is still streaming.
    max_replays: int = 4
    #: Replayed messages per second per address (the burst is one second's worth).
    replay_rate: float = 5_000.0
    #: Queries (and subscribes) per second, per connection and per address; burst 2 s.
    query_rate: float = 50.0
    query_rate_per_address: float = 200.0
    #: Executes the engine rejected, per second, per connection and per address; burst 5 s.
    reject_rate: float = 10.0
    reject_rate_per_address: float = 40.0
    #: Execute weight per second per address (Vertex's 2,400 a minute per IP); burst 10 s.
    execute_rate_per_address: float = 40.0
    #: Requests read and not yet handled by the engine, in all and per connection; past
    #: either, readers stop reading (TCP pushes back).
    inbox_size: int = 4096
    max_pending: int = 64
    #: Most requests one engine step handles (an honest cancel waits for one step at most
    #: once it is verified; the intake's turns bound how many are ahead of it there).
    max_batch: int = 32
    #: Verifier worker processes that recover signatures ahead of the engine (0: the
    #: engine recovers them), requests a lane sends a worker at once, and how long a
    #: batch may take before its worker counts as hung and is replaced.
    verify_workers: int = 1
    verify_batch: int = 32
    verify_timeout_s: float = 5.0
    #: 1: the journal's commits run in a process of their own (:mod:`.journal_process`);
    #: 0: in a thread of the operator's.
    journal_process: int = attrs.field(default=1, validator=attrs.validators.in_((0, 1)))
    tick_s: float = 0.02
    shutdown_timeout_s: float = 1.0


#: ``(flag, field of ServerConfig, type, help)`` of ``cancelnote operator run``.
SERVER_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--max-connections", "max_connections", int, "open connections in total"),
    ("--max-connections-per-address", "max_connections_per_address", int, "from one address"),
    ("--handshake-timeout-s", "handshake_timeout_s", float, "to finish the WebSocket upgrade"),
    ("--idle-timeout-s", "idle_timeout_s", float, "silence before a close (pinged at half)"),
    ("--message-timeout-s", "message_timeout_s", float, "to finish a begun message"),
    ("--write-timeout-s", "write_timeout_s", float, "one blocked socket write"),
    ("--max-message-chars", "max_message_chars", int, "largest request"),
    ("--max-send-bytes", "max_send_bytes", int, "queued for one client"),
    ("--max-buffered-bytes", "max_buffered_bytes", int, "buffered over all connections"),
    ("--max-subscriptions", "max_subscriptions", int, "senders streamed on one connection"),
    ("--max-replays", "max_replays", int, "replays streaming on one connection"),
    ("--replay-rate", "replay_rate", float, "replayed messages per second per address"),
    ("--query-rate", "query_rate", float, "queries per second per connection"),
    ("--query-rate-per-address", "query_rate_per_address", float, "per address"),
    ("--reject-rate", "reject_rate", float, "rejected executes per second per connection"),
    ("--reject-rate-per-address", "reject_rate_per_address", float, "per address"),
    ("--execute-rate-per-address", "execute_rate_per_address", float, "weight/s per address"),
    ("--shutdown-timeout-s", "shutdown_timeout_s", float, "to flush clients after SIGTERM"),
    ("--verify-workers", "verify_workers", int, "signature recovery processes (0: none)"),
    ("--journal-process", "journal_process", int, "commits in a process (1) or a thread (0)"),
)
