"""The vector store's size-dependent search (exact, then HNSW past a limit) and BM25's top-k
selection: same answers as the straightforward way, whatever the size."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from rag.lexical import LexicalIndex, top_positions
from rag.vector_store import HNSW_EF_SEARCH, HNSW_M, FaissVectorStore


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def random_unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, dim)))


def ids_of(n: int, prefix: str = "v") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


# --------------------------------------------------------------------------- kind by size


def test_store_is_exact_up_to_the_limit_and_a_graph_past_it():
    vectors = random_unit(30)
    store = FaissVectorStore(16, exact_limit=20)
    store.add(ids_of(20), vectors[:20])
    assert store.kind == "flat" and store.describe()["kind"] == "flat"
    store.add(ids_of(30)[20:], vectors[20:])
    assert store.kind == "hnsw"
    assert store.describe() == {"kind": "hnsw", "metric": "inner_product", "dim": 16,
                                "vectors": 30, "exact_limit": 20, "m": HNSW_M,
                                "ef_construction": 40, "ef_search": HNSW_EF_SEARCH,
                                "codes": "sq8"}
    # crossing the limit kept every vector, exactly, under its id
    assert store.ids == ids_of(30)
    np.testing.assert_array_equal(store.get(["v3", "v27"]), vectors[[3, 27]])


def test_one_large_add_builds_the_graph_directly():
    store = FaissVectorStore(16, exact_limit=10)
    store.add(ids_of(50), random_unit(50))
    assert store.kind == "hnsw" and len(store) == 50


def test_many_small_adds_to_a_graph_keep_every_vector_exact():
    vectors = random_unit(330)
    store = FaissVectorStore(16, exact_limit=20)
    for i in range(330):  # as a live corpus adds file after file
        store.add([f"v{i}"], vectors[i:i + 1])
    assert store.kind == "hnsw"
    np.testing.assert_array_equal(store.get(ids_of(330)[::-1]), vectors[::-1])


def test_removing_below_the_limit_makes_the_store_exact_again():
    vectors = random_unit(40)
    store = FaissVectorStore(16, exact_limit=20)
    store.add(ids_of(40), vectors)
    store.remove(ids_of(25))
    assert store.kind == "flat" and store.ids == ids_of(40)[25:]
    np.testing.assert_array_equal(store.get(["v30"]), vectors[[30]])
    assert store.search(vectors[33], 1)[0][0] == "v33"


def test_graph_store_removes_by_id():
    vectors = random_unit(60)
    store = FaissVectorStore(16, exact_limit=20)
    store.add(ids_of(60), vectors)
    store.remove(["v5", "v6", "unknown"])
    assert store.kind == "hnsw" and len(store) == 58 and "v5" not in store
    assert "v5" not in [i for i, _ in store.search(vectors[5], 10)]
    np.testing.assert_array_equal(store.get(["v59", "v0"]), vectors[[59, 0]])


# --------------------------------------------------------------------------- approximate search


def test_graph_finds_the_exact_nearest_on_easy_data():
    rng = np.random.default_rng(1)
    vectors = random_unit(2000, seed=1)
    queries = unit(vectors[:100] + 0.05 * rng.standard_normal((100, 16)))
    graph, exact = FaissVectorStore(16, exact_limit=100), FaissVectorStore(16)
    graph.add(ids_of(2000), vectors)
    exact.add(ids_of(2000), vectors)
    assert graph.kind == "hnsw" and exact.kind == "flat"
    for i, query in enumerate(queries):
        best_id, best_score = graph.search(query, 10)[0]
        assert best_id == exact.search(query, 1)[0][0] == f"v{i}"
        assert best_score == pytest.approx(float(vectors[i] @ query), abs=0.01)


def test_graph_scores_are_close_to_exact_inner_products_best_first():
    vectors = random_unit(500)
    store = FaissVectorStore(16, exact_limit=100)
    store.add(ids_of(500), vectors)
    query = random_unit(1, seed=3)[0]
    found = store.search(query, 50)
    expected = store.get([i for i, _ in found]) @ query
    np.testing.assert_allclose([s for _, s in found], expected, rtol=0, atol=0.01)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)


def test_graph_returns_k_results_beyond_its_search_breadth():
    store = FaissVectorStore(16, exact_limit=10)
    store.add(ids_of(800), random_unit(800))
    found = store.search(random_unit(1, seed=5)[0], HNSW_EF_SEARCH + 100)
    assert len(found) == HNSW_EF_SEARCH + 100 == len({i for i, _ in found})
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)


# --------------------------------------------------------------------------- save and load


@pytest.mark.parametrize("count", [15, 60])  # exact, then a graph
def test_save_and_load_keep_kind_ids_vectors_and_results(tmp_path, count):
    vectors = random_unit(count)
    store = FaissVectorStore(16, exact_limit=20)
    store.add(ids_of(count), vectors)
    store.save(tmp_path, "v")
    assert (tmp_path / "v.vectors.npy").exists() == (store.kind == "hnsw")
    loaded = FaissVectorStore.load(tmp_path, "v", exact_limit=20)
    assert loaded.kind == store.kind and loaded.describe() == store.describe()
    assert loaded.ids == store.ids
    np.testing.assert_array_equal(loaded.get(ids_of(count)), vectors)
    for query in random_unit(5, seed=9):
        assert loaded.search(query, 7) == store.search(query, 7)


def test_a_loaded_store_can_still_change(tmp_path):
    """A loaded store is memory-mapped; changing it must copy it first, not touch the file."""
    vectors = random_unit(61)
    store = FaissVectorStore(16, exact_limit=20)
    store.add(ids_of(60), vectors[:60])
    store.save(tmp_path, "v")
    saved = (tmp_path / "v.faiss").read_bytes()
    loaded = FaissVectorStore.load(tmp_path, "v", exact_limit=20)
    loaded.add(["new"], vectors[60:])
    loaded.remove(["v0"])
    assert len(loaded) == 60 and loaded.search(vectors[60], 1)[0][0] == "new"
    assert (tmp_path / "v.faiss").read_bytes() == saved
    assert FaissVectorStore.load(tmp_path, "v").ids == ids_of(60)
    # saving over the files it was loaded from leaves the loaded store readable
    loaded.save(tmp_path, "v")
    again = FaissVectorStore.load(tmp_path, "v", exact_limit=20)
    assert again.ids == loaded.ids
    np.testing.assert_array_equal(again.get(["new", "v59"]), vectors[[60, 59]])


def test_load_refuses_an_index_that_does_not_rank_by_inner_product(tmp_path):
    index = faiss.IndexFlatL2(4)
    index.add(random_unit(2, dim=4))
    faiss.write_index(index, str(tmp_path / "v.faiss"))
    (tmp_path / "v.ids.json").write_text('["a", "b"]', encoding="utf-8")
    with pytest.raises(ValueError, match="inner product"):
        FaissVectorStore.load(tmp_path, "v")


# --------------------------------------------------------------------------- BM25 top k


def full_sort_top(scores: np.ndarray, k: int) -> list[int]:
    """The selection ``LexicalIndex.top`` used to make: a stable sort of every score."""
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k] if scores[i] > 0]


def test_top_positions_matches_a_full_stable_sort_with_ties():
    rng = np.random.default_rng(7)
    for _ in range(500):
        n = int(rng.integers(0, 300))
        # few distinct values, so ties straddle the k-th place; some zeros and negatives
        scores = (rng.integers(-1, 6, n) / 2).astype(np.float32)
        k = int(rng.integers(0, 60))
        assert top_positions(scores, k).tolist() == full_sort_top(scores, k)


def test_top_positions_matches_a_full_sort_on_continuous_scores():
    rng = np.random.default_rng(8)
    scores = rng.random(100_000).astype(np.float32)
    scores[scores < 0.7] = 0
    for k in (1, 10, 100, 1000):
        assert top_positions(scores, k).tolist() == full_sort_top(scores, k)


def test_lexical_top_keeps_order_and_ties_in_index_order():
    texts = ["budget de la défense", "la défense européenne", "budget de la défense",
             "sommet de l'alliance", "défense"]
    lexical = LexicalIndex.build([f"c{i}" for i in range(5)], texts)
    top = lexical.top("défense budget", 10)
    scores = lexical.scores("défense budget")
    assert [i for i, _ in top] == [f"c{p}" for p in full_sort_top(scores, 10)]
    assert top[0][0] == "c0" and top[1][0] == "c2"  # equal scores: index order
    assert "c3" not in [i for i, _ in top]  # no shared word, no place
    assert lexical.top("défense", 0) == []


def test_a_loaded_store_keeps_its_vectors_when_its_files_are_replaced(tmp_path):
    first, second = random_unit(60, seed=1), random_unit(60, seed=2)
    store = FaissVectorStore(16, exact_limit=20)
    store.add(ids_of(60), first)
    store.save(tmp_path, "v")
    loaded = FaissVectorStore.load(tmp_path, "v", exact_limit=20)
    other = FaissVectorStore(16, exact_limit=20)
    other.add(ids_of(60), second)
    other.save(tmp_path, "v")  # a newer build under the same name
    np.testing.assert_array_equal(loaded.get(["v1", "v42"]), first[[1, 42]])
    (tmp_path / "copy").mkdir()
    loaded.save(tmp_path / "copy", "v")
    np.testing.assert_array_equal(FaissVectorStore.load(tmp_path / "copy", "v").get(ids_of(60)),
                                  first)
