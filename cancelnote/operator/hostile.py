"""Hostile clients of the operator API, for the tests and ``benchmarks/bench_hostile.py``.

Each attack is what one finding of the hardening issue (#10) did to a real operator:
:data:`ATTACKS` maps a name to a coroutine ``attack(target, stop)`` that keeps attacking
``target`` until ``stop`` is set and never raises because the operator closed on it
(that is the operator defending itself). Attackers connect from their own loopback
source addresses (``127.0.0.2`` and up: all of ``127.0.0.0/8`` is loopback on Linux), so
per-address limits apply to them and not to an honest client on ``127.0.0.1``.

:class:`RawClient` speaks WebSocket with wsproto directly, so it can do what no polite
client library does: fragment a message and never finish it, stop reading, close right
after the upgrade.
"""

from __future__ import annotations

import collections
import contextlib
import json
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Request, TextMessage

from cancelnote.api import request_to_wire
from cancelnote.crypto import Signer, keccak
from cancelnote.messages import Domain

from .clock import wall_clock_ms
from .testing import Trader

#: What a closed or refused connection raises at an attacker: the operator defending itself.
DROPPED = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, EOFError)
PRICE = 100 * 10**18
SIZE = 10**18


@attrs.frozen
class Target:
    """Where and whom to attack: the port, the domain (to sign), the attacker's address."""

    port: int
    domain: Domain
    source: str = "127.0.0.2"


async def open_tcp(port: int, source: str, receive_buffer: int = 0) -> trio.SocketStream:
    """A TCP stream to ``127.0.0.1:port`` from ``source`` (a loopback address)."""
    sock = trio.socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    try:
        await sock.bind((source, 0))
        await sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


def upgrade_request(port: int) -> bytes:
    """A valid WebSocket upgrade request, as bytes."""
    return WSConnection(ConnectionType.CLIENT).send(Request(host=f"127.0.0.1:{port}", target="/"))


class RawClient:
    """A WebSocket client on wsproto: sends exactly what it is told, reads only when asked."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._parts: list[str] = []
        self._texts: collections.deque[str] = collections.deque()
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, port: int, source: str, receive_buffer: int = 0) -> RawClient:
        client = cls(await open_tcp(port, source, receive_buffer))
        try:
            await client.stream.send_all(
                client.ws.send(Request(host=f"127.0.0.1:{port}", target="/"))
            )
            while True:
                data = await client.stream.receive_some(65536)
                if not data:
                    raise EOFError("refused")
                client.ws.receive_data(data)
                if any(isinstance(event, AcceptConnection) for event in client.ws.events()):
                    return client
        except BaseException:
            await trio.aclose_forcefully(client.stream)
            raise

    async def send(self, text: str, finished: bool = True) -> None:
        await self.stream.send_all(self.ws.send(Message(data=text, message_finished=finished)))

    async def receive(self) -> list[Any]:
        """The next events (messages, close) the server sent."""
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("closed")
        self.ws.receive_data(data)
        return list(self.ws.events())

    async def text(self) -> str:
        """The next whole text message (frames arrive in pieces).

        Raises:
            EOFError: the server closed (its code is then :attr:`close_code`).
        """
        while not self._texts:
            for event in await self.receive():
                if isinstance(event, TextMessage):
                    self._parts.append(event.data)
                    if event.message_finished:
                        self._texts.append("".join(self._parts))
                        self._parts = []
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                    raise EOFError(f"closed with {event.code}")
        return self._texts.popleft()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def _keep_trying(stop: trio.Event, once: Callable[[], Awaitable[None]]) -> None:
    """Run ``once`` again and again until ``stop``; a connection the operator drops or
    refuses is the defence working, so the attacker just starts over."""
    while not stop.is_set():
        dropped = False
        try:
            await once()
        except* DROPPED:
            dropped = True
        if dropped:
            await trio.sleep(0.1)


async def _until(stop: trio.Event, clients: list[RawClient]) -> None:
    await stop.wait()
    for client in clients:
        await client.aclose()


# ---------------------------------------------------------------------------------------
# The attacks.


async def slow_readers(target: Target, stop: trio.Event, connections: int = 12) -> None:
    """Connections that ask for the deep book again and again and never read an answer."""
    book = json.dumps({"book": {"product_id": 1}})

    async def one() -> None:
        async def flood() -> None:
            client = await RawClient.connect(target.port, target.source, receive_buffer=4096)
            try:
                for _ in range(4000):
                    await client.send(book)
                await stop.wait()
            finally:
                await client.aclose()

        await _keep_trying(stop, flood)

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one)


async def unfinished_fragments(
    target: Target, stop: trio.Event, connections: int = 50, size: int = 200_000
) -> None:
    """Connections each holding a fragmented message they never finish."""

    async def one() -> None:
        async def hold() -> None:
            client = await RawClient.connect(target.port, target.source)
            try:
                await client.send('{"book": {"product_id": 1}, "pad": "', finished=False)
                sent = 0
                while sent < size and not stop.is_set():
                    await client.send("x" * 10_000, finished=False)
                    sent += 10_000
                while not stop.is_set():  # never finished; wait for the operator to give up
                    if not await client.receive():
                        break
            finally:
                await client.aclose()

        await _keep_trying(stop, hold)

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one)


async def get_flood(target: Target, stop: trio.Event, parallel: int = 8) -> None:
    """Plain HTTP GETs (no upgrade), as fast as they are answered."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    async def one() -> None:
        async def get() -> None:
            stream = await open_tcp(target.port, target.source)
            try:
                await stream.send_all(request)
                while await stream.receive_some(65536):
                    pass
            finally:
                await trio.aclose_forcefully(stream)

        await _keep_trying(stop, get)

    async with trio.open_nursery() as nursery:
        for _ in range(parallel):
            nursery.start_soon(one)


async def connection_flood(target: Target, stop: trio.Event, connections: int = 1100) -> None:
    """Idle TCP connections that never send a byte, reopened as soon as they are closed."""

    async def one() -> None:
        async def idle() -> None:
            stream = await open_tcp(target.port, target.source)
            try:
                while await stream.receive_some(65536):
                    pass
            finally:
                await trio.aclose_forcefully(stream)

        await _keep_trying(stop, idle)

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one)


def _senders(count: int) -> list[str]:
    return ["0x" + keccak(b"sender %d" % n).hex() for n in range(count)]


async def subscription_flood(target: Target, stop: trio.Event, connections: int = 4) -> None:
    """Subscribe to ever more senders on each connection, as fast as possible."""
    senders = _senders(100_000)

    async def one() -> None:
        async def flood() -> None:
            client = await RawClient.connect(target.port, target.source)
            try:
                for sender in senders:
                    if stop.is_set():
                        return
                    await client.send(
                        json.dumps({"subscribe": {"sender": sender, "after_seq": "0"}})
                    )
                    await client.receive()
            finally:
                await client.aclose()

        await _keep_trying(stop, flood)

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one)


async def replay_loop(
    target: Target, stop: trio.Event, sender: bytes, connections: int = 4
) -> None:
    """Re-subscribe to one busy sender from seq 0 again and again, reading everything."""
    subscribe = json.dumps({"subscribe": {"sender": "0x" + sender.hex(), "after_seq": "0"}})

    async def one() -> None:
        async def loop() -> None:
            client = await RawClient.connect(target.port, target.source)
            try:
                while not stop.is_set():
                    await client.send(subscribe)
                    await client.receive()
            finally:
                await client.aclose()

        await _keep_trying(stop, loop)

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one)


async def bad_signature_flood(target: Target, stop: trio.Event, connections: int = 4) -> None:
    """Well-formed cancels whose signatures are valid but by another key, nonstop."""
    me, other = _trader(target.domain, b"flood"), _trader(target.domain, b"other")

    async def one() -> None:
        async def flood() -> None:
            client = await RawClient.connect(target.port, target.source)
            reader = trio.CancelScope()

            async def drain() -> None:
                with reader:
                    while True:
                        await client.receive()

            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(drain)
                    while not stop.is_set():
                        cancel = me.cancel([(bytes(32), 1)], wall_clock_ms())
                        forged = other.cancel([(bytes(32), 1)], wall_clock_ms())
                        wire = request_to_wire(cancel)
                        wire["cancel_orders"]["signature"] = "0x" + forged.signature.hex()
                        await client.send(json.dumps(wire))
                    reader.cancel()
            finally:
                await client.aclose()

        await _keep_trying(stop, flood)

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one)


async def book_flood(target: Target, stop: trio.Event, connections: int = 12) -> None:
    """Book queries as fast as the answers come back (reading them: a greedy reader)."""
    book = json.dumps({"book": {"product_id": 1}})

    async def one() -> None:
        async def flood() -> None:
            client = await RawClient.connect(target.port, target.source)
            try:
                while not stop.is_set():
                    await client.send(book)
                    await client.receive()
            finally:
                await client.aclose()

        await _keep_trying(stop, flood)

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one)


async def many_wallets(
    target: Target, stop: trio.Event, wallets: int = 64, addresses: int = 16
) -> None:
    """Many wallets each resting as many orders as their own limits allow (far from the
    market: they never trade), one connection each, from ``addresses`` addresses (each
    under its own address's limits): enough to fill the operator's global cap."""
    base, _, last = target.source.rpartition(".")

    async def one(n: int) -> None:
        me = _trader(target.domain, b"wallet %d" % n)
        rng = random.Random(n)
        source = f"{base}.{int(last) + n % addresses}"

        async def place() -> None:
            client = await RawClient.connect(target.port, source)
            try:
                while not stop.is_set():
                    price = PRICE // 2 - rng.randrange(10**6) * 10**12
                    await client.send(
                        json.dumps(request_to_wire(me.order(2, price, SIZE, wall_clock_ms())))
                    )
                    await client.receive()
            finally:
                await client.aclose()

        await _keep_trying(stop, place)

    async with trio.open_nursery() as nursery:
        for n in range(wallets):
            nursery.start_soon(one, n)


def _trader(domain: Domain, seed: bytes) -> Trader:
    return Trader(Signer(keccak(b"hostile " + seed)), domain)


#: The attacks of ``bench_hostile``, by name (``replay_loop`` takes the sender to replay).
ATTACKS: dict[str, Callable[..., Awaitable[None]]] = {
    "slow_readers": slow_readers,
    "unfinished_fragments": unfinished_fragments,
    "get_flood": get_flood,
    "connection_flood": connection_flood,
    "subscription_flood": subscription_flood,
    "replay_loop": replay_loop,
    "bad_signature_flood": bad_signature_flood,
    "book_flood": book_flood,
    "many_wallets": many_wallets,
}


async def upgrade_then_close(port: int, source: str, count: int, reset: bool) -> None:
    """Open TCP, send a valid upgrade request and close at once (FIN, or RST if ``reset``)."""
    request = upgrade_request(port)
    for _ in range(count):
        with contextlib.suppress(*DROPPED):
            stream = await open_tcp(port, source)
            try:
                if reset:  # SO_LINGER 0: close() sends RST
                    linger = b"\x01\0\0\0\0\0\0\0"
                    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                await stream.send_all(request)
            finally:  # also when the operator dropped it first (a refusal, a reset)
                stream.socket.close()
