"""The outermost layer of the app: Host/Origin checks, security headers, JSON for every error.

Outermost (around FastAPI's own error and body-limit middleware) so that it also sees the replies
those produce in plain text — Starlette's 413 "Content Too Large" and 500 "Internal Server Error" —
and turns them into the JSON `{"detail": ...}` the API documents.

* Host: a browser page on another site can reach a server on 127.0.0.1 by DNS rebinding (its own
  name resolving to 127.0.0.1); the request then carries that name in Host. Only the names in
  `allowed_hosts` are served (None: any, for a server bound to a public address).
* Origin: a state-changing request (POST...) sent by a browser names the page's origin; one that
  is not this server's own origin is a cross-site request and is refused (403), token or not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Swagger UI (/docs) and ReDoc load their scripts from a CDN, so the page CSP is left off there.
_NO_CSP_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")
_CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'")
_PLAIN_DETAIL = {413: None, 500: "internal server error; the server log has the details"}


def _host_name(value: str) -> str:
    """'127.0.0.1:8000' → '127.0.0.1', '[::1]:8000' → '::1' (lower case)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _security_headers(path: str, api: bool) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
               (b"referrer-policy", b"no-referrer"), (b"cross-origin-resource-policy", b"same-origin")]
    if path not in _NO_CSP_PATHS:
        headers.append((b"content-security-policy", _CSP.encode()))
    if api:
        headers.append((b"cache-control", b"no-store"))  # reports are derived from patient images
    return headers


class SecurityMiddleware:
    """ASGI middleware; see the module docstring. `upload_limit` (bytes an image) words the 413 message."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] | None, upload_limit: int) -> None:
        self.app = app
        self.allowed_hosts = None if allowed_hosts is None else {_host_name(host) for host in allowed_hosts}
        self.upload_limit = upload_limit

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            return 400, ("unknown Host header; this server answers to " + ", ".join(sorted(self.allowed_hosts))
                         + " (start it with --allowed-host NAME to add a name)")
        origin = headers.get("origin")
        if origin is not None and scope["method"] not in SAFE_METHODS:
            parts = urlsplit(origin)
            if origin == "null" or parts.netloc.lower() != host.strip().lower():
                return 403, "cross-origin request refused: use the page served by this server, or a client that sends no Origin"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        extra = _security_headers(path, api=path.startswith("/v1/"))
        refusal = self._refusal(scope)
        if refusal is not None:
            await self._send_json(send, refusal[0], refusal[1], extra)
            return
        held: Message | None = None  # the start of a non-JSON error reply, rewritten once its body is in
        body = bytearray()

        async def guarded_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                content_type = Headers(raw=message.get("headers", [])).get("content-type", "")
                if message["status"] >= 400 and not content_type.startswith("application/json"):
                    held = message
                    return
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            elif held is not None and message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if message.get("more_body"):
                    return
                kept = [(k, v) for k, v in held.get("headers", []) if k.lower() in (b"retry-after", b"www-authenticate", b"allow")]
                await self._send_json(send, held["status"], self._detail(held["status"], bytes(body)), extra + kept)
                return
            await send(message)

        await self.app(scope, receive, guarded_send)

    def _detail(self, status: int, body: bytes) -> str:
        if status == 413:
            return f"upload too large: the limit is {self.upload_limit} bytes an image"
        text = " ".join(body.decode("utf-8", "replace").split())[:200]
        return _PLAIN_DETAIL.get(status) or text or f"HTTP {status}"

    @staticmethod
    async def _send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
        payload = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers]})
        await send({"type": "http.response.body", "body": payload})
