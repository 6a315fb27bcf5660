"""The plain HTTP side of the server: pages, static ES modules and ``/stats``, on websockets' handshake.

websockets calls :meth:`HttpRoutes.process_request` for every incoming request before its opening
handshake; returning a response answers plain HTTP, returning None lets a websocket through (only
on :data:`WS_PATH`). GET and HEAD only: other methods get 405. (A request with a body never gets
here: websockets' parser closes such a connection without an answer.)
"""

from __future__ import annotations

import dataclasses
import email.utils
import http
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

WS_PATH = "/ws"
STATIC_PREFIX = "/web/"
PAGES = {
    "/": "index.html",
    "/index.html": "index.html",
    "/view": "view.html",
    "/view.html": "view.html",
    "/xr": "xr.html",
    "/xr.html": "xr.html",
}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
MAX_STATIC_BYTES = 4 * 1024 * 1024


def default_web_root() -> Path:
    """``clients/web`` of the source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "clients" / "web"


def response(status: int, body: bytes, content_type: str) -> Response:
    """A complete HTTP response (the connection closes after it)."""
    status_ = http.HTTPStatus(status)
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),  # (the performer page's URL may carry its key)
        ]
    )
    return Response(status_.value, status_.phrase, headers, body)


def redirect(location: str) -> Response:
    """A permanent redirect to ``location`` (a path on this server)."""
    resp = text(308, f"see {location}")
    resp.headers["Location"] = location
    return resp


def text(status: int, message: str) -> Response:
    return response(status, (message.rstrip("\n") + "\n").encode(), "text/plain; charset=utf-8")


class HttpRoutes:
    """Routes plain HTTP requests; ``stats`` gives the ``/stats`` object.

    Args:
        web_root: folder with ``index.html``, ``view.html`` and the ES modules.
        stats: returns the JSON-ready server statistics.
    """

    def __init__(self, web_root: Path, stats: Callable[[], dict[str, object]]) -> None:
        self.web_root = web_root.resolve()
        self.stats = stats

    def process_request(self, connection: object, request: Request) -> Response | None:
        """websockets' ``process_request`` hook. HEAD gets GET's status and headers, without the body."""
        resp = self._route(request)
        if resp is not None and request.method == "HEAD":
            resp = dataclasses.replace(resp, body=b"")  # Content-Length still gives GET's length
        return resp

    def _route(self, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if request.method not in ("GET", "HEAD"):
            resp = text(405, f"{request.method[:20]} is not allowed here: the server answers GET only")
            resp.headers["Allow"] = "GET, HEAD"
            return resp
        if path == WS_PATH:  # the websocket handshake is a GET
            if request.method == "GET":
                return None
            resp = text(405, "the signalling websocket opens with GET")
            resp.headers["Allow"] = "GET"
            return resp
        if path == "/stats":
            return response(200, json.dumps(self.stats(), indent=1).encode(), "application/json")
        if path == "/health":
            return text(200, "ok")
        if path in PAGES:
            return self._file(PAGES[path])
        if path.endswith("/") and path.rstrip("/") in PAGES:  # /view/ -> /view, keeping ?stage=...
            query = urlsplit(request.path).query
            return redirect(path.rstrip("/") + (f"?{query}" if query else ""))
        if path.startswith(STATIC_PREFIX):
            return self._file(unquote(path[len(STATIC_PREFIX) :]))
        return text(404, f"not found: {path[:200]} (pages: / performer, /view viewer, /xr VR viewer)")

    def _file(self, relative: str) -> Response:
        """A file under the web root with a known type; never outside it."""
        target = (self.web_root / relative).resolve()
        if not target.is_relative_to(self.web_root) or target.suffix not in CONTENT_TYPES:
            return text(404, f"not found: {relative[:200]}")
        try:
            if not target.is_file() or target.stat().st_size > MAX_STATIC_BYTES:
                return text(404, f"not found: {relative[:200]}")
            body = target.read_bytes()
        except OSError:
            return text(404, f"not found: {relative[:200]}")
        return response(200, body, CONTENT_TYPES[target.suffix])
