"""Where an index keeps its vectors: in its own folder (FAISS) or in PostgreSQL + pgvector.

The index module asks this one for a store and never names an implementation, so the PostgreSQL
driver (``psycopg``, the optional ``postgres`` extra) is imported only when an index lives there.

A location is given on the command line as ``--store local`` or ``--store postgres://...``,
once per shard (``--store URL --store URL``): rows are placed on a shard by a hash of their id,
so the order of the shards is part of the index and is recorded with it. Options of ours ride in
each URL's query string and are taken out before the URL reaches the server:

- ``replica=HOST:PORT`` (repeatable, or comma-separated): a streaming replica of that shard that
  questions read from; the primary takes the writes, and the reads when no replica answers.
- ``search=exact``: every vector compared (a sequential scan instead of the HNSW graph), for
  comparing with FAISS's exact search; ``ef_search=N``: candidates of a graph search.

The manifest records the shards without their passwords (``vector_stores`` in the manifest), so a
later ``rag ask`` without ``--store`` knows where the vectors are; a password comes from the URL
given at run time, ``PGPASSWORD`` or ``~/.pgpass``, and is never written or printed.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import UserError

LOCAL = "local"
PG_KIND = "pgvector"
_SCHEMES = ("postgres", "postgresql")
#: Query parameters that are ours, not libpq's.
_OURS = ("replica", "search", "ef_search")
#: Candidates a graph search keeps (``hnsw.ef_search``; pgvector's default is 40, its maximum
#: 1,000). Raised to ``k`` when a search asks for more (the sentence store is asked for 400). At
#: 100,000 e5-shaped vectors, recall@10 0.93 at 200 against 0.83 at 100 and 0.98 at 400 for
#: about twice the time (benchmarks/RESULTS.md "pgvector").
DEFAULT_EF_SEARCH = 200


@dataclass(frozen=True)
class Shard:
    """One server that holds a share of the rows, and the replicas its reads may go to."""

    primary: str  # a libpq URL, possibly with a password: never written anywhere
    replicas: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The primary's URL without its password: what messages and the manifest show."""
        return redact(self.primary)


@dataclass(frozen=True)
class StoreLocation:
    """Where vectors go: ``shards`` empty for the index folder (FAISS), else PostgreSQL."""

    shards: tuple[Shard, ...] = ()
    exact: bool = False
    ef_search: int = DEFAULT_EF_SEARCH
    #: What the user typed, passwords removed (messages).
    given: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_local(self) -> bool:
        return not self.shards

    def describe(self) -> list[dict]:
        """The shards as the manifest records them: no password, no search options."""
        return [{"primary": s.name, "replicas": [redact(r) for r in s.replicas]}
                for s in self.shards]

    def same_servers(self, description: list[dict] | None) -> bool:
        """True when ``description`` (from a manifest) names the same primaries, in order."""
        return [s["primary"] for s in (description or [])] == [s.name for s in self.shards]

    def __str__(self) -> str:
        return ", ".join(self.given) if self.given else LOCAL


def parse_store(values: list[str] | tuple[str, ...] | None) -> StoreLocation | None:
    """The location ``--store`` gives (None when the option was not used: keep the index's own).

    UserError for anything but ``local`` or one or more ``postgres://`` URLs.
    """
    if not values:
        return None
    if list(values) == [LOCAL]:
        return StoreLocation()
    shards, exact, ef = [], False, DEFAULT_EF_SEARCH
    for value in values:
        parts = urlsplit(value)
        if parts.scheme not in _SCHEMES or value == LOCAL:
            raise UserError(f"--store {redact(value)!r} is neither 'local' nor a postgres://... "
                            "URL (give --store once per shard)")
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = [(k, v) for k, v in query if k in _OURS]
        rest = [(k, v) for k, v in query if k not in _OURS]
        primary = urlunsplit(parts._replace(query=urlencode(rest)))
        replicas = []
        for key, val in ours:
            if key == "replica":
                for host in filter(None, (h.strip() for h in val.split(","))):
                    replicas.append(_with_host(primary, host))
            elif key == "search":
                if val not in ("exact", "hnsw"):
                    raise UserError(f"search={val!r} in --store: use search=exact or search=hnsw")
                exact = val == "exact"
            elif key == "ef_search":
                if not val.isdigit() or not 1 <= int(val) <= 1000:
                    raise UserError(f"ef_search={val!r} in --store: give a number from 1 to 1000")
                ef = int(val)
        shards.append(Shard(primary, tuple(replicas)))
    names = [s.name for s in shards]
    if len(set(names)) != len(names):
        raise UserError("--store names the same shard twice")
    return StoreLocation(tuple(shards), exact, ef, tuple(redact(v) for v in values))


def _with_host(url: str, host: str) -> str:
    """``url`` pointing at ``host`` (``HOST:PORT`` or ``HOST``), same user, password, database."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}" if userinfo else host
    return urlunsplit(parts._replace(netloc=netloc))


def redact(url: str) -> str:
    """``url`` without its password (in the user part or a ``password=`` parameter)."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        return url
    userinfo, at, host = parts.netloc.rpartition("@")
    if at:
        user = userinfo.partition(":")[0]
        netloc = f"{user}@{host}" if user else host
    else:
        netloc = parts.netloc
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k != "password"]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))


def location_of(manifest: dict | None, given: StoreLocation | None) -> StoreLocation:
    """The location an index uses: ``given`` when the user named one, else the one its
    manifest records (with the passwords of ``given`` never needed: libpq finds them), else
    the index folder."""
    if given is not None:
        return given
    stores = (manifest or {}).get("vector_stores", {})
    shards = stores.get("chunks", {}).get("shards") if isinstance(stores, dict) else None
    if not shards:
        return StoreLocation()
    return StoreLocation(tuple(Shard(s["primary"], tuple(s.get("replicas", ())))
                               for s in shards), given=tuple(s["primary"] for s in shards))


def for_description(description: dict, given: StoreLocation | None) -> StoreLocation:
    """The location to open a saved store with: the servers its description names, reached
    through ``given``'s URLs (which may carry passwords and search options) when they are the
    same servers."""
    recorded = description.get("shards") or []
    if given is not None and not given.is_local and given.same_servers(recorded):
        return given
    base = given if given is not None else StoreLocation()
    return replace(base, shards=tuple(Shard(s["primary"], tuple(s.get("replicas", ())))
                                      for s in recorded),
                   given=tuple(s["primary"] for s in recorded))


def moved(manifest: dict, location: StoreLocation) -> bool:
    """True when the index's vectors are not where ``location`` says they should be."""
    stores = manifest.get("vector_stores", {})
    description = stores.get("chunks", {}) if isinstance(stores, dict) else {}
    if location.is_local:
        return description.get("kind") == PG_KIND
    return description.get("kind") != PG_KIND or not location.same_servers(
        description.get("shards"))


def _pg():
    """The PostgreSQL store module, or UserError saying how to install its driver."""
    try:
        from . import pg_store
    except ImportError as exc:
        raise UserError(f"vectors in PostgreSQL need psycopg ({exc.name} is missing): "
                        "pip install 'rag-cite[postgres]'") from None
    return pg_store


def new_store(location: StoreLocation, dim: int, index_dir: Path, name: str):
    """An empty store for a new build: FAISS in memory, or new tables on the servers."""
    if location.is_local:
        from .vector_store import FaissVectorStore
        return FaissVectorStore(dim)
    return _pg().PgVectorStore.create(location, dim, index_dir, name)


def open_store(folder: Path, name: str, manifest: dict, given: StoreLocation | None):
    """The saved store ``name`` of a build, of the kind its manifest records."""
    description = manifest.get("vector_stores", {}).get(name, {})
    if description.get("kind") == PG_KIND:
        return _pg().PgVectorStore.load(folder, name, description,
                                        for_description(description, given))
    from .vector_store import FaissVectorStore
    return FaissVectorStore.load(folder, name)


def check_reachable(location: StoreLocation | None) -> None:
    """StoreUnreachableError (one line) unless every primary answers: said before anything is
    read or embedded."""
    if location is not None and not location.is_local:
        _pg().check_reachable(location)


def drop_stale(index_dir: Path, manifest: dict | None, location: StoreLocation | None) -> None:
    """Drop this index's tables that the current build (``manifest``) does not use: those of the
    build it replaced and of builds that failed. Called by a build, with the index's lock held,
    before it creates its own tables; the replaced build kept its tables until now so that
    questions still running on it elsewhere could finish. Best effort: a server that does not
    answer keeps them until a later build."""
    keep, servers = set(), []
    for description in (manifest or {}).get("vector_stores", {}).values():
        if description.get("kind") == PG_KIND:
            keep.add(description["table"])
            servers.append(for_description(description, location))
    if location is not None and not location.is_local:
        servers.append(location)
    if servers:
        _pg().drop_tables(index_dir, servers, keep)


def drop_replaced(old: dict | None, location: StoreLocation,
                  given: StoreLocation | None) -> None:
    """After a build moved the vectors to ``location`` (other servers, or the index folder), drop
    the replaced build's tables at once: no later build would know their servers."""
    if old is None or not moved(old, location):
        return
    tables = [(for_description(d, given), d["table"])
              for d in old.get("vector_stores", {}).values() if d.get("kind") == PG_KIND]
    if tables:
        _pg().drop_named(tables)
