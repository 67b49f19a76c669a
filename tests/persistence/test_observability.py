import io
import json
import logging
import sys

import pytest
from fastapi.testclient import TestClient

from shared.observability import configure_logging
from tests.persistence.conftest import random_id


def test_request_id_is_echoed_or_created(client: TestClient) -> None:
    assert client.get("/sessions", headers={"x-request-id": "trace-42"}).headers["x-request-id"] == "trace-42"
    created = client.get("/sessions").headers["x-request-id"]
    assert len(created) == 32
    # Something that is not a plausible id is replaced, not echoed into logs and headers.
    assert client.get("/sessions", headers={"x-request-id": "a b\tc"}).headers["x-request-id"] != "a b\tc"


def test_one_log_line_per_request_with_its_id(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="requests"):
        client.get(f"/sessions/{random_id()}", headers={"x-request-id": "trace-43"})
    (record,) = [r for r in caplog.records if r.name == "requests"]
    assert (record.method, record.status, record.request_id) == ("GET", 404, "trace-43")  # type: ignore[attr-defined]
    assert record.path.startswith("/sessions/")  # type: ignore[attr-defined]
    assert record.duration_ms >= 0  # type: ignore[attr-defined]


def test_logs_are_json_lines_without_secrets(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    configure_logging()
    try:
        client.get("/sessions", headers={"x-api-key": "wrong-secret-key", "x-request-id": "trace-44"})
    finally:
        monkeypatch.undo()
        configure_logging()
    lines = [json.loads(line) for line in stderr.getvalue().splitlines()]
    line = next(entry for entry in lines if entry.get("request_id") == "trace-44")
    assert (line["status"], line["path"], line["message"]) == (401, "/sessions", "request")
    assert "wrong-secret-key" not in json.dumps(lines)
    assert "test-key" not in json.dumps(lines)


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.get(f"/sessions/{random_id()}")
    metrics = client.get("/metrics", headers={"x-api-key": ""})
    assert metrics.status_code == 200
    assert (
        'http_requests_total{method="GET",route="/sessions/{session_id}",service="persistence",status="404"}'
        in metrics.text
    )
    assert "http_request_duration_seconds_bucket" in metrics.text
