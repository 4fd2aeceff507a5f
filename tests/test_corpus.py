"""Reading a corpus folder: file kinds, encodings, HTML, odd files, and the boilerplate rule."""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import pytest

from rag.chunking import split_document
from rag.config import IndexSettings
from rag.corpus import (CorpusError, boilerplate_lines, content_hash, decode_text,
                        display_name, html_to_text, load_corpus, looks_binary, read_document,
                        scan_corpus)

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
MIN_WORDS = IndexSettings().min_words


def dropped_lines(doc) -> list[str]:
    lines = doc.text.splitlines()
    return [line for line, drop in zip(lines, boilerplate_lines(doc.text, MIN_WORDS)) if drop]


def test_boilerplate_rule_on_the_seeds_drops_exactly_the_debris():
    docs = {d.source: d for d in load_corpus(SEEDS, MIN_WORDS)}
    assert dropped_lines(docs["000_024703823b32d0c5.txt"]) == []
    assert dropped_lines(docs["001_f8703a92264a5ef2.txt"]) == []
    assert dropped_lines(docs["002_eec1d2d7e8e00ced.txt"]) == [
        "Retour",                                   # navigation word
        "Réajuster les budgets militaires",         # short heading, not a sentence
        "Plus d'articles",
        "Vidéo du jour",
        "Qu’est-ce que le fétichisme des pieds?",   # teaser sitting between two debris lines
        "Rabais de la semaine",
    ]
    assert dropped_lines(docs["003_b5cff0097fa7fce3.txt"]) == [
        "Le sommet de l'Otan en danger ? Rutte discute de la paix à Washington",  # title printed twice
        "Aide militaire à l'Ukraine",
    ]
    assert dropped_lines(docs["004_8d320c1e2e7514cc.txt"]) == [
        "Milos Schmidt", "Laisser un commentaire", "vingt + dix ="]


def test_no_chunk_of_the_seeds_contains_boilerplate():
    for doc in load_corpus(SEEDS, MIN_WORDS):
        dropped = set(dropped_lines(doc)) - {"Le sommet de l'Otan en danger ? Rutte discute de la paix à Washington"}
        for chunk in split_document(doc, IndexSettings().chunk_size):
            for line in chunk.text.splitlines():
                assert line not in dropped, (doc.source, line)


def test_the_first_of_two_identical_titles_is_kept():
    doc = read_document(SEEDS, SEEDS / "003_b5cff0097fa7fce3.txt", MIN_WORDS)
    first_line = doc.text.splitlines()[0]
    assert doc.text[doc.kept[0][0]:].startswith(first_line)


def test_files_are_found_recursively_in_stable_order_and_other_kinds_ignored(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "deep.md").write_text("# Titre\n\nUne phrase assez longue pour rester ici.\n")
    (tmp_path / "a.txt").write_text("Une autre phrase assez longue pour rester ici.\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp_path / ".hidden.txt").write_text("Une phrase cachée qui ne doit pas être lue du tout.\n")
    assert [d.source for d in load_corpus(tmp_path, MIN_WORDS)] == ["a.txt", "b/deep.md"]


def test_html_is_reduced_to_visible_text(tmp_path):
    page = ("<html><head><title>T</title><style>p{color:red}</style></head><body>"
            "<nav>Accueil</nav><p>Le secr&eacute;taire g&eacute;n&eacute;ral a parl&eacute; "
            "longuement &agrave; Bruxelles.</p><script>alert('x')</script>"
            "<p>Une seconde phrase du texte principal.</p></body></html>")
    (tmp_path / "page.html").write_text(page)
    doc = read_document(tmp_path, tmp_path / "page.html", MIN_WORDS)
    assert "Le secrétaire général a parlé longuement à Bruxelles." in doc.text
    assert "alert" not in doc.text and "color" not in doc.text and "<p>" not in doc.text


def test_non_utf8_file_is_decoded_with_fallback_and_warning(tmp_path, caplog):
    (tmp_path / "latin.txt").write_bytes("Le secrétaire général est arrivé à Bruxelles hier.\n".encode("cp1252"))
    with caplog.at_level(logging.WARNING):
        doc = read_document(tmp_path, tmp_path / "latin.txt", MIN_WORDS)
    assert "secrétaire général" in doc.text
    assert "not valid UTF-8" in caplog.text


def test_empty_and_binary_files_are_skipped_with_a_warning(tmp_path, caplog):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "ok.txt").write_text("Une phrase tout à fait normale et assez longue.\n")
    with caplog.at_level(logging.WARNING):
        docs = load_corpus(tmp_path, MIN_WORDS)
    assert [d.source for d in docs] == ["ok.txt"]
    assert "empty" in caplog.text and "binary" in caplog.text


def test_missing_or_empty_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(tmp_path / "nope", MIN_WORDS)
    with pytest.raises(CorpusError, match="no readable"):
        load_corpus(tmp_path, MIN_WORDS)


def test_corpus_files_are_never_modified(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"Une phrase assez longue pour le test.\r\nEt une autre ligne de texte ici.\r\n")
    before = path.read_bytes()
    load_corpus(tmp_path, MIN_WORDS)
    assert path.read_bytes() == before


def test_html_to_text_keeps_paragraph_breaks():
    assert html_to_text("<p>Un.</p><p>Deux.</p>") == "Un.\n\nDeux.\n"


# --------------------------------------------------------------------------- odd files


def test_text_detection_rejects_binary_without_nul_and_keeps_real_text():
    rng = random.Random(5)
    random_bytes = bytes(rng.randrange(1, 256) for _ in range(50_000))  # no NUL byte at all
    control_ascii = bytes(rng.randrange(1, 128) for _ in range(50_000))  # valid UTF-8
    high_bytes = bytes(rng.randrange(128, 256) for _ in range(50_000))  # accented-letter soup
    for data in (random_bytes, control_ascii, high_bytes):
        assert decode_text(data)[0] is None
    french = "Le secrétaire général a exigé 5 % du PIB — « c'est non négociable », a-t-il dit.\n"
    for data, encoding in ((french.encode("utf-8"), ""), (french.encode("cp1252"), "cp1252"),
                           (("\ufeff" + french).encode("utf-8"), "")):
        text, note = decode_text(data * 100)
        assert text is not None and text.lstrip("\ufeff").startswith("Le secrétaire général")
        assert (encoding in note) if encoding else note == ""
    # A few control characters (a form feed, an escape sequence) do not make text binary.
    assert decode_text(("\x1b[1mTitre\x1b[0m\f\n" + french * 20).encode())[0] is not None


def test_binary_looking_large_file_is_judged_on_a_sample():
    """Only the start and the end are looked at: a 20 MB file costs no more to judge."""
    body = "Une phrase ordinaire du texte, assez longue pour compter.\n" * 400_000
    assert not looks_binary(body)
    assert looks_binary(body[:40_000] + "\x01\x02\x03\x04" * 10_000)


def test_scanning_hashes_bytes_and_names_what_it_skips(tmp_path, caplog):
    (tmp_path / "a.txt").write_bytes(b"Une phrase assez longue pour le test.\n")
    (tmp_path / "lien.md").symlink_to("absent.md")
    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt"), "wb") as f:
        f.write(b"Un nom de fichier en Latin-1, pas en UTF-8.\n")
    (tmp_path / "dossier.txt").mkdir()  # a folder named like a document is a folder
    (tmp_path / "dossier.txt" / "dedans.txt").write_text("Une phrase dans un dossier.\n")
    with caplog.at_level(logging.WARNING):
        scanned = scan_corpus(tmp_path)
    assert [f.source for f in scanned] == ["a.txt", "dossier.txt/dedans.txt"]
    assert scanned[0].hash == content_hash((tmp_path / "a.txt").read_bytes())
    assert "b'caf\\xe9.txt'" in caplog.text and "rename" in caplog.text
    assert "lien.md" in caplog.text and "cannot read" in caplog.text
    assert [d.source for d in load_corpus(tmp_path, MIN_WORDS)] == ["a.txt",
                                                                    "dossier.txt/dedans.txt"]


def test_display_name_keeps_messages_on_one_line():
    assert display_name("fromages/camembert.md") == "fromages/camembert.md"
    assert display_name("bad\udcffname.txt") == "b'bad\\xffname.txt'"
    assert display_name("deux\nlignes.txt") == "'deux\\nlignes.txt'"
