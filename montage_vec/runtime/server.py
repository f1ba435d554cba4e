"""The scheduler's HTTP endpoints on METRICS_PORT.

- `GET /healthz`: 200 `{"status": "ok", ...}` while the daemon runs (with the last run's status)
- `GET /metrics`: Prometheus text format
- `POST /montages/{user_id}/regenerate` (only with ENABLE_REALTIME_GENERATION=true): recompute one
  user's montages now and return them as JSON
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST

from montage_vec.config.secrets import redact
from montage_vec.errors import ConfigError, MontageVecError

REGENERATE_PATH = re.compile(r"^/montages/(?P<user_id>[^/]+)/regenerate$")

Regenerate = Callable[[str], dict[str, Any]]


class JobHttpServer:
    """A small threaded HTTP server; `status` is what /healthz reports."""

    def __init__(self, host: str, port: int, metrics: Callable[[], bytes], regenerate: Regenerate | None) -> None:
        self.status: dict[str, Any] = {"status": "ok"}
        handler = _handler_class(self, metrics, regenerate)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> JobHttpServer:
        self._thread.start()
        logger.info("HTTP endpoints listening", port=self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_class(
    server: JobHttpServer, metrics: Callable[[], bytes], regenerate: Regenerate | None
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send_json(HTTPStatus.OK, server.status)
            elif self.path == "/metrics":
                self._send(HTTPStatus.OK, metrics(), CONTENT_TYPE_LATEST)
            else:
                self._send_json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self) -> None:
            match = REGENERATE_PATH.match(self.path)
            if match is None or regenerate is None:
                self._send_json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            try:
                self._send_json(HTTPStatus.OK, regenerate(match["user_id"]))
            except ConfigError as exc:
                self._send_json(HTTPStatus.BAD_REQUEST, {"error": redact(str(exc))})
            except MontageVecError as exc:
                status = HTTPStatus.SERVICE_UNAVAILABLE if exc.transient else HTTPStatus.UNPROCESSABLE_ENTITY
                self._send_json(status, {"error": redact(str(exc))})

        def _send_json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body, default=str).encode(), "application/json")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("http request", request=redact(format % args))

    return Handler
