"""The chat page at / and the files it loads under /ui/, in process: served without a key by a gateway that asks
one for everything else, with the page's headers. The page in a browser: tests/chat_gateway/web (slow)."""

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat_gateway.page import PAGE_HEADERS
from tests.chat_gateway.conftest import LocalService, local_gateway


@pytest.fixture
def locked(tmp_path: Path, persistence_app: LocalService) -> Iterator[httpx.Client]:
    with (
        local_gateway(tmp_path, persistence_app, None, CHAT_ADMIN_KEYS="admin-key") as gateway,
        httpx.Client(base_url=gateway.url, timeout=30) as client,
    ):
        yield client


def _loaded_by(text: str) -> list[str]:
    """What a page or a script loads: its /ui/ addresses and the modules it imports."""
    return re.findall(r'(?:src|href)="(/ui/[^"]+)"', text) + re.findall(r'from\s+["\'](\.[^"\']+)["\']', text)


def test_the_page_and_every_file_it_loads_are_served_without_a_key(locked: httpx.Client) -> None:
    assert locked.get("/chat/sessions").status_code == 401  # the rest asks for a key
    page = locked.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert {name: page.headers[name] for name in PAGE_HEADERS} == PAGE_HEADERS
    pending, served = [httpx.URL("/").join(address) for address in _loaded_by(page.text)], set[str]()
    while pending:
        url = pending.pop()
        if url.path in served:
            continue
        response = locked.get(url.path)
        assert response.status_code == 200, url.path
        served.add(url.path)
        if url.path.endswith(".js"):
            pending += [url.join(module) for module in _loaded_by(response.text)]
    # The page's styles and scripts, and the libraries its script imports, down to their own imports.
    assert {"/ui/style.css", "/ui/app.js", "/ui/vendor/marked.js", "/ui/vendor/eventsource-parser/parse.js"} <= served


def test_a_file_outside_the_pages_is_not_served(locked: httpx.Client) -> None:
    assert locked.get("/ui/missing.js").status_code == 404
