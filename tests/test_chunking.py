"""Chunks and sentences always point at the exact characters and lines they came from."""
from __future__ import annotations

from pathlib import Path

import pytest

from rag.chunking import split_document
from rag.config import IndexSettings
from rag.corpus import load_corpus, read_document
from rag.sentences import sentence_spans

SEEDS = Path(__file__).resolve().parent.parent / "seeds"


@pytest.mark.parametrize("size", [200, 500, IndexSettings().chunk_size, 2000])
def test_every_seed_chunk_is_the_exact_file_slice_with_exact_lines(size):
    for doc in load_corpus(SEEDS, IndexSettings().min_words):
        raw = (SEEDS / doc.source).read_text(encoding="utf-8")
        assert raw == doc.text
        chunks = split_document(doc, size)
        assert chunks
        for chunk in chunks:
            assert raw[chunk.start:chunk.end] == chunk.text
            assert len(chunk.text) <= size
            lines = raw.splitlines()
            cited = "\n".join(lines[chunk.start_line - 1:chunk.end_line])
            assert chunk.text in cited
            assert chunk.text.splitlines()[0] in lines[chunk.start_line - 1]
            assert chunk.text.splitlines()[-1] in lines[chunk.end_line - 1]
        assert len({c.id for c in chunks}) == len(chunks)


def test_chunks_follow_reading_order_and_do_not_overlap():
    for doc in load_corpus(SEEDS, IndexSettings().min_words):
        chunks = split_document(doc, 300)
        for a, b in zip(chunks, chunks[1:]):
            assert a.end <= b.start


def test_chunk_offsets_hold_with_crlf_and_odd_spacing(tmp_path):
    text = "Premier paragraphe, assez long pour être gardé.\r\n\r\n  Deuxième   paragraphe, lui aussi gardé.  \r\nTroisième ligne du même paragraphe, gardée.\r\n"
    (tmp_path / "a.txt").write_bytes(text.encode())
    doc = read_document(tmp_path, tmp_path / "a.txt", 5)
    for chunk in split_document(doc, 60):
        assert doc.text[chunk.start:chunk.end] == chunk.text


def test_sentences_respect_abbreviations_and_quotes():
    text = "M. Rutte est arrivé. « Nous devons agir », a-t-il dit. Le 7 nov. il part?\nTitre sans point"
    got = [text[s:e] for s, e in sentence_spans(text)]
    assert got == ["M. Rutte est arrivé.", "« Nous devons agir », a-t-il dit.",
                   "Le 7 nov. il part?", "Titre sans point"]
