"""The chat with the generative answerer: the model's text streams into the conversation, then the
checked answer and its links replace it; a failing server leaves a clear note and the offline
answer. A fake OpenAI-compatible server (tests/llm_fixtures.py) writes slowly enough to watch.

The handler tests run in-process (fast); one test drives the real Gradio server with Debian's
Chromium, as tests/test_ui_browser.py does.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest
from llm_fixtures import fake_llm, json_reply, passage_number  # noqa: F401
from test_llm import QUESTION, assistant_for

from ui.app import LLM_NOTE, STREAMING_NOTE, Chat

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ANSWER = "Le sommet aura lieu à La Haye, au mois de juin [{n}]. Il durera dix ans."


def right_answer(body: dict) -> str:
    return json_reply(ANSWER.format(n=passage_number(body, "La Haye")))


def test_the_chat_streams_then_shows_the_checked_answer(tiny_template, fake_llm):
    fake_llm.reply = right_answer
    fake_llm.piece_chars = 5
    chat = Chat(assistant_for(tiny_template, fake_llm.url))
    _, turns, _ = chat.add_question(QUESTION, [])
    updates = list(chat.answer_streaming(turns))
    *streamed, (messages, final_turns, sources, status) = updates
    assert len(streamed) > 5
    texts = [update[0][-1]["content"] for update in streamed]
    assert all('class="streaming"' in t and STREAMING_NOTE in t for t in texts)
    assert "Il durera dix ans." in texts[-1]  # shown while written...
    final = messages[-1]["content"]
    assert "Il durera dix ans" not in final  # ...and dropped once checked: it cites nothing
    assert 'class="streaming"' not in final and LLM_NOTE in final
    assert '<a class="cite" href="/source/sommet.txt?v=' in final
    assert final_turns[-1]["answer"]["answerer"] == "llm" and "La Haye" in sources


def test_a_failing_server_leaves_a_note_and_the_offline_answer(tiny_template, fake_llm):
    fake_llm.status = 500
    chat = Chat(assistant_for(tiny_template, fake_llm.url))
    _, turns, _ = chat.add_question(QUESTION, [])
    messages, turns, _, _ = chat.answer_last(turns)
    content = messages[-1]["content"]
    assert content.startswith('<p class="notice">⚠️ Le serveur du modèle a renvoyé une erreur '
                              '(HTTP 500')
    assert "voici la réponse du lecteur hors ligne." in content
    assert '<a class="cite"' in content and LLM_NOTE not in content
    assert turns[-1]["answer"]["answerer"] == "extractive"


def test_a_new_conversation_stops_showing_the_stream(tiny_template, fake_llm):
    import types
    fake_llm.reply = right_answer
    chat = Chat(assistant_for(tiny_template, fake_llm.url))
    session = types.SimpleNamespace(session_hash="visitor")
    _, turns, _ = chat.add_question(QUESTION, [], session)
    updates = chat.answer_streaming(turns, session)
    next(updates)  # the first streamed text
    chat.new_conversation(session)
    rest = list(updates)
    # Neither the rest of the text nor the answer comes back into the cleared chat.
    assert rest and all(isinstance(x, type(gr.skip())) for update in rest for x in update)


@pytest.mark.browser
def test_the_browser_sees_tokens_arrive_then_the_linked_answer(tiny_template, fake_llm):
    from playwright.sync_api import expect, sync_playwright
    from ui_fixtures import serve_in_thread

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)
    fake_llm.reply = right_answer
    fake_llm.piece_chars = 3
    fake_llm.drip_seconds = 0.08  # about 3 s of writing
    url, stop = serve_in_thread(assistant_for(tiny_template, fake_llm.url))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                        args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector("#question textarea", timeout=30_000)
                page.fill("#question textarea", QUESTION)
                page.keyboard.press("Enter")
                bot = page.locator("#chat [data-testid='bot']").last
                writing = bot.locator(".streaming")
                expect(writing).to_be_visible(timeout=30_000)
                seen = [writing.inner_text()]
                expect(writing).not_to_have_text(seen[0], timeout=10_000)  # it grows
                seen.append(writing.inner_text())
                assert len(seen[1]) > len(seen[0])
                expect(bot.locator("a.cite").first).to_be_visible(timeout=30_000)
                expect(bot.locator(".streaming")).to_have_count(0)
                expect(bot).to_contain_text(LLM_NOTE)
                assert "Il durera dix ans" not in bot.inner_text()
                href = bot.locator("a.cite").first.get_attribute("href")
                assert href.startswith("/source/sommet.txt?v=") and href.endswith("#L3")
                expect(page.locator("#sources mark").first).to_contain_text("La Haye")
            finally:
                browser.close()
    finally:
        stop()
