"""A pytest plugin: ``pytest --routes-covered`` fails a run that left one of the gateway's routes unexercised
(``make test-fast``: the edit loop covers the whole API). Registered by tests/conftest.py.

The gateway's routes are those of its OpenAPI document, its page and the page's files. What the tests reached is
what every in-process gateway (``local_gateway``, ``TestClient``) counted in its own request metric
(``http_requests_total``, by route template), plus the requests for the page's files; a gateway started as a
process of its own is not seen. Under pytest-xdist each worker sees part of the run: it hands its routes to the
controller in ``workeroutput``, and the controller checks the union.
"""

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

OPTION = "--routes-covered"
SERVICE = "chat_gateway"  # the metric's service label
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
# A request's method and its route's path template, as the OpenAPI document writes it: ("GET", "/v1/models/{model_id}")
# for a route declared "/v1/models/{model_id:path}". A mount's path stands for every file under it.
Hit = tuple[str, str]


# The app's modules are imported in the functions, once tests run: this plugin is loaded before the run's warning
# filters (pyproject.toml) apply, and what they catch when a module is imported would go unseen.


def _template(path: str) -> str:
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def gateway_routes() -> set[Hit]:
    """Every (method, path) the gateway serves: its OpenAPI document's, its page's and the page's files'."""
    from chat_gateway import page
    from chat_gateway.config import Settings
    from chat_gateway.main import create_app

    app = create_app(Settings(api_key=SecretStr("routes")))
    documented = app.openapi()["paths"]
    routes = {(method.upper(), path) for path, item in documented.items() for method in item if method in HTTP_METHODS}
    pages = [route for route in page.router.routes if isinstance(route, APIRoute)]
    routes |= {(method, _template(route.path)) for route in pages for method in route.methods or ()}
    routes |= {("GET", route.path) for route in app.routes if isinstance(route, Mount) and _serves_the_page(route)}
    return {(method, path) for method, path in routes if method != "HEAD"}


def _serves_the_page(mount: Mount) -> bool:
    from chat_gateway.page import WEB

    return isinstance(mount.app, StaticFiles) and Path(str(mount.app.directory)).resolve() == WEB


def counted_routes() -> set[Hit]:
    """The routes this process's gateways counted a request for (ids in paths are templates there already)."""
    from shared.observability import HTTP_REQUESTS

    return {
        (sample.labels["method"], _template(sample.labels["route"]))
        for metric in HTTP_REQUESTS.collect()
        for sample in metric.samples
        if sample.labels.get("service") == SERVICE
    }


Handle = Callable[[Mount, Scope, Receive, Send], Awaitable[None]]


class Recorder:
    """The gateway's routes that handled a request in this process. The page's files have no route template in
    the metric: a mount's requests are recorded as they reach it."""

    def __init__(self) -> None:
        self.files: set[Hit] = set()
        self.gathered: set[Hit] = set()  # from pytest-xdist's workers
        self._patch = pytest.MonkeyPatch()

    def install(self) -> None:
        handle: Handle = Mount.handle

        async def recorded(mount: Mount, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and _serves_the_page(mount):
                self.files.add((scope["method"], mount.path))
            await handle(mount, scope, receive, send)

        self._patch.setattr(Mount, "handle", recorded)

    def uninstall(self) -> None:
        self._patch.undo()

    def hits(self) -> set[Hit]:
        return counted_routes() | self.files | self.gathered


RECORDER = pytest.StashKey[Recorder]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(OPTION, action="store_true", help="fail the run if a gateway route was not exercised")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption(OPTION):
        recorder = Recorder()
        recorder.install()
        config.stash[RECORDER] = recorder


def pytest_unconfigure(config: pytest.Config) -> None:
    if (recorder := config.stash.get(RECORDER, None)) is not None:
        recorder.uninstall()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """A pytest-xdist worker is done: its hits join the controller's."""
    if (recorder := node.config.stash.get(RECORDER, None)) is not None:
        recorder.gathered |= {(method, path) for method, path in node.workeroutput.get("gateway_routes", [])}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    recorder = session.config.stash.get(RECORDER, None)
    if recorder is None:
        return
    if hasattr(session.config, "workeroutput"):  # a pytest-xdist worker: the controller checks
        session.config.workeroutput["gateway_routes"] = sorted(recorder.hits())
        return
    if exitstatus != pytest.ExitCode.OK:
        return  # a failed or interrupted run has said what matters already
    missed = sorted(gateway_routes() - recorder.hits())
    if missed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_sep("=", f"{len(missed)} gateway route(s) no test exercised", red=True)
            reporter.write_line("\n".join(f"  {method} {path}" for method, path in missed))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
