"""Signature recovery in worker processes, ahead of the operator's single engine task.

Recovering a request's signer is the largest cost of a cancel that does not depend on
the engine's state, and the engine runs on one core: :class:`Verifier` keeps
``workers`` processes (:mod:`.verify_worker`) that recover signers for the server, a
batch at a time, while the engine works on the requests verified before. The server
computes each request's signed digests itself and sends only ``(digest, signature)``
pairs; a worker answers with the recovered addresses, and the engine compares them with
the senders (:class:`~.engine.Verified`): a worker can make a request fail, never pass
one that the engine would refuse.

A worker that dies, hangs past ``timeout_s`` or answers out of turn is killed and
replaced, and its batch sent again; a batch that fails twice is answered ``None``, and
the engine then recovers those signatures itself. So a worker's failure costs time,
never a request.
"""

from __future__ import annotations

import logging

import msgspec
import trio

from .child import Child, ChildFailed

LOGGER = logging.getLogger("cancelnote.operator.verifier")

#: Sends of one batch before its signatures are left to the engine.
ATTEMPTS = 2

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(tuple[int, list[tuple[bytes, str]]]).decode


class WorkerFailed(ChildFailed):
    """A worker exited, or answered something other than the batch it was sent."""


class _Worker(Child):
    """One worker process."""

    @classmethod
    async def start(cls) -> _Worker:
        return cls(await cls.spawn("cancelnote.operator.verify_worker"))

    async def call(self, batch: int, pairs: list[tuple[bytes, bytes]]) -> list[bytes | str]:
        await self.send(_encode((batch, pairs)))
        try:
            answered, results = _decode(await self.receive())
        except msgspec.DecodeError as exc:
            raise WorkerFailed(f"unreadable answer: {exc}") from None
        if answered != batch or len(results) != len(pairs):
            raise WorkerFailed(f"answered batch {answered} ({len(results)}) for {batch}")
        signers: list[bytes | str] = []
        for signer, error in results:
            if not ((len(signer) == 20 and not error) or (not signer and error)):
                raise WorkerFailed(f"an answer that is neither a signer nor an error: {signer!r}")
            signers.append(signer if signer else error)
        return signers


class Verifier:
    """``workers`` verifier processes, one lane each (a lane has one batch out at a time).

    Args:
        workers: how many processes (0: none; the engine recovers every signature).
        timeout_s: the longest a batch may take before its worker counts as hung.
    """

    def __init__(self, workers: int, timeout_s: float = 5.0) -> None:
        self._workers: list[_Worker | None] = [None] * workers
        self._timeout_s = timeout_s
        self._batches = 0
        self.restarts = 0

    @property
    def lanes(self) -> int:
        return len(self._workers)

    @property
    def pids(self) -> list[int | None]:
        """Each lane's worker process id (``None`` while it has none)."""
        return [w.process.pid if w is not None else None for w in self._workers]

    async def start(self) -> None:
        """Start every worker; a lane whose worker cannot start starts it on first use."""
        for lane in range(self.lanes):
            await self._worker(lane)
        LOGGER.info("verify_workers_started", extra={"fields": {"pids": self.pids}})

    async def verify(self, lane: int, pairs: list[tuple[bytes, bytes]]) -> list[bytes | str] | None:
        """The signer of each ``(digest, signature)`` (or why none), from ``lane``'s
        worker; ``None`` if workers failed it :data:`ATTEMPTS` times (see the module)."""
        self._batches += 1
        batch = self._batches
        for _ in range(ATTEMPTS):
            worker = await self._worker(lane)
            if worker is None:
                return None
            try:
                with trio.fail_after(self._timeout_s):
                    return await worker.call(batch, pairs)
            except (
                ChildFailed,
                trio.TooSlowError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                OSError,
            ) as exc:
                await self._replace(lane, worker, exc)
        return None

    async def _worker(self, lane: int) -> _Worker | None:
        worker = self._workers[lane]
        if worker is None:
            try:
                worker = self._workers[lane] = await _Worker.start()
            except OSError as exc:  # out of processes or memory: the engine verifies
                LOGGER.warning(
                    "verify_worker_unavailable",
                    extra={"fields": {"lane": lane, "error": repr(exc)}},
                )
        return worker

    async def _replace(self, lane: int, worker: _Worker, error: BaseException) -> None:
        """Kill a failed worker; the lane starts another when it is next used."""
        self._workers[lane] = None
        self.restarts += 1
        await worker.stop()
        LOGGER.warning(
            "verify_worker_restarted",
            extra={
                "fields": {
                    "lane": lane,
                    "pid": worker.process.pid,
                    "returncode": worker.process.returncode,
                    "error": f"{type(error).__name__}: {error}",
                }
            },
        )

    async def aclose(self) -> None:
        """Stop every worker (each exits as its input closes)."""
        workers, self._workers = self._workers, [None] * self.lanes
        for worker in workers:
            if worker is not None:
                await worker.stop()
