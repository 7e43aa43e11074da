"""Where the simulated operator's engine lets finished orders go: a file, not memory.

The real engine keeps every order it accepted in memory; an hour of a hundred makers is
some 620,000 orders, about 1.2 KB each. The world retires an order once nothing more can
happen to it (:meth:`~cancelnote.operator.engine.Engine.retire`: filled, cancelled or
expired, off the book, past its nonce's ``recv_time``), and :class:`DiskArchive` keeps
the record, pickled, in a temporary SQLite file; the engine brings it back unchanged the
first time anything refers to the order again, so every answer stays the same. (A real
operator's archive would be its journal, which already holds every entry of the order.)
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import tempfile
from typing import Any


class DiskArchive:
    """Retired order records by digest, in a temporary file that is unlinked at once (it
    lives as long as the archive does, whoever reads the engine after a run)."""

    def __init__(self) -> None:
        descriptor, path = tempfile.mkstemp(prefix="cancelnote-archive-", suffix=".db")
        os.close(descriptor)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=OFF")  # one file, no journal beside it
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.execute("PRAGMA cache_size=-256")
        self._conn.execute("CREATE TABLE records (digest BLOB PRIMARY KEY, record BLOB)")
        os.unlink(path)
        self._pending: list[tuple[bytes, bytes]] = []
        self.retired = 0

    def put(self, digest: bytes, record: Any) -> None:
        self._pending.append((digest, pickle.dumps(record, pickle.HIGHEST_PROTOCOL)))
        self.retired += 1
        if len(self._pending) >= 1_024:
            self._flush()

    def pop(self, digest: bytes) -> Any | None:
        self._flush()
        row = self._conn.execute(
            "DELETE FROM records WHERE digest = ? RETURNING record", (digest,)
        ).fetchone()
        return None if row is None else pickle.loads(row[0])

    def _flush(self) -> None:
        if self._pending:
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.executemany("INSERT INTO records VALUES (?, ?)", self._pending)
            self._pending.clear()

    def close(self) -> None:
        self._conn.close()
