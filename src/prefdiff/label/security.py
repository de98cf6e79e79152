"""Security pieces of the web app: safe image paths, CSRF tokens, a rate limiter, a request
size limit and response headers. See docs/label.md ("Security model")."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import Any

from prefdiff.manifests import IMAGE_SUFFIXES

Scope = dict[str, Any]
Message = dict[str, Any]


def resolve_image(root: str, relative: str) -> Path | None:
    """The file `root/relative` if it is an image file inside `root` (after resolving symlinks),
    else None. Stored paths were checked at study creation; this checks again at read time."""
    posix = PurePosixPath(relative)
    if posix.is_absolute() or ".." in posix.parts or not posix.parts:
        return None
    base = Path(root).resolve()
    target = (base / Path(*posix.parts)).resolve()
    if not target.is_relative_to(base) or not target.is_file():
        return None
    if target.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    return target


def csrf_token(secret: str, session_value: str) -> str:
    """The CSRF token bound to an admin session (HMAC of the session cookie)."""
    return hmac.new(secret.encode(), b"csrf:" + session_value.encode(), hashlib.sha256).hexdigest()


def check_csrf(secret: str, session_value: str, presented: str | None) -> bool:
    """Constant-time check of a form's CSRF token."""
    return bool(presented) and hmac.compare_digest(csrf_token(secret, session_value), presented or "")


class RateLimiter:
    """Token buckets keyed by client (rater token or IP): `rate` requests/s, bursts of `burst`.
    Thread-safe; keeps at most `max_keys` buckets (least recently used are forgotten)."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()
        # keys of rater tokens the app has seen resolve to a rater: only those get a bucket of
        # their own; an unknown token counts against its client's IP, so made-up tokens can
        # neither get fresh buckets nor push real raters' buckets out
        self.known_raters: set[str] = set()

    def mark_known(self, token: str) -> None:
        """``token`` resolved to a rater: key its requests by the token from now on."""
        if len(self.known_raters) < self.max_keys:
            self.known_raters.add(rater_key(token))

    def allow(self, key: str) -> bool:
        """Take one token from `key`'s bucket; False when it is empty."""
        if self.rate <= 0:
            return True
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return allowed


async def _send_plain(send: Any, status: int, text: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = text.encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()), *headers],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """ASGI middleware: request size limit (413), rate limit (429) and security headers.

    The size limit checks Content-Length up front and counts streamed bytes too (chunked
    bodies). The rate limit keys rater URLs by their token once the token is known to be a
    rater's (:meth:`RateLimiter.mark_known`), everything else by client IP.
    """

    def __init__(self, app: Any, max_body: int, limiter: RateLimiter) -> None:
        self.app, self.max_body, self.limiter = app, max_body, limiter

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                await _send_plain(send, 400, "bad Content-Length", [])
                return
            if too_big:
                await _send_plain(send, 413, f"request body over {self.max_body} bytes", [])
                return
        if not self.limiter.allow(_client_key(scope, self.limiter.known_raters)):
            await _send_plain(send, 429, "too many requests; slow down", [(b"retry-after", b"1")])
            return
        body = bytearray()
        while True:  # bodies here are small (votes, forms): read them whole, within the limit
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await _send_plain(send, 413, f"request body over {self.max_body} bytes", [])
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay_receive() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        async def secured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in _SECURITY_HEADERS if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, replay_receive, secured_send)


_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
]


def rater_key(token: str) -> str:
    return "rater:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def _client_key(scope: Scope, known_raters: set[str]) -> str:
    """A known rater's token for rater URLs, else the client's IP."""
    path: str = scope.get("path", "")
    for prefix in ("/r/", "/api/r/"):
        if path.startswith(prefix):
            token = path[len(prefix) :].split("/", 1)[0]
            if token and (key := rater_key(token)) in known_raters:
                return key
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")
