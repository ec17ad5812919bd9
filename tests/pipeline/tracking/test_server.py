"""A tracking server that does not answer is one line before any work (pipeline.tracking.server)."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pipeline.tracking.experiment import connect
from pipeline.tracking.server import check_server
from pipeline.tracking.store_file import StoreError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _health(status: int) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server interface
            self.send_response(status if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def test_a_server_that_is_down_is_one_line_at_once(tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    tic = time.monotonic()
    with pytest.raises(StoreError, match="does not answer") as caught:
        connect(tmp_path, uri=uri)
    assert time.monotonic() - tic < 5  # not MLflow's minutes of retries
    message = str(caught.value)
    assert uri in message and "nothing was done" in message and "\n" not in message


def test_a_server_that_answers_passes_and_an_unhealthy_one_is_named():
    with _health(200) as uri:
        check_server(uri)
    with _health(503) as uri, pytest.raises(StoreError, match="HTTP 503"):
        check_server(uri)


def test_the_timeout_is_the_users(monkeypatch):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts, never answers
    monkeypatch.setenv("COCONET_MLFLOW_CONNECT_TIMEOUT", "0.5")
    try:
        with pytest.raises(StoreError, match=r"within 0\.5 s"):
            check_server(f"http://127.0.0.1:{silent.getsockname()[1]}")
    finally:
        silent.close()
