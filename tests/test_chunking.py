"""Chunks and sentences always point at the exact characters and lines they came from."""
from __future__ import annotations

from pathlib import Path

import pytest

from rag.chunking import chunk_id, split_document
from rag.config import IndexSettings
from rag.corpus import LineCounter, line_number, load_corpus, read_document
from rag.records import Document
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


class CountingText(str):
    """A document text that adds up how many characters ``count`` scans."""

    scanned = 0

    def count(self, sub, start=0, end=None):  # noqa: D401 - same signature as str.count
        end = len(self) if end is None else end
        CountingText.scanned += max(0, end - start)
        return super().count(sub, start, end)


def test_line_numbers_cost_one_pass_over_the_file(tmp_path):
    """Numbering the chunks' lines scans each character about once, however many chunks: the
    count used to restart from the top of the file for every chunk (quadratic: 48 s for 8 MB)."""
    raw = "\n".join("".join(f"Le secrétaire général a présenté le point {p}.{k} du programme "
                             "aux journalistes.\n" for k in range(3))
                     for p in range(2000))  # 2,000 paragraphs of 3 distinct lines, ~500 KB
    (tmp_path / "long.txt").write_text(raw, encoding="utf-8")
    doc = read_document(tmp_path, tmp_path / "long.txt", 5)
    counted = Document(doc.source, CountingText(doc.text), doc.content_hash, doc.kept)
    CountingText.scanned = 0
    chunks = split_document(counted, 300)
    assert len(chunks) > 1000
    assert CountingText.scanned <= 2 * len(doc.text)
    for chunk in chunks[::97]:  # and the numbers are the ones counted from the top
        assert chunk.start_line == line_number(doc.text, chunk.start)
        assert chunk.end_line == line_number(doc.text, chunk.end - 1)


def test_line_counter_goes_back_and_forth():
    text = "a\nbb\n\nccc\nd"
    counter = LineCounter(text)
    for offset in (0, 5, 9, 2, 10, 1, 6):
        assert counter.line(offset) == line_number(text, offset)


def test_chunk_ids_never_fail_on_an_undecodable_name():
    assert len(chunk_id("bad\udcffname.txt", 0, 5, "texte")) == 16
    assert chunk_id("a.txt", 0, 5, "texte") == chunk_id("a.txt", 0, 5, "texte")
