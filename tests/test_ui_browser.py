"""The chat as a person uses it: the real `rag chat` command, Debian's Chromium, clicks.

Asks a French question, checks the fact and a citation marker in the answer, saves
docs/screenshot.png (embedded in the README), follows the citation and checks the source view
lights and shows the cited lines. Also checks that markup in a document is shown, never run, and
that a document dropped into the corpus folder is answered, and counted in the status line,
without restarting the chat.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
from ui_fixtures import MARKUP_QUESTION, ROOT, free_port, stop_process, ui_corpus  # noqa: F401

# `rag chat` loads the real model: slow as well as browser.
pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
SCREENSHOT = ROOT / "docs" / "screenshot.png"
QUESTION = "Quel pourcentage du PIB Trump exige-t-il ?"
FACT = "5 %"
STARTUP_SECONDS = 180
#: A document dropped into the corpus while the chat runs, and what it answers.
DROPPED = "piscine.txt"
DROPPED_TEXT = ("La piscine municipale rouvre ses bassins le lundi 3 mars après six mois de "
                "travaux de rénovation.\n")
DROPPED_QUESTION = "Quand la piscine municipale rouvre-t-elle ses bassins ?"


@dataclass
class RunningChat:
    url: str
    output: list[str]  # what `rag chat` printed so far, line by line


def wait_until(what: str, probe, seconds: float = 60) -> None:
    """Poll ``probe`` until it is true; fail after ``seconds``."""
    end = time.monotonic() + seconds
    while not probe():
        if time.monotonic() > end:
            pytest.fail(f"not seen within {seconds:.0f} s: {what}")
        time.sleep(0.1)


def normalize(text: str) -> str:
    """Collapse whitespace (including no-break spaces) so text compares across renderings."""
    return " ".join(text.replace("\u00a0", " ").replace("\u202f", " ").split())


@pytest.fixture(scope="module")
def chat(ui_corpus):  # noqa: F811
    """`rag chat` on a free port, as a user starts it; yields the URL it prints and its output."""
    port = free_port()
    command = [sys.executable, "-m", "rag.cli", "chat", "--corpus", str(ui_corpus.root),
               "--index", str(ui_corpus.index), "--port", str(port)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    ready = threading.Event()
    url: list[str] = []

    def read() -> None:  # a thread, so a silent child cannot block the test forever
        for line in process.stdout:  # type: ignore[union-attr]
            output.append(line)
            found = re.search(r"Chat ready at (http://\S+)", line)
            if found and not url:
                url.append(found.group(1))
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(STARTUP_SECONDS):
            pytest.fail(f"`rag chat` printed no URL within {STARTUP_SECONDS} s "
                        f"(exit code {process.poll()}):\n{''.join(output)[-3000:]}")
        print(f"rag chat ready in {time.monotonic() - started:.1f} s")
        yield RunningChat(url[0], output)
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's Chromium with "
                    "`apt-get install -y chromium` (never `playwright install`)", pytrace=False)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, chat):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="fr-FR")
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(chat.url)
    page.wait_for_selector("#question textarea", timeout=30_000)
    page.dialogs = dialogs  # type: ignore[attr-defined]
    page.requested = requested  # type: ignore[attr-defined]
    yield page
    context.close()


def ask(page, question: str) -> None:
    """Type the question, press Enter, wait for a new assistant message and its sources."""
    bot = "#chat [data-testid='bot']"
    before = page.locator(bot).count()
    page.fill("#question textarea", question)
    page.keyboard.press("Enter")
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length > n",
                           arg=[bot, before], timeout=60_000)
    page.wait_for_selector("#sources .source-card, #sources .sources-abstained", timeout=60_000)


def test_ask_read_answer_and_follow_the_citation(page):
    from playwright.sync_api import expect

    ask(page, QUESTION)
    answer = page.locator("#chat [data-testid='bot']").last
    expect(answer.locator("a.cite").first).to_be_visible()
    assert FACT in normalize(answer.inner_text())
    assert re.search(r"\[1\]", answer.inner_text())
    # The sources panel: file, lines, score and the cited sentence marked.
    cited_sentence = normalize(page.locator("#sources mark").first.inner_text())
    assert FACT in cited_sentence
    expect(page.locator("#sources .source-score").first).to_contain_text("score")

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))

    link = answer.locator("a.cite").first
    href = link.get_attribute("href")
    assert href and href.startswith("/source/") and "?v=" in href and "#L" in href
    with page.context.expect_page() as opened:
        link.click()
    source = opened.value
    source.wait_for_load_state("load")
    lit = source.locator(".line.hl")
    expect(lit.first).to_be_visible()
    assert cited_sentence in normalize(" ".join(lit.all_inner_texts()))
    expect(lit.first).to_be_in_viewport()
    heading = source.locator("h1").inner_text()
    assert heading and heading in href
    assert not page.dialogs  # type: ignore[attr-defined]
    # Works offline: the page fetched nothing (fonts, scripts, analytics) from another host.
    hosts = {urlparse(url).hostname for url in page.requested  # type: ignore[attr-defined]
             if urlparse(url).scheme in ("http", "https", "ws", "wss")}
    assert hosts == {urlparse(page.url).hostname}, hosts


def test_markup_in_a_document_is_shown_not_run(page):
    ask(page, MARKUP_QUESTION)
    answer = page.locator("#chat [data-testid='bot']").last
    text = answer.inner_text()
    assert '<script>alert("x")</script>' in text  # shown as text
    assert page.locator("#chat script, #sources script, #chat b, #sources b").count() == 0
    assert '<script>alert("x")</script>' in page.locator("#sources").inner_text()
    page.wait_for_timeout(300)
    assert not page.dialogs  # type: ignore[attr-defined]


def test_example_click_asks_it_and_blank_question_gets_a_notice(page):
    from playwright.sync_api import expect

    from ui.app import EMPTY_MESSAGE, EXAMPLES
    page.get_by_text(EXAMPLES[0], exact=True).click()
    bot = page.locator("#chat [data-testid='bot']")
    expect(bot.last.locator("a.cite").first).to_be_visible(timeout=60_000)
    expect(page.locator("#chat [data-testid='user']").first).to_have_text(EXAMPLES[0])

    page.fill("#question textarea", "   ")
    page.keyboard.press("Enter")
    expect(bot.last).to_contain_text(EMPTY_MESSAGE.split(":")[0])

    page.get_by_role("button", name="Nouvelle conversation").click()
    expect(bot).to_have_count(0)
    expect(page.get_by_text(EXAMPLES[0], exact=True)).to_be_visible()


def test_a_dropped_document_is_answered_and_counted(page, chat, ui_corpus):  # noqa: F811
    """The status line names the corpus folder (never its path), and follows the index: a file
    dropped into the folder is answered, and counted, without restarting the chat."""
    from playwright.sync_api import expect

    status = page.locator("#status")
    expect(status).to_contain_text("Index de « corpus » : ")
    assert str(ui_corpus.root) not in page.content()
    files = int(re.search(r"(\d+) fichiers", status.inner_text()).group(1))
    dropped = ui_corpus.root / DROPPED
    printed = len(chat.output)
    dropped.write_text(DROPPED_TEXT, encoding="utf-8")
    try:
        wait_until("the chat prints the update", lambda: any(
            line.startswith(f"index updated: {files + 1} files") for line in chat.output[printed:]))
        ask(page, DROPPED_QUESTION)
        answer = page.locator("#chat [data-testid='bot']").last
        assert "3 mars" in normalize(answer.inner_text())
        href = answer.locator("a.cite").first.get_attribute("href")
        assert href.startswith(f"/source/{DROPPED}?v=")
        expect(status).to_contain_text(f"{files + 1} fichiers")
    finally:
        printed = len(chat.output)
        dropped.unlink()
        wait_until("the chat prints the removal", lambda: any(
            line.startswith(f"index updated: {files} files") for line in chat.output[printed:]))
