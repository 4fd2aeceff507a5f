"""Vectors in PostgreSQL with pgvector, behind the :class:`~rag.vector_store.VectorStore` seam.

The only module that imports ``psycopg`` (the ``postgres`` extra). Everything else of the index
stays in its folder: records, BM25, the manifest, and the list of the store's ids in index order
(``<name>.ids.json``, so that loading checks the records against it without a query).

**Tables.** One table per store and build, ``rag_<index key>_<build token>_<store>`` with
``id text primary key, embedding vector(dim)``, and an HNSW index over cosine distance
(``vector_cosine_ops``) created after the first bulk load (a graph built over loaded rows costs a
fraction of one grown row by row). The index key is a hash of the machine's name and the index
folder's path, so two indexes sharing a database never meet. A new build writes new tables and
never touches the ones the current build answers from: a build that fails leaves the previous
index answering, its tables untouched; the next build drops what the failed one left. The
tables of a replaced build are dropped by the build after (``rag.stores.drop_stale``), so that a
chat that has not yet switched finishes its questions. Reused vectors are copied into the new
tables (the same cost as the FAISS store, which is rebuilt whole at every build too).

**Shards.** With several shard URLs, a row lives on shard ``blake2b(id) mod shards`` (a stable
hash, not Python's salted ``hash``). A search asks every shard, in parallel, for its own
``ORDER BY embedding <=> q LIMIT k`` (each using its own HNSW index) and merges the answers: a
query through a partitioned table or ``postgres_fdw`` would not push the ``LIMIT`` down and would
sort every row. Changing the shards is a new build whose rows are placed again (vectors are
copied, not embedded again); nothing rebalances a running index by itself.

**Replicas.** Reads (``search``, ``get``) go to a shard's replica when it has one and it answers,
else to its primary; a replica that fails is left alone for :data:`REPLICA_COOLDOWN` seconds.
Each connection that breaks (a server restart) is opened again once before a read gives up. A
build waits for the replicas to replay its rows before it becomes current. Writes go to the
primaries only; promoting a replica when a primary dies is not done here.

**Exact search** (``search=exact`` in the URL): the HNSW index is not used
(``enable_indexscan = off``), every row is compared: what the tests compare with FAISS's exact
search.

Scores are ``1 - cosine distance``: the inner product of normalised vectors, as FAISS gives.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import psycopg
from psycopg import sql

from .errors import IndexStoreError
from .stores import PG_KIND, Shard, StoreLocation

log = logging.getLogger(__name__)

#: HNSW graph degree and build candidates. Measured on 100,000 e5-shaped vectors (recall@10
#: against exact search at ef_search 100 / 200 / 400; benchmarks/RESULTS.md "pgvector"):
#: pgvector's default m 16 found 0.67 / 0.81 / 0.91; m 24 with 100 build candidates 0.77 / 0.90 /
#: 0.96; m 32 with 64 candidates 0.83 / 0.93 / 0.98, for twice m 16's build time (the same degree
#: as the FAISS graph, 0.94 at its ef 512).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 64
#: Rows sent per COPY statement: large enough that a round trip is nothing, small enough that a
#: failure costs little to retry by hand and the client never holds a huge buffer.
COPY_BATCH = 5_000
#: Seconds a connection attempt waits for a server (unless the URL sets ``connect_timeout``).
CONNECT_TIMEOUT = 5
#: Seconds a build waits for replicas to replay its rows before it becomes current anyway (with a
#: warning: questions then read from the primary until the replica has the tables).
REPLICA_WAIT = 60.0
#: Seconds a replica that failed is not asked again (its primary answers meanwhile).
REPLICA_COOLDOWN = 10.0
#: ``maintenance_work_mem`` for building an HNSW index: the graph is built in memory when it fits.
BUILD_MEMORY = "512MB"

T = TypeVar("T")
#: The search settings each open connection has (see ``PgVectorStore.search``).
_SEARCH_SETTINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class StoreUnreachableError(IndexStoreError):
    """A vector store server does not answer (one line: which server, why, what to do)."""


class StoreFailedError(IndexStoreError):
    """A vector store server answered with an error (privileges, a missing extension...)."""


class TableMissingError(StoreFailedError):
    """The store's table is not on a server (dropped by hand, or by a later build while an old
    chat still answered from it)."""


def shard_of(id_: str, shards: int) -> int:
    """The shard that holds ``id_``: 64 bits of BLAKE2b, modulo the number of shards; the same in
    every process and on every machine."""
    digest = hashlib.blake2b(id_.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def table_prefix(index_dir: Path) -> str:
    """``rag_<key>_``: the start of every table of one index folder on one machine."""
    where = f"{socket.gethostname()}:{Path(index_dir).resolve()}"
    return f"rag_{hashlib.sha256(where.encode('utf-8')).hexdigest()[:10]}_"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].strip() if text else exc.__class__.__name__


def _unreachable(shard: Shard, exc: BaseException) -> StoreUnreachableError:
    return StoreUnreachableError(
        f"cannot reach the vector store {shard.name} ({_first_line(exc)}); start the server or "
        "give its address with --store; the index in use is unchanged")


def _failed(shard: Shard, exc: BaseException) -> StoreFailedError:
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return TableMissingError(f"the vector store {shard.name} has lost this index's table "
                                 f"({_first_line(exc)}); run `rag index` to write it again")
    return StoreFailedError(f"the vector store {shard.name} refused: {_first_line(exc)}")


class _Link:
    """One connection to one server, opened on first use and opened again once when it breaks
    (a server restart): the caller sees an error only when the server is still away."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        #: ``time.monotonic()`` before which this server is not asked (replicas only).
        self.down_until = 0.0

    def _open(self) -> psycopg.Connection:
        options = {} if "connect_timeout" in self.url else {"connect_timeout": CONNECT_TIMEOUT}
        return psycopg.connect(self.url, autocommit=True, application_name="rag", **options)

    def run(self, work: Callable[[psycopg.Connection], T], retry: bool = True) -> T:
        """``work(connection)``; on a broken connection, once more on a new one (``retry``)."""
        with self._lock:
            for attempt in (0, 1):
                try:
                    if self._conn is None or self._conn.closed or self._conn.broken:
                        self._close()
                        self._conn = self._open()
                    return work(self._conn)
                except psycopg.OperationalError:
                    self._close()
                    if attempt or not retry:
                        raise
            raise AssertionError("unreachable")

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()


class _ShardLinks:
    """The connections of one shard: writes to the primary, reads to a replica first."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.primary = _Link(shard.primary)
        self.replicas = [_Link(url) for url in shard.replicas]

    def write(self, work: Callable[[psycopg.Connection], T], retry: bool = False) -> T:
        try:
            return self.primary.run(work, retry=retry)
        except psycopg.OperationalError as exc:
            raise _unreachable(self.shard, exc) from None
        except psycopg.Error as exc:
            raise _failed(self.shard, exc) from None

    def read(self, work: Callable[[psycopg.Connection], T]) -> T:
        """``work`` on a replica, else on the primary, else on a replica that failed lately."""
        now = time.monotonic()
        resting = [r for r in self.replicas if now < r.down_until]
        for replica in self.replicas:
            if replica in resting:
                continue
            try:
                return replica.run(work)
            except psycopg.Error as exc:  # away, restarting, or behind (a table not replayed)
                replica.down_until = time.monotonic() + REPLICA_COOLDOWN
                log.info("replica of %s failed (%s); reading from the primary", self.shard.name,
                         _first_line(exc))
        try:
            return self.write(work, retry=True)
        except StoreUnreachableError:
            for replica in resting:  # the primary is away: a replica back from a restart?
                try:
                    return replica.run(work)
                except psycopg.Error:
                    pass
            raise

    def close(self) -> None:
        for link in (self.primary, *self.replicas):
            link.close()


def _vector_text(vector: np.ndarray) -> str:
    """pgvector's text form; ``repr`` of each float32 value gives it back exactly."""
    return "[" + ",".join(map(repr, np.asarray(vector, dtype=np.float32).tolist())) + "]"


def _copy_data(ids: Sequence[str], vectors: np.ndarray) -> bytes:
    """Rows in PostgreSQL's binary COPY format: (id text, embedding vector), the vector as
    pgvector's binary form (int16 dimensions, int16 0, big-endian float32 values)."""
    dim = vectors.shape[1]
    values = np.ascontiguousarray(vectors, dtype=">f4")
    vector_head = struct.pack(">iHH", 4 + 4 * dim, dim, 0)
    parts = [b"PGCOPY\n\xff\r\n\x00", struct.pack(">ii", 0, 0)]
    for id_, row in zip(ids, values):
        raw = id_.encode("utf-8")
        parts.append(struct.pack(">hi", 2, len(raw)))
        parts.append(raw)
        parts.append(vector_head)
        parts.append(row.tobytes())
    parts.append(struct.pack(">h", -1))
    return b"".join(parts)


def _vector_from_binary(data: bytes | memoryview, dim: int) -> np.ndarray:
    got = struct.unpack_from(">H", data, 0)[0]
    if got != dim:
        raise ValueError(f"a stored vector has {got} dimensions, not {dim}")
    return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(np.float32)


class PgVectorStore:
    """A vector store in one table per shard on PostgreSQL servers (module docstring)."""

    def __init__(self, location: StoreLocation, table: str, dim: int,
                 ids: Sequence[str] = ()) -> None:
        if location.is_local:
            raise ValueError("a PostgreSQL store needs at least one server")
        self.location = location
        self.table = table
        self.dim = int(dim)
        self._ids: list[str] = list(ids)
        self._position = {id_: i for i, id_ in enumerate(self._ids)}
        self._shards = [_ShardLinks(s) for s in location.shards]
        self._indexed = False
        self._sizes: list[int] | None = None  # rows per shard, counted when a search needs them
        self._pool = (ThreadPoolExecutor(len(self._shards), thread_name_prefix="pgvector")
                      if len(self._shards) > 1 else None)

    # ----------------------------------------------------------------- making and opening

    @classmethod
    def create(cls, location: StoreLocation, dim: int, index_dir: Path,
               name: str) -> PgVectorStore:
        """A new, empty store: a new table on every shard (the extension created if needed)."""
        table = f"{table_prefix(index_dir)}{uuid.uuid4().hex[:8]}_{name}"
        store = cls(location, table, dim)
        create = sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, embedding vector({}))").format(
            sql.Identifier(table), sql.Literal(store.dim))

        def make(conn: psycopg.Connection) -> None:
            if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
                try:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                except psycopg.errors.InsufficientPrivilege:
                    raise StoreFailedError(
                        f"the pgvector extension is not enabled in {redact_db(conn)}; ask its "
                        "administrator to run CREATE EXTENSION vector there") from None
            conn.execute(create)

        store._each(lambda links: links.write(make))
        return store

    @classmethod
    def load(cls, folder: Path, name: str, description: dict,
             location: StoreLocation) -> PgVectorStore:
        """The store a build's manifest describes; its ids from the build folder. Its tables must
        exist (ValueError otherwise: the index is damaged); a server that does not answer is
        StoreUnreachableError."""
        ids = json.loads((Path(folder) / f"{name}.ids.json").read_text(encoding="utf-8"))
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{name}.ids.json is not a list of ids")
        if len(description.get("shards", ())) != len(location.shards):
            raise ValueError(f"{name}: the manifest and the store disagree on the shards")
        store = cls(location, description["table"], int(description["dim"]), ids)
        store._indexed = True
        probe = sql.SQL("SELECT 1 FROM {} LIMIT 0").format(sql.Identifier(store.table))
        try:  # where questions will read: a replica, or the primary when none answers
            store._each(lambda links: links.read(lambda conn: conn.execute(probe)))
        except TableMissingError as exc:
            store.close()
            raise ValueError(str(exc)) from None
        return store

    def describe(self) -> dict:
        """What the manifest records: where the rows are (no password), how they are placed and
        searched."""
        return {"kind": PG_KIND, "metric": "cosine", "dim": self.dim, "vectors": len(self._ids),
                "table": self.table, "shards": self.location.describe(),
                "placement": "blake2b-64 mod shards", "index": "hnsw", "m": HNSW_M,
                "ef_construction": HNSW_EF_CONSTRUCTION}

    # ----------------------------------------------------------------- the seam

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id_: str) -> bool:
        return id_ in self._position

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """COPY the rows to their shards in batches; the first rows added also build each
        shard's HNSW index, after the load."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        repeated = [i for i in ids if i in self._position]
        if repeated or len(set(ids)) != len(ids):
            raise ValueError(f"ids already stored: {repeated[:3] or 'repeated in the batch'}")
        if not len(ids):
            return
        placed = self._place(ids)
        copy = sql.SQL("COPY {} (id, embedding) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(self.table))

        def load(links: _ShardLinks, rows: list[int]) -> None:
            for start in range(0, len(rows), COPY_BATCH):
                batch = rows[start:start + COPY_BATCH]
                data = _copy_data([ids[i] for i in batch], vectors[batch])

                def send(conn: psycopg.Connection, data: bytes = data) -> None:
                    with conn.cursor() as cur, cur.copy(copy) as out:
                        out.write(data)
                links.write(send)

        self._fan_out(load, placed)
        if not self._indexed:
            self._each(lambda links: links.write(self._build_graph))
            self._indexed = True
        for id_ in ids:
            self._position[id_] = len(self._ids)
            self._ids.append(id_)
        self._sizes = None
        self.wait_for_replicas()

    def _build_graph(self, conn: psycopg.Connection) -> None:
        conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(BUILD_MEMORY)))
        conn.execute(sql.SQL(
            "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = {}, ef_construction = {})").format(
                sql.Identifier(f"{self.table}_hnsw"), sql.Identifier(self.table),
                sql.Literal(HNSW_M), sql.Literal(HNSW_EF_CONSTRUCTION)))
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(self.table)))
        conn.execute("RESET maintenance_work_mem")

    def remove(self, ids: Collection[str]) -> None:
        """Delete the rows of ``ids`` (unknown ids are ignored)."""
        gone = [i for i in dict.fromkeys(ids) if i in self._position]
        if not gone:
            return
        delete = sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(sql.Identifier(self.table))

        def drop(links: _ShardLinks, rows: list[int]) -> None:
            links.write(lambda conn: conn.execute(delete, ([gone[i] for i in rows],)))

        self._fan_out(drop, self._place(gone))
        dropped = set(gone)
        self._ids = [i for i in self._ids if i not in dropped]
        self._position = {id_: i for i, id_ in enumerate(self._ids)}
        self._sizes = None
        self.wait_for_replicas()

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` nearest ids by cosine, each shard's own top ``k`` merged."""
        k = min(int(k), len(self._ids))
        if k <= 0:
            return []
        query = _vector_text(np.asarray(vector, dtype=np.float32).reshape(self.dim))
        statement = sql.SQL("SELECT id, embedding <=> %s::vector FROM {} "
                            "ORDER BY embedding <=> %s::vector LIMIT %s").format(
            sql.Identifier(self.table))
        exact, ef = self.location.exact, min(1000, max(self.location.ef_search, k))

        # Session settings of the connection, set when they change (a search is then one round
        # trip): the store's connections are its own.
        wanted = ("exact",) if exact else ("hnsw", ef, k > ef)

        def ask(conn: psycopg.Connection) -> list[tuple[str, float]]:
            if _SEARCH_SETTINGS.get(conn) != wanted:
                if exact:
                    conn.execute("SET enable_indexscan = off")
                else:
                    conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(ef),))
                    # beyond ef_search, the graph scan goes on until it has k rows
                    conn.execute("SET hnsw.iterative_scan = " +
                                 ("strict_order" if k > ef else "off"))
                _SEARCH_SETTINGS[conn] = wanted
            return conn.execute(statement, (query, query, k)).fetchall()

        sizes = self._shard_sizes()

        def on_shard(links: _ShardLinks, shard: list[int]) -> list[tuple[str, float]]:
            rows = links.read(ask)
            if len(rows) < min(k, sizes[shard[0]]) and links.replicas:
                # A replica that answers with fewer rows than its shard holds has not replayed
                # the build yet (seen under load despite the wait after writing): the primary
                # answers instead, unless it is away.
                try:
                    rows = links.write(ask, retry=True)
                except StoreUnreachableError:
                    pass
            return rows

        found = self._fan_out(on_shard, [[n] for n in range(len(self._shards))])
        merged = [(id_, 1.0 - float(d)) for rows in found for id_, d in rows]
        merged.sort(key=lambda pair: -pair[1])
        return merged[:k]

    def get(self, ids: Sequence[str]) -> np.ndarray:
        """The vectors of ``ids``, in that order, read from each shard that holds some."""
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        for id_ in ids:
            if id_ not in self._position:
                raise KeyError(f"no vector stored for id {id_!r}")
        wanted = list(dict.fromkeys(ids))
        select = sql.SQL("SELECT id, embedding FROM {} WHERE id = ANY(%s)").format(
            sql.Identifier(self.table))

        def fetch(links: _ShardLinks, rows: list[int]) -> list[tuple[str, bytes]]:
            def read(conn: psycopg.Connection) -> list[tuple[str, bytes]]:
                with conn.cursor(binary=True) as cur:
                    return cur.execute(select, ([wanted[i] for i in rows],)).fetchall()
            found = links.read(read)
            if len(found) < len(rows) and links.replicas:  # a replica still behind the build
                found = links.write(read, retry=True)
            return found

        vectors = {}
        for rows in self._fan_out(fetch, self._place(wanted)):
            for id_, data in rows:
                vectors[id_] = _vector_from_binary(data, self.dim)
        missing = [i for i in wanted if i not in vectors]
        if missing:
            raise KeyError(f"no vector stored for id {missing[0]!r} in {self.table}")
        return np.stack([vectors[i] for i in ids])

    def save(self, folder: Path, name: str) -> None:
        """Write the ids in index order beside the build (the rows are on the servers already),
        once the replicas have the rows."""
        self.wait_for_replicas()
        path = Path(folder) / f"{name}.ids.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self._ids), encoding="utf-8")
        os.replace(tmp, path)

    def close(self) -> None:
        """Close every connection (they open again if the store is used)."""
        for links in self._shards:
            links.close()

    # ----------------------------------------------------------------- helpers

    def _place(self, ids: Sequence[str]) -> list[list[int]]:
        """Positions in ``ids`` of the rows each shard holds."""
        placed: list[list[int]] = [[] for _ in self._shards]
        n = len(self._shards)
        for i, id_ in enumerate(ids):
            placed[shard_of(id_, n) if n > 1 else 0].append(i)
        return placed

    def _fan_out(self, work: Callable[[_ShardLinks, list[int]], T],
                 placed: list[list[int]]) -> list[T]:
        """``work(shard, rows)`` on every shard with rows, in parallel when there are several."""
        jobs = [(links, rows) for links, rows in zip(self._shards, placed) if rows]
        if self._pool is None or len(jobs) == 1:
            return [work(links, rows) for links, rows in jobs]
        return [f.result() for f in [self._pool.submit(work, links, rows) for links, rows in jobs]]

    def _shard_sizes(self) -> list[int]:
        """How many rows each shard holds (from the ids and the placement; cached)."""
        if self._sizes is None:
            self._sizes = [len(rows) for rows in self._place(self._ids)]
        return self._sizes

    def _each(self, work: Callable[[_ShardLinks], T]) -> list[T]:
        return self._fan_out(lambda links, _: work(links), [[0]] * len(self._shards))

    def wait_for_replicas(self, timeout: float | None = None) -> None:
        """Wait until every replica has replayed the primaries' writes so far (at most
        ``timeout`` seconds, :data:`REPLICA_WAIT` by default); a replica that does not answer or
        stays behind is reported, not waited for longer."""
        timeout = REPLICA_WAIT if timeout is None else timeout
        for links in self._shards:
            if not links.replicas:
                continue
            lsn = links.write(lambda conn: conn.execute(
                "SELECT pg_current_wal_lsn()::text").fetchone()[0], retry=True)
            for replica in links.replicas:
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        done = replica.run(lambda conn: conn.execute(
                            "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0])
                    except psycopg.Error as exc:
                        log.warning("replica %s of %s does not answer (%s); questions read from "
                                    "the primary until it does", _redact(replica.url),
                                    links.shard.name, _first_line(exc))
                        break
                    if done:
                        break
                    if time.monotonic() > deadline:
                        log.warning("replica %s of %s is still behind after %.0f s; questions "
                                    "read from the primary until it catches up",
                                    _redact(replica.url), links.shard.name, timeout)
                        break
                    time.sleep(0.05)


def _redact(url: str) -> str:
    from .stores import redact
    return redact(url)


def redact_db(conn: psycopg.Connection) -> str:
    """``database on host:port`` of a connection, for messages."""
    info = conn.info
    return f"database {info.dbname} on {info.host}:{info.port}"


def _shard_links(locations: Sequence[StoreLocation]) -> list[_ShardLinks]:
    seen: dict[str, _ShardLinks] = {}
    for location in locations:
        for shard in location.shards:
            seen.setdefault(shard.name, _ShardLinks(shard))
    return list(seen.values())


def check_reachable(location: StoreLocation) -> None:
    """StoreUnreachableError unless every primary of ``location`` answers."""
    for links in _shard_links([location]):
        try:
            links.write(lambda conn: conn.execute("SELECT 1").fetchone(), retry=True)
        finally:
            links.close()


def drop_tables(index_dir: Path, locations: Sequence[StoreLocation], keep: set[str]) -> None:
    """Drop the tables of ``index_dir`` on these servers except ``keep`` (best effort)."""
    prefix = table_prefix(index_dir)
    for links in _shard_links(locations):
        def drop(conn: psycopg.Connection) -> list[str]:
            names = [row[0] for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND starts_with(tablename, %s)", (prefix,))]
            stale = [name for name in names if name not in keep]
            for name in stale:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
            return stale
        try:
            stale = links.write(drop, retry=True)
            if stale:
                log.info("dropped %d old tables on %s", len(stale), links.shard.name)
        except IndexStoreError as exc:
            log.warning("old tables of this index stay on %s for now: %s", links.shard.name, exc)
        finally:
            links.close()


def drop_named(tables: Sequence[tuple[StoreLocation, str]]) -> None:
    """Drop each ``(location, table)`` on every shard of its location (best effort)."""
    for location, table in tables:
        for links in _shard_links([location]):
            try:
                links.write(lambda conn: conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table))), retry=True)
            except IndexStoreError as exc:
                log.warning("table %s stays on %s: %s", table, links.shard.name, exc)
            finally:
                links.close()
