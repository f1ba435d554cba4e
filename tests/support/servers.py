"""Real HTTP servers on 127.0.0.1 for the tests, and Prometheus text parsing.

- `FakeService`: a `ThreadingHTTPServer` answering every request with a Python callable and
  recording what it got, so that a test can assert on the exact method, path, query,
  headers and JSON body the job sent. `health_service(status)` is one answering `/healthz`.
- `closed_port_url`: a URL where nothing listens.
- `pushgateway()`: a real Prometheus Pushgateway (the `prometheus-pushgateway` binary on
  PATH) on a free port; without the binary, an error saying how to install it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import MissingProgram, free_port, wait_until


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"

    @classmethod
    def of(cls, payload: Any, status: int = 200) -> Reply:
        return cls(status, json.dumps(payload).encode())


Responder = Callable[[Request], Reply]


@dataclass
class FakeService:
    """A live HTTP server whose answers come from `respond`; use as a context manager."""

    respond: Responder
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query={key: values[-1] for key, values in parse_qs(parts.query).items()},
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=body,
                )
                with service._lock:
                    service.requests.append(request)
                try:
                    reply = service.respond(request)
                except Exception as exc:  # a broken fake must show up, not hang the job
                    reply = Reply(599, f"fake service error: {exc!r}".encode(), "text/plain")
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-service", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def received(self, method: str | None = None, path: str | None = None) -> list[Request]:
        with self._lock:
            return [
                r for r in self.requests if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    def __enter__(self) -> FakeService:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def health_service(status: int = 200) -> FakeService:
    """A service answering GET /healthz with `status` (and 404 elsewhere)."""

    def respond(request: Request) -> Reply:
        code = status if request.method == "GET" and request.path == "/healthz" else 404
        return Reply.of({"status": "ok" if code == 200 else "bad"}, status=code)

    return FakeService(respond)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    return f"http://127.0.0.1:{free_port()}"


# -- Pushgateway and Prometheus text ----------------------------------------------------------------

PUSHGATEWAY = "prometheus-pushgateway"
INSTALL_PUSHGATEWAY = f"apt-get install -y {PUSHGATEWAY}"  # Debian's package puts it on PATH


def pushgateway_binary() -> str | None:
    """The Pushgateway binary on PATH, if installed."""
    return shutil.which(PUSHGATEWAY)


def _answers(url: str, process: subprocess.Popen[Any]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"{process.args} exited with {process.returncode} before answering {url}")
    try:
        return httpx.get(url, timeout=1.0).status_code < 500
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def pushgateway() -> Iterator[str]:
    """A real Pushgateway on a free 127.0.0.1 port; yields its base URL, killed afterwards."""
    binary = pushgateway_binary()
    if binary is None:
        raise MissingProgram(f"{PUSHGATEWAY} not found on PATH: {INSTALL_PUSHGATEWAY}")
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(f"{url}/-/ready", process), f"the Pushgateway at {url} answering", timeout=15)
        yield url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called `name` (e.g. `..._total`) whose labels include `labels`."""
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found.append((dict(sample.labels), float(sample.value)))
    return found


def single_value(text: str, name: str, **labels: str) -> float:
    matching = samples(text, name, **labels)
    assert len(matching) == 1, f"expected one {name}{labels}, found {matching}"
    return matching[0][1]
